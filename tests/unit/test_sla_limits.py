"""Resource bounds of the SLA manager and its Prometheus client (issue 11, item 5), against a
fake Prometheus on loopback whose answers, and how long it holds them, each test decides:
that is how a full set of query slots or an oversized answer is made to happen on purpose.
The real-Prometheus side is tests/integration/test_sla_limits.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sla_common.prometheus import (
    MAX_POINTS_PER_QUERY,
    PrometheusBusy,
    PrometheusClient,
    PrometheusQueryTooExpensive,
    PrometheusResultTooLarge,
    PrometheusTimeout,
    subquery_steps,
)
from sla_manager.models import Sli
from sla_manager.settings import SlaSettings
from tests.integration.slautil import ServerThread
from tests.integration.stackutil import HOST, free_port, wait_until
from tests.unit.promfake import Answer, PrometheusHttp

TOKEN = "limits-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXPENSIVE = 'max_over_time(sum(rate({__name__=~".+"}[5m]))[7d:1s])'
WAIT_S = 30.0  # bound on conditions: generous for a loaded machine


def _vector(*samples: tuple[dict[str, str], float]) -> Answer:
    result = [{"metric": m, "value": [1.0, repr(v)]} for m, v in samples]
    body = {"status": "success", "data": {"resultType": "vector", "result": result}}
    return 200, json.dumps(body).encode()


def _matrix(n_series: int) -> Answer:
    result = [{"metric": {"i": str(i)}, "values": [[1.0, "1"]]} for i in range(n_series)]
    body = {"status": "success", "data": {"resultType": "matrix", "result": result}}
    return 200, json.dumps(body).encode()


def _empty(path: str, form: dict[str, str]) -> Answer:
    """An empty result of the type asked for: a matrix for a range query or a range
    selector (``x[5m]``), else a vector."""
    if path.endswith("query_range") or form.get("query", "").rstrip().endswith("]"):
        return _matrix(0)
    return _vector()


@pytest.fixture
def prom() -> Iterator[PrometheusHttp]:
    with PrometheusHttp(_empty, WAIT_S) as fake:
        yield fake


def _settings(prometheus_url: str, **extra: Any) -> SlaSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "prometheus_url": prometheus_url,
        "prometheus_timeout_s": 5,
        "mysql_host": HOST,
        "mysql_port": free_port(),  # nothing listens: whatever needs MySQL is a 503
        "mysql_connect_timeout_s": 1,
        "sla_api_token": TOKEN,
        "sla_retry_after_s": 4,
        **extra,
    }
    return SlaSettings(**values)


# --------------------------------------------------------------------------- the client


def test_every_query_sends_prometheus_a_timeout(prom: PrometheusHttp) -> None:
    prom.respond = lambda path, _f: _matrix(1) if path.endswith("query_range") else _vector()
    with PrometheusClient(prom.url, timeout_s=2.5) as client:
        client.query("up")
        client.query("up", time=1000.0)
        client.count("up", 1000.0, by=["job"])
        # More than 11,000 points: two chunks, each its own request.
        client.query_range("up", 0, 15 * MAX_POINTS_PER_QUERY, 15)
    assert len(prom.requests) == 5
    for path, form in prom.requests:
        assert form["timeout"] == "2.5", (path, form)
    assert prom.requests[2][1]["query"] == "count by (job) ((\nup\n))"


def test_prometheus_giving_up_at_its_timeout_is_a_timeout(prom: PrometheusHttp) -> None:
    body = {"status": "error", "errorType": "timeout", "error": "query timed out in query"}
    prom.respond = lambda _p, _f: (503, json.dumps(body).encode())
    with PrometheusClient(prom.url, timeout_s=1) as client, pytest.raises(PrometheusTimeout):
        client.query("up")


def test_an_answer_larger_than_the_cap_is_not_read_on(prom: PrometheusHttp) -> None:
    prom.respond = lambda _p, _f: _matrix(5000)  # ~ 250 kB
    with PrometheusClient(prom.url, max_response_bytes=64 * 1024) as client:
        with pytest.raises(PrometheusResultTooLarge, match="larger than 65536 bytes"):
            client.query_range("up", 0, 60, 15)
        prom.respond = lambda _p, _f: _matrix(10)
        assert len(client.query_range("up", 0, 60, 15)) == 10  # and the client still works


def test_a_subquery_of_too_many_steps_is_refused_before_it_is_sent(prom: PrometheusHttp) -> None:
    assert subquery_steps(EXPENSIVE) == (604_800, "[7d:1s]")
    assert subquery_steps("max_over_time(x[ 1d12h : 500ms ])") == (259_200, "[ 1d12h : 500ms ]")
    assert subquery_steps('x{path="[7d:1s]"}') is None  # text of a string literal
    assert subquery_steps("rate(x[5m])") is None  # a range, not a subquery
    assert subquery_steps("max_over_time(x[1h:])") == (240, "[1h:]")  # 15 s by default
    with PrometheusClient(prom.url) as client:
        with pytest.raises(PrometheusQueryTooExpensive, match="604800 steps"):
            client.query(EXPENSIVE)
        client.query("max_over_time(up[7d:1m])")  # 10,080 steps: allowed
    assert prom.paths() == ["/api/v1/query"]


def test_query_slots_are_bounded_and_the_next_caller_is_refused_at_once(
    prom: PrometheusHttp,
) -> None:
    prom.hold.clear()
    with (
        PrometheusClient(prom.url, max_concurrent=2, slot_wait_s=0) as client,
        ThreadPoolExecutor(2) as pool,
    ):
        held = [pool.submit(client.query, "up") for _ in range(2)]
        wait_until(lambda: len(prom.requests) == 2, timeout=WAIT_S, what="2 queries held")
        t0 = time.monotonic()
        with pytest.raises(PrometheusBusy, match="2 Prometheus queries already in flight"):
            client.query("up")
        assert time.monotonic() - t0 < 1.0  # not queued
        assert len(prom.requests) == 2  # never sent
        prom.hold.set()
        assert [f.result(timeout=WAIT_S) for f in held] == [[], []]
        assert client.query("up") == []  # slots given back


# --------------------------------------------------------------------------- the app


def test_slots_taken_give_503_with_retry_after(prom: PrometheusHttp) -> None:
    settings = _settings(prom.url, sla_prometheus_max_concurrent=2, sla_prometheus_slot_wait_s=0)
    prom.hold.clear()
    with (
        ServerThread(settings) as server,
        httpx.Client(base_url=server.base_url, timeout=WAIT_S) as c,
        ThreadPoolExecutor(2) as pool,
    ):
        held: list[Future[httpx.Response]] = [
            pool.submit(c.get, "/etl/execution-time") for _ in range(2)
        ]
        wait_until(lambda: len(prom.requests) == 2, timeout=WAIT_S, what="2 queries held")
        refused = c.get("/etl/execution-time")
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "4"
        assert "SLA_PROMETHEUS_MAX_CONCURRENT=2" in refused.json()["detail"]
        assert len(prom.requests) == 2
        prom.hold.set()
        assert [f.result(timeout=WAIT_S).status_code for f in held] == [200, 200]
        metrics = c.get("/metrics").text
    assert "sla_manager_prometheus_busy_total 1.0" in metrics
    assert 'sla_manager_dependency_failures_total{dependency="prometheus"} 0.0' in metrics


def test_prometheus_timeout_is_a_503_saying_so(prom: PrometheusHttp) -> None:
    body = {"status": "error", "errorType": "timeout", "error": "query timed out"}
    prom.respond = lambda _p, _f: (503, json.dumps(body).encode())
    with (
        ServerThread(_settings(prom.url)) as server,
        httpx.Client(base_url=server.base_url) as c,
    ):
        r = c.get("/etl/execution-time")
    assert r.status_code == 503 and r.headers["Retry-After"] == "4"
    assert "gave up on the query after PROMETHEUS_TIMEOUT_S=5 s" in r.json()["detail"]


def test_the_expensive_selector_is_a_422_and_never_reaches_prometheus(
    prom: PrometheusHttp,
) -> None:
    with (
        ServerThread(_settings(prom.url)) as server,
        httpx.Client(base_url=server.base_url) as c,
    ):
        r = c.post("/slis", json={"name": "all", "selector": EXPENSIVE, "max": 1}, headers=AUTH)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["type"] == "too_expensive" and "[7d:1s]" in error["msg"]
    assert prom.requests == []


def test_an_oversized_prometheus_answer_is_a_422(prom: PrometheusHttp) -> None:
    prom.respond = lambda _p, _f: _vector(
        *[({"i": str(i), "x": "y" * 100}, 1.0) for i in range(2000)]
    )
    settings = _settings(prom.url, sla_prometheus_max_response_bytes=64 * 1024)
    with ServerThread(settings) as server, httpx.Client(base_url=server.base_url) as c:
        r = c.get("/etl/execution-time")
    assert r.status_code == 422, r.text
    assert "larger than 65536 bytes" in r.text


class _OneSli:
    """Stands in for the MySQL store: knows one SLI."""

    def __init__(self, sli: Sli) -> None:
        self.sli = sli

    def get(self, name: str) -> Sli | None:
        return self.sli if name == self.sli.name else None


def _serve_sli(server: ServerThread, selector: str, labels: dict[str, str]) -> None:
    sli = Sli(
        name="broad",
        selector=selector,
        min=None,
        max=1.0,
        description="",
        labels=labels,
        created_at=0,
        updated_at=0,
    )
    app = server.server.config.app
    assert isinstance(app, FastAPI)
    app.state.services.slis = _OneSli(sli)


@pytest.mark.parametrize(
    ("groups", "labels", "query", "message"),
    [
        # 600 series kept by the SLI's labels: more than SLA_MAX_SERIES (500).
        (
            [({"device": "a"}, 600.0), ({"device": "b"}, 3.0)],
            {"device": "a"},
            "window=1h",
            "600 series",
        ),
        # 61 evaluations × 2000 series fetched, though only 3 are kept: more than 100,000.
        (
            [({"device": "a"}, 1997.0), ({"device": "b"}, 3.0)],
            {"device": "b"},
            "window=1h",
            "122000 points",
        ),
        # 3601 evaluations × 30 series.
        ([({}, 30.0)], {}, "window=1h&step=1s", "108030 points"),
    ],
)
def test_series_are_counted_before_a_range_query_fetches_them(
    prom: PrometheusHttp,
    groups: list[tuple[dict[str, str], float]],
    labels: dict[str, str],
    query: str,
    message: str,
) -> None:
    prom.respond = lambda _p, _f: _vector(*groups)
    with ServerThread(_settings(prom.url)) as server, httpx.Client(base_url=server.base_url) as c:
        _serve_sli(server, "node_filesystem_avail_bytes", labels)
        r = c.get(f"/slis/broad/violations?{query}")
    assert r.status_code == 422, r.text
    assert message in r.text
    assert prom.paths() == ["/api/v1/query"]  # the count; no query_range
    by = "device" if labels else ""
    assert prom.requests[0][1]["query"] == f"count by ({by}) ((\nnode_filesystem_avail_bytes\n))"


def test_within_the_caps_the_range_query_follows_the_count(prom: PrometheusHttp) -> None:
    prom.respond = lambda path, _f: (
        _matrix(3) if path.endswith("query_range") else _vector(({}, 3.0))
    )
    with ServerThread(_settings(prom.url)) as server, httpx.Client(base_url=server.base_url) as c:
        _serve_sli(server, "up", {})
        r = c.get("/slis/broad/violations?window=1h")
    assert r.status_code == 200, r.text
    assert r.json()["series_total"] == 3
    assert prom.paths() == ["/api/v1/query", "/api/v1/query_range"]
