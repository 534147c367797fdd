"""The MySQL side of data_storage: one transaction per batch, and the retention purge.

Like a quix-streams sink: :meth:`Writer.write` takes a whole batch and writes it in ONE
transaction of batched multi-row upserts; any error rolls it back and propagates, so the
caller decides whether to retry (server trouble) or to isolate a record the server refuses
(:meth:`Writer.write_each`). Offsets are never this module's business.

Table and column names in the SQL come from :mod:`data_storage.rows` (``noqa: S608``);
values are parameters, or literals rendered by :func:`sla_common.mysql.insert_rows`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import pymysql

from data_storage.rows import (
    ACF_STALE,
    CHILD_TABLES,
    RUNS,
    SERIES,
    SKIPPED_STALE,
    TABLES,
    Row,
    Table,
    child_rows,
    latest_per_window,
    or_of_conditions,
    run_rows,
    series_rows,
    stale_acf_args,
    stale_skipped_args,
)
from sla_common.messages import AnalysisMessage
from sla_common.mysql import (
    Connection,
    MysqlSettings,
    close_quietly,
    connect,
    insert_rows,
    is_data_error,
)

log = logging.getLogger(__name__)

# Parameters per statement for the IN (...) / OR lists: well under any packet limit.
CHUNK = 500


@dataclass(frozen=True)
class WriteResult:
    rows: dict[str, int]
    seconds: float

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


@dataclass(frozen=True)
class Refused:
    """A message MySQL refused on its own (the rest of its batch was written)."""

    msg: Any  # the message type of the sink
    error: BaseException


class _Keyed(Protocol):
    @property
    def key(self) -> str: ...


class _OfSeries(Protocol):
    """A message about one series: an analysis, an anomaly record."""

    @property
    def series(self) -> _Keyed: ...


M = TypeVar("M", bound=_OfSeries)


@dataclass
class Sink(Generic[M]):
    """What the consumer needs of a writer, whatever the topic: the connection, a batch
    write in one transaction (:meth:`write`), the same message by message
    (:meth:`write_each`), and the retention purge. Subclasses write and purge."""

    settings: MysqlSettings
    connect_fn: Callable[[], Connection] | None = None
    _conn: Connection | None = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------ connection

    def connection(self) -> Connection:
        if self._conn is None:
            make = self.connect_fn or (lambda: connect(self.settings))
            self._conn = make()
        return self._conn

    def drop_connection(self) -> None:
        """Forget the connection (after an error it may be unusable); reconnect next time."""
        conn, self._conn = self._conn, None
        close_quietly(conn)

    def close(self) -> None:
        self.drop_connection()

    def _rollback(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.rollback()
        except (pymysql.err.Error, OSError) as e:
            log.debug("rollback failed (%s); dropping the connection", e)
            self.drop_connection()

    # ------------------------------------------------------------------ writes

    def table_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def write(self, messages: Sequence[M]) -> WriteResult:
        raise NotImplementedError

    def purge(self, cutoff: int, batch_rows: int, budget_s: float) -> dict[str, int]:
        raise NotImplementedError

    def write_each(self, messages: Sequence[M]) -> tuple[WriteResult, list[Refused]]:
        """Each message in its own transaction: those MySQL refuses are returned, not raised.

        For a batch that failed with a data error. A server error still raises, and the
        caller retries the whole batch (what was written here is upserted again, harmlessly).
        """
        t0 = time.perf_counter()
        counts: dict[str, int] = dict.fromkeys(self.table_names(), 0)
        refused: list[Refused] = []
        for msg in messages:
            try:
                result = self.write([msg])
            except (pymysql.err.Error, OSError) as e:
                if not is_data_error(e):
                    raise
                refused.append(Refused(msg, e))
                continue
            except Exception as e:  # a bug on one message must not stop the others
                log.exception("unexpected error writing the message of %s", msg.series.key)
                refused.append(Refused(msg, e))
                continue
            for name, n in result.rows.items():
                counts[name] += n
        return WriteResult(counts, time.perf_counter() - t0), refused


@dataclass
class Writer(Sink[AnalysisMessage]):
    """The analyses of ``prometheusdata``: every table of :mod:`data_storage.rows`."""

    _purge_start: int = field(default=0, init=False, repr=False)

    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in TABLES)

    # ------------------------------------------------------------------ batch write

    def write(self, messages: Sequence[AnalysisMessage]) -> WriteResult:
        """Upsert every message in ONE transaction; roll back and re-raise on any error."""
        t0 = time.perf_counter()
        msgs = latest_per_window(messages)
        counts: dict[str, int] = dict.fromkeys((t.name for t in TABLES), 0)
        if not msgs:
            return WriteResult(counts, 0.0)
        conn = self.connection()
        try:
            conn.begin()
            with conn.cursor() as cur:
                # 1. Series first, in key order (a stable lock order between consumers), then
                #    their ids, which every other table refers to.
                srows = sorted(series_rows(msgs), key=lambda r: r[0])
                insert_rows(cur, SERIES.insert_head(), srows, SERIES.upsert_tail())
                counts[SERIES.name] = len(srows)
                ids = self._series_ids(cur, [r[0] for r in srows])
                by_key = {r[1]: ids[r[0]] for r in srows}
                # 2. What a newer window makes stale, then every per-analysis table.
                self._delete_where(cur, *ACF_STALE, stale_acf_args(msgs, by_key))
                self._delete_where(cur, *SKIPPED_STALE, stale_skipped_args(msgs, by_key))
                for table, rows in self._child_rows(msgs, by_key):
                    insert_rows(cur, table.insert_head(), rows, table.upsert_tail())
                    counts[table.name] = len(rows)
                # 3. The run rows last: every consumer of the group touches the same few,
                #    so their row locks are held for the shortest time.
                rrows = sorted(run_rows(msgs), key=lambda r: r[0])
                insert_rows(cur, RUNS.insert_head(), rrows, RUNS.upsert_tail())
                counts[RUNS.name] = len(rrows)
            # 4. Commit: only now are the rows there for readers, and for the offset commit.
            conn.commit()
        except BaseException:
            self._rollback()
            raise
        return WriteResult(counts, time.perf_counter() - t0)

    @staticmethod
    def _child_rows(
        msgs: Sequence[AnalysisMessage], by_key: dict[str, int]
    ) -> list[tuple[Table, list[Row]]]:
        rows = child_rows(msgs, by_key)
        return [(t, rows[t.name]) for t in CHILD_TABLES if rows[t.name]]

    @staticmethod
    def _series_ids(cur: pymysql.cursors.Cursor, hashes: list[bytes]) -> dict[bytes, int]:
        ids: dict[bytes, int] = {}
        unique = list(dict.fromkeys(hashes))
        for i in range(0, len(unique), CHUNK):
            part = unique[i : i + CHUNK]
            marks = ", ".join(["%s"] * len(part))
            sql = f"SELECT key_hash, id FROM {SERIES.name} WHERE key_hash IN ({marks})"  # noqa: S608
            cur.execute(sql, part)
            for key_hash, sid in cur.fetchall():
                ids[bytes(key_hash)] = int(sid)
        return ids

    @staticmethod
    def _delete_where(
        cur: pymysql.cursors.Cursor, condition: str, table: str, args: list[Row]
    ) -> None:
        for i in range(0, len(args), CHUNK):
            part = args[i : i + CHUNK]
            flat = [v for row in part for v in row]
            where = or_of_conditions(condition, len(part))
            cur.execute(f"DELETE FROM {table} WHERE {where}", flat)  # noqa: S608

    # ------------------------------------------------------------------ retention

    def purge(self, cutoff: int, batch_rows: int, budget_s: float) -> dict[str, int]:
        """Delete rows older than ``cutoff`` in batches of ``batch_rows``, each its own commit.

        Stops after ``budget_s`` (the next pass goes on, starting at the next table, so no
        table waits behind a large one). Series go last, once nothing refers to them.
        """
        deadline = time.monotonic() + budget_s
        conn = self.connection()
        purged: dict[str, int] = {}
        order = [*CHILD_TABLES, RUNS]
        start = self._purge_start % len(order)
        self._purge_start += 1
        statements = [
            (t.name, f"DELETE FROM {t.name} WHERE {t.time_column} < %s LIMIT %s")  # noqa: S608
            for t in order[start:] + order[:start]
        ]
        statements.append(
            (
                SERIES.name,
                f"DELETE FROM {SERIES.name} WHERE {SERIES.time_column} < %s AND NOT EXISTS "  # noqa: S608
                "(SELECT 1 FROM analyses a WHERE a.series_id = series.id) LIMIT %s",
            )
        )
        try:
            for name, sql in statements:
                while time.monotonic() < deadline:
                    conn.begin()
                    with conn.cursor() as cur:
                        deleted = cur.execute(sql, (cutoff, batch_rows))
                    conn.commit()
                    if deleted:
                        purged[name] = purged.get(name, 0) + deleted
                    if deleted < batch_rows:
                        break
        except BaseException:
            self._rollback()
            raise
        return purged
