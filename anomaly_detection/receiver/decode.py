"""Remote write v1 request bodies into samples records (pure: no I/O, no settings).

A body is a snappy *block* (not framed) compressed protobuf ``prometheus.WriteRequest``. The
block format starts with the uncompressed length as a varint: it is checked against the
caller's bound *before* anything is decompressed, so a small body declaring gigabytes (a
snappy bomb) costs nothing. Every failure is a :class:`RequestError` carrying the HTTP status
(400: can never succeed, 413: too large) and a short reason.

Samples: Prometheus' staleness markers (one particular NaN) and any other non-finite value
are dropped, as are timestamps outside what :mod:`sla_common.samples` accepts; each drop is
counted by reason. A series without a metric name (``__name__``), with a name Prometheus
would refuse (metric or label name, a label twice) or with labels the records format refuses
is dropped whole; labels with an empty value are left out (Prometheus' meaning of them).
Samples of one series in one request make one record (or several, past
:data:`~sla_common.samples.MAX_SAMPLES_PER_RECORD`).
"""

from __future__ import annotations

import math
import re
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import cramjam
from google.protobuf.message import DecodeError

from anomaly_detection.receiver._pb.prometheus.remote_pb2 import WriteRequest
from sla_common.samples import (
    MAX_SAMPLES_PER_RECORD,
    MAX_TIMESTAMP_MS,
    SampleBatch,
    SampleFormatError,
    encode_batch,
)
from sla_common.series import series_key

# Prometheus' staleness marker: the NaN with this bit pattern (model/value.StaleNaN).
STALE_NAN_BITS = 0x7FF0000000000002
_STALE = struct.pack("<Q", STALE_NAN_BITS)
_MAX_VARINT_BYTES = 5
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(
    r"[a-zA-Z_][a-zA-Z0-9_]*"
)  # a 32-bit length, the most the snappy block format declares

# Drop reasons (label values of the receiver's dropped-samples counter).
STALE = "stale_marker"
NON_FINITE = "non_finite"
BAD_TIMESTAMP = "bad_timestamp"
NO_NAME = "no_metric_name"
BAD_SERIES = "invalid_series"
DROP_REASONS = (STALE, NON_FINITE, BAD_TIMESTAMP, NO_NAME, BAD_SERIES)


class RequestError(ValueError):
    """A request that cannot be accepted; ``status`` is the HTTP answer, ``str(e)`` the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Record:
    """One samples record ready for the producer."""

    key: bytes
    value: bytes
    samples: int


@dataclass
class Decoded:
    records: list[Record] = field(default_factory=list)
    received: int = 0  # samples in the request, dropped ones included
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def accepted(self) -> int:
        return sum(r.samples for r in self.records)


def declared_length(body: bytes) -> int:
    """The uncompressed length a snappy block declares (its leading varint)."""
    result = 0
    for i, byte in enumerate(body[:_MAX_VARINT_BYTES]):
        result |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return result
    raise RequestError(400, "snappy: no valid length header")


def decompress(body: bytes, max_decompressed: int) -> bytes:
    """The snappy block ``body`` decompressed; RequestError 413 past ``max_decompressed``."""
    size = declared_length(body)
    if size > max_decompressed:
        raise RequestError(
            413, f"snappy: declares {size} bytes uncompressed, more than {max_decompressed}"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as e:
        raise RequestError(400, f"snappy: {e}") from None


def is_stale(value: float) -> bool:
    return struct.pack("<d", value) == _STALE


def parse(raw: bytes) -> WriteRequest:
    request = WriteRequest()
    try:
        request.ParseFromString(raw)
    except DecodeError as e:
        raise RequestError(400, f"protobuf: not a prometheus.WriteRequest ({e})") from None
    return request


def _valid_names(metric: str, labels: Mapping[str, str], sent: int) -> bool:
    """Prometheus' own rules: metric and label names, no label twice (``sent`` counts the
    labels as sent, ``__name__`` included, before the dict merged duplicates)."""
    return (
        len(labels) + 1 == sent
        and _METRIC_NAME.fullmatch(metric) is not None
        and all(_LABEL_NAME.fullmatch(k) for k in labels)
    )


def to_records(request: WriteRequest) -> Decoded:
    """The samples records of ``request``, with what was received and dropped."""
    out = Decoded()
    series: dict[str, tuple[str, dict[str, str], list[int], list[float]]] = {}
    merged: set[str] = set()
    for ts in request.timeseries:
        n = len(ts.samples)
        out.received += n
        labels = {label.name: label.value for label in ts.labels}
        metric = labels.pop("__name__", "")
        if not metric:
            out.dropped[NO_NAME] += n
            continue
        if not _valid_names(metric, labels, len(ts.labels)):
            out.dropped[BAD_SERIES] += n
            continue
        # An empty label value means "no such label" in Prometheus (and in its query API,
        # whose series the ETL keys): drop it so both give the series the same key.
        labels = {k: v for k, v in labels.items() if v}
        key = series_key(metric, labels)
        entry = series.get(key)
        if entry is None:
            entry = series[key] = (metric, labels, [], [])
        elif n:
            merged.add(key)
        times, values = entry[2], entry[3]
        for sample in ts.samples:
            value, t = sample.value, sample.timestamp
            if not math.isfinite(value):
                out.dropped[STALE if is_stale(value) else NON_FINITE] += 1
            elif not 0 <= t <= MAX_TIMESTAMP_MS:
                out.dropped[BAD_TIMESTAMP] += 1
            else:
                times.append(t)
                values.append(value)
    for key, (metric, labels, got_times, got_values) in series.items():
        times, values = got_times, got_values
        if not times:
            continue
        if key in merged:  # the same series twice in one request: keep event-time order
            pairs = sorted(zip(times, values, strict=True))
            times, values = [p[0] for p in pairs], [p[1] for p in pairs]
        encoded = key.encode()
        step = MAX_SAMPLES_PER_RECORD
        try:
            chunks = [
                Record(
                    encoded,
                    encode_batch(
                        SampleBatch(metric, labels, times[i : i + step], values[i : i + step], key)
                    ),
                    len(times[i : i + step]),
                )
                for i in range(0, len(times), step)
            ]
        except SampleFormatError:  # labels the records format refuses (too many, too long)
            out.dropped[BAD_SERIES] += len(times)
            continue
        out.records.extend(chunks)
    return out


def decode(body: bytes, max_decompressed: int) -> Decoded:
    """Body of ``POST /api/v1/write`` (after the size and header checks) to records."""
    return to_records(parse(decompress(body, max_decompressed)))


def write_request_body(
    series: Iterable[tuple[Mapping[str, str], Sequence[tuple[int, float]]]],
) -> bytes:
    """What Prometheus would POST for ``series`` (labels with ``__name__``, (ms, value) pairs):
    the inverse of :func:`decode`, for tests, benchmarks and replay tools."""
    request = WriteRequest()
    for labels, samples in series:
        ts = request.timeseries.add()
        for name, value in sorted(labels.items()):
            ts.labels.add(name=name, value=value)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
