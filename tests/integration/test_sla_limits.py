"""Resource bounds against the real stack's Prometheus (issue 11, item 5).

``max_over_time(sum(rate({__name__=~".+"}[5m]))[7d:1s])`` once kept Prometheus busy for a
minute after the SLA manager gave up, growing it into gigabytes: Prometheus 2.42 checks
neither the query's timeout nor ``--query.max-samples`` while it expands a selector over a
subquery's 604,800 steps. Here the stack's Prometheus (its pid from stack.json) is watched
while the SLA manager is asked for such selectors: the answer is a 4xx well within
PROMETHEUS_TIMEOUT_S, and Prometheus' resident memory grows by less than RSS_GROWTH_MB.
The slot limit and the other fault branches are made to happen on purpose with a fake
Prometheus in tests/unit/test_sla_limits.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sla_common.prometheus import PrometheusClient, PrometheusTimeout
from tests.integration.slautil import app_client
from tests.integration.stackutil import Stack, metric_value, wait_until

TOKEN = "limits-token-2b7e9d41"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT_S = 5.0  # PROMETHEUS_TIMEOUT_S of the app under test
MAX_SERIES = 50
MAX_POINTS = 5000
# Measured on this stack (~1000 series): the refused selector costs Prometheus nothing, the
# 1-minute variant about 15 MB; the unbounded one grew it by 0.8 to 9 GB.
RSS_GROWTH_MB = 256
EXPENSIVE = 'max_over_time(sum(rate({__name__=~".+"}[5m]))[7d:1s])'
# The same at a 1-minute resolution (10,080 steps): sent, and Prometheus rejects it quickly.
EXPENSIVE_1M = 'max_over_time(sum(rate({__name__=~".+"}[5m]))[7d:1m])'
QUERY_RANGE = '{code="200",handler="/api/v1/query_range"}'


def rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class PeakRss:
    """Samples a process' resident memory every 20 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self.peak = rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, rss_mb(self.pid))


@pytest.fixture(scope="module")
def client(
    stack: Stack, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    log = tmp_path_factory.mktemp("limits") / "sla.log"
    with app_client(
        stack,
        database,
        log,
        token=TOKEN,
        timeout=60,
        PROMETHEUS_TIMEOUT_S=str(TIMEOUT_S),
        SLA_MAX_SERIES=str(MAX_SERIES),
        SLA_MAX_POINTS=str(MAX_POINTS),
    ) as c:
        yield c


def _create(client: httpx.Client, name: str, selector: str) -> httpx.Response:
    return client.post(
        "/slis", json={"name": name, "selector": selector, "max": 1e12}, headers=AUTH
    )


def test_the_expensive_selector_is_a_quick_4xx_and_prometheus_memory_stays_bounded(
    stack: Stack, client: httpx.Client
) -> None:
    with PeakRss(stack.pids["prometheus"]) as rss:
        t0 = time.monotonic()
        refused = _create(client, "everything", EXPENSIVE)
        refused_s = time.monotonic() - t0
        t0 = time.monotonic()
        rejected = _create(client, "everything-1m", EXPENSIVE_1M)
        rejected_s = time.monotonic() - t0
    # Refused before it is sent: the subquery's 604,800 steps.
    assert refused.status_code == 422, refused.text
    assert "[7d:1s] evaluates 604800 steps" in refused.text
    # Sent (10,080 steps) and rejected by Prometheus in its own words.
    assert rejected.status_code == 400, rejected.text
    assert rejected.json()["prometheus_error"]
    assert refused_s < TIMEOUT_S and rejected_s < TIMEOUT_S, (refused_s, rejected_s)
    assert rss.peak - rss.before < RSS_GROWTH_MB, (rss.before, rss.peak)
    assert client.get("/slis/everything").status_code == 404  # nothing stored


def test_prometheus_applies_the_timeout_the_client_sends(stack: Stack) -> None:
    # Told one microsecond, Prometheus gives up on any query and says so: proof that the
    # parameter reaches it on both paths (without it the HTTP connect would time out
    # instead, with no word from Prometheus).
    with PrometheusClient(stack.prometheus_url, timeout_s=1e-6) as prom:
        with pytest.raises(PrometheusTimeout, match="query timed out"):
            prom.query("up")
        with pytest.raises(PrometheusTimeout, match="query timed out"):
            prom.query_range("up", time.time() - 600, time.time(), 15)


def test_count_works_for_scalars_and_selectors_ending_in_a_comment(stack: Stack) -> None:
    with PrometheusClient(stack.prometheus_url) as prom:
        now = time.time()
        assert [s.value for s in prom.count("1 + 1", now)] == [1.0]  # a scalar
        labelled = 'label_replace(vector(1), "job", "x", "", "") # one series, job="x"'
        (group,) = prom.count(labelled, now, by=["job"])
        assert group.labels == {"job": "x"} and group.value == 1.0
        assert prom.count("absent_metric_name_zz", now) == []


def _range_queries(stack: Stack) -> float:
    """Range queries Prometheus has answered (its counter appears with the first one)."""
    return max(
        0.0, metric_value(stack.prometheus_port, "prometheus_http_requests_total", QUERY_RANGE)
    )


def test_series_are_counted_before_a_range_query_fetches_them(
    stack: Stack, client: httpx.Client
) -> None:
    # node-exporter's own series (hundreds), scraped since the stack started: now.
    selector = '{__name__=~"node_.+", job="node"}'
    with PrometheusClient(stack.prometheus_url) as prom:
        wait_until(
            lambda: sum(s.value for s in prom.count(selector, time.time())) > MAX_SERIES,
            timeout=60,
            what="node-exporter's series in Prometheus",
        )
    assert _create(client, "node-all", '{__name__=~"node_.+", job="node"}').status_code == 201
    before = _range_queries(stack)
    r = client.get("/slis/node-all/violations?window=1h")
    assert r.status_code == 422, r.text
    assert f"more than SLA_MAX_SERIES={MAX_SERIES}" in r.text
    assert _range_queries(stack) == before  # refused on the count alone


def test_points_are_capped_before_a_range_query_fetches_them(
    stack: Stack, client: httpx.Client
) -> None:
    assert _create(client, "fd", 'node_filefd_allocated{job="host"}').status_code == 201
    end = stack.demo_end
    before = _range_queries(stack)
    # 3 h at 1 s: 10,801 evaluations (under Prometheus' 11,000) × 1 series > 5000.
    r = client.get(f"/slis/fd/violations?window=3h&step=1s&end={end}")
    assert r.status_code == 422, r.text
    assert f"10801 points, more than SLA_MAX_POINTS={MAX_POINTS}" in r.text
    assert _range_queries(stack) == before
    ok = client.get(f"/slis/fd/violations?window=12h&step=15s&end={end}")
    assert ok.status_code == 200, ok.text
    assert ok.json()["evaluations_per_series"] == 2881 and ok.json()["series_total"] == 1
    assert _range_queries(stack) == before + 1
