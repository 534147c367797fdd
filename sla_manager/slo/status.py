"""``GET /slos/{name}``: an SLO's compliance, budget and burn rates, from Prometheus.

By default from the generated rules' series (``source=recording_rules``): one instant query
returns every window's error ratio of the SLO, whatever its period, so a 30-day answer costs
what a 5-minute one does. ``source=raw`` computes the same figures from the SLI itself (one
query per window, over every raw sample or evaluation in it): the baseline the benchmark
compares with, and an answer for an SLO whose rules Prometheus has not evaluated yet.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sla_common.prometheus import MAX_POINTS_PER_QUERY, PrometheusClient
from sla_common.series import series_key
from sla_manager import evaluation as ev
from sla_manager.evaluation import parse_duration
from sla_manager.models import Sli
from sla_manager.slo import budget
from sla_manager.slo.breach import SliForecast, bad_fraction
from sla_manager.slo.model import (
    BudgetHistoryOut,
    BudgetOut,
    BurnRateOut,
    ProjectionOut,
    Slo,
    SloStatus,
)
from sla_manager.slo.rules import ERROR_RATIO, TOTAL_RATE, RuleConfig, good_expr, promql_string
from sla_manager.store import ForecastStore

Source = Literal["recording_rules", "raw_queries"]
_SERIES = re.compile(r"^slo:(sli_error:ratio_rate|sli_total:rate)([0-9]+[smhdw])$")


def read_recorded(
    prometheus: PrometheusClient, slo: str, at: float
) -> tuple[dict[str, float], dict[str, float]]:
    """(window → error ratio, window → total event rate) of the SLO's recorded series."""
    query = f'{{__name__=~"{ERROR_RATIO}.+|{TOTAL_RATE}.+",slo={promql_string(slo)}}}'
    ratios: dict[str, float] = {}
    totals: dict[str, float] = {}
    for sample in prometheus.query(query, at):
        m = _SERIES.match(sample.labels.get("__name__", ""))
        if m is None:
            continue
        target = ratios if m.group(1).startswith("sli_error") else totals
        target[m.group(2)] = sample.value
    return ratios, totals


def _one(prometheus: PrometheusClient, query: str, at: float) -> float | None:
    samples = prometheus.query(query, at)
    return samples[0].value if samples else None


def raw_ratio_expr(slo: Slo, sli: Sli | None, window: str, step_s: int) -> str | None:
    """PromQL of the SLO's error ratio over ``window`` from the SLI itself (None: a
    threshold SLO whose SLI is gone)."""
    spec = slo.spec()
    if spec.ratio is not None:
        return f"({spec.ratio.errors_at(window)}) / ({spec.ratio.total_at(window)})"
    if sli is None:
        return None
    step = subquery_step(parse_duration(window), step_s)
    return f"1 - avg_over_time(({good_expr(sli)})[{window}:{step}s])"


