"""The raw-samples record: round trip, key, and each refusal with its reason."""

from __future__ import annotations

import json

import pytest

from sla_common.samples import SampleBatch, SampleFormatError, decode_batch, encode_batch
from sla_common.series import series_key


def test_round_trip_keeps_every_sample_and_derives_the_series_key() -> None:
    b = SampleBatch("node_load1", {"instance": "h:9100", "job": "node"}, [1000, 16000], [0.5, 2])
    raw = encode_batch(b)
    back = decode_batch(raw, key=b.kafka_key())
    assert back.key == series_key("node_load1", {"instance": "h:9100", "job": "node"})
    assert list(back.timestamps_ms) == [1000, 16000] and list(back.values) == [0.5, 2.0]


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"v": 2, "metric": "m", "labels": {}, "t": [1], "x": [1]}, "schema version"),
        ({"v": 1, "metric": "", "labels": {}, "t": [1], "x": [1]}, "metric"),
        ({"v": 1, "metric": "m", "labels": {"a": 1}, "t": [1], "x": [1]}, "labels"),
        ({"v": 1, "metric": "m", "labels": {}, "t": [1, 2], "x": [1]}, "differ in length"),
        ({"v": 1, "metric": "m", "labels": {}, "t": [], "x": []}, "1 to"),
        ({"v": 1, "metric": "m", "labels": {}, "t": [1.5], "x": [1]}, "milliseconds"),
        ({"v": 1, "metric": "m", "labels": {}, "t": [10**17], "x": [1]}, "milliseconds"),
        ({"v": 1, "metric": "m", "labels": {}, "t": [1], "x": ["1"]}, "finite"),
        ({"v": 1, "metric": "m", "labels": {}, "t": [1], "x": [True]}, "finite"),
        ([1, 2], "object"),
    ],
)
def test_bad_records_are_refused_with_a_reason(doc: object, reason: str) -> None:
    with pytest.raises(SampleFormatError, match=reason):
        decode_batch(json.dumps(doc).encode())


def test_non_json_nan_and_a_foreign_key_are_refused() -> None:
    with pytest.raises(SampleFormatError, match="not JSON"):
        decode_batch(b"\xff\x00")
    with pytest.raises(SampleFormatError, match="finite"):
        decode_batch(b'{"v":1,"metric":"m","labels":{},"t":[1],"x":[NaN]}')
    raw = encode_batch(SampleBatch("m", {"a": "1"}, [1], [1.0]))
    with pytest.raises(SampleFormatError, match="series key"):
        decode_batch(raw, key=b'm{a="2"}')
    with pytest.raises(SampleFormatError, match="finite"):
        encode_batch(SampleBatch("m", {}, [1], [float("inf")]))
