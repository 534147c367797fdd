"""The detector's checkpoint and rollback with fake clients (deterministic fault branches;
the real broker is in tests/integration/test_detector.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import TopicPartition

from anomaly_detection import detector as det
from anomaly_detection.metrics import DetectorMetrics
from anomaly_detection.settings import DetectorSettings
from sla_common.anomalies import AnomalyRecord
from sla_common.samples import SampleBatch

TP = TopicPartition("samples", 0)


class Future:
    def __init__(self, ok: bool) -> None:
        self.is_done = True
        self.ok = ok
        self.exception = None if ok else RuntimeError("broker gone")

    def failed(self) -> bool:
        return not self.ok


class Producer:
    def __init__(self) -> None:
        self.ok = True
        self.sent: list[tuple[str, bytes | None]] = []

    def send(
        self, topic: str, key: bytes | None = None, value: bytes | None = None, **_: Any
    ) -> Future:
        self.sent.append((topic, value))
        return Future(self.ok)

    def flush(self, timeout: float | None = None) -> None:
        pass


class Consumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, Any]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(offsets)

    def assignment(self) -> set[TopicPartition]:
        return {TP}


def _record(offset: int, window: int) -> Any:
    b = SampleBatch("cpu", {"h": "a"}, [window * 1000 + 10], [1.0])
    return SimpleNamespace(
        topic=TP.topic,
        partition=0,
        offset=offset,
        key=b.kafka_key(),
        value=b.to_bytes(),
        headers=[],
    )


@pytest.fixture
def detector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> det.Detector:
    s = DetectorSettings(
        anomaly_state_dir=str(tmp_path), anomaly_window_ms=1000, anomaly_grace_ms=0
    )
    d = det.Detector(s, DetectorMetrics(10))
    producer = Producer()
    d.consumer, d.producer = Consumer(), producer
    monkeypatch.setattr(det, "make_producer", lambda *a, **k: producer)
    monkeypatch.setattr(det, "close_producer", lambda *a, **k: True)
    monkeypatch.setattr(det, "ensure_topics", lambda *a, **k: [])
    d.parts[TP] = det.PartitionState(offset=None)
    return d


def _feed(d: det.Detector, offsets: range) -> None:
    ps = d.parts[TP]
    for o in offsets:
        d.process(ps, _record(o, o))
        ps.offset, ps.dirty = o + 1, True


def test_checkpoint_writes_state_after_the_flush_then_commits(detector: det.Detector) -> None:
    _feed(detector, range(5))
    detector.checkpoint_or_rollback()
    assert detector.store.load(TP).offset == 5
    (commit,) = detector.consumer.commits
    assert commit[TP].offset == 5
    assert len(detector.producer.sent) == 4  # windows 0-3 closed; 4 still open


def test_a_failed_send_rolls_back_to_the_checkpoint_and_reads_again(
    detector: det.Detector,
) -> None:
    _feed(detector, range(5))
    detector.checkpoint_or_rollback()
    detector.producer.ok = False
    _feed(detector, range(5, 8))
    detector.checkpoint_or_rollback()
    assert detector.consumer.seeks == [(TP, 5)]
    assert len(detector.consumer.commits) == 1  # nothing committed past the checkpoint
    ps = detector.parts[TP]
    assert ps.offset == 5 and not ps.dirty
    assert detector.store.load(TP).offset == 5
    # Read again (the broker is back): the same results for windows 4-6, once acknowledged.
    detector.producer.ok = True
    before = len(detector.producer.sent)
    _feed(detector, range(5, 8))
    detector.checkpoint_or_rollback()
    assert detector.store.load(TP).offset == 8
    assert len(detector.producer.sent) - before == 3


def test_a_malformed_record_is_dead_lettered_with_its_coordinates(detector: det.Detector) -> None:
    bad = SimpleNamespace(topic="samples", partition=0, offset=7, key=b"k", value=b"{x", headers=[])
    detector.process(detector.parts[TP], bad)
    topic, value = detector.producer.sent[-1]
    assert (topic, value) == ("samples.dlq", b"{x")
    assert detector.metrics.dead_letters.labels("not JSON")._value.get() == 1


def test_a_series_an_override_matches_is_judged_against_it_the_others_learn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = DetectorSettings(
        anomaly_state_dir=str(tmp_path),
        anomaly_window_ms=1000,
        anomaly_grace_ms=0,
        anomaly_normal_overrides='[{"selector": "cpu{h=\\"a\\"}", "mean": 0.5, "std": 0.2}]',
    )
    d = det.Detector(s, DetectorMetrics(10))
    d.consumer, d.producer = Consumer(), Producer()
    ps = det.PartitionState(offset=None)
    for w in range(3):
        for host in ("a", "b"):
            b = SampleBatch("cpu", {"h": host}, [w * 1000 + 10], [1.0])
            rec = SimpleNamespace(
                topic="samples", partition=0, offset=w, key=b.kafka_key(), value=b.to_bytes()
            )
            d.process(ps, rec)
    out = [AnomalyRecord.from_bytes(v) for _t, v in d.producer.sent if v is not None]
    by_host: dict[str, set[tuple[str, str]]] = {}
    for r in out:
        by_host.setdefault(r.series.labels["h"], set()).add((r.status, r.normal.source))
    assert by_host == {"a": {("ERROR", "static")}, "b": {("LEARNING", "none")}}
    assert {r.normal.mean for r in out if r.series.labels["h"] == "a"} == {0.5}
