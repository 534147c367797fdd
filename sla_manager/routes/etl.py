"""``/etl/execution-time``: how long the ETL's analyses and cycles took, from Prometheus.

The ETL exposes histograms (``sla_etl_analysis_duration_seconds{analysis}``,
``sla_etl_cycle_duration_seconds``) and per-cycle maximum gauges
(``sla_etl_analysis_cycle_max_seconds{analysis}``, ``sla_etl_last_cycle_duration_seconds``)
on its /metrics; Prometheus scrapes them (SLA_ETL_MATCHERS selects that target). Over the
window ending at ``end``:

- count = ``increase()`` of the histogram's ``_count`` (Prometheus extrapolates to the
  window's edges, so it can be fractional);
- p50 / p95 = ``histogram_quantile()`` over the ``increase()`` of the buckets (interpolated
  within a bucket: as precise as the ETL's bucket bounds);
- max = ``max_over_time()`` of the per-cycle maximum gauges (exact for every scraped cycle).
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from sla_common.prometheus import PrometheusClient
from sla_manager.deps import PrometheusDep, SettingsDep
from sla_manager.errors import PROMQL, UNAVAILABLE
from sla_manager.evaluation import finite_or_none, parse_duration
from sla_manager.models import (
    AnalysisExecution,
    ExecutionStats,
    ExecutionTimeQuery,
    ExecutionTimeResponse,
)

router = APIRouter(prefix="/etl", tags=["etl"], responses={**UNAVAILABLE, **PROMQL})

ANALYSIS_HISTOGRAM = "sla_etl_analysis_duration_seconds"
ANALYSIS_MAX_GAUGE = "sla_etl_analysis_cycle_max_seconds"
CYCLE_HISTOGRAM = "sla_etl_cycle_duration_seconds"
CYCLE_MAX_GAUGE = "sla_etl_last_cycle_duration_seconds"
STATS = ("count", "p50_s", "p95_s", "max_s")


def execution_queries(
    histogram: str, max_gauge: str, matchers: str, window_s: int, by: str
) -> dict[str, str]:
    """The four PromQL queries of one statistic set, aggregated ``by`` (``""``: overall)."""
    rng = f"{{{matchers}}}[{window_s}s]"
    by_le = f"{by}, le" if by else "le"
    quantile = "histogram_quantile({q}, sum by ({by_le}) (increase({h}_bucket{rng})))"
    return {
        "count": f"sum by ({by}) (increase({histogram}_count{rng}))",
        "p50_s": quantile.format(q=0.5, by_le=by_le, h=histogram, rng=rng),
        "p95_s": quantile.format(q=0.95, by_le=by_le, h=histogram, rng=rng),
        "max_s": f"max by ({by}) (max_over_time({max_gauge}{rng}))",
    }


def _collect(
    prometheus: PrometheusClient, queries: dict[str, str], at: float, label: str
) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for stat, query in queries.items():
        for sample in prometheus.query(query, time=at):
            key = sample.labels.get(label, "") if label else ""
            out.setdefault(key, dict.fromkeys(STATS))[stat] = finite_or_none(sample.value)
    return out


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
        "analysis",
    )
    cycle = _collect(
        prometheus, execution_queries(CYCLE_HISTOGRAM, CYCLE_MAX_GAUGE, m, window_s, ""), end, ""
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
