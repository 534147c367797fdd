"""The ``anomaly`` topic's side of data_storage: records checked, turned into rows, written.

A record (:class:`sla_common.anomalies.AnomalyRecord`) is one closed window of one series
as a detector judged it. It becomes one row of ``anomalies``, keyed by (series key hash,
detector name, window start in ms), the record's idempotency key: a redelivered record,
or the same window judged again after a detector restart, upserts the same row (the last
write wins). The consumer loop, the dead letters and the offset commits are the same as
for the analyses (:mod:`data_storage.consumer`); only :func:`check` and
:class:`AnomalyWriter` are this topic's own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from data_storage.rows import TEXT_BYTES, Row, Table, _compact_json
from data_storage.validate import Rejected, check_record
from data_storage.writer import Sink, WriteResult
from sla_common.anomalies import AnomalyRecord
from sla_common.mysql import insert_rows, series_key_hash

MAX_METRIC_CHARS = 1024  # anomalies.metric VARCHAR(1024)

ANOMALIES = Table(
    "anomalies",
    (
        "key_hash",
        "detector",
        "window_start_ms",
        "window_end_ms",
        "series_key",
        "metric",
        "labels",
        "detector_version",
        "schema_version",
        "sample_count",
        "mean",
        "std",
        "normal_mean",
        "normal_std",
        "normal_source",
        "deviation",
        "status",
        "stored_at",
        "normal_period_s",
    ),
    key=("key_hash", "detector", "window_start_ms"),
    version=None,  # the last judgement of a window wins
    time_column="window_start_ms",
)


def to_ms(t: float) -> int:
    """Window times are stored as whole milliseconds (exact for 500 ms windows)."""
    return round(t * 1000)


def check(
    key: bytes | None, value: bytes | None, max_bytes: int, *, not_after: float
) -> AnomalyRecord | Rejected:
    """The validated record, or why it goes to the dead-letter topic (the same reasons as
    the analyses': see :mod:`data_storage.validate`)."""

    def future(rec: AnomalyRecord) -> str | None:
        if rec.window.end <= not_after:
            return None
        return (
            f"window.end {rec.window.end} is {rec.window.end - not_after:.0f} s past the latest "
            f"time allowed, {not_after:.0f} (now + STORAGE_MAX_FUTURE_SKEW_S)"
        )

    return check_record(
        key,
        value,
        max_bytes,
        AnomalyRecord.from_bytes,
        ("future_timestamp", future),
        ("unstorable", unstorable_reason),
    )


def unstorable_reason(rec: AnomalyRecord) -> str | None:
    """Why a valid record would not fit the table's columns, or None when it fits."""
    if len(rec.series.metric) > MAX_METRIC_CHARS:
        return f"series.metric longer than {MAX_METRIC_CHARS} characters"
    if len(rec.series.key.encode()) > TEXT_BYTES:
        return f"series.key longer than {TEXT_BYTES} bytes"
    if rec.count > 2**31 - 1:
        return f"count={rec.count} does not fit a 32-bit INT"
    return None


def row_count(rec: AnomalyRecord) -> int:
    return 1


def anomaly_row(rec: AnomalyRecord, now: int) -> Row:
    s, n = rec.series, rec.normal
    return (
        series_key_hash(s.key),
        rec.detector.name,
        to_ms(rec.window.start),
        to_ms(rec.window.end),
        s.key,
        s.metric,
        _compact_json(s.labels),
        rec.detector.version,
        rec.schema_version,
        rec.count,
        rec.mean,
        rec.std,
        n.mean,
        n.std,
        n.source,
        rec.deviation,
        rec.status,
        now,
        n.period_s,
    )


def anomaly_rows(records: Sequence[AnomalyRecord], now: int) -> list[Row]:
    """One row per idempotency key (the batch's last record of a window wins), in key order:
    a stable lock order between the members of the group."""
    latest: dict[tuple[bytes, str, int], Row] = {}
    for rec in records:
        row = anomaly_row(rec, now)
        latest[(row[0], row[1], row[2])] = row
    return [latest[k] for k in sorted(latest)]


@dataclass
class AnomalyWriter(Sink[AnomalyRecord]):
    """Anomaly records into ``anomalies``: one multi-row upsert per batch, one transaction."""

    clock: Callable[[], float] = field(default=time.time, repr=False)

    def table_names(self) -> tuple[str, ...]:
        return (ANOMALIES.name,)

    def write(self, messages: Sequence[AnomalyRecord]) -> WriteResult:
        """Upsert every record in ONE transaction; roll back and re-raise on any error."""
        t0 = time.perf_counter()
        rows = anomaly_rows(messages, int(self.clock()))
        if not rows:
            return WriteResult({ANOMALIES.name: 0}, 0.0)
        conn = self.connection()
        try:
            conn.begin()
            with conn.cursor() as cur:
                insert_rows(cur, ANOMALIES.insert_head(), rows, ANOMALIES.upsert_tail())
            conn.commit()
        except BaseException:
            self._rollback()
            raise
        return WriteResult({ANOMALIES.name: len(rows)}, time.perf_counter() - t0)

    def purge(self, cutoff: int, batch_rows: int, budget_s: float) -> dict[str, int]:
        """Delete windows that started before ``cutoff`` (epoch seconds), in batches of
        ``batch_rows`` (each its own commit), for at most ``budget_s``."""
        deadline = time.monotonic() + budget_s
        conn = self.connection()
        sql = f"DELETE FROM {ANOMALIES.name} WHERE {ANOMALIES.time_column} < %s LIMIT %s"  # noqa: S608
        purged = 0
        try:
            while time.monotonic() < deadline:
                conn.begin()
                with conn.cursor() as cur:
                    deleted = cur.execute(sql, (cutoff * 1000, batch_rows))
                conn.commit()
                purged += deleted
                if deleted < batch_rows:
                    break
        except BaseException:
            self._rollback()
            raise
        return {ANOMALIES.name: purged} if purged else {}
