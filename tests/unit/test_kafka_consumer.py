"""``sla_common.kafka.make_consumer``: the Kafka consumer settings the detector and the
outlier trainer share (kafka-python's own defaults would auto-commit, start a new group at
the latest offset, create a missing topic on fetch and wait 30 s for a broker)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
from kafka import KafkaConsumer

from anomaly_detection import detector as det
from anomaly_detection.metrics import DetectorMetrics
from anomaly_detection.outliers import trainer
from anomaly_detection.outliers.settings import OutlierSettings
from anomaly_detection.outliers.store import ModelStore
from anomaly_detection.settings import DetectorSettings
from sla_common import kafka as kafka_helpers
from sla_common.kafka import make_consumer


class RecordingConsumer:
    """Stands in for KafkaConsumer: keeps its settings and subscriptions, connects nowhere."""

    made: ClassVar[list[dict[str, Any]]] = []
    topics: ClassVar[list[list[str]]] = []

    def __init__(self, **kwargs: Any) -> None:
        RecordingConsumer.made.append(kwargs)

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        RecordingConsumer.topics.append(list(topics))

    def close(self, autocommit: bool = True) -> None:
        pass


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> type[RecordingConsumer]:
    monkeypatch.setattr(kafka_helpers, "KafkaConsumer", RecordingConsumer)
    RecordingConsumer.made.clear()
    RecordingConsumer.topics.clear()
    return RecordingConsumer


def test_the_consumer_commits_itself_from_the_earliest_and_creates_no_topic(
    recorded: type[RecordingConsumer],
) -> None:
    make_consumer(
        "127.0.0.1:9092",
        "me",
        "my-group",
        session_timeout_ms=7000,
        heartbeat_interval_ms=900,
        max_poll_records=3,
    )
    (kwargs,) = recorded.made
    assert kwargs == {
        "bootstrap_servers": "127.0.0.1:9092",
        "client_id": "me",
        "group_id": "my-group",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 7000,
        "heartbeat_interval_ms": 900,
        "request_timeout_ms": 12_000,  # a request outlasts a session timeout
        "bootstrap_timeout_ms": 10_000,
        "max_poll_records": 3,
        "max_poll_interval_ms": 300_000,
        "allow_auto_create_topics": False,
    }
    # every name is one kafka-python knows (it would refuse an unknown one only at run time)
    assert set(kwargs) <= set(KafkaConsumer.DEFAULT_CONFIG)


def test_the_detector_and_the_outlier_trainer_consume_through_it(
    recorded: type[RecordingConsumer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = DetectorSettings(anomaly_state_dir=str(tmp_path), kafka_session_timeout_ms=8000)
    det.Detector(ds, DetectorMetrics(10))._make_consumer()

    monkeypatch.setattr(trainer, "ensure_topics", lambda *a, **k: [])
    ts = OutlierSettings(kafka_session_timeout_ms=9000)
    stopped = threading.Event()
    stopped.set()  # build the consumer, then stop before the first poll
    trainer.work(ts, cast(ModelStore, None), stopped)

    detector, outliers = recorded.made
    assert (detector["group_id"], detector["request_timeout_ms"]) == (ds.kafka_group_id, 13_000)
    assert (detector["max_poll_records"], detector["enable_auto_commit"]) == (2000, False)
    assert outliers["group_id"] == ts.kafka_outlier_group_id
    assert outliers["request_timeout_ms"] == 14_000 and outliers["max_poll_records"] == 1
    assert outliers["max_poll_interval_ms"] == trainer.MAX_POLL_INTERVAL_MS
    assert recorded.topics == [[ds.kafka_samples_topic], [ts.kafka_outlier_jobs_topic]]
