"""``/slis/{name}/status|violations|forecast-violations``: an SLI evaluated against its range.

Which series an SLI covers: those its selector returns (Prometheus), kept when they carry
every label of the SLI's ``labels`` with exactly that value, in label-set order, at most
SLA_MAX_SERIES of them (``truncated`` says when more matched).

Before a range query fetches anything, an instant ``count by (<the SLI's label names>)``
at ``end`` says how many series it would return: more than SLA_MAX_SERIES kept by the
labels, or more than SLA_MAX_POINTS evaluations × series fetched, is a 422 without the
range query ever being sent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query

from sla_common.prometheus import InstantSample, PrometheusClient, RangeSeries
from sla_common.series import series_key
from sla_manager import evaluation as ev
from sla_manager.deps import (
    ForecastStoreDep,
    PrometheusDep,
    SettingsDep,
    SliName,
    SliStoreDep,
    sli_or_404,
)
from sla_manager.errors import NOT_FOUND, PROMQL, UNAVAILABLE, validation_error
from sla_manager.models import (
    MAX_POINTS_PER_SERIES,
    MAX_WINDOW_S,
    ForecastInfo,
    ForecastPointOut,
    ForecastQuery,
    ForecastViolationsResponse,
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
from sla_manager.settings import SlaSettings
from sla_manager.store import StoredForecast

T = TypeVar("T", InstantSample, RangeSeries)

router = APIRouter(
    prefix="/slis", tags=["evaluations"], responses={**UNAVAILABLE, **NOT_FOUND, **PROMQL}
)


def _now() -> float:
    return round(time.time(), 3)  # Prometheus resolves time to milliseconds


def _narrow(items: Sequence[T], sli: Sli, settings: SlaSettings) -> tuple[list[T], int]:
    """The SLI's series among a query's result: its labels filter, its order, its cap."""
    return ev.narrow(items, _labels_of, sli.labels, settings.sla_max_series)


def _labels_of(item: InstantSample | RangeSeries) -> Mapping[str, str]:
    return item.labels


def _check_range_size(
    prometheus: PrometheusClient, sli: Sli, at: float, evaluations: int, settings: SlaSettings
) -> None:
    """422 when the range query would return too much (see the module doc)."""
    groups = prometheus.count(sli.selector, at, by=sorted(sli.labels))
    fetched = sum(int(g.value) for g in groups)
    kept = sum(
        int(g.value) for g in groups if all(g.labels.get(k) == v for k, v in sli.labels.items())
    )
    if kept > settings.sla_max_series:
        raise validation_error(
            ("path", "name"),
            f"the SLI's selector gives {kept} series at {at}, more than SLA_MAX_SERIES="
            f"{settings.sla_max_series}: narrow the selector or the SLI's labels",
            sli.name,
        )
    if evaluations * fetched > settings.sla_max_points:
        raise validation_error(
            ("query", "step"),
            f"{evaluations} evaluations × {fetched} series = {evaluations * fetched} points, "
            f"more than SLA_MAX_POINTS={settings.sla_max_points}: use a larger step, a "
            "shorter window or a narrower selector",
            None,
        )


def _split(labels: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    return labels.get("__name__"), {k: v for k, v in labels.items() if k != "__name__"}


@router.get("/{name}/status", summary="Current value of each series, inside the range or not")
def sli_status(
    name: SliName,
    store: SliStoreDep,
    params: Annotated[StatusQuery, Query()],
    prometheus: PrometheusDep,
    settings: SettingsDep,
) -> StatusResponse:
    sli = sli_or_404(store, name)
    at = params.time if params.time is not None else _now()
    samples, total = _narrow(prometheus.query(sli.selector, time=at), sli, settings)
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
            )
        )
    return StatusResponse(
        sli=sli.name,
        min=sli.min,
        max=sli.max,
        evaluated_at=at,
        series_total=total,
        truncated=total > len(series),
        inside=sum(s.state == "inside" for s in series),
        outside=sum(s.state in ("below", "above") for s in series),
        undefined=sum(s.state == "undefined" for s in series),
        series=series,
    )


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
    _check_range_size(prometheus, sli, end, evaluations, settings)
    result, total = _narrow(prometheus.query_range(sli.selector, start, end, step), sli, settings)
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
        metric, labels = _split(rs.labels)
        series.append(
            SeriesViolationsOut(
                metric=metric,
                labels=labels,
                evaluations=found.evaluations,
                violating=int(found.violating.size),
                time_outside_s=found.time_outside_s,
                samples=samples,
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
        series_total=total,
        truncated=total > len(series),
        violating_series=sum(s.violating > 0 for s in series),
        series=series,
    )


@router.get(
    "/{name}/forecast-violations",
    summary="Stored forecast points leaving the range within the horizon",
    description=(
        "The series are those the selector returns at `at`; each one's forecast is found "
        "by its series key (metric name, else the selector text, plus its labels), as the "
        "ETL stores it. Points with `at < ts <= at + horizon` are checked; a point leaves "
        "the range by its point forecast, else by its 80 % interval, else by its 95 % "
        "interval. A forecast older than two ETL cycles (2 × ETL_INTERVAL_S) is stale."
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
    current, total = _narrow(prometheus.query(sli.selector, time=at), sli, settings)
    refs = []
    for s in current:
        metric, labels = _split(s.labels)
        refs.append((metric, labels, series_key(metric or sli.selector, labels)))
    stored = forecasts.load([key for _m, _l, key in refs], at, at + horizon_s)
    series = [
        _forecast_series(sli.bounds(), metric, labels, key, stored.get(key), at, settings)
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
        violating_series=sum(s.leaves_by is not None for s in series),
        series=series,
    )


def _forecast_series(
    bounds: ev.Bounds,
    metric: str | None,
    labels: dict[str, str],
    key: str,
    stored: StoredForecast | None,
    at: float,
    settings: SlaSettings,
) -> SeriesForecastOut:
    if stored is None or stored.produced_at is None or stored.window_end is None:
        return SeriesForecastOut(
            metric=metric,
            labels=labels,
            series_key=key,
            transform=None,
            forecast=None,
            points=0,
            covered_until=None,
            violations=[],
            first_breach_at=None,
            first_point_breach_at=None,
            leaves_by=None,
        )
    kinds = ev.forecast_breaches(
        bounds, stored.value, stored.lower80, stored.upper80, stored.lower95, stored.upper95
    )
    violations = [
        ForecastPointOut(
            ts=int(stored.ts[i]),
            value=float(stored.value[i]),
            lower80=float(stored.lower80[i]),
            upper80=float(stored.upper80[i]),
            lower95=float(stored.lower95[i]),
            upper95=float(stored.upper95[i]),
            leaves_by=kind,
        )
        for i, kind in enumerate(kinds)
        if kind is not None
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
        points=len(stored.ts),
        covered_until=int(stored.ts[-1]) if len(stored.ts) else None,
        violations=violations,
        first_breach_at=violations[0].ts if violations else None,
        first_point_breach_at=next((v.ts for v in violations if v.leaves_by == "point"), None),
        leaves_by=ev.worst_breach(kinds),
    )
