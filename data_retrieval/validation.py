"""Pure: a request's selector, time range and limit, checked and turned into plain values.

Every refusal is a :class:`RequestError` whose message names the field and says what to do;
the servicer turns it into the gRPC status (INVALID_ARGUMENT or NOT_FOUND) unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from sla_common.anomaly_store import AnomalyFilter
from sla_common.series import series_key

# Prometheus' own syntax for names; a value outside it cannot have been stored.
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_METRIC_CHARS = 1024  # series.metric VARCHAR(1024)
MAX_KEY_CHARS = 4096  # the message contract's bound on a series key
MAX_LABELS = 64
# google.protobuf.Timestamp's valid range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z.
TIMESTAMP_MIN_S = -62_135_596_800
TIMESTAMP_MAX_S = 253_402_300_799
NANOS_PER_S = 1_000_000_000


class RequestError(Exception):
    """A request the server refuses; ``message`` is what the client is told."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.NOT_FOUND, message)


@dataclass(frozen=True)
class Selector:
    """A checked selector: a series key, or a metric with label matchers, or (ListSeries
    only) nothing at all, meaning every series."""

    metric: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    key: str | None = None

    @property
    def everything(self) -> bool:
        return self.metric is None and self.key is None

    @property
    def exact_key(self) -> str | None:
        """The key of the one series these labels name exactly, when labels are given."""
        if self.key is not None:
            return self.key
        if self.metric is not None and self.labels:
            return series_key(self.metric, dict(self.labels))
        return None

    def describe(self) -> str:
        if self.key is not None:
            return f"series_key {self.key!r}"
        if self.metric is None:
            return "every series"
        if not self.labels:
            return f"metric {self.metric!r}"
        inner = ", ".join(f"{k}={v!r}" for k, v in self.labels)
        return f"metric {self.metric!r} with labels {{{inner}}}"


@dataclass(frozen=True)
class TimeRange:
    """Whole epoch seconds, half-open: ``start <= t < end``; None is an open bound."""

    start: int | None = None
    end: int | None = None

    @property
    def bounded(self) -> bool:
        return self.start is not None and self.end is not None

    def contains(self, t: int) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)


def parse_selector(sel: pb.SeriesSelector, *, allow_everything: bool = False) -> Selector:
    key, metric, labels = sel.series_key, sel.metric, dict(sel.labels)
    if key:
        if metric or labels:
            raise invalid(
                "selector: set either series_key, or metric with optional labels, not both"
            )
        if len(key) > MAX_KEY_CHARS:
            raise invalid(f"selector.series_key is longer than {MAX_KEY_CHARS} characters")
        return Selector(key=key)
    if not metric:
        if labels:
            raise invalid(
                "selector.metric is empty: labels select partitions of one metric, "
                "so set selector.metric too"
            )
        if allow_everything:
            return Selector()
        raise invalid(
            "selector.metric is empty: set selector.metric (e.g. 'node_filefd_allocated', "
            "optionally with selector.labels) or selector.series_key; ListSeries shows what "
            "is stored"
        )
    if len(metric) > MAX_METRIC_CHARS or not METRIC_NAME.match(metric):
        raise invalid(
            f"selector.metric {metric[:80]!r} is not a metric name: use letters, digits, "
            "'_' and ':', not starting with a digit"
        )
    if len(labels) > MAX_LABELS:
        raise invalid(f"selector.labels has {len(labels)} labels; at most {MAX_LABELS}")
    for name in sorted(labels):
        if name == "__name__":
            raise invalid("selector.labels: give the metric name in selector.metric, not __name__")
        if not LABEL_NAME.match(name):
            raise invalid(
                f"selector.labels: {name[:80]!r} is not a label name: use letters, digits "
                "and '_', not starting with a digit"
            )
        if len(labels[name]) > MAX_KEY_CHARS:
            raise invalid(f"selector.labels[{name!r}] is longer than {MAX_KEY_CHARS} characters")
    return Selector(metric=metric, labels=tuple(sorted(labels.items())))


def _ceil_seconds(ts: Timestamp, field: str) -> int:
    """The first whole second at or after ``ts`` (the database keeps whole seconds)."""
    if not TIMESTAMP_MIN_S <= ts.seconds <= TIMESTAMP_MAX_S:
        raise invalid(
            f"{field}.seconds={ts.seconds} is outside the Timestamp range (years 1..9999); "
            "timestamps are seconds since 1970-01-01 UTC, not milliseconds"
        )
    if not 0 <= ts.nanos < NANOS_PER_S:
        raise invalid(f"{field}.nanos={ts.nanos} must be in 0..999999999")
    return ts.seconds + (1 if ts.nanos else 0)


