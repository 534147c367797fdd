"""data_storage's anomaly stream: records checked, rows, the upsert, and the consumer loop
with a sink in memory (dead letters to the anomaly DLQ, offsets committed after the write).
The same against MySQL and the broker: tests/integration/test_anomalies.py."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from data_storage import anomalies as anom
from data_storage.metrics import StorageMetrics
from data_storage.settings import StorageSettings
from data_storage.streams import configured
from data_storage.validate import Rejected
from data_storage.writer import WriteResult
from sla_common.anomalies import AnomalyRecord
from sla_common.mysql import DEFAULT_MIGRATIONS_DIR, MysqlSettings, series_key_hash
from sla_common.series import series_key
from tests.unit.test_anomalies import anomaly_doc
from tests.unit.test_storage import DLQ, TOPIC, TP, FakeConsumer, FakeProducer, FakeRecord, Started

NOW = 1_700_000_600.0
LABELS = {"host": "a", "job": "node"}
KEY = series_key("cpu", LABELS)


def record(start: float = 1_700_000_000.0, **over: Any) -> AnomalyRecord:
    doc = anomaly_doc(
        series={"key": KEY, "metric": "cpu", "labels": LABELS},
        window={"start": start, "end": start + 0.5},
    )
    doc.update(over)
    return AnomalyRecord.model_validate(doc)


def _check(key: bytes | None, value: bytes | None) -> AnomalyRecord | Rejected:
    return anom.check(key, value, 10_000, not_after=NOW + 300)


def _doc(rec: AnomalyRecord, **over: Any) -> bytes:
    doc = json.loads(rec.to_bytes())
    doc.update(over)
    return json.dumps(doc).encode()


def test_a_valid_record_passes() -> None:
    rec = record()
    assert _check(rec.kafka_key(), rec.to_bytes()) == rec


def test_every_kind_of_bad_record_is_rejected_with_its_reason() -> None:
    rec = record()
    k = rec.kafka_key()
    other = series_key("cpu", {"host": "b", "job": "node"})
    cases = [
        ("empty", k, None),
        ("empty", k, b""),
        ("too_large", k, b"x" * 10_001),
        ("invalid_json", k, b"{not json"),
        ("unknown_schema_version", k, _doc(rec, schema_version=3)),
        ("missing_field", k, _doc(rec, status=None).replace(b', "status": null', b"")),
        ("non_finite", k, _doc(rec).replace(b'"mean": 12.0', b'"mean": NaN')),
        ("wrong_type", k, _doc(rec, count="three")),
        ("invalid", k, _doc(rec, status="OK")),
        ("key_mismatch", b"another", rec.to_bytes()),
        (
            "key_mismatch",
            other.encode(),
            _doc(rec, series={**rec.series.model_dump(), "key": other}),
        ),
        ("future_timestamp", k, record(start=NOW + 400).to_bytes()),
        ("unstorable", *_long_metric()),
    ]
    for reason, key, value in cases:
        got = _check(key, value)
        assert isinstance(got, Rejected), (reason, got)
        assert got.reason == reason, (reason, got)


def _long_metric() -> tuple[bytes, bytes]:
    metric = "m" * 1025
    key = series_key(metric, {})
    rec = record(series={"key": key, "metric": metric, "labels": {}})
    return key.encode(), rec.to_bytes()


def test_a_record_becomes_one_row_with_times_in_ms() -> None:
    rec = record(start=1_700_000_000.5)
    row = dict(zip(anom.ANOMALIES.columns, anom.anomaly_row(rec, 7), strict=True))
    assert row["key_hash"] == series_key_hash(KEY)
    assert (row["detector"], row["detector_version"]) == ("sigma", "1")
    assert (row["window_start_ms"], row["window_end_ms"]) == (1_700_000_000_500, 1_700_000_001_000)
    assert json.loads(row["labels"]) == LABELS
    assert (row["status"], row["deviation"], row["normal_source"]) == ("WARN", 2.0, "learned")
    assert (row["sample_count"], row["stored_at"], row["schema_version"]) == (3, 7, 1)


def test_a_window_twice_in_one_batch_is_one_row_the_last_one() -> None:
    first, again = record(), record(status="ERROR", deviation=2.5)
    other = record(detector={"name": "iforest", "version": "1"})
    rows = anom.anomaly_rows([first, other, again], 0)
    assert len(rows) == 2
    statuses = {r[1]: r[16] for r in rows}
    assert statuses == {"sigma": "ERROR", "iforest": "WARN"}


def test_the_upsert_replaces_every_column_but_the_key() -> None:
    tail = anom.ANOMALIES.upsert_tail()
    for c in anom.ANOMALIES.key:
        assert f"{c} =" not in tail
    for c in ("status = VALUES(status)", "deviation = VALUES(deviation)"):
        assert c in tail


def test_the_table_matches_the_migration() -> None:
    (path,) = DEFAULT_MIGRATIONS_DIR.glob("*_anomalies.sql")  # whatever its number after a merge
    sql = path.read_text()
    body = sql[sql.index("CREATE TABLE IF NOT EXISTS anomalies") :]
    declared = re.findall(r"^\s{4}([a-z_]+) [A-Z]", body, re.M)
    # ... and the columns later migrations add; `score` is the batch models' (not streamed)
    later = "".join(p.read_text() for p in sorted(DEFAULT_MIGRATIONS_DIR.glob("*.sql")))
    added = re.findall(r"ALTER TABLE anomalies ADD COLUMN ([a-z_]+)", later)
    assert "normal_period_s" in added
    assert set(anom.ANOMALIES.columns) == (set(declared) | set(added)) - {"id", "score"}
    assert "UNIQUE KEY uq_anomalies_window (key_hash, detector, window_start_ms)" in body


# --------------------------------------------------------------------------- settings


def test_streams_setting_and_the_anomaly_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_STREAMS", "anomaly")
    monkeypatch.setenv("KAFKA_GROUP_ID", "g")
    s = StorageSettings()
    (stream,) = configured(s)
    assert (stream.topic, stream.dlq_topic, stream.group_id) == (
        "anomaly",
        "anomaly.dlq",
        "g.anomaly",
    )
    monkeypatch.setenv("STORAGE_STREAMS", "analyses, anomaly")
    assert [st.name for st in configured(StorageSettings())] == ["analyses", "anomaly"]
    for env, value in [("STORAGE_STREAMS", "forecasts"), ("KAFKA_ANOMALY_TOPIC", "prometheusdata")]:
        monkeypatch.setenv("STORAGE_STREAMS", "anomaly")
        monkeypatch.setenv(env, value)
        with pytest.raises(ValidationError):
            StorageSettings()
        monkeypatch.delenv(env)


def test_two_streams_metrics_share_a_registry() -> None:
    reg = CollectorRegistry()
    StorageMetrics(reg)
    m = StorageMetrics(reg, "sla_storage_anomaly", ("anomalies",))
    m.rows_written.labels("anomalies").inc(2)
    assert (
        reg.get_sample_value("sla_storage_anomaly_rows_written_total", {"table": "anomalies"}) == 2
    )
    assert reg.get_sample_value("sla_storage_rows_written_total", {"table": "series"}) == 0


# --------------------------------------------------------------------------- the loop


class MemoryWriter(anom.AnomalyWriter):
    def __init__(self, settings: MysqlSettings) -> None:
        super().__init__(settings)
        self.stored: list[AnomalyRecord] = []

    def write(self, messages: Sequence[AnomalyRecord]) -> WriteResult:
        self.stored.extend(messages)
        return WriteResult({"anomalies": len(messages)}, 0.001)

    def drop_connection(self) -> None:
        pass


def test_the_anomaly_stream_stores_good_records_dead_letters_bad_then_commits() -> None:
    s = StorageSettings(
        kafka_anomaly_topic=TOPIC,
        kafka_anomaly_dlq_topic=DLQ,
        kafka_group_id="grp",
        storage_batch_max_wait_ms=0,
        storage_retention_s=0,
    )
    (stream,) = [st for st in configured(s) if st.name == "anomaly"]
    good = [record(start=1_700_000_000.0 + i) for i in range(3)]
    raw = [(r.kafka_key(), r.to_bytes()) for r in good]
    raw.insert(1, (good[0].kafka_key(), b"{broken"))
    stop = threading.Event()
    kafka, dlq = (
        FakeConsumer([FakeRecord(i, k, v) for i, (k, v) in enumerate(raw)], stop),
        FakeProducer(),
    )
    metrics = StorageMetrics(prefix="sla_storage_anomaly", tables=stream.tables)
    c = Started(
        s,
        metrics,
        stop=stop,
        clock=lambda: NOW,
        stream=stream,
        make_writer=MemoryWriter,
        consumer=kafka,
        producer=dlq,
    )
    c.run()
    assert isinstance(c.writer, MemoryWriter)
    assert c.writer.stored == good
    ((_k, v, headers),) = dlq.acked
    assert (v, headers["dlq.reason"], headers["dlq.consumer.group"]) == (
        b"{broken",
        b"invalid_json",
        b"grp.anomaly",
    )
    assert kafka.commits == [{TP: 4}]
    assert metrics.registry.get_sample_value("sla_storage_anomaly_messages_stored_total") == 3


def test_which_normal_judged_is_stored_and_a_version_1_record_stores_null() -> None:
    v2 = record(
        schema_version=2,
        normal={"mean": 10.0, "std": 1.0, "source": "learned", "period_s": 86_400},
    )
    assert _check(v2.kafka_key(), v2.to_bytes()) == v2
    row = dict(zip(anom.ANOMALIES.columns, anom.anomaly_row(v2, 7), strict=True))
    assert (row["schema_version"], row["normal_period_s"]) == (2, 86_400)
    v1 = record()  # schema_version 1: which normal judged is not said
    row = dict(zip(anom.ANOMALIES.columns, anom.anomaly_row(v1, 7), strict=True))
    assert (row["schema_version"], row["normal_period_s"]) == (1, None)
