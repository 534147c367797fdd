"""Anomaly records (topic ``anomaly``) against the real broker and MariaDB: stored once by
``python -m data_storage`` (redelivery -> the same rows), bad ones dead-lettered with their
reason, then served by sla_manager's ``GET /anomalies`` and data_retrieval's
``ListAnomalies`` with their filters and paging."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from data_storage.settings import StorageSettings
from sla_common.anomalies import AnomalyRecord
from sla_common.mysql import drop_database
from sla_common.mysql_startup import wait_and_migrate
from sla_common.series import series_key
from tests.integration.stackutil import Stack, wait_until
from tests.integration.test_storage import (
    Service,
    consume_all,
    count,
    new_topic,
    produce,
    settings_for,
    sql,
)

DETECTORS = ("sigma", "iforest")


@pytest.fixture
def db(stack: Stack) -> Iterator[StorageSettings]:
    s = settings_for(stack, f"anomaly_test_{uuid.uuid4().hex[:10]}")
    wait_and_migrate(s, deadline_s=30)
    yield s
    drop_database(s)


@pytest.fixture
def service(stack: Stack, tmp_path: Path) -> Iterator[Service]:
    svc = Service(stack, tmp_path)
    yield svc
    for s in svc.started:
        s.stop()


STATUSES = ("SAFE", "WARN", "ERROR", "LEARNING")


def make_record(
    metric: str, labels: dict[str, str], start: float, detector: str, status: str, **over: Any
) -> AnomalyRecord:
    learning = status == "LEARNING"
    doc: dict[str, Any] = {
        "detector": {"name": detector, "version": "1"},
        "series": {"key": series_key(metric, labels), "metric": metric, "labels": labels},
        "window": {"start": start, "end": start + 15},
        "count": 3,
        "mean": 12.0,
        "std": 1.5,
        "normal": {
            "mean": 0.0 if learning else 10.0,
            "std": 0.0 if learning else 1.0,
            "source": "none" if learning else "learned",
        },
        "deviation": 0.0 if learning else {"SAFE": 0.5, "WARN": 1.5, "ERROR": 2.5}[status],
        "status": status,
    }
    doc.update(over)
    return AnomalyRecord.model_validate(doc)


def sample_records(t0: float) -> list[AnomalyRecord]:
    """2 series × 2 detectors × 6 windows of 15 s, statuses cycling."""
    out = []
    for host in ("a", "b"):
        for d, detector in enumerate(DETECTORS):
            for i in range(6):
                status = STATUSES[(i + d) % len(STATUSES)]
                out.append(make_record("cpu_usage", {"host": host}, t0 + 15 * i, detector, status))
    return out


def anomaly_service(service: Service, db: StorageSettings, topic: str, **extra: str) -> Any:
    return service(
        db,
        f"{topic}-analyses",
        KAFKA_ANOMALY_TOPIC=topic,
        KAFKA_ANOMALY_DLQ_TOPIC=f"{topic}.dlq",
        STORAGE_STREAMS="anomaly",
        **extra,
    )


def wait_anomalies_stored(svc: Any, n: int) -> None:
    wait_until(
        lambda: svc.metric("sla_storage_anomaly_messages_stored_total") >= n or not svc.alive(),
        timeout=90,
        what=f"{n} anomaly records stored; log:\n{svc.output()[-3000:]}",
    )
    assert svc.alive(), svc.output()[-3000:]


def stored(db: StorageSettings) -> dict[tuple[str, str, int], tuple[Any, ...]]:
    rows = sql(
        db,
        "SELECT series_key, detector, window_start_ms, window_end_ms, status, deviation, "
        "sample_count, normal_source, JSON_EXTRACT(labels, '$.host') FROM anomalies",
    )
    return {(str(r[0]), str(r[1]), int(r[2])): r[3:] for r in rows}


@pytest.mark.timeout(180)
def test_records_are_stored_once_and_bad_ones_dead_lettered(
    stack: Stack,
    db: StorageSettings,
    service: Service,
) -> None:
    t0 = float(int(time.time()) // 60 * 60 - 3600)
    good = sample_records(t0)
    rec = good[0]
    key = rec.kafka_key()
    doc = json.loads(rec.to_bytes())
    bad: list[tuple[str, bytes | None, bytes | None]] = [
        ("invalid_json", key, b"{not json"),
        ("empty", key, b""),
        ("unknown_schema_version", key, json.dumps({**doc, "schema_version": 7}).encode()),
        ("invalid", key, json.dumps({**doc, "status": "OK"}).encode()),
        ("key_mismatch", b"another key", rec.to_bytes()),
        (
            "future_timestamp",
            key,
            make_record("cpu_usage", {"host": "a"}, time.time() + 3600, "sigma", "SAFE").to_bytes(),
        ),
    ]
    records: list[tuple[bytes | None, bytes | None]] = [(r.kafka_key(), r.to_bytes()) for r in good]
    records += [(k, v) for _, k, v in bad]
    topic = new_topic(stack.kafka_bootstrap, "anomaly")
    produce(stack.kafka_bootstrap, topic, records)

    svc = anomaly_service(service, db, topic)
    wait_anomalies_stored(svc, len(good))
    rows = stored(db)
    assert len(rows) == len(good) == count(db, "anomalies")
    for r in good:
        k = (r.series.key, r.detector.name, round(r.window.start * 1000))
        end_ms, status, deviation, n, source, host = rows[k]
        assert (end_ms, status, deviation, n, source) == (
            round(r.window.end * 1000),
            r.status,
            r.deviation,
            r.count,
            r.normal.source,
        )
        assert json.loads(host) == r.series.labels["host"]

    letters = consume_all(stack.kafka_bootstrap, f"{topic}.dlq", expect=len(bad), timeout=60)
    reasons = sorted(dict(x.headers)["dlq.reason"].decode() for x in letters)
    assert reasons == sorted(b[0] for b in bad)

    # Redelivery (the same records again) and one window judged again: no row added, the
    # re-judged window holds its new status.
    rejudged = make_record("cpu_usage", {"host": "a"}, t0, "sigma", "ERROR", deviation=3.0)
    produce(stack.kafka_bootstrap, topic, [*records[: len(good)], (key, rejudged.to_bytes())])
    wait_anomalies_stored(svc, 2 * len(good) + 1)
    again = stored(db)
    assert len(again) == len(good) == count(db, "anomalies")
    assert again[(rec.series.key, "sigma", round(t0 * 1000))][1:3] == ("ERROR", 3.0)
