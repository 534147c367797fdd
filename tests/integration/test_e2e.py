"""The whole chain on the real local stack: ETL → Kafka → data_storage → MySQL → gRPC and REST.

The first test follows one ETL cycle over the deterministic demo history to the gRPC client
and the SLA manager (exact violation counts). The second runs the chain under a steady feed
while the broker, then MariaDB restart and the storage consumer is killed with SIGKILL, and
checks that every cycle the ETL reported as published is stored exactly once.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pymysql
import pytest
from grpc_health.v1 import health_pb2

from data_retrieval.client.api import RetrievalClient, collect, selector
from sla_common import demo
from tests.integration.retrievalutil import health_status
from tests.integration.stackutil import (
    REPO,
    Stack,
    dump_logs,
    free_port,
    migrate,
    run_bounded,
    scripts_env,
    start_module,
    stop_process,
    wait_until,
)

PY = sys.executable
TOKEN = "e2e-test-token-0123456789"
HOST_GAUGES = (
    'node_memory_MemFree_bytes{job="host"};node_memory_MemAvailable_bytes{job="host"};'
    'node_filesystem_free_bytes{job="host"};node_filesystem_avail_bytes{job="host"};'
    'node_filefd_allocated{job="host"}'
)
STEP = 60  # the SLA manager's default violation step


class Service:
    """A suite service as a subprocess with its log in a file; stopped at teardown."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.module, self.env, self.log = module, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = start_module(self.module, self.env, self.log)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int | None:
        return None if self.proc is None else stop_process(self.proc)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def grpc_serving(target: str) -> bool:
    try:
        status = health_status(target, timeout=2)
    except grpc.RpcError:
        return False
    return bool(status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Chain:
    stack: Stack
    db: str
    topic: str
    mysql_port: int
    grpc_target: str
    sla_url: str
    services: dict[str, Service]
    tmp: Path

    def env(self, **extra: str) -> dict[str, str]:
        base = {
            "MYSQL_DATABASE": self.db,
            "MYSQL_PORT": str(self.mysql_port),
            "KAFKA_TOPIC": self.topic,
            "KAFKA_DLQ_TOPIC": f"{self.topic}.dlq",
        }
        return self.stack.service_env(**{**base, **extra})

    def mysql(self) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(
            host=self.stack.mysql_host,
            port=self.mysql_port,
            user=self.stack.mysql_user,
            password=self.stack.mysql_password,
            database=self.db,
            connect_timeout=5,
        )

    def rows(self, sql: str, *args: object) -> list[tuple[object, ...]]:
        conn = self.mysql()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall())
        finally:
            conn.close()


# Each service's start, bounded; generous: at load 20-30 on 2 cores the SLA manager took
# about 60 s to import and answer.
START_TIMEOUT_S = 120


def start_chain(stack: Stack, tmp: Path, mysql_port: int, kafka: str | None = None) -> Chain:
    tag = uuid.uuid4().hex[:8]
    grpc_port, sla_port = free_port(), free_port()
    chain = Chain(
        stack,
        f"e2e_{tag}",
        f"e2e-{tag}",
        mysql_port,
        f"127.0.0.1:{grpc_port}",
        f"http://127.0.0.1:{sla_port}",
        {},
        tmp,
    )
    try:
        extra = {"KAFKA_BOOTSTRAP_SERVERS": kafka} if kafka else {}
        migrate(chain.env())  # as compose's migrate service does before the services start
        storage_http = free_port()
        chain.services["storage"] = Service(
            "data_storage",
            chain.env(HTTP_PORT=str(storage_http), KAFKA_GROUP_ID=f"e2e-{tag}", **extra),
            tmp / "storage.log",
        )
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{storage_http}/metrics"),
            timeout=START_TIMEOUT_S,
            what="data_storage /metrics",
        )
        chain.services["retrieval"] = Service(
            "data_retrieval",
            chain.env(GRPC_PORT=str(grpc_port), HTTP_PORT=str(free_port())),
            tmp / "retrieval.log",
        )
        chain.services["sla"] = Service(
            "sla_manager",
            chain.env(HTTP_PORT=str(sla_port), SLA_API_TOKEN=TOKEN, ETL_INTERVAL_S="60"),
            tmp / "sla.log",
        )
        wait_until(
            lambda: http_ok(f"{chain.sla_url}/healthz"), timeout=START_TIMEOUT_S, what="sla_manager"
        )
        # Every caller talks to data_retrieval at once: it answers before the chain is "started".
        wait_until(
            lambda: grpc_serving(chain.grpc_target), timeout=START_TIMEOUT_S, what="data_retrieval"
        )
    except BaseException:  # what started is stopped: a failed start leaks no process
        stop_chain(chain)
        raise
    return chain


