"""The raw-samples contract (Kafka topic ``samples``, setting ``KAFKA_SAMPLES_TOPIC``).

The remote-write receiver publishes what Prometheus sends; the streaming detector reads it.
One record carries a batch of samples of ONE series, in event-time order as received:

- key: :func:`sla_common.series.series_key` of the series (the key the ETL uses), so every
  sample of a series lands in the same partition and one detector process owns it;
- value: compact JSON ``{"v": 1, "metric": ..., "labels": {...}, "t": [ms, ...],
  "x": [value, ...]}``. Parallel arrays rather than one object per sample: a batch of n
  samples costs one JSON object, not n (the detector's throughput is per record).

Values are finite floats: the receiver drops Prometheus' staleness markers (a special NaN)
and any other non-finite value before publishing, and counts them. Timestamps are Unix
milliseconds, as in remote write. A record that does not decode raises
:class:`SampleFormatError` with a short reason, for the consumer's dead-letter topic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sla_common.series import series_key

SAMPLES_SCHEMA_VERSION = 1
MAX_SAMPLES_PER_RECORD = 10_000
MAX_LABELS = 64
MAX_TEXT = 4096
# Unix milliseconds between 1970 and the year 3000 (catches seconds and microseconds).
MAX_TIMESTAMP_MS = 32_503_680_000_000


class SampleFormatError(ValueError):
    """A samples record that cannot be read; ``str(e)`` is a short reason."""


@dataclass(frozen=True)
class SampleBatch:
    """Samples of one series: ``timestamps_ms[i]`` goes with ``values[i]``."""

    metric: str
    labels: Mapping[str, str]
    timestamps_ms: Sequence[int]
    values: Sequence[float]
    key: str = field(default="")

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", series_key(self.metric, self.labels))

    def kafka_key(self) -> bytes:
        return self.key.encode()

    def to_bytes(self) -> bytes:
        return encode_batch(self)


def encode_batch(batch: SampleBatch) -> bytes:
    """The record value of ``batch`` (validated the same way :func:`decode_batch` checks)."""
    _check(batch.metric, batch.labels, batch.timestamps_ms, batch.values)
    doc = {
        "v": SAMPLES_SCHEMA_VERSION,
        "metric": batch.metric,
        "labels": dict(batch.labels),
        "t": list(batch.timestamps_ms),
        "x": list(batch.values),
    }
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def decode_batch(raw: bytes, key: bytes | None = None) -> SampleBatch:
    """Parse and validate one record value; ``key``, when given, must be the series' key."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise SampleFormatError(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise SampleFormatError("not a JSON object")
    if doc.get("v") != SAMPLES_SCHEMA_VERSION:
        raise SampleFormatError(f"unknown schema version {doc.get('v')!r}")
    metric, labels, ts, xs = doc.get("metric"), doc.get("labels"), doc.get("t"), doc.get("x")
    if not isinstance(metric, str) or not isinstance(labels, dict):
        raise SampleFormatError("metric must be a string and labels an object")
    if not isinstance(ts, list) or not isinstance(xs, list):
        raise SampleFormatError("t and x must be arrays")
    _check(metric, labels, ts, xs)
    batch = SampleBatch(metric, labels, ts, [float(x) for x in xs])
    if key is not None and key != batch.kafka_key():
        raise SampleFormatError("record key is not the series key of metric + labels")
    return batch


def _check(
    metric: object, labels: Mapping[Any, Any], ts: Sequence[object], xs: Sequence[object]
) -> None:
    if not isinstance(metric, str) or not 0 < len(metric) <= MAX_TEXT:
        raise SampleFormatError("metric must be a non-empty string")
    if len(labels) > MAX_LABELS:
        raise SampleFormatError(f"more than {MAX_LABELS} labels")
    for k, v in labels.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(k) > MAX_TEXT:
            raise SampleFormatError("labels must map strings to strings")
        if len(v) > MAX_TEXT:
            raise SampleFormatError(f"label {k} is longer than {MAX_TEXT} characters")
    if len(ts) != len(xs):
        raise SampleFormatError("t and x differ in length")
    if not 0 < len(ts) <= MAX_SAMPLES_PER_RECORD:
        raise SampleFormatError(f"a record holds 1 to {MAX_SAMPLES_PER_RECORD} samples")
    for t in ts:
        if type(t) is not int or not 0 <= t <= MAX_TIMESTAMP_MS:
            raise SampleFormatError("timestamps must be Unix milliseconds")
    for x in xs:
        if type(x) not in (int, float) or not math.isfinite(x):  # type: ignore[arg-type]
            raise SampleFormatError("values must be finite numbers")