def read_raw(
    prometheus: PrometheusClient,
    slo: Slo,
    sli: Sli | None,
    windows: list[str],
    step_s: int,
    at: float,
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """The same figures from the SLI itself (no recording rules)."""
    ratios: dict[str, float | None] = {}
    totals: dict[str, float | None] = {}
    spec = slo.spec()
    for w in windows:
        expr = raw_ratio_expr(slo, sli, w, step_s)
        ratios[w] = None if expr is None else _one(prometheus, expr, at)
    if spec.ratio is not None:
        totals[slo.period] = _one(prometheus, spec.ratio.total_at(slo.period), at)
    return ratios, totals


def subquery_step(window_s: int, step_s: int) -> int:
    """``step_s``, or the smallest multiple of it that keeps a subquery over ``window_s``
    within the client's MAX_POINTS_PER_QUERY (a 30-day window at 60 s would be 43,200
    steps: it is evaluated at 240 s instead, like any user's query would have to be)."""
    multiple = -(-window_s // (step_s * MAX_POINTS_PER_QUERY))  # ceiling division
    return step_s * max(1, multiple)


@dataclass(frozen=True)
class ForecastSource:
    """Where a threshold SLO's projection comes from."""

    forecasts: ForecastStore
    horizon_s: int
    stale_after_s: float
    max_series: int


def project(
    prometheus: PrometheusClient,
    source: ForecastSource,
    sli: Sli,
    budget_total: float,
    remaining: float | None,
    period_s: float,
    at: float,
) -> ProjectionOut | None:
    """The forecast's bad fraction over the horizon as a burn rate, and the exhaustion it
    implies (with the interval the 95 % bands give); None without fresh forecasts."""
    current, _n = ev.narrow(
        prometheus.query(sli.selector, time=at), lambda i: i.labels, sli.labels, source.max_series
    )
    keys = [
        series_key(c.labels.get("__name__") or sli.selector,
                   {k: v for k, v in c.labels.items() if k != "__name__"})
        for c in current
    ]  # fmt: skip
    stored = source.forecasts.load(keys, at, at + source.horizon_s)
    fresh = [
        (f.ts, SliForecast(f.value, f.lower95, f.upper95, f.predictive()))
        for f in stored.values()
        if f.produced_at is not None
        and at - f.produced_at <= source.stale_after_s
        and ev.forecast_incomparable(sli.selector, f.transform, f.selector) is None
    ]
    frac = bad_fraction(sli.bounds(), fresh)
    if frac is None:
        return None
    burn, low, high = (x / budget_total for x in (frac.expected, frac.low, frac.high))
    return ProjectionOut(
        horizon_s=source.horizon_s,
        forecast_points=frac.points,
        bad_fraction=frac.expected,
        bad_fraction_low=frac.low,
        bad_fraction_high=frac.high,
        burn_rate=burn,
        burn_rate_low=low,
        burn_rate_high=high,
        exhaustion_s=budget.time_to_exhaustion(remaining, burn, period_s),
        exhaustion_s_earliest=budget.time_to_exhaustion(remaining, high, period_s),
        exhaustion_s_latest=budget.time_to_exhaustion(remaining, low, period_s),
    )


def status(
    prometheus: PrometheusClient,
    slo: Slo,
    config: RuleConfig,
    current_window: str,
    *,
    source: Source = "recording_rules",
    sli: Sli | None = None,
    raw_step_s: int = 60,
    at: float | None = None,
    forecasts: ForecastSource | None = None,
) -> SloStatus:
    when = time.time() if at is None else at
    period = slo.period
    windows = list(dict.fromkeys([*config.status_windows, current_window]))
    ratios: Mapping[str, float | None]
    totals: Mapping[str, float | None]
    if source == "recording_rules":
        ratios, totals = read_recorded(prometheus, slo.name, when)
    else:
        ratios, totals = read_raw(prometheus, slo, sli, [*windows, period], raw_step_s, when)
    period_key = next((w for w in ratios if parse_duration(w) == slo.spec().period_s), period)
    figures = budget.figures(
        slo.objective,
        slo.spec().period_s,
        ratios.get(period_key),
        {w: ratios.get(w) for w in windows},
        current_window,
        threshold=slo.sli is not None,
        period_total_rate=totals.get(period_key),
    )
    b = figures.budget
    projection = None
    if forecasts is not None and sli is not None:
        projection = project(
            prometheus, forecasts, sli, b.total, b.remaining, slo.spec().period_s, when
        )
    return SloStatus(
        slo=slo.name,
        definition=slo,
        kind="threshold" if slo.sli is not None else "ratio",
        objective=slo.objective,
        period=period,
        evaluated_at=when,
        compliance=figures.compliance,
        meets_objective=figures.meets_objective,
        budget=BudgetOut(
            total=b.total,
            consumed=b.consumed,
            remaining=b.remaining,
            total_s=b.total_s,
            consumed_s=b.consumed_s,
            total_events=b.total_events,
            consumed_events=b.consumed_events,
        ),
        burn_rates=[
            BurnRateOut(
                window=w,
                error_ratio=budget.finite(ratios.get(w)),
                burn_rate=figures.burn_rates.get(w),
            )
            for w in config.status_windows
        ],
        burn_rate_window=current_window,
        exhaustion_s=figures.exhaustion_s,
        source=source,
        projection=projection,
    )


def history_grid(period_s: int, points: int, end: float) -> tuple[float, int]:
    """(start, step) of ``points`` times spread over the period ending at ``end``: the step
    is the period over ``points - 1``, rounded up to a whole second."""
    step = max(1, -(-period_s // (points - 1)))
    return end - step * (points - 1), step


def budget_history(
    prometheus: PrometheusClient,
    slo: Slo,
    sli: Sli | None,
    *,
    source: Source,
    raw_step_s: int,
    end: float,
    points: int,
) -> BudgetHistoryOut:
    """The budget left at ``points`` times over the period ending at ``end``: one range query
    of the period's error ratio (the recorded series, or the raw expression), each point
    what :func:`status` answers at its time."""
    period_s = slo.spec().period_s
    start, step = history_grid(period_s, points, end)
    total = budget.error_budget(slo.objective)
    if source == "recording_rules":
        query: str | None = f'{{__name__=~"{ERROR_RATIO}.+",slo={promql_string(slo.name)}}}'
    else:
        query = raw_ratio_expr(slo, sli, slo.period, raw_step_s)
    found: dict[float, float] = {}
    if query is not None:
        for rs in prometheus.query_range(query, start, end, step):
            m = _SERIES.match(rs.labels.get("__name__", ""))
            other = m is None or parse_duration(m.group(2)) != period_s
            if source == "recording_rules" and other:
                continue  # another window's recorded ratio
            for t, v in zip(rs.timestamps.tolist(), rs.values.tolist(), strict=True):
                found[round(t, 3)] = v
    out: list[tuple[float, float | None]] = []
    for k in range(points):
        t = round(start + k * step, 3)
        e = budget.finite(found.get(t))
        out.append((t, None if e is None else 1.0 - e / total))
    return BudgetHistoryOut(
        slo=slo.name,
        period=slo.period,
        source=source,
        start=start,
        end=end,
        step_s=step,
        budget_total=total,
        points=out,
    )
