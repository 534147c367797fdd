"""Pure: a raw Kafka record checked against the message contract, or the reason it is not.

Every reason is a short code (the DLQ header ``dlq.reason`` and a metric label) plus a
readable detail (header ``dlq.error``) naming the offending fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

from pydantic import ValidationError

from data_storage.rows import unstorable_reason
from sla_common.messages import AnalysisMessage
from sla_common.series import series_key

MAX_ERROR_CHARS = 1000

# pydantic error types -> our reason, most telling first: a message of an unknown version
# fails on many fields, and the version is the one thing to report.
_TYPE_ORDER = (
    ("json_invalid", "invalid_json"),
    ("json_type", "invalid_json"),
    ("schema_version", "unknown_schema_version"),
    ("finite_number", "non_finite"),
    ("missing", "missing_field"),
)


@dataclass(frozen=True)
class Rejected:
    reason: str
    error: str


def _classify(e: ValidationError) -> str:
    errors = e.errors()
    types = {err["type"] for err in errors}
    for marker, reason in _TYPE_ORDER:
        if marker == "schema_version":
            if any(err["loc"][:1] == ("schema_version",) for err in errors):
                return reason
        elif marker in types:
            return reason
    if any(t.endswith(("_type", "_parsing")) or t == "model_type" for t in types):
        return "wrong_type"
    return "invalid"


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    text = "; ".join(parts)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return text


def future_problem(msg: AnalysisMessage, not_after: float) -> str | None:
    """Which time of ``msg`` lies after ``not_after`` (now + the allowed skew), if one does.

    Any of them would pin the data: a window end in the future becomes the "newest" run
    readers pick, a version (``produced_at``) in the future wins every later update, and
    retention never purges rows dated ahead. Forecast points may lie ahead by the forecast's
    horizon.
    """
    g = msg.grid
    times = [
        ("window.end", msg.window.end, not_after),
        ("produced_at", msg.produced_at, not_after),
        ("the grid's last point", g.start + max(0, g.count - 1) * g.step_s, not_after),
        *((f"aggregates[{i}].end", a.end, not_after) for i, a in enumerate(msg.aggregates)),
    ]
    if msg.forecast is not None:
        limit = not_after + msg.forecast.horizon_s
        times.append(("the last forecast point", max(p.ts for p in msg.forecast.points), limit))
    for what, t, limit in times:
        if t > limit:
            return (
                f"{what} {t} is {t - limit:.0f} s past the latest time allowed, {limit:.0f} "
                "(now + STORAGE_MAX_FUTURE_SKEW_S, + the horizon for forecast points)"
            )
    return None


class _Series(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def metric(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


class Record(Protocol):
    """What :func:`check_record` needs of a topic's validated record."""

    @property
    def series(self) -> _Series: ...
    def kafka_key(self) -> bytes: ...


R = TypeVar("R", bound=Record)

# A topic's own checks after the common ones: (reason, the detail of a problem or None).
Problem = tuple[str, Callable[[R], str | None]]


def check_record(
    key: bytes | None,
    value: bytes | None,
    max_bytes: int,
    parse: Callable[[bytes], R],
    *problems: Problem[R],
) -> R | Rejected:
    """The envelope every topic's record passes: a value, within ``max_bytes``, that
    ``parse`` validates (raising ``pydantic.ValidationError``), keyed by its series key, a
    key that its metric and labels make; then ``problems`` in order, the first one found
    rejecting it with its reason."""
    if value is None or not value:
        return Rejected("empty", "the record has no value")
    if len(value) > max_bytes:
        return Rejected(
            "too_large", f"{len(value)} bytes, over STORAGE_MAX_MESSAGE_BYTES={max_bytes}"
        )
    try:
        rec = parse(value)
    except ValidationError as e:
        return Rejected(_classify(e), _describe(e))
    if key != rec.kafka_key():
        # The key decides the partition, and so the order of one series' messages.
        shown = key.decode(errors="replace")[:200] if key is not None else None
        return Rejected("key_mismatch", f"record key {shown!r} is not series.key")
    derived = series_key(rec.series.metric, rec.series.labels)
    if rec.series.key != derived:
        # Else a record could overwrite another series' metadata or be filed under its key.
        return Rejected(
            "key_mismatch",
            f"series.key {rec.series.key[:200]!r} is not the key of series.metric and "
            f"series.labels, {derived[:200]!r}",
        )
    for reason, problem in problems:
        detail = problem(rec)
        if detail is not None:
            return Rejected(reason, detail)
    return rec


def check(
    key: bytes | None, value: bytes | None, max_bytes: int, *, not_after: float
) -> AnalysisMessage | Rejected:
    """The validated message, or why this record must go to the dead-letter topic.

    ``not_after``: the latest time a message may carry (now + the allowed clock skew).
    """
    return check_record(
        key,
        value,
        max_bytes,
        AnalysisMessage.from_bytes,
        ("future_timestamp", lambda msg: future_problem(msg, not_after)),
        ("unstorable", unstorable_reason),
    )
