"""The demo history goes through the real ``promtool`` backfill and a real Prometheus reads it back.

No shared stack is needed: the blocks go into a temporary folder and a private Prometheus
(Debian's 2.42, loopback, a free port) serves them, so the counts Prometheus computes can be
compared with the incidents the generator reports.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from sla_common import demo
from tests.integration.stackutil import PROMTOOL, promtool_blocks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
STEP = 15
SEED = 42


@dataclass(frozen=True)
class Backfill:
    end: int
    series: list[demo.DemoSeries]
    samples: int
    blocks: Path


@pytest.fixture(scope="module")
def backfill(tmp_path_factory: pytest.TempPathFactory) -> Backfill:
    # Near now: Prometheus deletes blocks older than its retention as soon as it starts.
    end = demo.align_end(int(time.time()) - 60, STEP)
    root = tmp_path_factory.mktemp("demo_backfill")
    om = root / "demo.om"
    series = demo.generate(SEED, end)
    with om.open("w", encoding="utf-8") as fh:
        samples = demo.write_openmetrics(series, fh)
    blocks = root / "data"
    promtool_blocks(om, blocks)
    return Backfill(end, series, samples, blocks)


def test_promtool_blocks_hold_every_sample_at_the_right_time(backfill: Backfill) -> None:
    proc = subprocess.run(
        [PROMTOOL, "tsdb", "list", str(backfill.blocks)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rows = [line.split() for line in proc.stdout.splitlines()[1:] if line.strip()]
    assert rows, proc.stdout
    # Columns: ULID, min time (ms), max time (ms, exclusive), duration, samples, chunks, series.
    mins = [int(r[1]) for r in rows]
    maxs = [int(r[2]) for r in rows]
    first = int(backfill.series[0].timestamps[0])
    assert min(mins) == first * 1000  # seconds were read as seconds, not as milliseconds
    assert max(maxs) == backfill.end * 1000 + 1
    assert sum(int(r[4]) for r in rows) == backfill.samples
    assert max(int(r[6]) for r in rows) == len(backfill.series)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def prometheus(backfill: Backfill, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("demo_prometheus")
    config = root / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "prometheus.log"
    with log_path.open("w") as log_fh:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={backfill.blocks}",
                "--storage.tsdb.retention.time=30d",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log_fh,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"prometheus exited {proc.returncode}:\n{log_path.read_text()}")
                try:
                    if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"prometheus not ready on {url} in 30 s:\n{log_path.read_text()}")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _query(url: str, promql: str, at: int) -> list[dict[str, object]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql, "time": str(at)}, timeout=10)
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    result: list[dict[str, object]] = body["data"]["result"]
    return result


def _value(row: dict[str, object]) -> float:
    value = row["value"]
    assert isinstance(value, list)
    return float(value[1])


def test_prometheus_serves_the_full_history(prometheus: str, backfill: Backfill) -> None:
    # One query per series: count_over_time drops the name, and MemFree and MemAvailable
    # would then collide on the same label set.
    for s in backfill.series:
        rows = _query(prometheus, f"count_over_time({s.key()}[1d])", backfill.end)
        # Prometheus 2.x ranges are closed at both ends: [end - 1d, end] holds every sample.
        assert [_value(r) for r in rows] == [float(len(s.timestamps))], s.key()
        rows = _query(prometheus, s.key(), int(s.timestamps[0]))
        assert [_value(r) for r in rows] == [float(s.values[0])], s.key()


def test_prometheus_counts_the_incident_samples(prometheus: str, backfill: Backfill) -> None:
    found = demo.find_incidents(backfill.series)
    assert len(found) == len(demo.INCIDENT_SPECS)
    for inc in found:
        op = "<" if inc.direction == "below" else ">"
        promql = f"count_over_time(({inc.key()} {op} {inc.threshold!r})[12h:{STEP}s])"
        rows = _query(prometheus, promql, backfill.end)
        assert [_value(r) for r in rows] == [float(inc.samples)], inc.name


@pytest.mark.parametrize(
    ("window", "names"),
    [
        ("1h", {"fd_spike"}),
        ("3h", {"fd_spike", "disk_fill_avail", "disk_fill_free"}),
        ("12h", {s.name for s in demo.INCIDENT_SPECS}),
    ],
)
def test_prometheus_windows_see_the_expected_incidents(
    prometheus: str, backfill: Backfill, window: str, names: set[str]
) -> None:
    seen = set()
    for inc in demo.find_incidents(backfill.series):
        op = "<" if inc.direction == "below" else ">"
        promql = f"count_over_time(({inc.key()} {op} {inc.threshold!r})[{window}:{STEP}s])"
        if _query(prometheus, promql, backfill.end):
            seen.add(inc.name)
    assert seen == names


def test_prometheus_sees_one_cpu_counter_reset(prometheus: str, backfill: Backfill) -> None:
    rows = _query(prometheus, "resets(node_cpu_seconds_total{job='host'}[1d])", backfill.end)
    assert len(rows) == 8
    assert {_value(r) for r in rows} == {1.0}
    rows = _query(
        prometheus,
        "sum by (cpu) (rate(node_cpu_seconds_total{job='host'}[5m]))",
        backfill.end,
    )
    assert len(rows) == 2
    for r in rows:
        assert _value(r) == pytest.approx(1.0, abs=0.01)
