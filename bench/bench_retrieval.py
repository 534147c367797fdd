"""gRPC retrieval: points/s streamed to the async client, server peak RSS, ADF latency.

Data: 100 series x 12 h of 15 s Hodrick-Prescott points (~288,000 rows) analysed by the ETL's
own code and written by data_storage's Writer into a fresh database on the MySQL of the
environment (MYSQL_*; ``make bench`` sources the stack's), dropped afterwards.

The server runs as a subprocess (``python -m data_retrieval``), so its peak RSS (VmHWM) is
its own. Measured in the same run:

- ``stream``: one ``ListHodrickPrescott`` stream of the whole metric (100 series) into the
  async client, as shipped (packed pages of RETRIEVAL_PAGE_SIZE); median of ``repeats``.
- baselines, each the obvious alternative with everything else equal: ``rows`` decodes
  one database row per point (RETRIEVAL_PACKED_PAGES=false); ``one_per_message`` sends
  one point per message and per query (RETRIEVAL_PAGE_SIZE=1; a 10-series subset, it is
  slow). Ratios are ours / baseline.
- ``adf``: ``GetDickeyFuller`` latency, ``ADF_CALLS`` calls with ``ADF_IN_FLIGHT`` in flight.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from typing import Any

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval.client.api import RetrievalClient
from data_retrieval.settings import RetrievalSettings
from sla_common.mysql import MysqlSettings
from sla_common.settings import load_settings
from tests.integration.retrievalutil import ServerProcess, TempDatabase, synthetic_messages

METRIC = "bench_retrieval_gauge"
SERIES = 100
WINDOW_S = 12 * 3600
END = 1_767_225_600  # fixed: the same data every run
ADF_CALLS = 2000
ADF_IN_FLIGHT = 16
ADF_WARMUP = 400
SUBSET = 10  # series streamed by the slow one-point-per-message baseline
TARGET_POINTS_PER_S = 200_000
TARGET_P99_MS = 20.0


async def _stream_points(target: str, selectors: list[pb.SeriesSelector]) -> tuple[int, float]:
    """Points received from one stream per selector, one after the other, and the time."""
    async with RetrievalClient(target, timeout_s=600) as client:
        t0 = time.perf_counter()
        points = 0
        for sel in selectors:
            async for page in client.hodrick_prescott(sel):
                points += len(page.points)
        return points, time.perf_counter() - t0


def stream_rate(target: str, selectors: list[pb.SeriesSelector], repeats: int) -> dict[str, Any]:
    asyncio.run(_stream_points(target, selectors[:1]))  # warm-up: connections, caches
    runs = [asyncio.run(_stream_points(target, selectors)) for _ in range(repeats)]
    rates = [n / s for n, s in runs]
    return {
        "points": runs[0][0],
        "points_per_s_median": statistics.median(rates),
        "seconds_median": statistics.median(s for _, s in runs),
        "runs_points_per_s": rates,
    }


async def _adf_latencies(target: str, keys: list[str], calls: int, in_flight: int) -> list[float]:
    async with RetrievalClient(target, timeout_s=30) as client:

        async def run(n: int) -> list[float]:
            latencies: list[float] = []
            next_call = iter(range(n))

            async def worker() -> None:
                for i in next_call:
                    sel = pb.SeriesSelector(series_key=keys[i % len(keys)])
                    t0 = time.perf_counter()
                    await client.dickey_fuller(sel)
                    latencies.append(time.perf_counter() - t0)

            await asyncio.gather(*(worker() for _ in range(in_flight)))
            return latencies

        await run(ADF_WARMUP)  # connections, caches, the client's channel: not measured
        return await run(calls)


def adf_latency(target: str, keys: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    lat = sorted(asyncio.run(_adf_latencies(target, keys, ADF_CALLS, ADF_IN_FLIGHT)))
    wall = time.perf_counter() - t0
    q = statistics.quantiles(lat, n=100)
    return {
        "calls": len(lat),
        "in_flight": ADF_IN_FLIGHT,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "max_ms": lat[-1] * 1000,
        "calls_per_s": len(lat) / wall,
    }


def measure(repeats: int = 3) -> dict[str, Any]:
    repeats = max(3, repeats)
    base = load_settings(MysqlSettings)
    page_size = RetrievalSettings.model_fields["retrieval_page_size"].default
    msgs = synthetic_messages(METRIC, SERIES, end=END, window_s=WINDOW_S)
    keys = [m.series.key for m in msgs]
    everything = [pb.SeriesSelector(metric=METRIC)]  # one stream, all 100 series
    out: dict[str, Any] = {
        "series": SERIES,
        "window_h": WINDOW_S // 3600,
        "page_size": page_size,
        # the figures are only as quiet as the machine: record how busy it was
        "load_avg_1m_before": os.getloadavg()[0],
    }
    with TempDatabase(base, prefix="bench_rt") as db:
        t0 = time.perf_counter()
        db.store(msgs, batch=10)
        out["load_s"] = time.perf_counter() - t0
        out["stored_hp_points"] = int(db.query("SELECT COUNT(*) FROM hp_points")[0][0])
        with ServerProcess(db.settings) as server:
            out["stream"] = stream_rate(server.target, everything, repeats)
            out["server_peak_rss_mb"] = server.peak_rss_kb() / 1024
            out["adf"] = adf_latency(server.target, keys)
        with ServerProcess(db.settings, RETRIEVAL_PACKED_PAGES="false") as server:
            out["baseline_rows"] = stream_rate(server.target, everything, repeats)
        subset = [pb.SeriesSelector(series_key=k) for k in keys[:SUBSET]]
        with ServerProcess(db.settings, RETRIEVAL_PAGE_SIZE="1") as server:
            out["baseline_one_per_message"] = {
                **stream_rate(server.target, subset, 1),
                "series": SUBSET,
            }
    out["load_avg_1m_after"] = os.getloadavg()[0]
    ours = out["stream"]["points_per_s_median"]
    out["ratio_vs_rows"] = ours / out["baseline_rows"]["points_per_s_median"]
    out["ratio_vs_one_per_message"] = ours / out["baseline_one_per_message"]["points_per_s_median"]
    out["targets"] = {
        "points_per_s": TARGET_POINTS_PER_S,
        "p99_ms": TARGET_P99_MS,
        "met": ours >= TARGET_POINTS_PER_S and out["adf"]["p99_ms"] < TARGET_P99_MS,
    }
    return out


def summary(result: dict[str, Any]) -> str:
    s, a = result["stream"], result["adf"]
    return (
        f"retrieval: {s['points_per_s_median']:,.0f} points/s streamed "
        f"({s['points']:,} HP points of {result['series']} series x {result['window_h']} h, "
        f"median of {len(s['runs_points_per_s'])}; page {result['page_size']}); server peak "
        f"RSS {result['server_peak_rss_mb']:.0f} MB; baselines: row-per-point decoding "
        f"{result['baseline_rows']['points_per_s_median']:,.0f} points/s "
        f"(x{result['ratio_vs_rows']:.1f}), one point per message "
        f"{result['baseline_one_per_message']['points_per_s_median']:,.0f} points/s "
        f"(x{result['ratio_vs_one_per_message']:.0f}); GetDickeyFuller p50 {a['p50_ms']:.1f} ms "
        f"p99 {a['p99_ms']:.1f} ms ({a['calls']} calls, {a['in_flight']} in flight, "
        f"{a['calls_per_s']:,.0f}/s); targets "
        f"{'met' if result['targets']['met'] else 'NOT met'} (load average "
        f"{result['load_avg_1m_before']:.1f} before, {result['load_avg_1m_after']:.1f} after)"
    )


if __name__ == "__main__":
    import json
    import sys

    res = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    sys.stdout.write(json.dumps(res, indent=2) + "\n" + summary(res) + "\n")
