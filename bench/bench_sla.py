"""SLA manager REST latency and throughput: /status and 12 h /violations with 50 SLIs.

Starts ``python -m sla_manager`` itself (on a free loopback port, on a fresh database of the
MySQL that MYSQL_* name, against PROMETHEUS_URL), creates 50 single-series SLIs on the demo
host's gauges, then drives it with a bounded load generator: a fixed number of client
threads with keep-alive connections, each request going to the next SLI in turn, stopping
at a request count or a time limit, whichever comes first. Each scenario runs ``repeats``
times; figures are the median over the runs.

Scenarios (same SLIs, same process, same run):

- ``status``: ``GET /slis/{name}/status`` (one instant query + one MySQL lookup);
- ``violations_12h``: ``GET /slis/{name}/violations?window=12h`` at the default 60 s step
  (721 evaluations per series);
- ``violations_12h_raw`` (baseline): the same at ``step=15s``, i.e. every raw sample of the
  demo's 15 s scrape interval (2,881 per series): what computing violations from the raw
  data costs, against the step-60 range query the API uses by default.

Windows end at STACK_DEMO_END (the end of the backfilled demo history, when set: the same
data every run) or now. Target: 12 h violations p99 < 100 ms for a single-series SLI.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from sla_common.mysql import MysqlSettings, close_quietly, connect
from tests.integration.stackutil import free_port, migrate, start_module, stop_process

REPO = Path(__file__).resolve().parent.parent
SLIS = 50
TARGET_P99_MS = 100.0
START_TIMEOUT_S = 60.0
WARMUP_REQUESTS = 20
# (clients, max requests, max seconds) of one run of one scenario.
LATENCY_RUN = (1, 300, 6.0)
THROUGHPUT_RUN = (8, 1500, 6.0)

# Single-series SLIs on the demo host (job="host"): selector, labels, bounds.
_TEMPLATES: tuple[tuple[str, dict[str, str], dict[str, float]], ...] = (
    ('node_filefd_allocated{job="host"}', {}, {"max": 20000.0}),
    ('node_memory_MemAvailable_bytes{job="host"}', {}, {"min": 2.0 * 2**30}),
    ('node_memory_MemFree_bytes{job="host"}', {}, {"min": 2.0 * 2**30}),
    ('node_filesystem_avail_bytes{job="host"}', {"device": "/dev/sda2"}, {"min": 10.0 * 2**30}),
    ('node_filesystem_free_bytes{job="host"}', {"device": "/dev/sda2"}, {"min": 10.0 * 2**30}),
)


class _App:
    """``python -m sla_manager`` on a fresh database; stopped (SIGTERM) and dropped on close."""

    def __init__(self, token: str, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.database = f"sla_bench_{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="bench_sla_", suffix=".log")[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLA_")}
        env.update(
            MYSQL_DATABASE=self.database,
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(self.port),
            SLA_API_TOKEN=token,
            SLA_MYSQL_POOL_SIZE="16",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        migrate(env)
        self.proc = start_module("sla_manager", env, self.log)
        deadline = time.monotonic() + start_timeout_s
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                output = self.log.read_text()[-3000:]  # close() deletes the log
                self.close()
                raise RuntimeError(f"sla_manager did not start:\n{output}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        stop_process(self.proc)
        settings = MysqlSettings()
        with contextlib.suppress(Exception):
            conn = connect(settings, database="", autocommit=True)
            try:
                with conn.cursor() as cur:
                    # The name is ours (uuid hex); it cannot be passed as a parameter.
                    cur.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
            finally:
                close_quietly(conn)
        self.log.unlink(missing_ok=True)


def _create_slis(base_url: str, token: str) -> list[str]:
    names = []
    with httpx.Client(base_url=base_url, timeout=30) as c:
        for i in range(SLIS):
            selector, labels, bounds = _TEMPLATES[i % len(_TEMPLATES)]
            name = f"bench-{i:02d}"
            body = {"name": name, "selector": selector, "labels": labels, **bounds}
            r = c.post("/slis", json=body, headers={"Authorization": f"Bearer {token}"})
            r.raise_for_status()
            names.append(name)
    return names


def _drive(
    base_url: str, paths: list[str], clients: int, max_requests: int, max_seconds: float
) -> dict[str, Any]:
    """Send GETs of ``paths`` in turn from ``clients`` threads until either bound is hit."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    issued = 0
    deadline = time.perf_counter() + max_seconds

    def next_index() -> int | None:
        nonlocal issued
        with lock:
            if issued >= max_requests or time.perf_counter() >= deadline:
                return None
            issued += 1
            return issued - 1

    def worker() -> None:
        mine: list[float] = []
        codes: dict[int, int] = {}
        with httpx.Client(base_url=base_url, timeout=30) as c:
            while (i := next_index()) is not None:
                t0 = time.perf_counter()
                r = c.get(paths[i % len(paths)])
                r.read()
                mine.append(time.perf_counter() - t0)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
        with lock:
            latencies.extend(mine)
            for k, v in codes.items():
                statuses[k] = statuses.get(k, 0) + v

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "seconds": wall,
        "requests_per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def _median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "requests_per_s": statistics.median(r["requests_per_s"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "non_200": sum(n for r in runs for code, n in r["statuses"].items() if code != "200"),
        "runs": runs,
    }