def parse_time_range(tr: pb.TimeRange | None, max_range_s: int) -> TimeRange:
    """Never wider than ``max_range_s``: with both bounds, end >= start and the span at most
    that; with one, the other is set that far from it; with none, the range stays open here
    and each series is read over ``max_range_s`` up to its newest item (see the servicer)."""
    if tr is None:
        return TimeRange()
    start = _ceil_seconds(tr.start, "time_range.start") if tr.HasField("start") else None
    end = _ceil_seconds(tr.end, "time_range.end") if tr.HasField("end") else None
    if start is not None and end is not None:
        if end < start:
            raise invalid(
                f"time_range is inverted: start ({start}) is after end ({end}); "
                "swap them (start is inclusive, end exclusive)"
            )
        if end - start > max_range_s:
            raise invalid(
                f"time_range spans {end - start} s, more than the {max_range_s} s this server "
                "allows (RETRIEVAL_MAX_RANGE_S): narrow it, and page through a longer history "
                "one range at a time"
            )
    elif start is not None:
        end = start + max_range_s
    elif end is not None:
        start = end - max_range_s
    return TimeRange(start, end)


def latest_range(latest: int, max_range_s: int) -> TimeRange:
    """The range of a request without bounds, for a series whose newest item is ``latest``."""
    return TimeRange(latest + 1 - max_range_s, latest + 1)


def parse_at(request: pb.GetDickeyFullerRequest) -> int | None:
    """The latest second the test's window may end at (``at`` is inclusive)."""
    if not request.HasField("at"):
        return None
    at = request.at
    _ceil_seconds(at, "at")
    return at.seconds  # a window ending at a whole second <= at


def parse_limit(limit: int, max_limit: int) -> int | None:
    """The client's limit, at most ``max_limit``; None for 0 (the server's own cap, which a
    stream applies at page boundaries: see the servicer)."""
    if limit < 0:
        raise invalid(f"limit={limit} must be >= 0 (0: as many as the server gives per call)")
    return min(limit, max_limit) if limit else None


DETECTOR_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_DETECTORS = 16
# The stored status text of each AnomalyStatus (UNSPECIFIED is not a filter).
ANOMALY_STATUSES = {
    pb.ANOMALY_STATUS_SAFE: "SAFE",
    pb.ANOMALY_STATUS_WARN: "WARN",
    pb.ANOMALY_STATUS_ERROR: "ERROR",
    pb.ANOMALY_STATUS_LEARNING: "LEARNING",
}


def parse_anomaly_filter(request: pb.ListAnomaliesRequest, max_range_s: int) -> AnomalyFilter:
    """ListAnomalies' filters: an optional selector, detectors, statuses, a time range."""
    sel = parse_selector(request.selector, allow_everything=True)
    if len(request.detectors) > MAX_DETECTORS:
        raise invalid(f"detectors has {len(request.detectors)} names; at most {MAX_DETECTORS}")
    for name in request.detectors:
        if not DETECTOR_NAME.match(name):
            raise invalid(
                f"detectors: {name[:80]!r} is not a detector name (e.g. 'sigma', 'iforest'): "
                "1-64 letters, digits, '_', '.', ':' or '-'"
            )
    statuses = []
    for value in request.statuses:
        if value not in ANOMALY_STATUSES:
            raise invalid(
                f"statuses: {value} is not a status: use SAFE, WARN, ERROR or LEARNING "
                "(ANOMALY_STATUS_UNSPECIFIED is not one)"
            )
        statuses.append(ANOMALY_STATUSES[value])
    tr = TimeRange()
    if request.HasField("time_range"):
        tr = parse_time_range(request.time_range, max_range_s)
    return AnomalyFilter(
        series_key=sel.key,
        metric=sel.metric,
        labels=sel.labels,
        detectors=tuple(dict.fromkeys(request.detectors)),
        statuses=tuple(dict.fromkeys(statuses)),
        start_ms=None if tr.start is None else tr.start * 1000,
        end_ms=None if tr.end is None else tr.end * 1000,
    )
