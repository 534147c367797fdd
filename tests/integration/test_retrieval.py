"""data_retrieval against a real MariaDB filled through the real schema and writer.

The module's database is created on the stack's MariaDB, migrated by sla_common.mysql and
filled by data_storage's Writer with real ETL messages (the ETL's analyses of the demo
history, three overlapping runs). A real server listens on port 0 in a background thread;
tests call it with real gRPC stubs and compare every answer with SQL on the same database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from data_retrieval.server import SERVICE_NAME, create_server
from sla_common.messages import AnalysisMessage
from sla_common.mysql import MysqlSettings
from sla_common.series import series_key
from tests.integration.retrievalutil import (
    HOST,
    Collected,
    ServerProcess,
    ServerThread,
    TempDatabase,
    Terminal,
    analysed_message,
    collect,
    demo_messages,
    health_status,
)
from tests.integration.stackutil import (
    SCRIPTS,
    Runner,
    Stack,
    dump_logs,
    free_port,
    scripts_env,
    wait_until,
)
from tests.unit.test_retrieval_server import make_cert

PY = sys.executable
END = 1_767_225_600  # 2026-01-01T00:00:00Z, a multiple of 15 s
RUNS = (1200, 600, 0)  # three ETL runs 10 min apart: overlapping windows, history per window
WINDOW_S = 2 * 3600
PAGE = 13  # a small odd page: every stream spans many pages, none aligned to anything
METRICS = ("node_filefd_allocated", "node_filesystem_avail_bytes", "node_memory_MemFree_bytes")
FD = "node_filefd_allocated"
FS = "node_filesystem_avail_bytes"
CONSTANT = "test_constant_gauge"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def constant_message() -> AnalysisMessage:
    """A flat series: the ETL skips ADF and ACF on it (and has too little for seasons)."""
    ts = np.arange(END - 1800, END + 1, 15)
    return analysed_message(
        CONSTANT,
        {"job": "test"},
        ts,
        np.full(ts.size, 42.0),
        end=END,
        window_s=1800,
        run_id="constant-run",
    )


@pytest.fixture(scope="module")
def db(stack: Stack) -> Iterator[TempDatabase]:
    base = MysqlSettings(
        mysql_host=stack.mysql_host,
        mysql_port=stack.mysql_port,
        mysql_user=stack.mysql_user,
        mysql_password=stack.mysql_password,
    )
    messages = demo_messages(seed=42, end=END, runs=RUNS, window_s=WINDOW_S, names=METRICS)
    with TempDatabase(base) as database:
        database.store([*messages, constant_message()])
        yield database


@pytest.fixture(scope="module")
def server(db: TempDatabase) -> Iterator[ServerThread]:
    with ServerThread(db.retrieval_settings(retrieval_page_size=PAGE)) as srv:
        yield srv


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.RetrievalServiceStub:
    return pb_grpc.RetrievalServiceStub(channel)


# --------------------------------------------------------------------------- expectations


def metric_selector(metric: str, **labels: str) -> pb.SeriesSelector:
    return pb.SeriesSelector(metric=metric, labels=labels)


def key_selector(key: str) -> pb.SeriesSelector:
    return pb.SeriesSelector(series_key=key)


def fd_key() -> str:
    return series_key(FD, {"instance": "demo-host:9100", "job": "host"})


# Each stream: its request, how to call it, its items as tuples, the same from SQL.
StreamCase = tuple[
    type[Any],
    Callable[[pb_grpc.RetrievalServiceStub], Any],
    Callable[[Any], list[tuple[Any, ...]]],
    str,
]

STREAMS: dict[str, StreamCase] = {
    "ListHodrickPrescott": (
        pb.ListHodrickPrescottRequest,
        lambda s: s.ListHodrickPrescott,
        lambda m: [(m.series.key, p.time.seconds, p.trend, p.cycle) for p in m.points],
        "SELECT s.series_key, t.ts, t.trend, t.cycle FROM hp_points t",
    ),
    "ListDecomposition": (
        pb.ListDecompositionRequest,
        lambda s: s.ListDecomposition,
        lambda m: [(m.series.key, p.time.seconds, p.trend, p.seasonal, p.resid) for p in m.points],
        "SELECT s.series_key, t.ts, t.trend, t.seasonal, t.resid FROM decomposition_points t",
    ),
    "ListAutocorrelation": (
        pb.ListAutocorrelationRequest,
        lambda s: s.ListAutocorrelation,
        lambda m: [(m.series.key, x.lag, x.value) for x in m.lags],
        "SELECT s.series_key, t.lag_k, t.value FROM acf t",
    ),
    "ListAggregates": (
        pb.ListAggregatesRequest,
        lambda s: s.ListAggregates,
        lambda m: [
            (
                m.series.key,
                a.end.seconds,
                a.window,
                a.start.seconds,
                a.sample_count,
                a.max,
                a.min,
                a.mean,
                a.std,
                a.run_id,
                a.produced_at.seconds,
            )
            for a in m.aggregates
        ],
        "SELECT s.series_key, t.window_end, t.window_name, t.window_start, t.sample_count, "
        "t.max_value, t.min_value, t.mean_value, t.std_value, t.run_id, t.produced_at "
        "FROM aggregates t",
    ),
    "ListForecast": (
        pb.ListForecastRequest,
        lambda s: s.ListForecast,
        lambda m: [
            (
                m.series.key,
                p.time.seconds,
                p.value,
                p.lower80,
                p.upper80,
                p.lower95,
                p.upper95,
                p.window_end.seconds,
                p.produced_at.seconds,
            )
            for p in m.points
        ],
        "SELECT s.series_key, t.ts, t.value, t.lower80, t.upper80, t.lower95, t.upper95, "
        "t.window_end, t.produced_at FROM forecast_points t",
    ),
}
ORDER = {
    "ListHodrickPrescott": "t.ts",
    "ListDecomposition": "t.ts",
    "ListAutocorrelation": "t.lag_k",
    "ListAggregates": "t.window_end, t.window_name",
    "ListForecast": "t.ts",
}
TIME_COLUMN = {
    "ListHodrickPrescott": "t.ts",
    "ListDecomposition": "t.ts",
    "ListAutocorrelation": "t.window_end",
    "ListAggregates": "t.window_end",
    "ListForecast": "t.ts",
}


def stored(
    db: TempDatabase, rpc: str, metric: str, start: int | None = None, end: int | None = None
) -> list[tuple[Any, ...]]:
    sql = STREAMS[rpc][3] + " JOIN series s ON s.id = t.series_id WHERE s.metric = %s"
    args: list[Any] = [metric]
    if start is not None:
        sql += f" AND {TIME_COLUMN[rpc]} >= %s"
        args.append(start)
    if end is not None:
        sql += f" AND {TIME_COLUMN[rpc]} < %s"
        args.append(end)
    sql += f" ORDER BY t.series_id, {ORDER[rpc]}"
    return [tuple(r) for r in db.query(sql, *args)]


def stream(stub: pb_grpc.RetrievalServiceStub, rpc: str, **fields: Any) -> Collected:
    request_type, method, _items, _sql = STREAMS[rpc]
    return collect(method(stub)(request_type(**fields), timeout=30))


def items_of(rpc: str, got: Collected) -> list[tuple[Any, ...]]:
    return [item for msg in got.messages for item in STREAMS[rpc][2](msg)]


def count_items(msg: Any) -> int:
    for field in ("points", "lags", "aggregates", "series"):
        if hasattr(msg, field):
            return len(getattr(msg, field))
    raise AssertionError(msg)


# --------------------------------------------------------------------------- service basics


def test_health_serving_and_reflection_lists_the_service(
    server: ServerThread, channel: grpc.Channel
) -> None:
    assert health_status(server.target) == SERVING
    assert health_status(server.target, SERVICE_NAME) == SERVING

    # a real reflection client: what grpcurl and other languages' tools do
    reflection_db = ProtoReflectionDescriptorDatabase(channel)
    services = set(reflection_db.get_services())
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
    pool = descriptor_pool.DescriptorPool(reflection_db)
    service = pool.FindServiceByName(SERVICE_NAME)
    assert {m.name for m in service.methods} == {
        "ListSeries",
        "GetDickeyFuller",
        "ListAnomalies",
        "Explain",
        *STREAMS,
    }
    hp = pool.FindMessageTypeByName("sla_monitor.retrieval.v1.HodrickPrescottPoint")
    time_type = hp.fields_by_name["time"].message_type
    assert time_type is not None and time_type.full_name == "google.protobuf.Timestamp"


def test_a_taken_port_is_refused(db: TempDatabase) -> None:
    with socket.socket() as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]

        async def bind() -> None:
            with pytest.raises(RuntimeError):
                create_server(db.retrieval_settings(grpc_port=port))

        asyncio.run(bind())


# --------------------------------------------------------------------------- ListSeries


def test_list_series_is_everything_stored_in_order(
    stub: pb_grpc.RetrievalServiceStub, db: TempDatabase
) -> None:
    got = collect(stub.ListSeries(pb.ListSeriesRequest(), timeout=10))
    rows = db.query(
        "SELECT s.series_key, s.metric, s.labels, s.selector, s.transform, s.first_seen, "
        "s.last_seen, a.window_start FROM series s LEFT JOIN analyses a "
        "ON a.series_id = s.id AND a.window_end = s.last_seen ORDER BY s.id"
    )

    assert got.code == grpc.StatusCode.OK
    series = [s for m in got.messages for s in m.series]
    assert [
        (
            s.ref.key,
            s.ref.metric,
            dict(s.ref.labels),
            s.selector,
            s.transform,
            s.first_seen.seconds,
            s.last_seen.seconds,
            s.window_start.seconds,
        )
        for s in series
    ] == [(k, m, json.loads(lb), sel, tr, f, la, ws) for k, m, lb, sel, tr, f, la, ws in rows]
    assert len(series) == 1 + 2 + 1 + 1  # fd, 2 filesystems, memory, the constant one
    assert got.messages[-1].next_page_token == ""
    skipped = {s.ref.metric: {k.analysis: k.reason for k in s.skipped} for s in series}
    assert skipped[CONSTANT]["adf"] == "constant"
    assert skipped[FD] == {}


def test_list_series_filters_by_metric_labels_or_key(stub: pb_grpc.RetrievalServiceStub) -> None:
    def keys(sel: pb.SeriesSelector) -> list[str]:
        got = collect(stub.ListSeries(pb.ListSeriesRequest(selector=sel), timeout=10))
        assert got.code == grpc.StatusCode.OK, got.details
        return [s.ref.key for m in got.messages for s in m.series]

    filesystems = keys(metric_selector(FS))
    assert len(filesystems) == 2 and all(k.startswith(FS + "{") for k in filesystems)
    # label matchers: a subset of the labels selects every series that has them
    assert keys(metric_selector(FS, job="host")) == filesystems
    assert keys(metric_selector(FS, mountpoint="/")) == [k for k in filesystems if 'point="/"' in k]
    assert keys(key_selector(fd_key())) == [fd_key()]
    assert keys(metric_selector("no_such_metric")) == []  # a list may be empty


def test_list_series_pages_with_limit_and_token(stub: pb_grpc.RetrievalServiceStub) -> None:
    everything = [
        s.ref.key
        for m in collect(stub.ListSeries(pb.ListSeriesRequest(), timeout=10)).messages
        for s in m.series
    ]
    seen: list[str] = []
    token = ""
    for _ in range(10):
        got = collect(stub.ListSeries(pb.ListSeriesRequest(limit=2, page_token=token), timeout=10))
        page = [s.ref.key for m in got.messages for s in m.series]
        assert got.code == grpc.StatusCode.OK and len(page) <= 2
        seen += page
        token = got.messages[-1].next_page_token if got.messages else ""
        if not token:
            break
    assert seen == everything


# --------------------------------------------------------------------------- the streams


@pytest.mark.parametrize("rpc", list(STREAMS))
def test_stream_returns_exactly_what_is_stored_in_order_across_pages(
    stub: pb_grpc.RetrievalServiceStub, db: TempDatabase, rpc: str
) -> None:
    got = stream(stub, rpc, selector=metric_selector(FS))
    expected = stored(db, rpc, FS)

    assert got.code == grpc.StatusCode.OK, got.details
    assert items_of(rpc, got) == expected
    # pages: full ones, then the rest, per series; the last one final
    per_series = Counter(item[0] for item in expected)
    assert len(per_series) == 2
    assert [(m.series.key, count_items(m)) for m in got.messages] == [
        (key, min(PAGE, n - i)) for key, n in per_series.items() for i in range(0, n, PAGE)
    ]
    assert all(m.next_page_token for m in got.messages[:-1])
    assert got.messages[-1].next_page_token == ""


def test_per_series_values_of_the_streams(
    stub: pb_grpc.RetrievalServiceStub, db: TempDatabase
) -> None:
    (lamb, period, strength, conf) = db.query(
        "SELECT a.hp_lambda, a.decomposition_period, a.seasonal_strength, a.acf_conf_bound "
        "FROM analyses a JOIN series s ON s.id = a.series_id WHERE s.series_key = %s "
        "ORDER BY a.window_end DESC LIMIT 1",
        fd_key(),
    )[0]
    sel = key_selector(fd_key())

    hp = stream(stub, "ListHodrickPrescott", selector=sel).messages
    assert {m.hp_lambda for m in hp} == {lamb}
    dec = stream(stub, "ListDecomposition", selector=sel).messages
    assert {(m.period, m.seasonal_strength) for m in dec} == {(period, strength)}
    acf = stream(stub, "ListAutocorrelation", selector=sel).messages
    assert {(m.window_end.seconds, m.conf_bound) for m in acf} == {(END, conf)}
    forecast = stream(stub, "ListForecast", selector=sel).messages
    summary = db.query(
        "SELECT f.model, f.window_end, f.mean_value FROM forecast_summary f "
        "JOIN series s ON s.id = f.series_id WHERE s.series_key = %s "
        "ORDER BY f.window_end DESC LIMIT 1",
        fd_key(),
    )[0]
    assert {(m.summary.model, m.summary.window_end.seconds, m.summary.mean) for m in forecast} == {
        summary
    }


@pytest.mark.parametrize("rpc", list(STREAMS))
def test_limit_and_page_tokens_resume_exactly_where_they_stopped(
    stub: pb_grpc.RetrievalServiceStub, db: TempDatabase, rpc: str
) -> None:
    expected = stored(db, rpc, FS)
    limit = len(expected) // 5 + 1  # five calls or so; within a page or across pages
    seen: list[tuple[Any, ...]] = []
    token = ""
    for _ in range(len(expected) // limit + 2):
        got = stream(stub, rpc, selector=metric_selector(FS), limit=limit, page_token=token)
        assert got.code == grpc.StatusCode.OK, got.details
        items = items_of(rpc, got)
        assert len(items) <= limit
        seen += items
        token = got.messages[-1].next_page_token if got.messages else ""
        if not token:
            break
    assert seen == expected  # everything, once, in order
    assert token == ""


def test_any_page_token_resumes_after_its_page(
    stub: pb_grpc.RetrievalServiceStub, db: TempDatabase
) -> None:
    rpc = "ListHodrickPrescott"
    full = stream(stub, rpc, selector=metric_selector(FS))
    expected = stored(db, rpc, FS)
    k = len(full.messages) // 2  # as if the connection broke after page k
    before = sum(len(m.points) for m in full.messages[: k + 1])
    token = full.messages[k].next_page_token

    rest = stream(stub, rpc, selector=metric_selector(FS), page_token=token)

    assert items_of(rpc, rest) == expected[before:]


@pytest.mark.parametrize("rpc", list(STREAMS))
def test_time_range_is_half_open(
    stub: pb_grpc.RetrievalServiceStub, db: TempDatabase, rpc: str
) -> None:
    start, end = END - 1800, END - 600  # of the aggregates: the run ending END - 600 only
    tr = pb.TimeRange()
    tr.start.seconds, tr.end.seconds = start, end
    got = stream(stub, rpc, selector=metric_selector(FS), time_range=tr)
    expected = stored(db, rpc, FS, start, end)

    assert got.code == grpc.StatusCode.OK, got.details
    assert items_of(rpc, got) == expected
    if rpc != "ListAutocorrelation":  # acf keeps only the latest window: outside this range
        assert expected


def test_packed_and_plain_pages_give_identical_numbers(
    db: TempDatabase, stub: pb_grpc.RetrievalServiceStub
) -> None:
    """Packed pages rely on the server printing doubles so that they read back exactly."""
    plain = db.retrieval_settings(retrieval_page_size=PAGE, retrieval_packed_pages=False)
    with ServerThread(plain) as srv, grpc.insecure_channel(srv.target) as ch:
        plain_stub = pb_grpc.RetrievalServiceStub(ch)
        for rpc in STREAMS:
            a = items_of(rpc, stream(stub, rpc, selector=metric_selector(FS)))
            b = items_of(rpc, stream(plain_stub, rpc, selector=metric_selector(FS)))
            assert a == b, rpc


# --------------------------------------------------------------------------- GetDickeyFuller


def test_dickey_fuller_is_the_stored_test(
    stub: pb_grpc.RetrievalServiceStub, db: TempDatabase
) -> None:
    rows = db.query(
        "SELECT a.window_end, a.statistic, a.pvalue, a.used_lag, a.nobs, a.crit_1pct, "
        "a.crit_5pct, a.crit_10pct, a.stationary, a.run_id, an.window_start FROM adf a "
        "JOIN series s ON s.id = a.series_id JOIN analyses an ON an.series_id = a.series_id "
        "AND an.window_end = a.window_end WHERE s.series_key = %s ORDER BY a.window_end",
        fd_key(),
    )
    assert [r[0] for r in rows] == [END - back for back in RUNS]

    def as_row(adf: pb.DickeyFuller) -> tuple[Any, ...]:
        cv = adf.critical_values
        return (
            adf.window_end.seconds,
            adf.statistic,
            adf.p_value,
            adf.used_lag,
            adf.nobs,
            cv.pct1,
            cv.pct5,
            cv.pct10,
            int(adf.stationary),
            adf.run_id,
            adf.window_start.seconds,
        )

    latest = stub.GetDickeyFuller(pb.GetDickeyFullerRequest(selector=key_selector(fd_key())))
    assert as_row(latest) == tuple(rows[-1])
    assert latest.series.key == fd_key()
    # by metric and (all) labels, and at an earlier time (inclusive)
    sel = metric_selector(FD, instance="demo-host:9100", job="host")
    older = pb.GetDickeyFullerRequest(selector=sel)
    older.at.seconds = END - 600
    assert as_row(stub.GetDickeyFuller(older)) == tuple(rows[1])
    older.at.seconds = END - 601
    assert as_row(stub.GetDickeyFuller(older)) == tuple(rows[0])


def test_concurrent_dickey_fuller_calls_each_get_their_own_answer(
    server: ServerThread, db: TempDatabase
) -> None:
    keys = [
        k
        for (k,) in db.query(
            "SELECT s.series_key FROM series s WHERE EXISTS "
            "(SELECT 1 FROM adf a WHERE a.series_id = s.id) ORDER BY s.id"
        )
    ]

    # Calls in flight together share queries (data_retrieval.batching; how many depends on
    # timing, so the unit tests count batches): none may get another's answer.
    async def many() -> list[str]:
        async with grpc.aio.insecure_channel(server.target) as ch:
            stub = pb_grpc.RetrievalServiceStub(ch)
            answers = await asyncio.gather(
                *(
                    stub.GetDickeyFuller(
                        pb.GetDickeyFullerRequest(selector=key_selector(keys[i % len(keys)])),
                        timeout=30,
                    )
                    for i in range(64)
                )
            )
            return [a.series.key for a in answers]

    assert asyncio.run(many()) == [keys[i % len(keys)] for i in range(64)]


# --------------------------------------------------------------------------- errors


def _hp(**fields: Any) -> Callable[[pb_grpc.RetrievalServiceStub], Collected]:
    return lambda s: stream(s, "ListHodrickPrescott", **fields)


def _adf(sel: pb.SeriesSelector, at: int | None = None) -> Callable[[Any], Collected]:
    def call(s: pb_grpc.RetrievalServiceStub) -> Collected:
        request = pb.GetDickeyFullerRequest(selector=sel)
        if at is not None:
            request.at.seconds = at
        return collect(iter([s.GetDickeyFuller(request, timeout=10)]))

    return call


def _range(start: int, end: int) -> pb.TimeRange:
    tr = pb.TimeRange()
    tr.start.seconds, tr.end.seconds = start, end
    return tr


def _foreign_token(s: pb_grpc.RetrievalServiceStub) -> str:
    """A genuine token, issued for another selector."""
    got = stream(s, "ListHodrickPrescott", selector=metric_selector(FD), limit=1)
    token: str = got.messages[-1].next_page_token
    return token


INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
ERROR_CASES: dict[str, tuple[Callable[[Any], Collected], grpc.StatusCode, str]] = {
    "empty metric": (_hp(selector=pb.SeriesSelector()), INVALID, "selector.metric is empty"),
    "labels without metric": (
        _hp(selector=pb.SeriesSelector(labels={"job": "host"})),
        INVALID,
        "set selector.metric too",
    ),
    "key and metric": (
        _hp(selector=pb.SeriesSelector(metric=FD, series_key="x")),
        INVALID,
        "not both",
    ),
    "bad label name": (
        _hp(selector=metric_selector(FD, **{"bad-name": "x"})),
        INVALID,
        "is not a label name",
    ),
    "inverted range": (
        _hp(selector=metric_selector(FD), time_range=_range(END, END - 1)),
        INVALID,
        "time_range is inverted",
    ),
    "huge range": (
        _hp(selector=metric_selector(FD), time_range=_range(0, END)),
        INVALID,
        "RETRIEVAL_MAX_RANGE_S",
    ),
    "milliseconds": (
        _hp(selector=metric_selector(FD), time_range=_range(END * 1000, END * 1000 + 1)),
        INVALID,
        "not milliseconds",
    ),
    "negative limit": (_hp(selector=metric_selector(FD), limit=-5), INVALID, "limit=-5"),
    "garbage token": (
        _hp(selector=metric_selector(FD), page_token="not-a-token"),
        INVALID,
        "page_token is not a token this server issued",
    ),
    "unknown metric": (_hp(selector=metric_selector("no_such_metric")), NOT_FOUND, "no series"),
    "unknown key": (_adf(key_selector("nope{}")), NOT_FOUND, "no series matches series_key"),
    "ambiguous adf": (_adf(metric_selector(FS)), INVALID, "matches several series"),
    "adf skipped": (
        _adf(metric_selector(CONSTANT)),
        NOT_FOUND,
        "the analysis skipped it: constant",
    ),
    "adf before any window": (
        _adf(key_selector(fd_key()), at=END - 3600),
        NOT_FOUND,
        "at or before",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_have_their_code_and_say_what_to_fix(
    stub: pb_grpc.RetrievalServiceStub, case: str
) -> None:
    call, code, needle = ERROR_CASES[case]
    try:
        got = call(stub)
    except grpc.RpcError as e:  # the unary call raises
        got = Collected([], e.code(), e.details() or "")

    assert (got.code, got.messages) == (code, []), got.details
    assert needle in got.details


def test_a_token_of_another_request_is_refused(stub: pb_grpc.RetrievalServiceStub) -> None:
    got = stream(
        stub, "ListHodrickPrescott", selector=metric_selector(FS), page_token=_foreign_token(stub)
    )

    assert got.code == INVALID
    assert "belongs to a different request" in got.details


# --------------------------------------------------------------------------- cancel, deadline


# A small client receive window, so the server cannot push the whole answer ahead into the
# transport: what it reads after the client stops listening is then its own read-ahead.
SMALL_WINDOW = [("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
# Pages a stream may have read but not delivered: two in the transport's small window, the
# one being built and the one held for its token, and two series read ahead (a page waiting
# and a page being read, each).
PAGES_IN_FLIGHT = 2 + 2 + 2 * 2 + 2  # + 2 of slack for the cancellation's own round trip


def _wait_streams_done(server: ServerThread, rpc: str) -> None:
    wait_until(
        lambda: server.value("sla_retrieval_active_streams", method=rpc) == 0,
        timeout=10,
        what=f"no active {rpc} stream",
        interval=0.05,
    )


def _rows_settle(server: ServerThread, rpc: str) -> float:
    """Rows fetched, once the count stops moving: the pages being read when the stream
    ended still finish (a query is not interrupted), then nothing more is read."""
    last = -1.0

    def still() -> bool:
        nonlocal last
        now = server.value("sla_retrieval_rows_fetched_total", method=rpc)
        settled, last = now == last, now
        return settled

    wait_until(still, timeout=10, what=f"{rpc} to stop reading", interval=0.3)
    return last


def grpc_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("grpc") and r.levelno >= logging.WARNING
    ]


def test_a_cancelled_stream_stops_reading_the_database(
    server: ServerThread, db: TempDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    rpc = "ListDecomposition"
    total = len(stored(db, rpc, FS))
    before = server.value("sla_retrieval_rows_fetched_total", method=rpc)
    cancelled = server.value("sla_retrieval_requests_total", method=rpc, code="CANCELLED")

    async def read_one_then_cancel() -> int:
        async with grpc.aio.insecure_channel(server.target, options=SMALL_WINDOW) as ch:
            call = pb_grpc.RetrievalServiceStub(ch).ListDecomposition(
                pb.ListDecompositionRequest(selector=metric_selector(FS))
            )
            first = await call.read()
            call.cancel()
            assert isinstance(first, pb.ListDecompositionResponse)
            return len(first.points)

    assert asyncio.run(read_one_then_cancel()) == PAGE
    _wait_streams_done(server, rpc)
    read = _rows_settle(server, rpc) - before
    assert read <= PAGES_IN_FLIGHT * PAGE < total / 4
    assert server.value("sla_retrieval_requests_total", method=rpc, code="CANCELLED") == (
        cancelled + 1
    )
    assert grpc_errors(caplog) == []  # a client leaving is no server error


DEADLINE_S = 3.0


def test_a_passed_deadline_ends_the_stream_and_its_reading(
    server: ServerThread, db: TempDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    rpc = "ListHodrickPrescott"
    before = server.value("sla_retrieval_rows_fetched_total", method=rpc)

    async def slow_reader() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(server.target, options=SMALL_WINDOW) as ch:
            # A deadline the first page meets even on a loaded machine; then the client
            # dawdles until it has passed.
            passed = asyncio.get_running_loop().time() + DEADLINE_S
            call = pb_grpc.RetrievalServiceStub(ch).ListHodrickPrescott(
                pb.ListHodrickPrescottRequest(selector=metric_selector(FS)), timeout=DEADLINE_S
            )
            try:  # on a very loaded machine the deadline may still pass before the first page
                await call.read()
                await asyncio.sleep(passed - asyncio.get_running_loop().time() + 0.5)
                while isinstance(await call.read(), pb.ListHodrickPrescottResponse):
                    pass
            except grpc.aio.AioRpcError as e:
                return e.code()
            return grpc.StatusCode.OK

    assert asyncio.run(slow_reader()) == grpc.StatusCode.DEADLINE_EXCEEDED
    _wait_streams_done(server, rpc)
    assert _rows_settle(server, rpc) - before <= PAGES_IN_FLIGHT * PAGE < len(stored(db, rpc, FS))
    assert grpc_errors(caplog) == []


# --------------------------------------------------------------------------- the process


def test_sigterm_turns_health_not_serving_then_stops(db: TempDatabase) -> None:
    # A drain long enough for the calls below to be made during it on a loaded machine.
    with ServerProcess(db.settings, GRPC_SHUTDOWN_DRAIN_S="5", GRPC_SHUTDOWN_GRACE_S="5") as srv:
        # its own /metrics, for Prometheus
        with grpc.insecure_channel(srv.target) as ch:
            pb_grpc.RetrievalServiceStub(ch).GetDickeyFuller(
                pb.GetDickeyFullerRequest(selector=key_selector(fd_key())), timeout=10
            )
            watch = health_pb2_grpc.HealthStub(ch).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=20
            )
            statuses = [next(watch).status]
            metrics = httpx.get(f"http://{HOST}:{srv.http_port}/metrics", timeout=5).text
            assert 'sla_retrieval_requests_total{code="OK",method="GetDickeyFuller"} 1.0' in metrics

            srv.proc.send_signal(signal.SIGTERM)
            statuses.append(next(watch).status)
            # while draining: still answering, and saying it is going away
            assert health_status(srv.target, SERVICE_NAME) == NOT_SERVING
            pb_grpc.RetrievalServiceStub(ch).GetDickeyFuller(
                pb.GetDickeyFullerRequest(selector=key_selector(fd_key())), timeout=10
            )

        assert statuses == [SERVING, NOT_SERVING]
        assert srv.terminate(timeout=20) == 0
        assert "stopping: health NOT_SERVING" in srv.output()
        assert "data_retrieval stopped" in srv.output()


def test_production_without_a_grpc_token_exits_2_naming_it(run: Runner) -> None:
    env = {**os.environ, "ENVIRONMENT": "production", "MYSQL_PASSWORD": "pw", "GRPC_API_TOKEN": ""}
    proc = run([PY, "-m", "data_retrieval"], timeout=30, env=env)

    assert proc.returncode == 2
    assert "GRPC_API_TOKEN must be set when ENVIRONMENT=production" in proc.stdout


def test_the_process_serves_tls_with_its_token_and_the_client_uses_both(
    db: TempDatabase, tmp_path: Path, run: Runner
) -> None:
    cert = make_cert(tmp_path, "server")
    token = "integration-token-0123456789"
    with ServerProcess(
        db.settings,
        ca_file=cert.cert,
        ENVIRONMENT="test",  # production needs a MySQL password; the stack's root has none
        GRPC_API_TOKEN=token,
        GRPC_TLS_CERT_FILE=str(cert.cert),
        GRPC_TLS_KEY_FILE=str(cert.key),
    ) as srv:
        env = {
            **os.environ,
            "GRPC_TARGET": srv.target,
            "GRPC_TLS_CA_FILE": str(cert.cert),
            "GRPC_API_TOKEN": token,
        }
        client = [PY, "-m", "data_retrieval.client", "series", "--json"]
        proc = run(client, timeout=30, env=env)
        assert proc.returncode == 0, proc.stdout
        assert len(json.loads(proc.stdout)) == 5

        proc = run(client, timeout=30, env={**env, "GRPC_API_TOKEN": ""})
        assert proc.returncode == 1
        assert "UNAUTHENTICATED" in proc.stdout and token not in proc.stdout

        # bytes that are not protobuf, with the token: INVALID_ARGUMENT, no traceback logged
        creds = grpc.ssl_channel_credentials(cert.cert.read_bytes())
        with grpc.secure_channel(srv.target, creds) as ch:
            raw = ch.unary_unary(
                f"/{SERVICE_NAME}/GetDickeyFuller",
                request_serializer=None,
                response_deserializer=None,
            )
            with pytest.raises(grpc.RpcError) as info:
                raw(b"\xff\xff\xff", timeout=10, metadata=(("authorization", f"Bearer {token}"),))
            assert info.value.code() == INVALID
        assert srv.terminate() == 0
        output = srv.output()
    assert "TLS, bearer token required" in output
    assert "Traceback" not in output and "ERROR" not in output
    assert token not in output


def test_invalid_settings_exit_2_naming_the_variable(run: Runner) -> None:
    env = {**os.environ, "GRPC_PORT": "not-a-port"}
    proc = run([PY, "-m", "data_retrieval"], timeout=30, env=env)

    assert proc.returncode == 2
    assert "GRPC_PORT='not-a-port'" in proc.stdout


# --------------------------------------------------------------------------- the client


def client_env(server: ServerThread) -> dict[str, str]:
    return {**os.environ, "GRPC_TARGET": server.target, "PYTHONUNBUFFERED": "1"}


def test_interactive_client_on_a_terminal(server: ServerThread) -> None:
    term = Terminal([PY, "-m", "data_retrieval.client"], env=client_env(server))
    try:
        menu = term.expect("Pick a metric: 1-4, a = all, x = explain an interval, q = quit > ")
        assert "5 series of 4 metrics stored" in menu
        listed = [m.group(1) for m in re.finditer(r"^ +\d+ +(\S+) +\d+\r?$", menu, re.M)]
        assert listed == sorted([*METRICS, CONSTANT])

        term.send("7")
        term.expect("'7' is not a choice: enter a number from 1 to 4, a, x or q.")
        term.send("banana")
        term.expect("'banana' is not a choice")

        term.send(str(listed.index(FD) + 1))
        report = term.expect("b = back to the metrics, q = quit > ")
        assert "Augmented Dickey-Fuller" in report and "verdict: " in report
        assert "critical 5%" in report
        aggregates = report.split("Aggregates (latest window)")[1]
        assert [ln.split()[0] for ln in aggregates.splitlines()[3:6]] == ["1h", "3h", "12h"]
        assert "Forecast (" in report and "80% interval" in report
        assert "Hodrick-Prescott (lambda 1,600)" in report
        assert "Seasonal decomposition" in report and "Autocorrelation (40 lags" in report

        term.send("1")
        term.expect("b = back > ")
        term.send("h")
        full = term.expect("b = back to the metrics, q = quit > ")
        rows = re.findall(r"^20\d\d-\d\d-\d\d \d\d:\d\d:\d\d +\S+ +\S+\r?$", full, re.M)
        assert len(rows) == WINDOW_S // 15 + 1  # the whole latest window

        term.send("b")
        term.expect("Pick a metric")
        term.send("q")
        assert term.wait() == 0
        assert "Traceback" not in term.output
    finally:
        term.close()


def test_interactive_client_ends_cleanly_on_ctrl_c_and_on_end_of_input(
    server: ServerThread, run: Runner
) -> None:
    term = Terminal([PY, "-m", "data_retrieval.client"], env=client_env(server))
    try:
        term.expect("Pick a metric")
        term.send("a")  # every metric: a report per partition, numbered across them all
        reports = term.expect("Full series of partition 1-5, b = back to the metrics")
        assert reports.count("Augmented Dickey-Fuller") == 5 and "\n[5] " in reports
        assert "Augmented Dickey-Fuller: no Dickey-Fuller test stored" in reports  # constant
        term.send_raw(b"\x03")  # Ctrl-C, through the terminal's line discipline
        assert term.wait() == 130
        assert "Traceback" not in term.output
    finally:
        term.close()

    # stdin at its end (a pipe, or Ctrl-D): the menu quits
    proc = run([PY, "-m", "data_retrieval.client"], timeout=30, env=client_env(server))
    assert proc.returncode == 0, proc.stdout
    assert "Pick a metric" in proc.stdout and "Traceback" not in proc.stdout


def test_interactive_client_quits_on_ctrl_c_even_when_sigint_came_in_ignored(
    server: ServerThread,
) -> None:
    # A CI job started with `cmd &` by a non-interactive shell hands every descendant SIGINT
    # ignored; on its own terminal the menu still quits on Ctrl-C.
    term = Terminal(
        [PY, "-m", "data_retrieval.client"], env=client_env(server), sigint_ignored=True
    )
    try:
        term.expect("Pick a metric")
        term.send_raw(b"\x03")
        assert term.wait() == 130
        assert "Traceback" not in term.output
    finally:
        term.close()


def test_client_commands_print_json_for_scripts(
    server: ServerThread, db: TempDatabase, run: Runner
) -> None:
    env = client_env(server)
    client = [PY, "-m", "data_retrieval.client"]

    series = json.loads(run([*client, "series", "--json"], timeout=30, env=env).stdout)
    assert sorted(s["ref"]["key"] for s in series) == sorted(
        k for (k,) in db.query("SELECT series_key FROM series")
    )

    proc = run([*client, "adf", "--key", fd_key(), "--json"], timeout=30, env=env)
    adf = json.loads(proc.stdout)
    (stat,) = db.query(
        "SELECT a.statistic FROM adf a JOIN series s ON s.id = a.series_id "
        "WHERE s.series_key = %s ORDER BY a.window_end DESC LIMIT 1",
        fd_key(),
    )[0]
    assert adf["statistic"] == stat and adf["window_end"] == "2026-01-01T00:00:00Z"

    proc = run([*client, "hp", "--metric", FS, "--json"], timeout=30, env=env)
    per_series = json.loads(proc.stdout)
    expected = stored(db, "ListHodrickPrescott", FS)
    assert [
        (s["series"]["key"], p["trend"], p["cycle"]) for s in per_series for p in s["points"]
    ] == [(k, trend, cycle) for k, _ts, trend, cycle in expected]

    proc = run(
        [
            *client,
            "forecast",
            "--metric",
            FD,
            "--label",
            "job=host",
            "--start=2026-01-01T00:00:01Z",
        ],
        timeout=30,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout
    assert "80% interval" in proc.stdout
    assert len(re.findall(r"^  2026-01-01 00:\d\d:00 ", proc.stdout, re.M)) == 10

    proc = run([*client, "report", "--metric", FD], timeout=30, env=env)
    assert proc.returncode == 0, proc.stdout
    assert "[1] node_filefd_allocated" in proc.stdout and "verdict:" in proc.stdout

    proc = run([*client, "adf", "--metric", FS], timeout=30, env=env)
    assert proc.returncode == 1
    assert "INVALID_ARGUMENT" in proc.stdout and "matches several series" in proc.stdout


# --------------------------------------------------------------------------- MariaDB outage


@pytest.mark.timeout(150)
def test_database_down_is_unavailable_and_recovers_without_restart(
    tmp_path: Path, run: Runner
) -> None:
    port = free_port()
    env = scripts_env(
        tmp_path, STACK_COMPONENTS="mariadb", STACK_MYSQL_MODE="private", STACK_MYSQL_PORT=str(port)
    )

    def up() -> None:
        result = run([SCRIPTS / "up"], timeout=90, env=env)
        assert result.returncode == 0, result.stdout + dump_logs(tmp_path)

    try:
        up()
        base = MysqlSettings(mysql_port=port, mysql_connect_timeout_s=2, mysql_read_timeout_s=5)
        database = TempDatabase(base, prefix="sla_rt_outage").__enter__()
        database.store(
            [
                constant_message(),
                *demo_messages(seed=1, end=END, runs=(0,), window_s=3600, names=[FD]),
            ]
        )
        with (
            ServerThread(database.retrieval_settings()) as srv,
            grpc.insecure_channel(srv.target) as ch,
        ):
            stub = pb_grpc.RetrievalServiceStub(ch)
            request = pb.GetDickeyFullerRequest(selector=key_selector(fd_key()))
            assert stub.GetDickeyFuller(request, timeout=10).series.key == fd_key()

            assert run([SCRIPTS / "down"], timeout=60, env=env).returncode == 0
            for call in (
                lambda: stub.GetDickeyFuller(request, timeout=10),
                lambda: list(
                    stub.ListHodrickPrescott(
                        pb.ListHodrickPrescottRequest(selector=key_selector(fd_key())), timeout=10
                    )
                ),
            ):
                with pytest.raises(grpc.RpcError) as info:
                    call()
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "the database cannot be reached" in (info.value.details() or "")
            assert health_status(srv.target) == SERVING  # the server itself is fine

            up()

            def answers() -> bool:
                try:
                    return stub.GetDickeyFuller(request, timeout=10).series.key == fd_key()
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                    return False

            wait_until(answers, timeout=30, what="an answer after MariaDB came back")
            assert srv.value("sla_retrieval_db_errors_total", kind="unavailable") >= 2
    finally:
        run([SCRIPTS / "down", "--purge"], timeout=60, env=env)