def measure(repeats: int = 3) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    demo_end = os.environ.get("STACK_DEMO_END", "").strip()
    end = int(demo_end) if demo_end else int(time.time())
    app = _App(token)
    try:
        names = _create_slis(app.base_url, token)
        scenarios: dict[str, Callable[[str], str]] = {
            "status": lambda n: f"/slis/{n}/status?time={end}",
            "violations_12h": lambda n: f"/slis/{n}/violations?window=12h&end={end}",
            "violations_12h_raw": lambda n: f"/slis/{n}/violations?window=12h&end={end}&step=15s",
        }
        with httpx.Client(base_url=app.base_url, timeout=30) as c:
            sample = c.get(scenarios["violations_12h"](names[0])).json()
            raw = c.get(scenarios["violations_12h_raw"](names[0])).json()
        out: dict[str, Any] = {
            "slis": len(names),
            "end": end,
            "end_source": "STACK_DEMO_END" if demo_end else "now",
            "evaluations_per_series": {
                "violations_12h": sample["evaluations_per_series"],
                "violations_12h_raw": raw["evaluations_per_series"],
            },
            "series_per_sli": len(sample["series"]),
            "bounds": {
                "latency": dict(
                    zip(("clients", "max_requests", "max_s"), LATENCY_RUN, strict=True)
                ),
                "throughput": dict(
                    zip(("clients", "max_requests", "max_s"), THROUGHPUT_RUN, strict=True)
                ),
            },
            "scenarios": {},
        }
        for label, path_of in scenarios.items():
            paths = [path_of(n) for n in names]
            _drive(app.base_url, paths, 1, WARMUP_REQUESTS, 30.0)
            latency = [_drive(app.base_url, paths, *LATENCY_RUN) for _ in range(repeats)]
            throughput = [_drive(app.base_url, paths, *THROUGHPUT_RUN) for _ in range(repeats)]
            out["scenarios"][label] = {
                "latency": _median_runs(latency),
                "throughput": _median_runs(throughput),
            }
        s = out["scenarios"]
        ours, base = s["violations_12h"], s["violations_12h_raw"]
        out["raw_vs_step60"] = {
            "p50_latency_ratio": base["latency"]["p50_ms"] / ours["latency"]["p50_ms"],
            "throughput_ratio": ours["throughput"]["requests_per_s"]
            / base["throughput"]["requests_per_s"],
        }
        out["target_p99_ms"] = TARGET_P99_MS
        out["target_met"] = ours["latency"]["p99_ms"] < TARGET_P99_MS
        return out
    finally:
        app.close()


def summary(result: dict[str, Any]) -> str:
    lines = [
        f"sla_manager: {result['slis']} SLIs ({result['series_per_sli']} series each), window "
        f"end {result['end']} ({result['end_source']}); 12 h = "
        f"{result['evaluations_per_series']['violations_12h']} evaluations/series at 60 s, "
        f"{result['evaluations_per_series']['violations_12h_raw']} at 15 s",
        f"  {'scenario':<20} {'1 client p50/p99 ms':>21} {'8 clients req/s':>16} "
        f"{'8 clients p50/p99 ms':>22}",
    ]
    for label, s in result["scenarios"].items():
        lat, thr = s["latency"], s["throughput"]
        lines.append(
            f"  {label:<20} {lat['p50_ms']:>9.1f} / {lat['p99_ms']:<9.1f} "
            f"{thr['requests_per_s']:>16.0f} {thr['p50_ms']:>10.1f} / {thr['p99_ms']:<9.1f}"
            + (f"  ({lat['non_200'] + thr['non_200']} non-200)" if lat["non_200"] else "")
        )
    r = result["raw_vs_step60"]
    lines.append(
        f"  12 h violations, step 60 s vs raw 15 s: {r['p50_latency_ratio']:.1f}x faster (p50), "
        f"{r['throughput_ratio']:.1f}x the throughput; target p99 < "
        f"{result['target_p99_ms']:.0f} ms {'met' if result['target_met'] else 'MISSED'}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(summary(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 3)) + "\n")
