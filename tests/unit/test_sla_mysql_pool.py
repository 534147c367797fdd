"""sla_common.mysql_pool's bookkeeping, with stand-in connection objects (the pool against a
real MariaDB, including a server restart, is exercised by tests/integration/test_sla_*)."""

from __future__ import annotations

import threading
from typing import Any, cast

import pymysql
import pytest

from sla_common.mysql import Connection
from sla_common.mysql_pool import ConnectionPool, PoolClosed, PoolExhausted


class FakeConn:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False
        self.pings = 0
        self.alive = True

    def ping(self) -> None:
        self.pings += 1
        if not self.alive:
            raise pymysql.err.OperationalError(2006, "MySQL server has gone away")

    def close(self) -> None:
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _pool(size: int = 2, **kw: Any) -> tuple[ConnectionPool, list[FakeConn], Clock]:
    made: list[FakeConn] = []
    clock = Clock()

    def connect() -> Connection:
        made.append(FakeConn(len(made)))
        return cast(Connection, made[-1])

    return ConnectionPool(connect, size=size, clock=clock, **kw), made, clock


def test_connections_are_reused() -> None:
    pool, made, _clock = _pool()
    with pool.connection() as a:
        pass
    with pool.connection() as b:
        assert b is a
    assert len(made) == 1 and pool.idle == 1


def test_an_idle_connection_is_pinged_and_replaced_when_dead() -> None:
    pool, made, clock = _pool(check_idle_after_s=5)
    with pool.connection():
        pass
    clock.now = 4.0
    with pool.connection():
        pass
    assert made[0].pings == 0  # recently used: no round trip
    clock.now = 100.0
    made[0].alive = False
    with pool.connection() as conn:
        assert conn is cast(Connection, made[1])
    assert made[0].closed and made[0].pings == 1


def test_a_connection_that_failed_is_closed_but_a_refused_row_keeps_it() -> None:
    pool, made, _clock = _pool()
    with pytest.raises(pymysql.err.IntegrityError), pool.connection():
        raise pymysql.err.IntegrityError(1062, "Duplicate entry")
    assert not made[0].closed and pool.idle == 1
    with pytest.raises(pymysql.err.OperationalError), pool.connection():
        raise pymysql.err.OperationalError(2013, "Lost connection")
    assert made[0].closed and pool.idle == 0
    with pytest.raises(RuntimeError), pool.connection():
        raise RuntimeError("a bug half-way through a result")
    assert made[1].closed and pool.idle == 0


def test_size_bounds_the_connections_and_waiting_is_bounded() -> None:
    pool, made, _clock = _pool(size=1, acquire_timeout_s=0.05)
    release = threading.Event()
    holding = threading.Event()

    def hold() -> None:
        with pool.connection():
            holding.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    holding.wait(5)
    with pytest.raises(PoolExhausted, match="stayed busy"), pool.connection():
        pass
    release.set()
    t.join(5)
    with pool.connection():
        pass
    assert len(made) == 1


def test_a_failed_connect_frees_its_slot() -> None:
    calls = 0

    def connect() -> Connection:
        nonlocal calls
        calls += 1
        raise pymysql.err.OperationalError(2003, "Can't connect")

    pool = ConnectionPool(connect, size=1, acquire_timeout_s=0.05)
    for _ in range(3):
        with pytest.raises(pymysql.err.OperationalError), pool.connection():
            pass
    assert calls == 3  # never PoolExhausted: the slot came back each time


def test_close_closes_idle_connections_and_refuses_new_work() -> None:
    pool, made, _clock = _pool()
    with pool.connection():
        with pool.connection():
            pass
        pool.close()
    assert all(c.closed for c in made)
    with pytest.raises(PoolClosed), pool.connection():
        pass


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        _pool(size=0)
