"""``/etl/execution-time``: how long the ETL's analyses and cycles took, from Prometheus;
``/etl/cycles``: which series each cycle analysed and which analyses it skipped, and why,
from what data_storage stored of the ETL's messages (MySQL, :mod:`sla_manager.etl_runs`).

The ETL exposes histograms (``sla_etl_analysis_duration_seconds{analysis}``,
``sla_etl_cycle_duration_seconds``) and per-cycle maximum gauges
(``sla_etl_analysis_cycle_max_seconds{analysis}``, ``sla_etl_last_cycle_duration_seconds``)
on its /metrics; Prometheus scrapes them (SLA_ETL_MATCHERS selects that target). Over the
window ending at ``end``:

- count = the exact increase of the histogram's ``_count`` from its raw samples
  (:func:`counter_increase`): a whole number that never shrinks as the window grows, where
  ``increase()`` extrapolates to the window's edges (fractional, and smaller over a longer
  window when the ETL started inside it);
- p50 / p95 = ``histogram_quantile()`` over the ``increase()`` of the buckets (interpolated
  within a bucket: as precise as the ETL's bucket bounds), capped at max: interpolation
  spreads a bucket's runs evenly up to its upper bound, but no run took longer than the
  slowest one measured;
- max = ``max_over_time()`` of the per-cycle maximum gauges (exact for every scraped cycle).
"""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, HTTPException, Path, Query, status

from sla_common.prometheus import PrometheusClient
from sla_manager.deps import PrometheusDep, ServicesDep, SettingsDep
from sla_manager.errors import PROMQL, UNAVAILABLE, Responses
from sla_manager.etl_runs import CycleRow, EtlRunStore
from sla_manager.evaluation import finite_or_none, parse_duration
from sla_manager.models import (
    AnalysisExecution,
    ErrorBody,
    EtlCycleOut,
    EtlCycleQuery,
    EtlCycleResponse,
    EtlCycleSeriesOut,
    EtlCyclesQuery,
    EtlCyclesResponse,
    ExecutionStats,
    ExecutionTimeQuery,
    ExecutionTimeResponse,
    SeriesSkipOut,
    SkipCountOut,
)

router = APIRouter(prefix="/etl", tags=["etl"], responses={**UNAVAILABLE, **PROMQL})

ANALYSIS_HISTOGRAM = "sla_etl_analysis_duration_seconds"
ANALYSIS_MAX_GAUGE = "sla_etl_analysis_cycle_max_seconds"
CYCLE_HISTOGRAM = "sla_etl_cycle_duration_seconds"
CYCLE_MAX_GAUGE = "sla_etl_last_cycle_duration_seconds"
STATS = ("count", "p50_s", "p95_s", "max_s")
# The count reads raw samples from this long before the window too, for each series' last
# value before it (Prometheus' lookback: a live series is never longer without a sample).
LOOKBACK_S = 300


