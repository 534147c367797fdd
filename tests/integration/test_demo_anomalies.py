"""`make demo`'s anomaly pieces on the test stack: the stack's demo exporter with a live
incident scheduled (scripts/demo_live.py, as scripts/demo does, but starting within seconds),
its Prometheus remote-writing to the receiver, the detector with short windows, and the demo
report's section listing the ERROR windows the incident caused.

The stack's Prometheus scrapes the demo host every 15 s: with 15 s windows (one sample each)
and 5 windows of learning, the normals are learned before the incident starts 90 s after
scheduling; the incident (fd +6000, about a hundred learned standard deviations) lasts 60 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sla_common.anomalies import AnomalyRecord
from sla_common.kafka import ensure_topics
from tests.integration.stackutil import (
    HOST,
    REPO,
    Stack,
    consume_records,
    metric_value,
    run_bounded,
    start_module,
    stop_process,
    wait_until,
)

AFTER_S = 90
DURATION_S = 60
INCIDENT = "demo-live-incident.json"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        stop_process(p, timeout=20)


@pytest.mark.timeout(420)
def test_the_live_incident_gives_error_windows_and_the_report_lists_them(
    stack: Stack, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    facts = json.loads((stack.state_dir / "stack.json").read_text())
    detector_port = int(facts["suite_ports"]["anomaly_detection"])
    p = f"demo{uuid.uuid4().hex[:8]}"
    samples, anomaly = f"{p}.samples", f"{p}.anomaly"
    ensure_topics(stack.kafka_bootstrap, [samples], partitions=1)
    common = {"KAFKA_SAMPLES_TOPIC": samples, "HTTP_HOST": HOST}
    receiver_env = stack.service_env(**common, HTTP_PORT=str(stack.receiver_port))
    detector_env = stack.service_env(
        **common,
        HTTP_PORT=str(detector_port),
        KAFKA_ANOMALY_TOPIC=anomaly,
        KAFKA_SAMPLES_DLQ_TOPIC=f"{p}.dlq",
        KAFKA_GROUP_ID=p,
        KAFKA_PARTITIONS="1",
        ANOMALY_STATE_DIR=str(tmp_path / "state"),
        ANOMALY_WINDOW_MS="15000",
        ANOMALY_GRACE_MS="5000",
        ANOMALY_MIN_HISTORY_WINDOWS="5",
        ANOMALY_COMMIT_INTERVAL_S="0.5",
    )
    procs.append(start_module("anomaly_detection.receiver", receiver_env, tmp_path / "rcv.log"))
    procs.append(start_module("anomaly_detection", detector_env, tmp_path / "det.log"))
    wait_until(
        lambda: metric_value(detector_port, "anomaly_sample_records_total") >= 0,
        timeout=60,
        what="the detector's /metrics",
    )
    incident_file = stack.state_dir / INCIDENT
    try:
        argv: list[str | Path] = [sys.executable, REPO / "scripts" / "demo_live.py", "schedule"]
        argv += [f"--out={incident_file}", f"--after-s={AFTER_S}", f"--duration-s={DURATION_S}"]
        sched = run_bounded(argv, timeout=30)
        assert sched.returncode == 0, sched.stdout + sched.stderr
        truth = json.loads(incident_file.read_text())
        assert truth["key"] in sched.stdout  # the ground truth is printed
        start, end = float(truth["start"]), float(truth["end"])

        def errors() -> list[AnomalyRecord] | None:
            try:
                recs = [
                    AnomalyRecord.from_bytes(r.value)
                    for r in consume_records(stack.kafka_bootstrap, anomaly, 10**9, timeout=3)
                ]
            except AssertionError:  # the topic does not exist yet
                return None
            hits = [r for r in recs if r.series.key == truth["key"] and r.status == "ERROR"
                    and start <= r.window.start < end]  # fmt: skip
            return hits or None

        # The first incident window closes 15 s after it starts, + grace + remote write.
        hits = wait_until(
            errors, timeout=AFTER_S + 15 + 120, what="an ERROR window of the incident", interval=2
        )
        for r in hits:  # the jump, measured against the normal learned before it
            assert r.deviation > 2 and r.mean - r.normal.mean > 0.9 * truth["shift"]

        report = run_bounded(
            [sys.executable, REPO / "scripts" / "demo_report.py", "--anomalies"],
            timeout=90,
            env={**stack.service_env(KAFKA_ANOMALY_TOPIC=anomaly)},
        )
        assert report.returncode == 0, report.stdout + report.stderr
        out = report.stdout
        assert f"live incident: {truth['key']}" in out, out
        rows = [line for line in out.splitlines() if line.strip().startswith(truth["metric"])]
        hms = time.strftime("%H:%M:%S", time.gmtime(hits[0].window.start))
        assert any(hms in row and row.rstrip().endswith("ERROR") for row in rows), out
    finally:
        incident_file.unlink(missing_ok=True)
