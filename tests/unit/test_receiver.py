"""The remote-write receiver: decoding requests built with the protobuf classes and cramjam
(valid, dropped samples, bad snappy/protobuf, snappy bomb, limits), the HTTP answers with a
fake publisher, the publisher's failure handling with a fake producer, and the stubs."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from typing import Any

import cramjam
import pytest
from fastapi.testclient import TestClient
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from anomaly_detection.receiver import decode as d
from anomaly_detection.receiver._pb.prometheus.remote_pb2 import WriteRequest
from anomaly_detection.receiver.app import create_app
from anomaly_detection.receiver.metrics import ReceiverMetrics
from anomaly_detection.receiver.publish import RECONNECT_PAUSE_S, Publisher, PublishError
from anomaly_detection.receiver.settings import ReceiverSettings
from data_retrieval import protogen
from sla_common.samples import MAX_SAMPLES_PER_RECORD, decode_batch
from sla_common.series import series_key
from sla_common.settings import SettingsError, load_settings

STALE = struct.unpack("<d", struct.pack("<Q", d.STALE_NAN_BITS))[0]
HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
CPU = {"__name__": "node_cpu", "instance": "h:9100", "mode": "idle"}
MEM = {"__name__": "node_mem", "instance": "h:9100"}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_decodes_series_with_their_keys_values_and_order() -> None:
    body = d.write_request_body([(CPU, [(1000, 1.5), (16000, 2.5)]), (MEM, [(1000, 7.0)])])

    out = d.decode(body, 1 << 20)

    assert out.received == 3 and out.accepted == 3 and not out.dropped
    by_key = {r.key: decode_batch(r.value, key=r.key) for r in out.records}
    cpu = by_key[series_key("node_cpu", {"instance": "h:9100", "mode": "idle"}).encode()]
    assert cpu.metric == "node_cpu" and dict(cpu.labels) == {"instance": "h:9100", "mode": "idle"}
    assert list(cpu.timestamps_ms) == [1000, 16000] and list(cpu.values) == [1.5, 2.5]
    assert len(out.records) == 2


def test_reads_the_wire_format_prometheus_sends_built_by_hand() -> None:
    # prompb: WriteRequest.timeseries=1, TimeSeries.labels=1/.samples=2, Label.name=1/.value=2,
    # Sample.value=1 (double), .timestamp=2 (int64): independent of our own .proto.
    label = field(1, b"__name__") + field(2, b"up")
    sample = b"\x09" + struct.pack("<d", 1.0) + b"\x10" + varint(1_700_000_000_000)
    raw = field(1, field(1, label) + field(2, sample))

    out = d.decode(bytes(cramjam.snappy.compress_raw(raw)), 1 << 20)

    [rec] = out.records
    assert rec.key == b"up{}"
    assert json.loads(rec.value)["t"] == [1_700_000_000_000]


def test_staleness_markers_non_finite_and_bad_timestamps_are_dropped_and_counted() -> None:
    samples = [(1000, 1.0), (2000, STALE), (3000, math.nan), (4000, math.inf), (-5, 2.0)]
    out = d.decode(d.write_request_body([(CPU, samples), (MEM, [(1000, STALE)])]), 1 << 20)

    assert out.received == 6 and out.accepted == 1
    assert out.dropped == {d.STALE: 2, d.NON_FINITE: 2, d.BAD_TIMESTAMP: 1}
    assert [r.key for r in out.records] == [series_key("node_cpu", CPU).encode()]


def test_a_series_without_name_or_with_refused_labels_is_dropped_whole() -> None:
    too_many = {"__name__": "m", **{f"l{i}": "v" for i in range(100)}}
    body = d.write_request_body([({"job": "x"}, [(1, 1.0)]), (too_many, [(1, 1.0), (2, 2.0)])])

    out = d.decode(body, 1 << 20)

    assert out.records == [] and out.dropped == {d.NO_NAME: 1, d.BAD_SERIES: 2}


@pytest.mark.parametrize(
    "labels",
    [
        {"__name__": "bad-metric", "job": "x"},
        {"__name__": "m", "bad label": "x"},
        {"__name__": "m", 'job",evil="1': "x"},
    ],
)
def test_names_prometheus_would_refuse_drop_the_series(labels: dict[str, str]) -> None:
    out = d.decode(d.write_request_body([(labels, [(1, 1.0)]), (MEM, [(1, 1.0)])]), 1 << 20)

    assert [r.key for r in out.records] == [series_key("node_mem", MEM).encode()]
    assert out.dropped == {d.BAD_SERIES: 1}


def test_a_label_sent_twice_drops_the_series() -> None:
    request = WriteRequest()
    ts = request.timeseries.add()
    for name, value in (("__name__", "m"), ("job", "a"), ("job", "b")):
        ts.labels.add(name=name, value=value)
    ts.samples.add(timestamp=1, value=1.0)
    body = bytes(cramjam.snappy.compress_raw(request.SerializeToString()))

    out = d.decode(body, 1 << 20)

    assert out.records == [] and out.dropped == {d.BAD_SERIES: 1}


def test_empty_label_values_are_no_label_as_in_prometheus() -> None:
    out = d.decode(d.write_request_body([({**MEM, "zone": ""}, [(1, 1.0)])]), 1 << 20)

    [rec] = out.records
    assert rec.key == series_key("node_mem", MEM).encode()
    assert json.loads(rec.value)["labels"] == {"instance": "h:9100"}


def test_invalid_utf8_in_a_label_is_a_bad_protobuf() -> None:
    label = field(1, b"__name__") + field(2, b"m\xff")
    sample = b"\x09" + struct.pack("<d", 1.0) + b"\x10" + varint(1)
    raw = field(1, field(1, label) + field(2, sample))

    with pytest.raises(d.RequestError, match="protobuf") as e:
        d.decode(bytes(cramjam.snappy.compress_raw(raw)), 1 << 20)
    assert e.value.status == 400


def test_one_series_twice_in_a_request_is_one_record_in_event_time_order() -> None:
    out = d.decode(d.write_request_body([(CPU, [(3000, 3.0)]), (CPU, [(1000, 1.0)])]), 1 << 20)

    [rec] = out.records
    assert json.loads(rec.value)["t"] == [1000, 3000]


def test_a_long_series_is_split_into_records_of_at_most_the_format_limit() -> None:
    n = MAX_SAMPLES_PER_RECORD + 5
    out = d.decode(d.write_request_body([(CPU, [(i, float(i)) for i in range(n)])]), 1 << 24)

    assert [r.samples for r in out.records] == [MAX_SAMPLES_PER_RECORD, 5]
    assert out.accepted == n


def test_bad_snappy_is_400() -> None:
    with pytest.raises(d.RequestError, match="snappy") as e:
        d.decode(b"\x10not snappy at all", 1 << 20)
    assert e.value.status == 400


def test_a_body_without_a_length_header_is_400() -> None:
    with pytest.raises(d.RequestError, match="length header") as e:
        d.decode(b"\xff\xff\xff\xff\xff\xff", 1 << 20)
    assert e.value.status == 400


def test_bad_protobuf_is_400() -> None:
    body = bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff\x01garbage"))
    with pytest.raises(d.RequestError, match="protobuf") as e:
        d.decode(body, 1 << 20)
    assert e.value.status == 400


def test_a_snappy_bomb_is_refused_by_its_declared_length_before_decompressing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    monkeypatch.setattr(cramjam.snappy, "decompress_raw", calls.append)
    bomb = varint(2**32 - 1) + b"\x00" * 16  # declares 4 GiB in 21 bytes

    with pytest.raises(d.RequestError, match="declares 4294967295 bytes") as e:
        d.decode(bomb, 64 << 20)

    assert e.value.status == 413 and calls == []


def test_a_real_body_just_over_the_decompressed_bound_is_413() -> None:
    body = d.write_request_body([(CPU, [(i, 1.0) for i in range(200)])])
    size = d.declared_length(body)

    assert d.decode(body, size).accepted == 200
    with pytest.raises(d.RequestError) as e:
        d.decode(body, size - 1)
    assert e.value.status == 413


# --------------------------------------------------------------------------- HTTP


class FakePublisher:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[d.Record] = []

    def publish(self, records: list[d.Record]) -> None:
        if self.fail:
            raise PublishError("Kafka did not acknowledge: KafkaTimeoutError")
        self.published.extend(records)


@pytest.fixture
def settings() -> ReceiverSettings:
    return ReceiverSettings(receiver_max_body_bytes=4096, receiver_max_decompressed_bytes=8192)


def client_for(
    settings: ReceiverSettings, publisher: FakePublisher
) -> tuple[TestClient, ReceiverMetrics]:
    metrics = ReceiverMetrics()
    app = create_app(settings, publisher, metrics)  # type: ignore[arg-type]
    return TestClient(app), metrics


def counter(metrics: ReceiverMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_a_good_request_is_published_then_answered_204(settings: ReceiverSettings) -> None:
    pub = FakePublisher()
    client, m = client_for(settings, pub)
    body = d.write_request_body([(CPU, [(1000, 1.0), (2000, STALE)]), (MEM, [(1000, 2.0)])])

    r = client.post("/api/v1/write", content=body, headers=HEADERS)

    assert r.status_code == 204
    assert len(pub.published) == 2
    assert counter(m, "anomaly_receiver_requests_total", code="204") == 1
    assert counter(m, "anomaly_receiver_samples_received_total") == 3
    assert counter(m, "anomaly_receiver_samples_published_total") == 2
    assert counter(m, "anomaly_receiver_samples_dropped_total", reason=d.STALE) == 1
    text = client.get("/metrics").text
    assert "anomaly_receiver_publish_duration_seconds_count 1.0" in text


def test_broker_not_acknowledging_is_503_with_retry_after(settings: ReceiverSettings) -> None:
    client, m = client_for(settings, FakePublisher(fail=True))

    r = client.post(
        "/api/v1/write", content=d.write_request_body([(CPU, [(1, 1.0)])]), headers=HEADERS
    )

    assert r.status_code == 503
    assert r.headers["Retry-After"] == str(settings.receiver_retry_after_s)
    assert "retry" in r.text
    assert counter(m, "anomaly_receiver_samples_published_total") == 0
    assert counter(m, "anomaly_receiver_requests_total", code="503") == 1


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({**HEADERS, "Content-Encoding": "gzip"}, "Content-Encoding must be snappy"),
        ({"Content-Type": "application/x-protobuf"}, "Content-Encoding must be snappy"),
        ({**HEADERS, "Content-Type": "application/json"}, "Content-Type must be"),
        (
            {
                **HEADERS,
                "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            },
            "only remote write v1",
        ),
    ],
)
def test_wrong_headers_are_400_with_the_reason(
    settings: ReceiverSettings, headers: dict[str, str], reason: str
) -> None:
    pub = FakePublisher()
    client, m = client_for(settings, pub)

    r = client.post(
        "/api/v1/write", content=d.write_request_body([(CPU, [(1, 1.0)])]), headers=headers
    )

    assert r.status_code == 400 and reason in r.text
    assert pub.published == []
    assert counter(m, "anomaly_receiver_requests_total", code="400") == 1


def test_v1_proto_parameter_is_accepted(settings: ReceiverSettings) -> None:
    client, _ = client_for(settings, FakePublisher())
    headers = {**HEADERS, "Content-Type": "application/x-protobuf; proto=prometheus.WriteRequest"}

    r = client.post(
        "/api/v1/write", content=d.write_request_body([(CPU, [(1, 1.0)])]), headers=headers
    )

    assert r.status_code == 204


def test_bad_bodies_are_400_not_500(settings: ReceiverSettings) -> None:
    client, _ = client_for(settings, FakePublisher())

    snappy = client.post("/api/v1/write", content=b"\x05abc", headers=HEADERS)
    proto = client.post(
        "/api/v1/write", content=bytes(cramjam.snappy.compress_raw(b"\xff\xff")), headers=HEADERS
    )

    assert (snappy.status_code, proto.status_code) == (400, 400)
    assert "snappy" in snappy.text and "protobuf" in proto.text


def test_a_body_over_the_limit_is_413_by_content_length_and_by_counting(
    settings: ReceiverSettings,
) -> None:
    client, m = client_for(settings, FakePublisher())
    big = b"\x00" * 5000

    declared = client.post("/api/v1/write", content=big, headers=HEADERS)

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to trust
        for _ in range(5):
            yield b"\x00" * 1000

    streamed = client.post("/api/v1/write", content=chunks(), headers=HEADERS)

    assert declared.status_code == 413 and "larger than 4096" in declared.text
    assert streamed.status_code == 413
    assert counter(m, "anomaly_receiver_requests_total", code="413") == 2


def test_a_snappy_bomb_over_http_is_413(settings: ReceiverSettings) -> None:
    client, _ = client_for(settings, FakePublisher())

    r = client.post("/api/v1/write", content=varint(1 << 30) + b"\x00" * 10, headers=HEADERS)

    assert r.status_code == 413 and "declares" in r.text


def test_settings_refuse_a_decompressed_bound_below_the_body_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECEIVER_MAX_BODY_BYTES", "100000")
    monkeypatch.setenv("RECEIVER_MAX_DECOMPRESSED_BYTES", "50000")
    with pytest.raises(SettingsError, match="RECEIVER_MAX_DECOMPRESSED_BYTES"):
        load_settings(ReceiverSettings)


def test_settings_defaults_use_the_issue_names() -> None:
    s = ReceiverSettings()
    assert s.kafka_samples_topic == "samples"
    assert s.receiver_max_decompressed_bytes >= s.receiver_max_body_bytes


# --------------------------------------------------------------------------- publisher


class FakeFuture:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


class FakeProducer:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes) -> FakeFuture:
        self.sent.append((topic, key, value))
        return FakeFuture(self.error)

    def close(self, timeout: float) -> None:
        self.closed = True


def test_publisher_sends_keyed_records_and_reuses_its_producer() -> None:
    made: list[FakeProducer] = []

    def factory(_s: ReceiverSettings, _t: float) -> Any:
        made.append(FakeProducer())
        return made[-1]

    pub = Publisher(ReceiverSettings(kafka_samples_topic="raw"), factory)
    pub.publish([d.Record(b"k1", b"v1", 1)])
    pub.publish([d.Record(b"k2", b"v2", 3)])

    assert len(made) == 1
    assert made[0].sent == [("raw", b"k1", b"v1"), ("raw", b"k2", b"v2")]


def test_an_unacknowledged_record_fails_the_request_and_replaces_the_producer() -> None:
    made: list[FakeProducer] = []

    def factory(_s: ReceiverSettings, _t: float) -> Any:
        made.append(FakeProducer(KafkaTimeoutError("no ack") if not made else None))
        return made[-1]

    pub = Publisher(ReceiverSettings(), factory)
    with pytest.raises(PublishError, match="KafkaTimeoutError"):
        pub.publish([d.Record(b"k", b"v", 1)])
    pub.publish([d.Record(b"k", b"v", 1)])

    assert len(made) == 2 and made[0].closed and not made[1].closed


def test_a_broker_that_cannot_be_reached_is_a_publish_error() -> None:
    def factory(_s: ReceiverSettings, _t: float) -> Any:
        raise KafkaConnectionError()

    with pytest.raises(PublishError, match="Kafka unavailable: KafkaConnectionError"):
        Publisher(ReceiverSettings(), factory).publish([d.Record(b"k", b"v", 1)])


def test_after_a_failed_connection_requests_fail_at_once_for_a_moment() -> None:
    attempts: list[float] = []
    now = [100.0]

    def factory(_s: ReceiverSettings, _t: float) -> Any:
        attempts.append(now[0])
        if len(attempts) == 1:
            raise KafkaConnectionError("refused")
        return FakeProducer()

    pub = Publisher(ReceiverSettings(), factory)
    pub.clock = lambda: now[0]
    record = [d.Record(b"k", b"v", 1)]
    for _ in range(2):  # the failed attempt, then a request inside the pause: no attempt
        with pytest.raises(PublishError, match="Kafka unavailable"):
            pub.publish(record)
    now[0] += RECONNECT_PAUSE_S - 0.01
    with pytest.raises(PublishError):
        pub.publish(record)  # just before the pause ends: still none
    assert attempts == [100.0]
    now[0] = 100.0 + RECONNECT_PAUSE_S
    pub.publish(record)

    assert attempts == [100.0, 100.0 + RECONNECT_PAUSE_S]


def test_remote_write_stubs_match_a_fresh_generation() -> None:
    target = protogen.REMOTE_WRITE
    problems = protogen.differences(target.package_dir, target)

    assert problems == [], "stale stubs, run `make protos`: " + "; ".join(problems)
    assert WriteRequest.DESCRIPTOR.full_name == "prometheus.WriteRequest"