def counter_increase(timestamps: npt.ArrayLike, values: npt.ArrayLike, since: float) -> float:
    """Exact increase of a counter's raw samples after ``since``, without extrapolation.

    The sum of its rises between consecutive samples (a fall is a restart from zero, as in
    ``rate()``), counted from the last sample at or before ``since``, or from zero when there
    is none (the counter started inside the window). Adding earlier samples can only add
    rises, so the count never shrinks as the window grows.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    vs = np.asarray(values, dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    ts, vs = ts[order], vs[order]
    inside = np.flatnonzero(ts > since)
    if inside.size == 0:
        return 0.0
    first = int(inside[0])
    seq = np.concatenate(([vs[first - 1] if first > 0 else 0.0], vs[first:]))
    rises = np.diff(seq)
    return float(np.where(rises < 0, seq[1:], rises).sum())


def execution_queries(
    histogram: str, max_gauge: str, matchers: str, window_s: int, by: str
) -> dict[str, str]:
    """The queries of one statistic set, aggregated ``by`` (``""``: overall). ``count`` is a
    range selector whose raw samples :func:`counter_increase` counts; the others are PromQL."""
    rng = f"{{{matchers}}}[{window_s}s]"
    by_le = f"{by}, le" if by else "le"
    quantile = "histogram_quantile({q}, sum by ({by_le}) (increase({h}_bucket{rng})))"
    return {
        "count": f"{histogram}_count{{{matchers}}}[{window_s + LOOKBACK_S}s]",
        "p50_s": quantile.format(q=0.5, by_le=by_le, h=histogram, rng=rng),
        "p95_s": quantile.format(q=0.95, by_le=by_le, h=histogram, rng=rng),
        "max_s": f"max by ({by}) (max_over_time({max_gauge}{rng}))",
    }


def capped(stats: dict[str, float | None]) -> dict[str, float | None]:
    """p50/p95 no larger than max, where both are known (see the module's docstring)."""
    top = stats["max_s"]
    if top is None:
        return stats
    return {
        k: (min(v, top) if k in ("p50_s", "p95_s") and v is not None else v)
        for k, v in stats.items()
    }


def _collect(
    prometheus: PrometheusClient, queries: dict[str, str], at: float, window_s: int, label: str
) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for series in prometheus.query_samples(queries["count"], at):
        key = series.labels.get(label, "") if label else ""
        stats = out.setdefault(key, dict.fromkeys(STATS))
        n = counter_increase(series.timestamps, series.values, since=at - window_s)
        stats["count"] = (stats["count"] or 0.0) + n
    for stat, query in queries.items():
        if stat == "count":
            continue
        for sample in prometheus.query(query, time=at):
            key = sample.labels.get(label, "") if label else ""
            out.setdefault(key, dict.fromkeys(STATS))[stat] = finite_or_none(sample.value)
    return {key: capped(stats) for key, stats in out.items()}


@router.get("/execution-time", summary="ETL analysis and cycle times over a window")
def execution_time(
    params: Annotated[ExecutionTimeQuery, Query()],
    prometheus: PrometheusDep,
    settings: SettingsDep,
) -> ExecutionTimeResponse:
    end = params.end if params.end is not None else round(time.time(), 3)
    window_s = parse_duration(params.window)
    m = settings.sla_etl_matchers
    per_analysis = _collect(
        prometheus,
        execution_queries(ANALYSIS_HISTOGRAM, ANALYSIS_MAX_GAUGE, m, window_s, "analysis"),
        end,
        window_s,
        "analysis",
    )
    cycle = _collect(
        prometheus,
        execution_queries(CYCLE_HISTOGRAM, CYCLE_MAX_GAUGE, m, window_s, ""),
        end,
        window_s,
        "",
    ).get("", dict.fromkeys(STATS))
    return ExecutionTimeResponse(
        window=params.window,
        window_s=window_s,
        end=end,
        cycle=ExecutionStats(**cycle),
        analyses=[
            AnalysisExecution(analysis=name, **stats)
            for name, stats in sorted(per_analysis.items())
        ],
    )


def _cycle_out(c: CycleRow) -> dict[str, object]:
    return {
        "run_id": c.run_id,
        "window_start": c.window_start,
        "window_end": c.window_end,
        "step_s": c.step_s,
        "first_produced_at": c.first_produced_at,
        "last_produced_at": c.last_produced_at,
        "series_analysed": c.series_analysed,
        "series_with_skips": c.series_with_skips,
        "skipped": [SkipCountOut(analysis=k.analysis, reason=k.reason, series=k.series)
                    for k in c.skipped],
    }  # fmt: skip


@router.get(
    "/cycles",
    summary="The ETL's cycles over a window: series analysed and analyses skipped, and why",
    description=(
        "One entry per ETL cycle whose window ended within `window` before `end`, newest "
        "first, from what data_storage stored of its messages: how many series it analysed, "
        "how many of them had an analysis skipped, and the skips by analysis and reason."
    ),
)
def etl_cycles(
    params: Annotated[EtlCyclesQuery, Query()], services: ServicesDep
) -> EtlCyclesResponse:
    end = params.end if params.end is not None else round(time.time(), 3)
    window_s = parse_duration(params.window)
    rows = EtlRunStore(services.pool).cycles(end - window_s, end, params.limit)
    return EtlCyclesResponse(
        window=params.window,
        window_s=window_s,
        end=end,
        cycles=[EtlCycleOut.model_validate(_cycle_out(c)) for c in rows],
    )


CYCLE_NOT_FOUND: Responses = {
    404: {"model": ErrorBody, "description": "no cycle of that run id stored"}
}
RunId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


@router.get(
    "/cycles/{run_id}",
    summary="One ETL cycle: each series it analysed, with the analyses skipped and why",
    responses=CYCLE_NOT_FOUND,
)
def etl_cycle(
    run_id: RunId, params: Annotated[EtlCycleQuery, Query()], services: ServicesDep
) -> EtlCycleResponse:
    found = EtlRunStore(services.pool).cycle(run_id, params.limit)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no ETL cycle {run_id!r} stored")
    c, series = found
    return EtlCycleResponse.model_validate(
        {
            **_cycle_out(c),
            "series": [
                EtlCycleSeriesOut(
                    series=s.series,
                    samples=s.samples,
                    skipped=[
                        SeriesSkipOut(analysis=k.analysis, reason=k.reason, detail=k.detail)
                        for k in s.skipped
                    ],
                )
                for s in series
            ],
            "truncated": c.series_analysed > len(series),
        }
    )
