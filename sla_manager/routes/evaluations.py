"""``/slis/{name}/status|violations|forecast-violations``: an SLI evaluated against its range.

Which series an SLI covers: those its selector returns (Prometheus), kept when they carry
every label of the SLI's ``labels`` with exactly that value, in label-set order, at most
SLA_MAX_SERIES of them (``truncated`` says when more matched).

Before a range query fetches anything, an instant ``count by (<the SLI's label names>)``
at ``end`` says how many series it would return: more than SLA_MAX_SERIES kept by the
labels, or more than SLA_MAX_POINTS evaluations × series fetched, is a 422 without the
range query ever being sent.

No data: ``/status`` also asks for the selector over its ``window`` before ``time`` (a
range query at Prometheus' 5 min look-back, so every sample in the window shows up in some
evaluation): a series seen there but without a value at ``time`` is ``no_data``.
``/violations`` reports, per series, the evaluations without a value after its first one.
An SLI whose selector matches nothing is in state ``no_data``; whether missing data is a
violation is the SLI's ``missing_data_is_violation``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query

from sla_common.anomaly_store import latest_by_detector
from sla_common.prometheus import InstantSample, PrometheusClient, RangeSeries
from sla_common.series import series_key
from sla_manager import evaluation as ev
from sla_manager.deps import (
    ForecastStoreDep,
    PrometheusDep,
    ServicesDep,
    SettingsDep,
    SliName,
    SliStoreDep,
    sli_or_404,
)
from sla_manager.errors import NOT_FOUND, PROMQL, UNAVAILABLE, validation_error
from sla_manager.models import (
    MAX_POINTS_PER_SERIES,
    MAX_WINDOW_S,
    ForecastBandPoint,
    ForecastInfo,
    ForecastPointOut,
    ForecastQuery,
    ForecastViolationsResponse,
    LatestAnomaly,
    NoDataIntervalOut,
    SeriesForecastOut,
    SeriesStatus,
    SeriesViolationsOut,
    Sli,
    StatusQuery,
    StatusResponse,
    ViolatingSample,
    ViolationInterval,
    ViolationsQuery,
    ViolationsResponse,
)
from sla_manager.models import SliState as SliStateT
from sla_manager.routes.sli_series import check_range_size, labels_of, narrow
from sla_manager.services import Services
from sla_manager.settings import SlaSettings
from sla_manager.store import StoredForecast

# Prometheus' default look-back (--query.lookback-delta): an instant evaluation sees the
# latest sample up to this far back, so evaluations this far apart see every sample.
LOOKBACK_S = 300

router = APIRouter(
    prefix="/slis", tags=["evaluations"], responses={**UNAVAILABLE, **NOT_FOUND, **PROMQL}
)


def _now() -> float:
    return round(time.time(), 3)  # Prometheus resolves time to milliseconds


def _with_anomalies(services: Services, series: list[SeriesStatus]) -> list[SeriesStatus]:
    """Each series with its newest anomaly window per detector (one query for all)."""
    keys = {id(s): series_key(s.metric, s.labels) for s in series if s.metric is not None}
    if not keys:
        return series
    with services.pool.connection() as conn:
        latest = latest_by_detector(conn, list(keys.values()))
    out = []
    for s in series:
        found = latest.get(keys.get(id(s), ""), {})
        anomalies = {
            d: LatestAnomaly(
                status=a.status,  # stored from a validated record
                deviation=a.deviation,
                window_start=a.window_start,
                window_end=a.window_end,
            )
            for d, a in sorted(found.items())
        }
        out.append(s.model_copy(update={"anomalies": anomalies}) if anomalies else s)
    return out


def _split(labels: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    return labels.get("__name__"), {k: v for k, v in labels.items() if k != "__name__"}


@router.get(
    "/{name}/status",
    summary="Current value of each series, inside the range or not, and series gone silent",
)
def sli_status(
    name: SliName,
    store: SliStoreDep,
    params: Annotated[StatusQuery, Query()],
    prometheus: PrometheusDep,
    settings: SettingsDep,
    services: ServicesDep,
) -> StatusResponse:
    sli = sli_or_404(store, name)
    at = params.time if params.time is not None else _now()
    result = prometheus.query(sli.selector, time=at)
    samples, total = narrow(result, sli, settings)
    gone = _gone_series(prometheus, sli, at, params.window, result, settings)
    bounds = sli.bounds()
    series = []
    for s in samples:
        metric, labels = _split(s.labels)
        state = bounds.state(s.value)
        series.append(
            SeriesStatus(
                metric=metric,
                labels=labels,
                timestamp=s.timestamp,
                value=ev.finite_or_none(s.value),
                state=state,
                inside=None if state == "undefined" else state == "inside",
                last_seen=None,
            )
        )
    for rs in gone[: max(settings.sla_max_series - len(series), 0)]:
        metric, labels = _split(rs.labels)
        series.append(
            SeriesStatus(
                metric=metric,
                labels=labels,
                timestamp=at,
                value=None,
                state="no_data",
                inside=None,
                last_seen=float(rs.timestamps[-1]),
            )
        )
    series = _with_anomalies(services, series)
    outside = sum(s.state in ("below", "above") for s in series)
    return StatusResponse(
        sli=sli.name,
        min=sli.min,
        max=sli.max,
        evaluated_at=at,
        window=params.window,
        state=_sli_state(sli, total == 0, outside > 0, bool(gone)),
        violated=outside > 0 or (sli.missing_data_is_violation and (total == 0 or bool(gone))),
        missing_data_is_violation=sli.missing_data_is_violation,
        series_total=total,
        truncated=total > len(samples) or len(samples) + len(gone) > len(series),
        inside=sum(s.state == "inside" for s in series),
        outside=outside,
        undefined=sum(s.state == "undefined" for s in series),
        no_data=len(gone),
        series=series,
    )


def _sli_state(sli: Sli, matches_nothing: bool, outside: bool, no_data: bool) -> SliStateT:
    if matches_nothing and not outside:
        return "no_data"
    if outside or (no_data and sli.missing_data_is_violation):
        return "violated"
    return "ok"


def _gone_series(
    prometheus: PrometheusClient,
    sli: Sli,
    at: float,
    window: str,
    current: Sequence[InstantSample],
    settings: SlaSettings,
) -> list[RangeSeries]:
    """The SLI's series with a value within ``window`` before ``at`` but not among
    ``current`` (the instant query's result at ``at``), in label-set order; the last of
    each one's timestamps is when it was last seen.

    Evaluations every LOOKBACK_S (or once over a shorter window) see every sample of the
    window. The points are bounded like /violations' (SLA_MAX_POINTS), counted on the
    series the selector returns now.
    """
    window_s = ev.parse_duration(window)
    step = min(LOOKBACK_S, window_s)
    start = at - window_s
    evaluations = ev.evaluation_count(start, at, step)
    points = evaluations * max(len(current), 1)
    if points > settings.sla_max_points:
        raise validation_error(
            ("query", "window"),
            f"{evaluations} evaluations × {len(current)} series = {points} points, more "
            f"than SLA_MAX_POINTS={settings.sla_max_points}: use a shorter window or a "
            "narrower selector",
            window,
        )
    now = {frozenset(s.labels.items()) for s in current}
    seen = prometheus.query_range(sli.selector, start, at, step)
    kept, _total = ev.narrow(seen, labels_of, sli.labels, len(seen))
    return [rs for rs in kept if rs.timestamps.size and frozenset(rs.labels.items()) not in now]


@router.get(
    "/{name}/violations",
    summary="Samples outside the range over a window, merged into intervals",
    description=(
        "A Prometheus range query of the selector from `start` (or `end - window`) to `end` "
        "at `step`; both ends are evaluated. A value is outside when `value < min` or "
        "`value > max` (the bounds are inside; NaN never violates). Consecutive violating "
        "evaluations merge into one interval; a step without a value ends it. `duration_s` "
        "= `end - start + step`: each violating evaluation stands for one step, so a "
        "series' durations add up to `violating × step`. `worst_value` is the value "
        "farthest outside the range. `open_start`/`open_end`: the interval touches the "
        "first/last evaluation and may extend beyond the queried range."
    ),
)
def sli_violations(
    name: SliName,
    store: SliStoreDep,
    params: Annotated[ViolationsQuery, Query()],
    prometheus: PrometheusDep,
    settings: SettingsDep,
) -> ViolationsResponse:
    step = ev.parse_duration(params.step) if params.step else settings.sla_violation_step_s
    end = params.end if params.end is not None else _now()
    window: str | None = None
    if params.start is not None:
        start = params.start
        if start >= end:
            raise validation_error(("query", "start"), "start must be before end (now)", start)
        if end - start > MAX_WINDOW_S:
            raise validation_error(
                ("query", "start"), f"start..end spans more than {MAX_WINDOW_S} s", start
            )
    else:
        window = params.window or "1h"
        start = end - ev.parse_duration(window)
    evaluations = ev.evaluation_count(start, end, step)
    if evaluations > MAX_POINTS_PER_SERIES:
        raise validation_error(
            ("query", "step"),
            f"{evaluations} evaluations per series at a step of {step} s; at most "
            f"{MAX_POINTS_PER_SERIES}: use a larger step or a shorter window",
            params.step,
        )
    sli = sli_or_404(store, name)
    check_range_size(prometheus, sli, end, evaluations, settings)
    result, total = narrow(prometheus.query_range(sli.selector, start, end, step), sli, settings)
    bounds = sli.bounds()
    series = []
    for rs in result:
        found = ev.violations(rs.timestamps, rs.values, bounds, step, start, end)
        samples = None
        if params.samples:
            below = bounds.below(rs.values[found.violating])
            samples = [
                ViolatingSample(
                    timestamp=float(rs.timestamps[i]),
                    value=ev.finite_or_none(float(rs.values[i])),
                    state="below" if b else "above",
                )
                for i, b in zip(found.violating.tolist(), below.tolist(), strict=True)
            ]
        values = None
        if params.values:
            values = [
                (float(t), ev.finite_or_none(float(v)))
                for t, v in zip(rs.timestamps.tolist(), rs.values.tolist(), strict=True)
            ]
        metric, labels = _split(rs.labels)
        gaps = ev.no_data_intervals(rs.timestamps, step, start, end)
        series.append(
            SeriesViolationsOut(
                metric=metric,
                labels=labels,
                evaluations=found.evaluations,
                violating=int(found.violating.size),
                time_outside_s=found.time_outside_s,
                samples=samples,
                values=values,
                no_data_intervals=[
                    NoDataIntervalOut(
                        start=g.start,
                        end=g.end,
                        evaluations=g.evaluations,
                        duration_s=g.duration_s,
                        open_end=g.open_end,
                    )
                    for g in gaps
                ],
                time_no_data_s=sum(g.duration_s for g in gaps),
                violated=found.violating.size > 0 or (bool(gaps) and sli.missing_data_is_violation),
                intervals=[
                    ViolationInterval(
                        start=i.start,
                        end=i.end,
                        samples=i.samples,
                        duration_s=i.duration_s,
                        worst_value=ev.finite_or_none(i.worst_value),
                        worst_at=i.worst_at,
                        open_start=i.open_start,
                        open_end=i.open_end,
                    )
                    for i in found.intervals
                ],
            )
        )
    return ViolationsResponse(
        sli=sli.name,
        min=sli.min,
        max=sli.max,
        window=window,
        start=start,
        end=end,
        step_s=step,
        evaluations_per_series=evaluations,
        state=_sli_state(
            sli,
            total == 0,
            any(s.violating for s in series),
            any(s.no_data_intervals for s in series),
        ),
        violated=any(s.violated for s in series) or (sli.missing_data_is_violation and total == 0),
        missing_data_is_violation=sli.missing_data_is_violation,
        series_total=total,
        truncated=total > len(series),
        violating_series=sum(s.violated for s in series),
        no_data_series=sum(bool(s.no_data_intervals) for s in series),
        series=series,
    )


@router.get(
    "/{name}/forecast-violations",
    summary="Stored forecast points leaving the range within the horizon",
    description=(
        "The series are those the selector returns at `at`; each one's forecast is found "
        "by its series key (metric name, else the selector text, plus its labels), as the "
        "ETL stores it. Points with `at < ts <= at + horizon` are checked. Each point has a "
        "breach probability (that its value is outside the range, from the point's "
        "predictive distribution); the series' `breach_probability` is the largest. In "
        "`mode=probability` (the default) a series is a predicted violation when that is at "
        "least the SLI's `breach_probability_threshold` (default 0.5); in `mode=point` / "
        "`interval80` / `interval95` when a point forecast / 80 % interval / 95 % interval "
        "leaves the range (`leaves_by`: the first of those that applies to a point). A "
        "forecast stored without its distribution (an older ETL) is taken as a normal "
        "around the point forecast with σ = (upper95 − lower95) / 3.92 "
        "(`distribution_source`). Forecasts that are not of what the SLI evaluates "
        "(`comparable: false`) are not compared. A forecast older than two ETL cycles "
        "(2 × ETL_INTERVAL_S) is stale."
    ),
)
def sli_forecast_violations(
    name: SliName,
    store: SliStoreDep,
    params: Annotated[ForecastQuery, Query()],
    prometheus: PrometheusDep,
    forecasts: ForecastStoreDep,
    settings: SettingsDep,
) -> ForecastViolationsResponse:
    sli = sli_or_404(store, name)
    at = params.at if params.at is not None else _now()
    horizon_s = ev.parse_duration(params.horizon)
    current, total = narrow(prometheus.query(sli.selector, time=at), sli, settings)
    refs = []
    for s in current:
        metric, labels = _split(s.labels)
        refs.append((metric, labels, series_key(metric or sli.selector, labels)))
    stored = forecasts.load([key for _m, _l, key in refs], at, at + horizon_s)
    series = [
        _forecast_series(
            sli,
            metric,
            labels,
            key,
            stored.get(key),
            at,
            params.mode,
            settings,
            all_points=params.all_points,
        )
        for metric, labels, key in refs
    ]
    return ForecastViolationsResponse(
        sli=sli.name,
        min=sli.min,
        max=sli.max,
        at=at,
        horizon=params.horizon,
        horizon_s=horizon_s,
        stale_after_s=settings.stale_after_s,
        series_total=total,
        truncated=total > len(series),
        series_without_forecast=sum(s.forecast is None for s in series),
        stale_series=sum(s.forecast is not None and s.forecast.stale for s in series),
        incomparable_series=sum(s.comparable is False for s in series),
        mode=params.mode,
        breach_probability_threshold=sli.breach_probability_threshold,
        probability_method="max_over_points",
        violating_series=sum(s.predicted_violation for s in series),
        series=series,
    )


def _forecast_series(
    sli: Sli,
    metric: str | None,
    labels: dict[str, str],
    key: str,
    stored: StoredForecast | None,
    at: float,
    mode: ev.PredictionMode,
    settings: SlaSettings,
    *,
    all_points: bool = False,
) -> SeriesForecastOut:
    if stored is None or stored.produced_at is None or stored.window_end is None:
        return SeriesForecastOut(
            metric=metric,
            labels=labels,
            series_key=key,
            transform=None,
            forecast=None,
            comparable=None,
            reason_code=None,
            reason=None,
            points=0,
            covered_until=None,
            breach_probability=None,
            distribution=None,
            distribution_source=None,
            predicted_violation=False,
            violations=[],
            first_breach_at=None,
            first_point_breach_at=None,
            leaves_by=None,
        )
    incomparable = ev.forecast_incomparable(sli.selector, stored.transform, stored.selector)
    kinds: list[ev.Breach | None] = []
    counts: list[bool] = []
    dist: ev.Predictive | None = None
    probabilities = np.zeros(0)
    if incomparable is None:  # else nothing is compared
        bounds = sli.bounds()
        kinds = ev.forecast_breaches(
            bounds,
            stored.value,
            stored.lower80,
            stored.upper80,
            stored.lower95,
            stored.upper95,
        )
        dist = stored.predictive()
        probabilities = ev.point_probabilities(bounds, dist)
        counts = ev.predicted(mode, sli.breach_probability_threshold, probabilities, kinds)
    violations = [
        ForecastPointOut(
            **_band(stored, i),
            leaves_by=kinds[i],
            breach_probability=float(probabilities[i]),
        )
        for i, counted in enumerate(counts)
        if counted
    ]
    probability = float(probabilities.max()) if probabilities.size else None
    every = None
    if all_points:
        every = [
            ForecastBandPoint(
                **_band(stored, i),
                breach_probability=float(probabilities[i]) if probabilities.size else None,
            )
            for i in range(len(stored.ts))
        ]
    age = at - stored.produced_at
    return SeriesForecastOut(
        metric=metric,
        labels=labels,
        series_key=key,
        transform=stored.transform,
        forecast=ForecastInfo(
            produced_at=stored.produced_at,
            window_end=stored.window_end,
            age_s=age,
            stale=age > settings.stale_after_s,
            model=stored.model,
        ),
        comparable=incomparable is None,
        reason_code=None if incomparable is None else incomparable[0],
        reason=None if incomparable is None else incomparable[1],
        points=len(stored.ts),
        covered_until=int(stored.ts[-1]) if len(stored.ts) else None,
        breach_probability=probability,
        distribution=None if probability is None or dist is None else dist.distribution,
        distribution_source=None if probability is None or dist is None else dist.source,
        predicted_violation=bool(violations),
        violations=violations,
        all_points=every,
        first_breach_at=violations[0].ts if violations else None,
        first_point_breach_at=next(
            (int(stored.ts[i]) for i, k in enumerate(kinds) if k == "point"), None
        ),
        leaves_by=ev.worst_breach(kinds),
    )


def _band(stored: StoredForecast, i: int) -> dict[str, Any]:
    """Point ``i`` of a stored forecast: its time, point forecast and 80 % / 95 % intervals."""
    return {
        "ts": int(stored.ts[i]),
        "value": float(stored.value[i]),
        "lower80": float(stored.lower80[i]),
        "upper80": float(stored.upper80[i]),
        "lower95": float(stored.lower95[i]),
        "upper95": float(stored.upper95[i]),
    }
