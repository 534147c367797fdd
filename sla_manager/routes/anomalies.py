"""``GET /anomalies``: the anomaly detectors' window results that data_storage stored.

Each item is one window of one series as one detector judged it (the record of topic
``anomaly``). Filters: ``selector`` (a plain selector with ``=`` matchers, matched against
the stored series' metric and labels) or ``series_key``; ``detector`` (the model: sigma,
iforest, autoencoder; repeatable); ``status`` (repeatable); ``start``/``end`` on the window
start. Newest window first; ``after=<cursor of the last item>`` gives the next page.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import Field, model_validator

from sla_common.anomaly_store import AnomalyFilter, Position, StoredAnomaly, list_anomalies
from sla_common.promql import equality_selector
from sla_manager.deps import ServicesDep
from sla_manager.errors import UNAVAILABLE, validation_error
from sla_manager.models import Epoch, _Request, _Response

Status = Literal["SAFE", "WARN", "ERROR", "LEARNING"]
DETECTOR_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"

router = APIRouter(prefix="/anomalies", tags=["anomalies"], responses={**UNAVAILABLE})


class AnomalyQuery(_Request):
    selector: str | None = Field(
        default=None,
        max_length=4096,
        description='a plain selector with "=" matchers, e.g. node_load1{instance="h:9100"}',
    )
    series_key: str | None = Field(default=None, max_length=4096, description="one series")
    detector: list[Annotated[str, Field(pattern=DETECTOR_PATTERN)]] = Field(
        default_factory=list, max_length=16, description="the detector (model): sigma, iforest..."
    )
    status: list[Status] = Field(default_factory=list, max_length=4)
    start: Epoch | None = Field(default=None, description="windows starting at or after")
    end: Epoch | None = Field(default=None, description="windows starting before")
    limit: int = Field(default=100, ge=1, le=1000)
    after: str | None = Field(
        default=None, max_length=64, description="the `cursor` of the previous page's last item"
    )

    @model_validator(mode="after")
    def _check(self) -> AnomalyQuery:
        if self.selector is not None and self.series_key is not None:
            raise ValueError("give selector or series_key, not both")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError("end is before start")
        return self


class AnomalyOut(_Response):
    metric: str
    labels: dict[str, str]
    series_key: str
    detector: str
    detector_version: str
    window_start: float = Field(description="Unix seconds")
    window_end: float
    count: int
    mean: float
    std: float
    normal_mean: float
    normal_std: float
    normal_source: str
    deviation: float = Field(description="(mean - normal_mean) / normal_std")
    status: Status
    score: float | None = Field(
        default=None,
        description="a batch model's score of the point in [0, 1] (iforest: ERROR above its "
        "threshold); null for a streaming window",
    )
    normal_period_s: int | None = Field(
        default=None,
        description="which learned normal judged the window: 0 the plain one (also static and "
        "none), else the period in seconds of the series' cycle it followed (86400 a day); "
        "null when the record did not say (version 1 records, batch models)",
    )
    cursor: str = Field(description="pass as `after` for the items after this one")

    @classmethod
    def of(cls, a: StoredAnomaly) -> AnomalyOut:
        return cls(
            metric=a.metric,
            labels=a.labels,
            series_key=a.series_key,
            detector=a.detector,
            detector_version=a.detector_version,
            window_start=a.window_start,
            window_end=a.window_end,
            count=a.count,
            mean=a.mean,
            std=a.std,
            normal_mean=a.normal_mean,
            normal_std=a.normal_std,
            normal_source=a.normal_source,
            deviation=a.deviation,
            status=a.status,  # the column holds what the validated record had
            score=a.score,
            normal_period_s=a.normal_period_s,
            cursor=a.position.token(),
        )


def to_filter(q: AnomalyQuery) -> AnomalyFilter:
    metric: str | None = None
    labels: dict[str, str] = {}
    if q.selector is not None:
        try:
            metric, labels = equality_selector(q.selector)
        except ValueError as e:
            raise validation_error(("query", "selector"), str(e), q.selector) from e
    return AnomalyFilter(
        series_key=q.series_key,
        metric=metric,
        labels=tuple(sorted(labels.items())),
        detectors=tuple(dict.fromkeys(q.detector)),
        statuses=tuple(dict.fromkeys(q.status)),
        start_ms=None if q.start is None else round(q.start * 1000),
        end_ms=None if q.end is None else round(q.end * 1000),
    )


@router.get("", summary="Anomaly detectors' window results, newest first")
def get_anomalies(
    params: Annotated[AnomalyQuery, Query()], services: ServicesDep
) -> list[AnomalyOut]:
    f = to_filter(params)
    after = None
    if params.after is not None:
        try:
            after = Position.parse(params.after)
        except ValueError as e:
            raise validation_error(("query", "after"), str(e), params.after) from e
    with services.pool.connection() as conn:
        rows = list_anomalies(conn, f, after, params.limit)
    return [AnomalyOut.of(a) for a in rows]
