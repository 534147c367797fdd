"""The streaming detector against the real broker: results, scale-out, crashes, bad input,
broker outage, SIGTERM.

Samples are produced straight to the samples topic with sla_common.samples (the receiver
is tested on its own). Values follow a fixed pattern, not noise, so every window's status
is known in advance: windows of 1 s hold 4 samples [9, 11, 9, 11] (mean 10, population
std 1) and the jump's windows [12, 14, 12, 14] (mean 13: +3 normal std devs -> ERROR).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from sla_common.anomalies import AnomalyRecord
from sla_common.kafka import ensure_topics
from sla_common.samples import SampleBatch
from tests.integration.stackutil import (
    SCRIPTS,
    Stack,
    consume_records,
    free_port,
    metric_value,
    run_bounded,
    scripts_env,
    start_module,
    stop_process,
    wait_until,
)

WINDOW_MS = 1000
T0 = 1_700_000_000_000  # event time of the first sample (a window boundary)
NORMAL = [9.0, 11.0, 9.0, 11.0]
JUMP = [12.0, 14.0, 12.0, 14.0]
MIN_HISTORY = 20
PARTITIONS = 3


class Topics:
    def __init__(self, stack: Stack, tmp: Path, bootstrap: str | None = None) -> None:
        p = f"det{uuid.uuid4().hex[:8]}"
        self.stack = stack
        self.bootstrap = bootstrap or stack.kafka_bootstrap
        self.samples, self.anomaly, self.dlq = f"{p}.samples", f"{p}.anomaly", f"{p}.dlq"
        self.group = p
        self.state = tmp / "state"
        ensure_topics(self.bootstrap, [self.samples], partitions=PARTITIONS)

    def env(self, **extra: str) -> dict[str, str]:
        return self.stack.service_env(
            KAFKA_SAMPLES_TOPIC=self.samples,
            KAFKA_ANOMALY_TOPIC=self.anomaly,
            KAFKA_SAMPLES_DLQ_TOPIC=self.dlq,
            KAFKA_GROUP_ID=self.group,
            KAFKA_PARTITIONS=str(PARTITIONS),
            ANOMALY_STATE_DIR=str(self.state),
            ANOMALY_WINDOW_MS=str(WINDOW_MS),
            ANOMALY_GRACE_MS="0",
            ANOMALY_MIN_HISTORY_WINDOWS=str(MIN_HISTORY),
            ANOMALY_COMMIT_INTERVAL_S="0.5",
            HTTP_PORT=str(free_port()),
            **extra,
        )


@pytest.fixture
def topics(stack: Stack, tmp_path: Path) -> Topics:
    return Topics(stack, tmp_path)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        stop_process(p, timeout=20)


def _batches(host: str, windows: range, jump: set[int]) -> list[SampleBatch]:
    """One record per window of one series: 4 samples 250 ms apart."""
    out = []
    for w in windows:
        xs = JUMP if w in jump else NORMAL
        ts = [T0 + w * WINDOW_MS + i * 250 for i in range(4)]
        out.append(SampleBatch("cpu_busy", {"host": host, "job": "node"}, ts, xs))
    return out


def _produce(bootstrap: str, topic: str, batches: list[SampleBatch]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for b in batches:
            producer.send(topic, key=b.kafka_key(), value=b.to_bytes())
        producer.flush(timeout=30)
    finally:
        producer.close()


def _results(bootstrap: str, topic: str, expect: int, timeout: float = 90) -> list[AnomalyRecord]:
    return [
        AnomalyRecord.from_bytes(r.value)
        for r in consume_records(bootstrap, topic, expect=expect, timeout=timeout)
    ]


def _by_key(records: list[AnomalyRecord]) -> dict[tuple[str, str, float], list[AnomalyRecord]]:
    out: dict[tuple[str, str, float], list[AnomalyRecord]] = {}
    for r in records:
        out.setdefault(r.idempotency_key(), []).append(r)
    return out


def _start(procs: list[subprocess.Popen[bytes]], env: dict[str, str], log: Path) -> Any:
    p = start_module("anomaly_detection", env, log)
    procs.append(p)
    return p


def _wait_results(topics: Topics, n: int, timeout: float = 120) -> list[AnomalyRecord]:
    boot = topics.bootstrap

    def probe() -> list[AnomalyRecord] | None:
        try:
            r = _results(boot, topics.anomaly, n, timeout=5)
        except AssertionError:  # the topic does not exist (yet)
            return None
        return r if len(r) >= n else None

    return wait_until(probe, timeout=timeout, what=f"{n} anomaly records", interval=1)


def test_a_3_sigma_jump_is_error_for_exactly_its_windows(
    topics: Topics, procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    jump = set(range(40, 46))
    # Windows 0..59; window 59 stays open (nothing later closes it): 59 results.
    _produce(topics.stack.kafka_bootstrap, topics.samples, _batches("a", range(60), jump))
    env = topics.env()
    _start(procs, env, tmp_path / "det.log")
    records = _wait_results(topics, 59)
    by_window = {
        round((r.window.start * 1000 - T0) / WINDOW_MS): r for r in records
    }  # duplicates (none expected here) collapse
    assert sorted(by_window) == list(range(59))
    statuses = [by_window[w].status for w in range(59)]
    assert statuses[:MIN_HISTORY] == ["LEARNING"] * MIN_HISTORY
    errors = [w for w, st in enumerate(statuses) if st == "ERROR"]
    assert errors == sorted(jump)
    assert all(st == "SAFE" for w, st in enumerate(statuses) if w >= MIN_HISTORY and w not in jump)
    r = by_window[40]
    assert (r.count, r.mean, r.std) == (4, 13.0, 1.0)
    assert r.normal.source == "learned"
    assert r.normal.mean == pytest.approx(10.0) and r.normal.std == pytest.approx(1.0)
    assert r.deviation == pytest.approx(3.0)
    assert r.series.labels == {"host": "a", "job": "node"} and r.series.metric == "cpu_busy"
    # /metrics: the latest window's deviation with the series' own labels.
    port = int(env["HTTP_PORT"])
    score = metric_value(port, "anomaly_score", '{for="cpu_busy",host="a",job="node"}')
    assert score == pytest.approx(by_window[58].deviation) and abs(score) < 1  # back to normal
    assert metric_value(port, "anomaly_windows_total", '{status="ERROR"}') == len(jump)
    log_text = (tmp_path / "det.log").read_text()
    assert log_text.count("ERROR cpu_busy") == len(jump)
    assert "SAFE cpu_busy" not in log_text


def test_two_processes_split_partitions_without_duplicate_results(
    topics: Topics, procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    hosts = [f"h{i}" for i in range(9)]
    envs = [topics.env(), topics.env()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    for env, log in zip(envs, logs, strict=True):
        _start(procs, env, log)
    # Both members hold partitions before any sample exists.
    wait_until(
        lambda: (
            all(log.exists() and "partition" in log.read_text() for log in logs)
            and _assigned(logs) == PARTITIONS
        ),
        timeout=90,
        what="both detectors assigned, all partitions owned once",
    )
    batches = [b for h in hosts for b in _batches(h, range(30), set())]
    _produce(topics.stack.kafka_bootstrap, topics.samples, batches)
    records = _wait_results(topics, 29 * len(hosts))
    keys = _by_key(records)
    assert len(keys) == 29 * len(hosts)
    assert all(len(v) == 1 for v in keys.values()), "a window result was produced twice"
    per_process = [
        metric_value(int(env["HTTP_PORT"]), "anomaly_windows_total", '{status="LEARNING"}')
        + metric_value(int(env["HTTP_PORT"]), "anomaly_windows_total", '{status="SAFE"}')
        for env in envs
    ]
    assert all(n > 0 for n in per_process), per_process
    assert sum(per_process) == len(records)


def _assigned(logs: list[Path]) -> int:
    """Partitions currently owned, from the latest assignment lines of each log."""
    owned = set()
    for log in logs:
        text = log.read_text() if log.exists() else ""
        for line in text.splitlines():
            if "no checkpoint" in line or "resuming from checkpoint" in line:
                owned.add(line.split("partition=")[1].split(")")[0])
    return len(owned)


def test_sigkill_and_restart_mid_stream_loses_no_window_result(
    topics: Topics, procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    hosts = ["k1", "k2", "k3", "k4"]
    jump = {30, 31}
    first = [b for h in hosts for b in _batches(h, range(0, 25), jump)]
    second = [b for h in hosts for b in _batches(h, range(25, 50), jump)]
    boot = topics.stack.kafka_bootstrap
    _produce(boot, topics.samples, first)
    env = topics.env()
    p = _start(procs, env, tmp_path / "det.log")
    _wait_results(topics, 24 * len(hosts))
    time.sleep(0.2)  # no wait for a condition: any moment is as good to kill it
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=10)
    _produce(boot, topics.samples, second)
    _start(procs, env, tmp_path / "det2.log")
    records = _wait_results(topics, 49 * len(hosts))
    keys = _by_key(records)
    assert len(keys) == 49 * len(hosts), "a window result is missing"
    for dupes in keys.values():  # at-least-once: a repeat is the same result
        assert all(d == dupes[0] for d in dupes)
    errors = sorted(
        round((r.window.start * 1000 - T0) / WINDOW_MS)
        for v in keys.values()
        for r in v[:1]
        if r.status == "ERROR"
    )
    assert errors == sorted(list(jump) * len(hosts))
    assert "resuming from checkpoint" in (tmp_path / "det2.log").read_text()


def test_malformed_samples_go_to_the_dead_letter_topic_with_a_reason(
    topics: Topics, procs: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    boot = topics.stack.kafka_bootstrap
    good = _batches("g", range(MIN_HISTORY + 3), set())
    producer = KafkaProducer(bootstrap_servers=boot)
    try:
        producer.send(topics.samples, key=good[0].kafka_key(), value=b"{not json")
        producer.send(topics.samples, key=b"wrong-key", value=good[1].to_bytes())
        producer.send(topics.samples, key=None, value=good[1].to_bytes())
        bad_ts = json.dumps({"v": 1, "metric": "m", "labels": {}, "t": [1.5], "x": [1]}).encode()
        producer.send(topics.samples, key=b"m{}", value=bad_ts)
        producer.flush(timeout=30)
    finally:
        producer.close()
    _produce(boot, topics.samples, good)
    env = topics.env()
    _start(procs, env, tmp_path / "det.log")

    def probe() -> list[Any] | None:
        try:
            r = consume_records(boot, topics.dlq, expect=4, timeout=5)
        except AssertionError:  # the detector has not created the topic yet (a slow start)
            return None
        return r if len(r) >= 4 else None

    letters = wait_until(probe, timeout=90, what="4 dead letters")
    heads = [dict(r.headers) for r in letters]
    reasons = sorted(h["dlq.reason"].decode() for h in heads)
    assert any(x.startswith("not JSON") for x in reasons)
    assert any("record key is not the series key" in x for x in reasons)
    assert any("record has no key" in x for x in reasons)
    assert any("milliseconds" in x for x in reasons)
    assert {r.value for r in letters} >= {b"{not json", good[1].to_bytes()}
    assert all(h["dlq.source_topic"] == topics.samples.encode() for h in heads)
    # The good series is unaffected.
    records = _wait_results(topics, MIN_HISTORY + 2)
    assert len(_by_key(records)) == MIN_HISTORY + 2
    assert "Traceback" not in (tmp_path / "det.log").read_text()


def test_broker_down_waits_and_resumes_then_sigterm_checkpoints_and_exits_0(
    topics: Topics, procs: list[subprocess.Popen[bytes]], tmp_path: Path, stack: Stack
) -> None:
    boot = stack.kafka_bootstrap
    hosts = ["b1", "b2"]
    _produce(boot, topics.samples, [b for h in hosts for b in _batches(h, range(10), set())])
    env = topics.env()
    p = _start(procs, env, tmp_path / "det.log")
    _wait_results(topics, 9 * len(hosts))
    broker = stack.pids["kafka"]
    os.kill(broker, signal.SIGSTOP)  # unreachable: connections hang, nothing answers
    try:
        time.sleep(12)  # the outage itself: longer than the session timeout (6 s)
        assert p.poll() is None, "the detector died while the broker was down"
    finally:
        os.kill(broker, signal.SIGCONT)
    _produce(boot, topics.samples, [b for h in hosts for b in _batches(h, range(10, 30), set())])
    records = _wait_results(topics, 29 * len(hosts), timeout=180)
    assert len(_by_key(records)) == 29 * len(hosts)
    # SIGTERM: a last checkpoint (state files at the end of every partition), exit 0.
    assert stop_process(p, timeout=30) == 0
    total = sum(
        json.loads(f.read_text())["offset"]
        for f in (topics.state / topics.group).glob(f"{topics.samples}-*.json")
    )
    assert total == 30 * len(hosts)
    assert "anomaly_detection stopped" in (tmp_path / "det.log").read_text()


def test_a_restarted_broker_that_forgot_its_topics_is_read_again_normals_kept(
    stack: Stack, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    env_k = scripts_env(tmp_path / "kafka", STACK_COMPONENTS="kafka", STACK_KAFKA_PORT=str(port))
    boot = f"127.0.0.1:{port}"
    hosts = ["r1", "r2"]
    try:
        assert run_bounded([SCRIPTS / "up"], timeout=60, env=env_k).returncode == 0
        topics = Topics(stack, tmp_path, bootstrap=boot)
        _produce(boot, topics.samples, [b for h in hosts for b in _batches(h, range(30), set())])
        env = topics.env(KAFKA_BOOTSTRAP_SERVERS=boot)
        p = _start(procs, env, tmp_path / "det.log")
        _wait_results(topics, 29 * len(hosts))
        assert run_bounded([SCRIPTS / "down"], timeout=60, env=env_k).returncode == 0
        time.sleep(3)  # the outage
        assert p.poll() is None
        # tansu is memory-only: it comes back empty; the receiver re-creates its topic.
        assert run_bounded([SCRIPTS / "up"], timeout=60, env=env_k).returncode == 0
        ensure_topics(boot, [topics.samples], partitions=PARTITIONS)
        later = [b for h in hosts for b in _batches(h, range(30, 60), {45})]
        _produce(boot, topics.samples, later)
        # Window 29 was still open in the detector's state: it closes now, on the new topic.
        records = _wait_results(topics, 30 * len(hosts), timeout=180)
        keys = _by_key(records)
        windows = {round((k[2] * 1000 - T0) / WINDOW_MS) for k in keys}
        assert windows == set(range(29, 59))
        statuses = {r.status for v in keys.values() for r in v}
        assert "LEARNING" not in statuses  # the learned normals survived the restart
        assert sorted(
            round((r.window.start * 1000 - T0) / WINDOW_MS)
            for v in keys.values()
            for r in v[:1]
            if r.status == "ERROR"
        ) == [45, 45]
        assert (
            "re-created" in (tmp_path / "det.log").read_text()
            or "gone" in (tmp_path / "det.log").read_text()
        )
    finally:
        run_bounded([SCRIPTS / "down", "--purge"], timeout=60, env=env_k)
