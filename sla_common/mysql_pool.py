"""A small, bounded pool of PyMySQL connections for threaded request handlers.

PyMySQL connections are not thread-safe, and opening one per request costs a TCP handshake,
the login and the session set-up of :func:`sla_common.mysql.connect` (several round trips).
The pool hands each thread a connection of its own and takes it back afterwards:

- at most ``size`` connections exist; a caller waits at most ``acquire_timeout_s`` for one
  and then gets :class:`PoolExhausted` (a service answers "busy, retry", never hangs);
- a connection idle for longer than ``check_idle_after_s`` is pinged before it is handed
  out, so connections that died with a restarted server are replaced instead of failing
  the first request after the restart;
- a connection that saw an error other than a refused row (:func:`is_data_error`) is
  closed, not reused: after a network error or an interrupted result it may be unusable.

Connections are expected to be in autocommit mode (each statement its own transaction), so
a connection returned to the pool never carries an open transaction or its locks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import pymysql

from sla_common.mysql import Connection, close_quietly, is_data_error

log = logging.getLogger(__name__)


class PoolExhausted(Exception):
    """No connection became free within the acquire timeout."""


class PoolClosed(Exception):
    """The pool was closed (the service is shutting down)."""


class ConnectionPool:
    def __init__(
        self,
        connect: Callable[[], Connection],
        *,
        size: int = 10,
        acquire_timeout_s: float = 5.0,
        check_idle_after_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError(f"pool size must be at least 1, got {size}")
        self._connect = connect
        self._slots = threading.BoundedSemaphore(size)
        self._idle: deque[tuple[Connection, float]] = deque()
        self._lock = threading.Lock()
        self._closed = False
        self.size = size
        self.acquire_timeout_s = acquire_timeout_s
        self.check_idle_after_s = check_idle_after_s
        self._clock = clock

    @property
    def idle(self) -> int:
        with self._lock:
            return len(self._idle)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection for the ``with`` body; it goes back to the pool afterwards."""
        if self._closed:
            raise PoolClosed("the MySQL connection pool is closed")
        if not self._slots.acquire(timeout=self.acquire_timeout_s):
            raise PoolExhausted(
                f"all {self.size} MySQL connections stayed busy for {self.acquire_timeout_s} s"
            )
        conn: Connection | None = None
        try:
            conn = self._checkout()
            yield conn
        except BaseException as e:
            if conn is not None and isinstance(e, pymysql.err.Error) and is_data_error(e):
                self._checkin(conn)  # the server refused a row; the connection is fine
            else:
                close_quietly(conn)
            raise
        else:
            self._checkin(conn)
        finally:
            self._slots.release()

    def _checkout(self) -> Connection:
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, last_used = self._idle.pop()  # the most recently used: warmest
            if self._clock() - last_used < self.check_idle_after_s:
                return conn
            try:
                conn.ping()
            except (pymysql.err.Error, OSError) as e:
                log.info("dropping a pooled MySQL connection that died while idle: %s", e)
                close_quietly(conn)
                continue
            return conn
        return self._connect()

    def _checkin(self, conn: Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append((conn, self._clock()))
                return
        close_quietly(conn)

    def close(self) -> None:
        """Close the idle connections; those in use are closed when they come back."""
        with self._lock:
            self._closed = True
            idle = [conn for conn, _ in self._idle]
            self._idle.clear()
        for conn in idle:
            close_quietly(conn)
