"""The executor: ``POST /calculate`` scores a PromQL selector's series over a range.

Request (JSON): ``selector`` (PromQL), ``start`` and ``end`` (epoch seconds), ``step``
(seconds, or a Prometheus duration such as ``"1m"``). Answer, in the reference's shape::

    {"status": "success",
     "anomalies": [{"series": KEY, "timestamp": T, "value": V, "expected": E, "score": Z}...],
     "prediction": [{"series": KEY, "timestamp": T, "value": E}...],
     "series": [{"series": KEY, "metric": ..., "labels": {...}, "model": "autoencoder",
                 "model_version": N, "fallback": false, "points": P, "anomalies": A}...]}

A series with a stored model (:mod:`.store`) is scored by it (the k-sigma rule on its
reconstruction error; ``score`` = the error in training-error standard deviations above
their mean). A series without one is scored by the isolation forest
(:func:`anomaly_detection.models.iforest.iforest_scores` over the range itself, its first
15 % as training rows), and its summary says ``"model": "iforest", "fallback": true`` with
the reason; its ``expected`` is the median of the 6 points before, and ``score`` the forest's
calibrated score (above 0.5 flagged).

Errors: ``{"status": "error", "msg": ...}`` with 400 for a bad body, selector (Prometheus'
own words), range or too many series/points; 503 when Prometheus or MySQL is unreachable.

Models are cached per series and reloaded when the store holds a newer version: one
``SELECT version`` per request for the series it scores.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pymysql
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from anomaly_detection.models.iforest import iforest_scores
from anomaly_detection.outliers.model import OutlierModel
from anomaly_detection.outliers.store import ModelCache
from anomaly_detection.outliers.windowing import fill_gaps
from sla_common.prometheus import (
    PrometheusBusy,
    PrometheusClient,
    PrometheusError,
    PrometheusUnavailable,
    RangeSeries,
    duration_s,
)
from sla_common.series import series_key

log = logging.getLogger(__name__)

FALLBACK_MODEL = "iforest"
FALLBACK_TRAIN_FRACTION = 0.15
FALLBACK_MIN_POINTS = 40  # the forest's 32 training rows and some to score
EXPECTED_PAST = 6


class BadRequest(Exception):
    pass


class Unavailable(Exception):
    pass


class CalculateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    selector: str = Field(min_length=1, max_length=10_000)
    start: float = Field(ge=0, allow_inf_nan=False)
    end: float = Field(ge=0, allow_inf_nan=False)
    step: float = Field(gt=0, allow_inf_nan=False)

    @field_validator("step", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                try:
                    return duration_s(v)
                except (ValueError, KeyError) as e:
                    raise ValueError(f"step {v!r} is neither seconds nor a duration") from e
        return v

    @model_validator(mode="after")
    def _range(self) -> CalculateRequest:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _score_model(
    key: str, s: RangeSeries, model: OutlierModel
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    sc = model.score(s.values)
    ts = s.timestamps
    anomalies = [
        {
            "series": key,
            "timestamp": float(ts[i]),
            "value": _num(s.values[i]),
            "expected": _num(sc.expected[i]),
            "score": round(float(sc.score[i]), 4),
        }
        for i in np.flatnonzero(sc.outlier)
        if math.isfinite(s.values[i])
    ]
    prediction = [
        {"series": key, "timestamp": float(t), "value": _num(e)}
        for t, e in zip(ts, sc.expected, strict=True)
    ]
    return anomalies, prediction


def _score_fallback(key: str, s: RangeSeries) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    n = len(s.values)
    if n < FALLBACK_MIN_POINTS:
        return [], []
    times = (s.timestamps * 1e3).astype("datetime64[ms]")
    scores = iforest_scores(times, s.values, int(n * FALLBACK_TRAIN_FRACTION), key)
    v = fill_gaps(s.values)
    expected = np.array(
        [np.median(v[max(0, i - EXPECTED_PAST) : i]) if i else v[0] for i in range(n)]
    )
    anomalies = [
        {
            "series": key,
            "timestamp": float(s.timestamps[i]),
            "value": _num(s.values[i]),
            "expected": _num(expected[i]),
            "score": round(float(scores[i]), 4),
        }
        for i in np.flatnonzero(scores > 0.5)
        if math.isfinite(s.values[i])
    ]
    prediction = [
        {"series": key, "timestamp": float(t), "value": _num(e)}
        for t, e in zip(s.timestamps, expected, strict=True)
    ]
    return anomalies, prediction


def calculate(
    req: CalculateRequest,
    prom: PrometheusClient,
    cache: ModelCache,
    max_series: int,
    max_points: int,
) -> dict[str, Any]:
    points = math.floor((req.end - req.start) / req.step) + 1
    if points > max_points:
        raise BadRequest(
            f"{points} points per series ((end - start) / step + 1) is more than {max_points}"
        )
    try:
        series = prom.query_range(req.selector, req.start, req.end, req.step)
    except PrometheusError as e:
        raise BadRequest(f"Prometheus: {e.message}") from e
    except (PrometheusUnavailable, PrometheusBusy) as e:
        raise Unavailable(f"Prometheus unavailable: {e}") from e
    if len(series) > max_series:
        raise BadRequest(f"the selector gives {len(series)} series, more than {max_series}")
    keys = [series_key(s.metric or "", s.labels) for s in series]
    try:
        models = cache.models_for(keys)
    except pymysql.err.OperationalError as e:
        raise Unavailable(f"model store unavailable: {e.args[-1] if e.args else e}") from e
    anomalies: list[dict[str, Any]] = []
    prediction: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    for key, s in zip(keys, series, strict=True):
        model = models.get(key)
        summary: dict[str, Any] = {
            "series": key,
            "metric": s.metric,
            "labels": {k: v for k, v in s.labels.items() if k != "__name__"},
            "points": len(s.values),
        }
        if model is not None and len(s.values) >= model.meta.params.window:
            a, p = _score_model(key, s, model)
            summary |= {"model": "autoencoder", "model_version": model.meta.version}
            summary |= {"fallback": False}
        else:
            a, p = _score_fallback(key, s)
            reason = (
                "no model for this series"
                if model is None
                else f"fewer points than the model's window of {model.meta.params.window}"
            )
            summary |= {"model": FALLBACK_MODEL, "model_version": None, "fallback": True}
            summary |= {"fallback_reason": reason}
            if len(s.values) < FALLBACK_MIN_POINTS:
                summary["fallback_reason"] += (
                    f"; fewer than {FALLBACK_MIN_POINTS} points: not scored"
                )
        summary["anomalies"] = len(a)
        anomalies += a
        prediction += p
        summaries.append(summary)
    return {
        "status": "success",
        "anomalies": anomalies,
        "prediction": prediction,
        "series": summaries,
    }


def _error(status: int, msg: str) -> JSONResponse:
    return JSONResponse({"status": "error", "msg": msg}, status_code=status)


def create_app(
    prom: PrometheusClient, cache: ModelCache, max_series: int = 100, max_points: int = 11_000
) -> FastAPI:
    app = FastAPI(title="outliers executor", openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return _error(400, "; ".join(parts) or "invalid request")

    @app.post("/calculate")
    def _calculate(body: CalculateRequest) -> JSONResponse:
        try:
            return JSONResponse(calculate(body, prom, cache, max_series, max_points))
        except BadRequest as e:
            return _error(400, str(e))
        except Unavailable as e:
            log.warning("%s", e)
            return _error(503, str(e))

    @app.get("/healthz")
    def _health() -> dict[str, str]:
        return {"status": "ok"}

    return app