def stop_chain(chain: Chain) -> None:
    for svc in chain.services.values():
        svc.stop()
    try:
        conn = pymysql.connect(
            host=chain.stack.mysql_host,
            port=chain.mysql_port,
            user=chain.stack.mysql_user,
            password=chain.stack.mysql_password,
            connect_timeout=5,
        )
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{chain.db}`")  # name made by this test
        conn.close()
    except pymysql.MySQLError:
        pass


@pytest.fixture(scope="module")
def chain(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    c = start_chain(stack, tmp_path_factory.mktemp("e2e"), stack.mysql_port)
    try:
        yield c
    finally:
        stop_chain(c)


# --------------------------------------------------------------------------- one cycle


def expected_violations(
    stack: Stack,
    metric: str,
    labels: dict[str, str],
    *,
    below: float | None,
    above: float | None,
    window_s: int,
) -> int:
    """Evaluations at the step in [end - window, end] outside the range, from the generator."""
    assert stack.demo_end is not None and stack.demo_seed is not None
    end = stack.demo_end
    (s,) = [
        x
        for x in demo.generate(seed=stack.demo_seed, end=end, hours=13, step_s=15)
        if x.name == metric and all(x.labels.get(k) == v for k, v in labels.items())
    ]
    at = np.arange(end - window_s, end + 1, STEP)
    values = s.values[np.searchsorted(s.timestamps, at)]
    assert np.array_equal(s.timestamps[np.searchsorted(s.timestamps, at)], at)
    bad = np.zeros(at.size, dtype=bool)
    if below is not None:
        bad |= values < below
    if above is not None:
        bad |= values > above
    return int(bad.sum())


def test_one_cycle_reaches_grpc_and_the_sla_manager(chain: Chain) -> None:
    stack = chain.stack
    assert stack.demo_end is not None
    etl = run_bounded(
        [PY, "-m", "etl_data_pipeline", "--once", "--end", str(stack.demo_end)],
        timeout=120,
        env=chain.env(ETL_SELECTORS=HOST_GAUGES),
    )
    assert etl.returncode == 0, etl.stdout

    async def read_back() -> dict[str, tuple[Any, list[Any], list[Any]]]:
        token = chain.stack.env.get("GRPC_API_TOKEN")  # the stack's, which the server has
        async with RetrievalClient(chain.grpc_target, timeout_s=10, token=token) as client:
            out: dict[str, tuple[Any, list[Any], list[Any]]] = {}
            for s in await client.series():
                sel = selector(key=s.ref.key)
                adf = await client.dickey_fuller(sel)
                aggs = await collect(client.aggregates(sel))
                fc = await collect(client.forecast(sel))
                out[s.ref.key] = (adf, aggs, fc)
            return out

    def stored() -> dict[str, tuple[Any, list[Any], list[Any]]] | None:
        got = asyncio.run(read_back())
        return got if len(got) == 7 else None

    got = wait_until(stored, timeout=60, what="7 demo series through storage to gRPC", interval=1)
    expected = {
        s.key()
        for s in demo.generate(seed=stack.demo_seed or 42, end=stack.demo_end, hours=1)
        if s.kind == "gauge"
    }
    assert set(got) == expected
    for key, (adf, aggs, fc) in got.items():
        assert adf.nobs > 2000, key
        windows = {a.window for page in aggs for a in page.aggregates}
        assert windows >= {"1h", "3h", "12h"}, key
        points = [p for page in fc for p in page.points]
        assert len(points) == 10, key

    # the SLA manager: SLIs on the demo incidents, exact counts per window
    auth = {"Authorization": f"Bearer {TOKEN}"}
    slis = {
        "fd-spike": (
            'node_filefd_allocated{job="host"}',
            None,
            float(demo.FD_THRESHOLD),
            "node_filefd_allocated",
            {},
        ),
        "mem-leak": (
            'node_memory_MemAvailable_bytes{job="host"}',
            float(demo.MEMORY_THRESHOLD_BYTES),
            None,
            "node_memory_MemAvailable_bytes",
            {},
        ),
        "disk-fill": (
            'node_filesystem_avail_bytes{job="host",device="/dev/sda2"}',
            float(demo.DISK_THRESHOLD_BYTES),
            None,
            "node_filesystem_avail_bytes",
            {"device": "/dev/sda2"},
        ),
    }
    with httpx.Client(base_url=chain.sla_url, timeout=30) as http:
        for name, (sel, lo, hi, _m, _l) in slis.items():
            body = {"name": name, "selector": sel, "min": lo, "max": hi}
            r = http.post(
                "/slis", json={k: v for k, v in body.items() if v is not None}, headers=auth
            )
            assert r.status_code == 201, r.text
        for name, (_sel, lo, hi, metric, labels) in slis.items():
            for window, seconds in (("1h", 3600), ("3h", 10800), ("12h", 43200)):
                r = http.get(
                    f"/slis/{name}/violations", params={"window": window, "end": stack.demo_end}
                )
                assert r.status_code == 200, r.text
                doc = r.json()
                want = expected_violations(
                    stack, metric, labels, below=lo, above=hi, window_s=seconds
                )
                got_count = sum(s["violating"] for s in doc["series"])
                assert got_count == want, (name, window, doc)
        # the fd spike is in the last hour, the disk fill only in 3 h, the leak only in 12 h
        counts = {
            name: {
                w: sum(
                    s["violating"]
                    for s in http.get(
                        f"/slis/{name}/violations", params={"window": w, "end": stack.demo_end}
                    ).json()["series"]
                )
                for w in ("1h", "3h", "12h")
            }
            for name in slis
        }
        assert counts["fd-spike"]["1h"] > 0
        assert counts["disk-fill"]["1h"] == 0 < counts["disk-fill"]["3h"]
        assert counts["mem-leak"]["3h"] == 0 < counts["mem-leak"]["12h"]

        # forecast violations: a range the stored fd forecast crosses, and one it does not
        fd_key = next(k for k in got if k.startswith("node_filefd_allocated"))
        fd_points = [p for page in got[fd_key][2] for p in page.points]
        lowest = min(p.value for p in fd_points)
        top = max(p.upper95 for p in fd_points)
        for name, bound in (("fd-crossed", lowest - 1.0), ("fd-clear", top + 1.0)):
            r = http.post(
                "/slis",
                headers=auth,
                json={
                    "name": name,
                    "selector": 'node_filefd_allocated{job="host"}',
                    "max": bound,
                },
            )
            assert r.status_code == 201, r.text
        at = stack.demo_end
        crossed = http.get(
            "/slis/fd-crossed/forecast-violations", params={"horizon": "10m", "at": at}
        ).json()
        clear = http.get(
            "/slis/fd-clear/forecast-violations", params={"horizon": "10m", "at": at}
        ).json()
        assert crossed["violating_series"] == 1, crossed
        (series,) = [s for s in crossed["series"] if s["violations"]]
        assert len(series["violations"]) == 10  # every point forecast is above the bound
        # The ETL's predictive distribution came through the consumer and MySQL.
        assert series["distribution_source"] == "forecast", series
        assert series["breach_probability"] >= 0.5 and series["predicted_violation"] is True
        assert series["first_point_breach_at"] == min(p.time.seconds for p in fd_points)
        assert clear["violating_series"] == 0, clear


# --------------------------------------------------------------------------- faults

OK_LINE = re.compile(r"cycle (\w+) ok: window end (\d+), (\d+) series published")
# A failed cycle may still have had some records acknowledged (and so stored).
FAILED_LINE = re.compile(r"cycle (\w+) failed: window end (\d+), (\d+) series published")


def _side(tmp: Path, **env: str) -> dict[str, str]:
    return scripts_env(tmp / "side", **env)


def test_chain_keeps_every_published_cycle_through_broker_db_and_consumer_faults(
    stack: Stack, tmp_path: Path
) -> None:
    kafka_port, mysql_port = free_port(), free_port()
    side = _side(
        tmp_path,
        STACK_COMPONENTS="kafka,mariadb",
        STACK_KAFKA_PORT=str(kafka_port),
        STACK_MYSQL_PORT=str(mysql_port),
        STACK_MYSQL_MODE="private",
    )
    up = run_bounded([REPO / "scripts" / "up"], timeout=120, env=side)
    assert up.returncode == 0, up.stdout + dump_logs(tmp_path / "side")
    bootstrap = f"127.0.0.1:{kafka_port}"
    chain: Chain | None = None
    etl: Service | None = None
    try:
        chain = start_chain(stack, tmp_path, mysql_port, kafka=bootstrap)
        etl = Service(
            "etl_data_pipeline",
            chain.env(
                KAFKA_BOOTSTRAP_SERVERS=bootstrap,
                HTTP_PORT=str(free_port()),
                ETL_SELECTORS='node_filefd_allocated{job="host"};'
                'node_memory_MemFree_bytes{job="host"}',
                ETL_INTERVAL_S="3",
                ETL_STEP_S="3",
                ETL_WINDOW_S="1800",
                ETL_MAX_BACKOFF_S="2",
                KAFKA_FLUSH_TIMEOUT_S="5",
            ),
            tmp_path / "etl.log",
        )

        def reported() -> list[tuple[str, int, int]]:
            assert etl is not None
            return [(m[1], int(m[2]), int(m[3])) for m in OK_LINE.finditer(etl.output())]

        def stored_ends() -> set[int]:
            try:
                assert chain is not None
                rows = chain.rows("SELECT DISTINCT window_end FROM analyses")
            except pymysql.MySQLError:
                return set()
            return {int(str(r[0])) for r in rows}

        at_risk: set[int] = set()

        def drained() -> bool:
            return {end for _r, end, _n in reported()} - at_risk <= stored_ends()

        def step(what: str, action: list[str]) -> None:
            proc = run_bounded([REPO / "scripts" / action[0], *action[1:]], timeout=120, env=side)
            assert proc.returncode == 0, f"{what}: {proc.stdout}"

        wait_until(
            lambda: len(reported()) >= 2 and drained(),
            timeout=90,
            what="two cycles stored",
            interval=1,
        )

        # 1. the broker restarts. It keeps nothing (memory only): what it had not yet
        # delivered to storage is lost (README). So: the cycles reported but not stored
        # when it is gone are "at risk" (allowed missing, never duplicated); everything
        # reported after it is back must be stored, with nobody restarting the consumer
        # (it rejoins the group the broker forgot, and rewinds on the re-created topic).
        step("broker down", ["down", "--only", "kafka"])
        # Storage finishes a batch it already holds (MySQL is up): what it stores settles,
        # however long that takes on a loaded machine.
        seen: list[set[int]] = [set()]

        def settled() -> bool:
            now = stored_ends()
            done, seen[0] = now == seen[0], now
            return done

        wait_until(settled, timeout=60, what="storage to finish its batch", interval=1.5)
        at_risk = {end for _r, end, _n in reported()} - stored_ends()
        assert len(at_risk) <= 2, at_risk  # at most what was in flight at the restart
        time.sleep(4)
        step("broker up", ["up"])
        n = len(reported())
        wait_until(
            lambda: len(reported()) >= n + 2 and drained(),
            timeout=120,
            what="cycles stored after the broker restart",
            interval=1,
        )

        # 2. MariaDB stops under the feed: the ETL keeps publishing, storage waits
        step("mariadb down", ["down", "--only", "mariadb"])
        n = len(reported())
        wait_until(
            lambda: len(reported()) >= n + 2, timeout=60, what="cycles while MariaDB is down"
        )
        step("mariadb up", ["up"])
        wait_until(drained, timeout=120, what="storage catching up after MariaDB", interval=1)

        # 3. the consumer is killed mid-stream and restarted
        chain.services["storage"].kill9()
        n = len(reported())
        wait_until(
            lambda: len(reported()) >= n + 2, timeout=60, what="cycles while storage is dead"
        )
        chain.services["storage"].start()
        wait_until(drained, timeout=120, what="storage catching up after SIGKILL", interval=1)

        assert etl.stop() == 0
        runs = reported()
        wait_until(drained, timeout=60, what="the last cycles stored", interval=1)
        # exactly once in effect: every reported cycle's series once each (the at-risk ones
        # at most once); besides, only what failed cycles had acknowledged before failing
        rows = chain.rows("SELECT window_end, COUNT(*) FROM analyses GROUP BY window_end")
        per_end = {int(str(e)): int(str(c)) for e, c in rows}
        for _run, end, count in runs:
            if end in at_risk:
                assert per_end.get(end, 0) <= count, (end, count, per_end.get(end))
            else:
                assert per_end.get(end) == count, (end, count, per_end.get(end))
        partial = {
            int(m[2]): int(m[3]) for m in FAILED_LINE.finditer(etl.output()) if int(m[3]) > 0
        }
        for end in set(per_end) - {end for _r, end, _n in runs}:
            assert end in partial and per_end[end] <= partial[end], (end, per_end[end], partial)
        dupes = chain.rows(
            "SELECT series_id, ts, COUNT(*) FROM hp_points"
            " GROUP BY series_id, ts HAVING COUNT(*) > 1"
        )
        assert dupes == []
        assert chain.services["storage"].proc is not None
        assert chain.services["storage"].proc.poll() is None, chain.services["storage"].output()
    finally:
        if etl is not None:
            etl.stop()
        if chain is not None:
            stop_chain(chain)
        run_bounded([REPO / "scripts" / "down"], timeout=60, env=side)
