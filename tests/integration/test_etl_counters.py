"""Counters through a real Prometheus: rates as Prometheus computes them, types from its metadata.

A private Prometheus (Debian's 2.42, loopback, free port) serves promtool-backfilled counters
rising exactly 2/s, scraped every 30 s and every 60 s at times off the 15 s analysis grid
(no metadata: backfilled series are typed by their name), and scrapes a tiny exporter this test
runs, whose counter, histogram and ``*_count``-named gauge are typed by ``/api/v1/metadata``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from etl_data_pipeline.metrics import EtlMetrics
from etl_data_pipeline.pipeline import Pipeline
from etl_data_pipeline.settings import EtlSettings
from sla_common.prometheus import PrometheusClient
from tests.integration.stackutil import (
    HOST,
    free_port,
    private_prometheus,
    promtool_blocks,
    run_bounded,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RATE = 2.0  # per second, every counter here
HISTORY_S = 3 * 3600
STEP = 15
# scrape interval -> offset of its samples from the 15 s grid (seconds)
SCRAPES = {30: 7, 60: 23}


@dataclass(frozen=True)
class Env:
    url: str
    end: int  # last backfilled sample at or before this, aligned to STEP
    exporter: CollectorRegistry


def _openmetrics(end: int) -> str:
    lines = ["# TYPE sla_test_jobs counter"]
    counters: list[tuple[str, int, int]] = []
    for interval, offset in SCRAPES.items():
        counters.append((f'sla_test_jobs_total{{scrape="{interval}s"}}', interval, offset))
    for name, interval, offset in counters:
        first = end - HISTORY_S + offset
        for t in range(first, end, interval):
            lines.append(f"{name} {1000.0 + RATE * (t - first)} {t}")
    # a *_count series with no type: the suffix makes it a counter
    lines.append("# TYPE sla_test_batches_count unknown")
    first = end - HISTORY_S + 11
    for t in range(first, end, 30):
        lines.append(f'sla_test_batches_count{{scrape="30s"}} {RATE * (t - first)} {t}')
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("etl_counters")
    # near now: Prometheus drops blocks older than its retention when it starts
    end = (int(time.time()) - 120) // STEP * STEP
    om = root / "counters.om"
    om.write_text(_openmetrics(end))
    data = root / "data"
    promtool_blocks(om, data)

    registry = CollectorRegistry()
    Counter("sla_probe_requests", "requests", registry=registry).inc(5)
    Gauge("sla_probe_queue_count", "a gauge named like a count", registry=registry).set(3)
    Histogram("sla_probe_latency_seconds", "latency", registry=registry).observe(0.2)
    port = free_port()
    server, thread = start_http_server(port, addr=HOST, registry=registry)
    config = (
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: probe\n"
        f"    static_configs:\n      - targets: ['{HOST}:{port}']\n"
    )
    try:
        with private_prometheus(config, data, root) as url:
            yield Env(url, end, registry)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _pipeline(url: str, selectors: tuple[str, ...]) -> Pipeline:
    settings = EtlSettings(prometheus_url=url, etl_selectors=selectors, etl_step_s=STEP)
    return Pipeline(settings, EtlMetrics())


def test_backfilled_counters_scraped_at_30_and_60_s_give_the_true_rate_at_a_15_s_step(
    env: Env,
) -> None:
    p = _pipeline(env.url, ("sla_test_jobs_total", 'sla_test_batches_count{scrape="30s"}'))
    try:
        start = env.end - 2 * 3600  # well inside the history: every rate() window is full
        series, errors = p.fetch(start, env.end)
    finally:
        p.close()
    assert errors == []
    by_key = {fs.ref.key: fs for fs in series}
    assert sorted(by_key) == [
        'sla_test_batches_count{scrape="30s"}',
        'sla_test_jobs_total{scrape="30s"}',
        'sla_test_jobs_total{scrape="60s"}',
    ]
    for fs in series:
        # backfilled series have no metadata: typed by the name's suffix
        assert (fs.ref.transform, fs.ref.metric_type, fs.ref.type_source) == (
            "rate",
            "counter",
            "suffix",
        )
        assert fs.ref.rate_window_s == 240
        assert fs.values.size == 2 * 3600 // STEP + 1  # one rate per 15 s step
        assert np.all(np.diff(fs.timestamps) == STEP)
        np.testing.assert_allclose(fs.values, RATE, rtol=0.01, err_msg=fs.ref.key)


def test_the_metadata_types_scraped_series_and_wins_over_the_name(env: Env) -> None:
    with PrometheusClient(env.url) as prom:

        def scraped() -> int | None:
            # a time at which the probe's samples and metadata are both in Prometheus
            at = int(time.time())
            ready = len(prom.metadata()) >= 3 and prom.query("sla_probe_requests_total", at)
            return at if ready else None

        now = wait_until(scraped, timeout=60, what="the probe scraped with its metadata")
        assert prom.metadata("sla_probe_queue_count") == {"sla_probe_queue_count": "gauge"}
    selectors = (
        "sla_probe_requests_total",
        "sla_probe_queue_count",
        "sla_probe_latency_seconds_count",
        'sla_probe_latency_seconds_bucket{le="+Inf"}',
    )
    p = _pipeline(env.url, selectors)
    try:
        series, errors = p.fetch(now - 120, now)
    finally:
        p.close()
    assert errors == []
    types = {fs.ref.metric: (fs.ref.metric_type, fs.ref.type_source) for fs in series}
    assert types == {
        "sla_probe_requests_total": ("counter", "metadata"),
        "sla_probe_queue_count": ("gauge", "metadata"),  # the suffix alone would say counter
        "sla_probe_latency_seconds_count": ("counter", "metadata"),
        "sla_probe_latency_seconds_bucket": ("counter", "metadata"),
    }
    gauge = next(fs for fs in series if fs.ref.metric == "sla_probe_queue_count")
    assert gauge.ref.transform == "none" and set(gauge.values.tolist()) == {3.0}


def test_once_exits_3_and_says_why_when_no_selector_matched(env: Env, tmp_path: Path) -> None:
    proc = run_bounded(
        [sys.executable, "-m", "etl_data_pipeline", "--once", "--end", str(env.end)],
        timeout=120,
        env={
            **os.environ,
            "PROMETHEUS_URL": env.url,
            "ETL_SELECTORS": 'sla_nothing_here_total;sla_test_jobs_total{scrape="never"}',
            "KAFKA_BOOTSTRAP_SERVERS": f"{HOST}:{free_port()}",  # not needed: nothing to send
        },
    )
    assert proc.returncode == 3, proc.stdout
    assert "matched no series" in proc.stdout
    assert "no series published: no selector matched any series" in proc.stdout
    assert " ok: " not in proc.stdout
