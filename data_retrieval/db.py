"""MySQL for the async server: blocking PyMySQL calls in a few worker threads.

A call is a function of one connection, run whole in one worker thread with a connection
of :class:`sla_common.mysql_pool.ConnectionPool` (as many as there are threads, so a call
never waits for one; made with the timeouts of :func:`sla_common.mysql.connect`). A
cancelled RPC therefore never leaves a connection half-read: the thread finishes its page
and the result is dropped.

Failures: a connection found dead on use (the server restarted, or dropped it while idle)
is replaced and the call tried once more; the server being down, unreachable or without
our schema raises :class:`DatabaseUnavailable` (gRPC UNAVAILABLE); the next call connects
again, so the service recovers by itself when MySQL is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pymysql
from pymysql.constants import ER

from data_retrieval.metrics import RetrievalMetrics
from data_retrieval.queries import SESSION_SETUP
from data_retrieval.settings import RetrievalSettings
from sla_common.mysql import Connection, close_quietly, connect, errno_of, is_connection_error
from sla_common.mysql_pool import ConnectionPool, PoolClosed, PoolExhausted

log = logging.getLogger(__name__)

T = TypeVar("T")
DB_ERRORS = (pymysql.err.Error, OSError)
# The database or our tables are missing (not migrated yet) or we may not read them: the
# operator's business, and transient from a client's point of view.
_SCHEMA_ERRNOS = {
    ER.BAD_DB_ERROR,
    ER.NO_SUCH_TABLE,
    ER.ACCESS_DENIED_ERROR,
    ER.DBACCESS_DENIED_ERROR,
    ER.TABLEACCESS_DENIED_ERROR,
}


class DatabaseUnavailable(Exception):
    """MySQL cannot serve reads now; the message is safe to show a client."""


def unavailable_reason(exc: BaseException) -> str | None:
    """Why ``exc`` means "unavailable" (a client should retry later), or None for a bug."""
    errno = errno_of(exc)
    if errno in _SCHEMA_ERRNOS:
        return f"the database is not ready (MySQL error {errno}: schema missing or no access)"
    if is_connection_error(exc) or isinstance(exc, pymysql.err.OperationalError):
        detail = f"MySQL error {errno}" if errno is not None else type(exc).__name__
        return f"the database cannot be reached ({detail})"
    return None


class Database:
    def __init__(
        self,
        settings: RetrievalSettings,
        metrics: RetrievalMetrics,
        *,
        connect_fn: Callable[[], Connection] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        threads = settings.retrieval_db_threads
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="retrieval-db")
        self._pool = ConnectionPool(
            connect_fn or self._connect,
            size=threads,
            acquire_timeout_s=settings.mysql_connect_timeout_s,
        )

    # ------------------------------------------------------------------ event loop side

    async def run(self, fn: Callable[[Connection], T], *, timeout: float | None = None) -> T:
        """``fn(connection)`` in a worker thread; TimeoutError after ``timeout`` seconds.

        Raises :class:`DatabaseUnavailable`, or whatever ``fn`` raises that is not a
        database error (a database error that is not about availability is a bug and
        propagates as itself).
        """
        if timeout is not None and timeout <= 0:
            raise TimeoutError("no time left before the deadline")
        future = asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)
        if timeout is None:
            return await future
        return await asyncio.wait_for(future, timeout)

    def close(self) -> None:
        """Wait for the calls in progress, then close the connections (blocking)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._pool.close()

    # ------------------------------------------------------------------ worker thread side

    def _connect(self) -> Connection:
        conn = connect(self.settings, autocommit=True)  # reads only: no open transaction
        try:
            with conn.cursor() as cur:
                cur.execute(SESSION_SETUP)
        except BaseException:
            close_quietly(conn)
            raise
        return conn

    def _call(self, fn: Callable[[Connection], T]) -> T:
        t0 = time.perf_counter()
        try:
            try:
                return self._with_connection(fn)
            except DB_ERRORS as e:
                if not is_connection_error(e):
                    raise
                # Most likely a connection the server dropped (a restart, wait_timeout)
                # since the pool last checked it: one more go, on a fresh connection.
                self.metrics.reconnects.inc()
                log.info("MySQL connection failed (%s); trying a new one", e)
                return self._with_connection(fn)
        except DB_ERRORS as e:
            raise self._failure(e) from e
        except (PoolExhausted, PoolClosed) as e:
            raise DatabaseUnavailable(f"no database connection free ({e}); retry later") from e
        finally:
            self.metrics.query_duration.observe(time.perf_counter() - t0)

    def _with_connection(self, fn: Callable[[Connection], T]) -> T:
        with self._pool.connection() as conn:
            return fn(conn)

    def _failure(self, exc: BaseException) -> BaseException:
        reason = unavailable_reason(exc)
        if reason is None:
            self.metrics.db_errors.labels("internal").inc()
            return exc
        self.metrics.db_errors.labels("unavailable").inc()
        log.warning(
            "MySQL %s:%d: %s: %s",
            self.settings.mysql_host,
            self.settings.mysql_port,
            type(exc).__name__,
            exc,
        )
        return DatabaseUnavailable(f"{reason}; retry later")
