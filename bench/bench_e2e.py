"""End-to-end freshness and the suite's steady-state cost (issue 7).

Freshness: the time from the end of an ETL cycle (the ``--once`` process exiting after its
flush) to the SLA manager answering with that cycle's forecasts for every series that has
one — through Kafka, data_storage's batch and MySQL. The series: up to 50 gauges of the
demo host and of this machine's node-exporter.

Steady state: the ETL (one cycle a minute), storage and the SLA manager running together for
a few minutes; CPU seconds per minute and resident memory of each, from /proc.

Needs the local stack (``make bench`` starts it): PROMETHEUS_URL, KAFKA_BOOTSTRAP_SERVERS and
MYSQL_* from its stack.env.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from sla_common.mysql import MysqlSettings, close_quietly, connect
from tests.integration.stackutil import free_port, migrate, start_module, stop_process

SELECTOR = '{__name__=~"node_memory_.+|node_filefd_allocated|node_filesystem_.+",job=~"host|node"}'
MAX_SERIES = 50
TOKEN = secrets.token_urlsafe(24)  # this run's own SLA manager
TICK_S = os.sysconf("SC_CLK_TCK")


class _Proc:
    def __init__(self, module: str, env: dict[str, str], log_dir: Path) -> None:
        self.log = log_dir / f"{module}.log"
        self.proc = start_module(module, env, self.log)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK_S  # utime + stime

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        stop_process(self.proc)


def _wait(probe: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.2)


def _fresh(api: str, since: int) -> tuple[int, int]:
    """(series with a forecast, those whose forecast was produced at or after ``since``)."""
    doc = httpx.get(f"{api}/slis/e2e/forecast-violations", timeout=10).json()
    with_fc = [s for s in doc["series"] if s["forecast"] is not None]
    return len(with_fc), sum(1 for s in with_fc if s["forecast"]["produced_at"] >= since)


def measure(repeats: int = 3, steady_minutes: float = 3.0) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    db, topic = f"bench_e2e_{tag}", f"bench-e2e-{tag}"
    sla_port = free_port()
    api = f"http://127.0.0.1:{sla_port}"
    base = {
        **os.environ,
        "MYSQL_DATABASE": db,
        "KAFKA_TOPIC": topic,
        "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
        "ETL_SELECTORS": SELECTOR,
        "ETL_MAX_SERIES_PER_SELECTOR": str(MAX_SERIES),
        "LOG_LEVEL": "WARNING",
    }
    logs = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    migrate(base)
    storage = _Proc(
        "data_storage",
        {**base, "HTTP_PORT": str(free_port()), "KAFKA_GROUP_ID": f"bench-{tag}"},
        logs,
    )
    sla = _Proc(
        "sla_manager",
        {**base, "HTTP_PORT": str(sla_port), "SLA_API_TOKEN": TOKEN, "ENVIRONMENT": "test"},
        logs,
    )
    procs = [storage, sla]
    result: dict[str, Any] = {"selector": SELECTOR}
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{api}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(healthy, 90, "the SLA manager")
        r = httpx.post(
            f"{api}/slis",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"name": "e2e", "selector": SELECTOR, "max": 1e300},
            timeout=10,
        )
        r.raise_for_status()

        freshness: list[float] = []
        counts: list[int] = []
        for _ in range(repeats + 1):  # the first run also waits for the consumer to join
            since = int(time.time()) + 1
            time.sleep(max(0.0, since - time.time()))
            etl = subprocess.run(
                [sys.executable, "-m", "etl_data_pipeline", "--once"],
                env={**base, "HTTP_PORT": "0"},
                capture_output=True,
                timeout=300,
                check=False,
            )
            ended = time.monotonic()
            if etl.returncode != 0:
                raise RuntimeError(etl.stdout.decode()[-2000:] + etl.stderr.decode()[-2000:])
            total = 0

            def seen(since: int = since) -> bool:
                nonlocal total
                total, fresh = _fresh(api, since)
                return total > 0 and fresh == total

            _wait(seen, 120, "the cycle's forecasts at the SLA manager")
            freshness.append(time.monotonic() - ended)
            counts.append(total)
        result["freshness_s_runs"] = freshness[1:]
        result["freshness_s_median"] = statistics.median(freshness[1:])
        result["first_run_incl_group_join_s"] = freshness[0]
        result["series_with_forecast"] = counts[-1]

        # steady state: the ETL as a service, a cycle a minute
        etl_proc = _Proc("etl_data_pipeline", {**base, "HTTP_PORT": str(free_port())}, logs)
        procs.append(etl_proc)
        time.sleep(10)  # start-up (imports) is not steady state
        t0 = time.monotonic()
        cpu0 = {p.log.stem: p.cpu_s() for p in procs}
        rss: dict[str, list[float]] = {p.log.stem: [] for p in procs}
        while time.monotonic() - t0 < steady_minutes * 60:
            for p in procs:
                rss[p.log.stem].append(p.rss_mib())
            time.sleep(5)
        minutes = (time.monotonic() - t0) / 60
        result["steady"] = {
            name: {
                "cpu_s_per_min": (p.cpu_s() - cpu0[name]) / minutes,
                "rss_mib_median": statistics.median(rss[name]),
                "rss_mib_max": max(rss[name]),
            }
            for p in procs
            for name in [p.log.stem]
        }
        result["steady_minutes"] = minutes
        result["steady_total_cpu_s_per_min"] = sum(
            v["cpu_s_per_min"] for v in result["steady"].values()
        )
        result["steady_total_rss_mib"] = sum(v["rss_mib_max"] for v in result["steady"].values())
    finally:
        for p in procs:
            p.stop()
        with contextlib.suppress(Exception):
            conn = connect(MysqlSettings(), database="", autocommit=True)
            try:
                with conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS `{db}`")  # our own uuid name
            finally:
                close_quietly(conn)
    return result


def summary(result: dict[str, Any]) -> str:
    steady = ", ".join(
        f"{name} {v['cpu_s_per_min']:.1f} CPU-s/min {v['rss_mib_max']:.0f} MiB"
        for name, v in result["steady"].items()
    )
    return (
        f"e2e: freshness (cycle end -> SLA manager sees its forecasts, "
        f"{result['series_with_forecast']} series) median {result['freshness_s_median']:.2f} s "
        f"(runs {', '.join(f'{x:.2f}' for x in result['freshness_s_runs'])}); steady state "
        f"{result['steady_total_cpu_s_per_min']:.1f} CPU-s/min, "
        f"{result['steady_total_rss_mib']:.0f} MiB in all ({steady})"
    )
