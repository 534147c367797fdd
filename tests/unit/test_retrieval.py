"""data_retrieval without services: request checks, page tokens, stream plumbing, SQL text,
packed pages, conversions, settings, and what the client parses and prints."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import struct
import sys
from collections.abc import AsyncGenerator, Iterator, Sequence
from typing import Any

import grpc
import pymysql
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st
from pymysql.constants import CR, ER

from data_retrieval import convert, queries
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval.batching import Coalescer
from data_retrieval.client import render
from data_retrieval.client.__main__ import main as client_main
from data_retrieval.client.api import InputError, parse_label, parse_time, selector, time_range
from data_retrieval.client.settings import ClientSettings
from data_retrieval.db import DatabaseUnavailable, unavailable_reason
from data_retrieval.paging import (
    MORE,
    Chunk,
    Cursor,
    More,
    decode_token,
    encode_token,
    fingerprint,
    in_order,
    with_tokens,
)
from data_retrieval.server import CLIENT_GONE, GRPC_CORE_LOGGER, ClientGoneFilter
from data_retrieval.service import status_of
from data_retrieval.settings import RetrievalSettings
from data_retrieval.validation import (
    RequestError,
    Selector,
    TimeRange,
    latest_range,
    parse_at,
    parse_limit,
    parse_selector,
    parse_time_range,
)
from sla_common.cli import settings_and_logging
from sla_common.series import series_key
from sla_common.settings import SettingsError, load_settings

T0 = 1_767_225_600
DAY = 86_400
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _invalid(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(RequestError) as info:
        fn(*args, **kwargs)
    assert info.value.code == INVALID
    return info.value.message


def _ts(seconds: int, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


# --------------------------------------------------------------------------- selectors


def test_selector_by_key_or_by_metric_and_labels() -> None:
    by_key = parse_selector(pb.SeriesSelector(series_key='up{job="a"}'))
    by_labels = parse_selector(pb.SeriesSelector(metric="up", labels={"job": "a", "i": "x"}))

    assert by_key == Selector(key='up{job="a"}')
    assert by_key.exact_key == 'up{job="a"}'
    assert by_labels.labels == (("i", "x"), ("job", "a"))
    assert by_labels.exact_key == series_key("up", {"job": "a", "i": "x"})
    assert parse_selector(pb.SeriesSelector(metric="up")).exact_key is None
    assert parse_selector(pb.SeriesSelector(), allow_everything=True).everything


@pytest.mark.parametrize(
    ("sel", "needle"),
    [
        (pb.SeriesSelector(), "selector.metric is empty"),
        (pb.SeriesSelector(labels={"job": "a"}), "set selector.metric too"),
        (pb.SeriesSelector(metric="up", series_key="up{}"), "not both"),
        (pb.SeriesSelector(metric="1up"), "is not a metric name"),
        (pb.SeriesSelector(metric="up-time"), "is not a metric name"),
        (pb.SeriesSelector(metric="up", labels={"bad-name": "x"}), "is not a label name"),
        (pb.SeriesSelector(metric="up", labels={"__name__": "x"}), "selector.metric"),
        (pb.SeriesSelector(series_key="x" * 5000), "longer than 4096"),
    ],
)
def test_bad_selectors_say_what_to_fix(sel: pb.SeriesSelector, needle: str) -> None:
    assert needle in _invalid(parse_selector, sel)


def test_empty_selector_message_points_to_list_series() -> None:
    assert "ListSeries" in _invalid(parse_selector, pb.SeriesSelector())


# --------------------------------------------------------------------------- time ranges


def test_time_range_is_half_open_and_never_wider_than_the_maximum() -> None:
    tr = parse_time_range(pb.TimeRange(start=_ts(T0), end=_ts(T0 + 60)), DAY)

    assert tr == TimeRange(T0, T0 + 60)
    assert tr.contains(T0) and tr.contains(T0 + 59) and not tr.contains(T0 + 60)
    # one bound: the other is the maximum range away (before: open, i.e. everything)
    assert parse_time_range(pb.TimeRange(end=_ts(T0)), DAY) == TimeRange(T0 - DAY, T0)
    assert parse_time_range(pb.TimeRange(start=_ts(T0)), DAY) == TimeRange(T0, T0 + DAY)
    # none: open here, bounded per series by its newest item
    assert parse_time_range(None, DAY) == TimeRange()
    assert parse_time_range(pb.TimeRange(), DAY) == TimeRange()
    assert latest_range(T0, DAY) == TimeRange(T0 + 1 - DAY, T0 + 1)
    assert latest_range(T0, DAY).contains(T0) and not latest_range(T0, DAY).contains(T0 - DAY)
    # an empty range is allowed (it selects nothing)
    assert parse_time_range(pb.TimeRange(start=_ts(T0), end=_ts(T0)), DAY) == TimeRange(T0, T0)


def test_sub_second_bounds_round_up_to_whole_seconds() -> None:
    tr = parse_time_range(pb.TimeRange(start=_ts(T0, 1), end=_ts(T0 + 10, 500)), DAY)

    # start inclusive: the first whole second >= start; end exclusive: t < end <=> t <= T0+10
    assert tr == TimeRange(T0 + 1, T0 + 11)


@pytest.mark.parametrize(
    ("tr", "needle"),
    [
        (pb.TimeRange(start=_ts(T0 + 1), end=_ts(T0)), "inverted"),
        (pb.TimeRange(start=_ts(T0), end=_ts(T0 + 2 * DAY)), "RETRIEVAL_MAX_RANGE_S"),
        (pb.TimeRange(start=_ts(T0 * 1000)), "not milliseconds"),
        (pb.TimeRange(end=_ts(T0, -1)), "nanos"),
    ],
)
def test_bad_time_ranges_say_what_to_fix(tr: pb.TimeRange, needle: str) -> None:
    assert needle in _invalid(parse_time_range, tr, DAY)


@given(
    start=st.integers(0, 2**33),
    span=st.integers(0, DAY),
    t=st.integers(0, 2**33 + DAY),
)
def test_a_valid_range_contains_exactly_its_half_open_interval(
    start: int, span: int, t: int
) -> None:
    tr = parse_time_range(pb.TimeRange(start=_ts(start), end=_ts(start + span)), DAY)

    assert tr.contains(t) == (start <= t < start + span)


def test_limit_and_at() -> None:
    assert parse_limit(0, 100) is None  # the server's cap, applied by the stream
    assert parse_limit(5, 100) == 5
    assert parse_limit(2**31 - 1, 100) == 100  # never more than the cap
    assert "limit=-1 must be >= 0" in _invalid(parse_limit, -1, 100)
    assert parse_at(pb.GetDickeyFullerRequest()) is None
    assert parse_at(pb.GetDickeyFullerRequest(at=_ts(T0, 999))) == T0


# --------------------------------------------------------------------------- page tokens


def _hp_request(**kw: Any) -> pb.ListHodrickPrescottRequest:
    return pb.ListHodrickPrescottRequest(selector=pb.SeriesSelector(metric="up"), **kw)


@given(
    series_id=st.integers(0, 2**63),
    after=st.tuples(st.integers(-(2**62), 2**62), st.text(max_size=20)),
)
def test_tokens_round_trip(series_id: int, after: tuple[int, str]) -> None:
    fp = fingerprint(_hp_request())
    token = encode_token("ListAggregates", fp, Cursor(series_id, after))

    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert decode_token(token, "ListAggregates", fp, (int, str)) == Cursor(series_id, after)


@given(st.text(max_size=200))
def test_garbage_tokens_are_invalid_argument_never_a_crash(token: str) -> None:
    fp = fingerprint(_hp_request())
    try:
        decode_token(token, "ListHodrickPrescott", fp, (int,))
    except RequestError as e:
        assert e.code == INVALID
        assert "page_token" in e.message


def test_token_bound_to_method_and_request_but_not_limit() -> None:
    fp = fingerprint(_hp_request(limit=10, page_token="x"))
    token = encode_token("ListHodrickPrescott", fp, Cursor(3, (T0,)))

    # another limit, same question: fine
    same = fingerprint(_hp_request(limit=99))
    assert decode_token(token, "ListHodrickPrescott", same, (int,)) == Cursor(3, (T0,))
    assert "issued by ListHodrickPrescott" in _invalid(
        decode_token, token, "ListForecast", same, (int,)
    )
    other = fingerprint(
        _hp_request(time_range=pb.TimeRange(start=_ts(T0)))  # another range
    )
    assert "different request" in _invalid(
        decode_token, token, "ListHodrickPrescott", other, (int,)
    )
    assert "not a token" in _invalid(decode_token, token, "ListHodrickPrescott", same, (int, str))


# --------------------------------------------------------------------------- stream plumbing


def _chunk(i: int) -> Chunk[pb.ListHodrickPrescottResponse]:
    return Chunk(pb.ListHodrickPrescottResponse(), 1, Cursor(1, (i,)))


async def _source(
    items: list[Chunk[pb.ListHodrickPrescottResponse] | More],
) -> AsyncGenerator[Chunk[pb.ListHodrickPrescottResponse] | More, None]:
    for item in items:
        yield item


def _tokens(items: list[Chunk[pb.ListHodrickPrescottResponse] | More]) -> list[str]:
    async def run() -> list[str]:
        out = with_tokens(_source(items), lambda cursor: f"after-{cursor.after[0]}")
        return [c.message.next_page_token async for c in out]

    return asyncio.run(run())


def test_every_page_resumes_after_itself_and_the_last_one_is_empty() -> None:
    assert _tokens([_chunk(1), _chunk(2), _chunk(3)]) == ["after-1", "after-2", ""]
    assert _tokens([]) == []


def test_a_stream_cut_by_its_limit_keeps_a_token_on_its_last_page() -> None:
    assert _tokens([_chunk(1), _chunk(2), MORE]) == ["after-1", "after-2"]


def _sources(
    events: list[str], sizes: list[int], fail_at: int | None = None, delay: float = 0.005
) -> AsyncGenerator[AsyncGenerator[str, None], None]:
    async def one(n: int, size: int) -> AsyncGenerator[str, None]:
        try:
            for i in range(size):
                events.append(f"read {n}.{i}")
                await asyncio.sleep(delay)
                if n == fail_at:
                    raise DatabaseUnavailable("down")
                yield f"{n}.{i}"
        finally:
            events.append(f"closed {n}")

    async def all_of() -> AsyncGenerator[AsyncGenerator[str, None], None]:
        for n, size in enumerate(sizes):
            yield one(n, size)

    return all_of()


@given(sizes=st.lists(st.integers(0, 4), max_size=5), ahead=st.integers(1, 3))
def test_in_order_is_the_sources_chained(sizes: list[int], ahead: int) -> None:
    async def run() -> list[str]:
        return [x async for x in in_order(_sources([], sizes, delay=0), ahead=ahead)]

    assert asyncio.run(run()) == [f"{n}.{i}" for n, size in enumerate(sizes) for i in range(size)]


def test_in_order_reads_the_next_source_ahead_and_stops_everything_when_closed() -> None:
    events: list[str] = []

    async def run() -> list[str]:
        got: list[str] = []
        gen = in_order(_sources(events, [5, 5, 5]), ahead=2)
        async for x in gen:
            got.append(x)
            await asyncio.sleep(0.02)  # a slow consumer: the readers run ahead meanwhile
            if x == "0.2":
                break
        await gen.aclose()
        return got

    assert asyncio.run(run()) == ["0.0", "0.1", "0.2"]
    assert "read 1.0" in events  # the second series was read while the first was consumed
    assert not any(e.startswith("read 2.") for e in events)  # only two at a time
    # at most one item waiting plus one being read, per reader; then both closed
    assert max(int(e.split(".")[1]) for e in events if e.startswith("read 0.")) <= 4
    assert sorted(events[-2:]) == ["closed 0", "closed 1"]


def test_in_order_raises_a_sources_error_where_its_items_stop() -> None:
    async def run() -> list[str]:
        got: list[str] = []
        with pytest.raises(DatabaseUnavailable):
            async for x in in_order(_sources([], [2, 2], fail_at=1), ahead=2):
                got.append(x)
        return got

    assert asyncio.run(run()) == ["0.0", "0.1"]


# --------------------------------------------------------------------------- coalescing


def test_lookups_run_at_once_alone_and_in_batches_under_load() -> None:
    batches: list[list[int]] = []

    async def fetch(keys: Sequence[int]) -> dict[int, str]:
        batches.append(list(keys))
        await asyncio.sleep(0.01)
        return {k: f"v{k}" for k in keys if k != 13}

    async def run() -> tuple[str | None, list[str | None]]:
        c: Coalescer[int, str] = Coalescer(fetch, slots=2)
        alone = await c.get(1)
        many = await asyncio.gather(*(c.get(k % 8) for k in range(40)), c.get(13))
        return alone, list(many)

    alone, many = asyncio.run(run())

    assert alone == "v1" and batches[0] == [1]
    assert many[:40] == [f"v{k % 8}" for k in range(40)] and many[40] is None
    # two started at once, the rest gathered behind them, each key once per batch
    assert len(batches) <= 4
    assert all(len(set(b)) == len(b) for b in batches)
    assert {k for b in batches[1:] for k in b} == {*range(8), 13}


def test_a_failed_batch_fails_each_of_its_lookups_and_a_cancelled_one_is_skipped() -> None:
    async def fetch(keys: Sequence[int]) -> dict[int, str]:
        await asyncio.sleep(0.01)
        raise DatabaseUnavailable("down")

    async def run() -> list[Any]:
        c: Coalescer[int, str] = Coalescer(fetch, slots=1)
        first = asyncio.ensure_future(c.get(1))
        waiting = [asyncio.ensure_future(c.get(k)) for k in (2, 3)]
        await asyncio.sleep(0)
        waiting[1].cancel()
        return await asyncio.gather(first, *waiting, return_exceptions=True)

    first, second, third = asyncio.run(run())
    assert isinstance(first, DatabaseUnavailable) and isinstance(second, DatabaseUnavailable)
    assert isinstance(third, asyncio.CancelledError)


# --------------------------------------------------------------------------- SQL


def test_keyset_condition_is_strictly_after_a_position() -> None:
    assert queries.keyset_condition(["ts"]) == "((ts > %s))"
    assert queries.keyset_condition(["a", "b"]) == "((a > %s) OR (a = %s AND b > %s))"
    assert queries.keyset_args([5, "x"]) == [5, 5, "x"]


@given(
    series_id=st.integers(1, 2**40),
    start=st.none() | st.integers(0, 2**33),
    end=st.none() | st.integers(0, 2**33),
    after=st.none() | st.integers(0, 2**33),
    n=st.integers(1, 20_000),
    packed=st.booleans(),
)
def test_page_sql_takes_every_value_as_a_parameter(
    series_id: int, start: int | None, end: int | None, after: int | None, n: int, packed: bool
) -> None:
    sql, args = queries.points_query(
        queries.HP,
        series_id,
        TimeRange(start, end),
        None if after is None else (after,),
        n,
        packed=packed,
    )

    assert sql.count("%s") == len(args)
    code = sql.replace("hp_points", "")
    for column in queries.HP.columns:  # the constants of the exact encoding of doubles
        code = code.replace(queries.exact_double(column), "")
    assert not re.search(r"\d{2,}", code), sql  # no literal values
    assert args[0] == series_id and args[-1] == n


def test_text_tables_are_never_packed() -> None:
    with pytest.raises(ValueError, match="only numeric"):
        queries.points_query(queries.AGGREGATES, 1, TimeRange(), None, 10, packed=True)


finite = st.floats(allow_nan=False, allow_infinity=False)


@given(
    st.lists(
        st.tuples(st.integers(0, 2**40), finite, finite), max_size=50, unique_by=lambda r: r[0]
    )
)
def test_packed_pages_read_back_exactly_and_in_key_order(
    rows: list[tuple[int, float, float]],
) -> None:
    # any order, like the server's; doubles as the server's exact_double makes them
    text = ",".join(f"{t},{exact(a)},{exact(b)}" for t, a, b in rows)

    back = list(queries.unpack(len(rows), text, (int, float, float)))

    # bit for bit, but for a zero's sign: not sent (MariaDB's DOUBLE column drops it anyway)
    def key(r: tuple[int, float, float]) -> tuple[int, bytes, bytes]:
        return (r[0], struct.pack("<d", r[1] + 0.0), struct.pack("<d", r[2] + 0.0))

    assert list(map(key, back)) == list(map(key, sorted(rows)))


def exact(x: float) -> str:
    """What the SQL of queries.exact_double yields for ``x`` (with a 54-bit integer)."""
    if x == 0:
        return "0,0"
    mantissa, e = math.frexp(x)  # x == mantissa * 2**e, 0.5 <= |mantissa| < 1
    return f"{int(mantissa * 2**54)},{e - 54}"


@given(finite)
def test_a_double_reads_back_bit_for_bit_from_its_two_integers(x: float) -> None:
    mantissa, e = math.frexp(x)
    m = int(mantissa * 2**53)  # exact: a double has 53 bits
    # The SQL's exponent may be one off either way (LOG2 rounds near powers of two): its
    # integer then has 53 to 55 bits.
    for extra in (0, 1, 2):
        back = queries.read_double(str(m * 2**extra), str(e - 53 - extra))
        assert struct.pack("<d", back) == struct.pack("<d", x + 0.0)


def test_a_truncated_packed_page_is_an_error() -> None:
    with pytest.raises(queries.PackedPageError, match="expected 2 x 5"):
        queries.unpack(2, "1,2,0,3,0,4,5,0", (int, float, float))


# --------------------------------------------------------------------------- rows to messages


def test_rows_become_points_with_timestamps() -> None:
    msg = pb.ListHodrickPrescottResponse()
    convert.fill_hp(msg, [(T0, 1.5, -0.25), (T0 + 15, 2.5, 0.0)])
    convert.head_hp(msg, (1600.0,))

    assert [(p.time.seconds, p.trend, p.cycle) for p in msg.points] == [
        (T0, 1.5, -0.25),
        (T0 + 15, 2.5, 0.0),
    ]
    assert msg.hp_lambda == 1600.0


def test_forecast_summary_only_when_stored() -> None:
    msg = pb.ListForecastResponse()
    convert.head_forecast(msg, (None,) * 13)
    assert not msg.HasField("summary")

    convert.head_forecast(
        msg, (T0, 600, "ets", 60, 720, T0 + 60, T0 + 600, 10, 3.0, 1.0, 2.0, "run", T0 + 5)
    )
    assert msg.summary.model == "ets"
    assert msg.summary.horizon_end.seconds == T0 + 600
    assert (msg.summary.max, msg.summary.min, msg.summary.mean) == (3.0, 1.0, 2.0)


def test_dickey_fuller_row() -> None:
    row = (T0, T0 - 3600, -3.5, 0.01, 2, 700, -3.4, -2.9, -2.6, 1, None, "run-1", T0 + 3)
    adf = convert.dickey_fuller(pb.SeriesRef(key="k"), row)

    assert adf.stationary and adf.autolag == ""
    assert adf.window_start.seconds == T0 - 3600 and adf.window_end.seconds == T0
    assert adf.critical_values.pct5 == -2.9
    assert adf.series.key == "k"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("exc", "unavailable"),
    [
        (pymysql.err.OperationalError(CR.CR_CONN_HOST_ERROR, "Can't connect"), True),
        (pymysql.err.OperationalError(CR.CR_SERVER_LOST, "Lost connection"), True),
        (pymysql.err.InterfaceError(0, ""), True),
        (ConnectionRefusedError(), True),
        (pymysql.err.ProgrammingError(ER.NO_SUCH_TABLE, "no such table"), True),
        (pymysql.err.OperationalError(ER.BAD_DB_ERROR, "Unknown database"), True),
        (pymysql.err.ProgrammingError(ER.PARSE_ERROR, "syntax"), False),
        (pymysql.err.DataError(1264, "out of range"), False),
    ],
)
def test_which_database_errors_mean_unavailable(exc: Exception, unavailable: bool) -> None:
    assert (unavailable_reason(exc) is not None) == unavailable


def test_status_codes_of_expected_failures() -> None:
    assert status_of(DatabaseUnavailable("x"))[0] == grpc.StatusCode.UNAVAILABLE
    assert status_of(TimeoutError())[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    err = RequestError(grpc.StatusCode.NOT_FOUND, "no such series")
    assert status_of(err) == (grpc.StatusCode.NOT_FOUND, "no such series")


# --------------------------------------------------------------------------- settings


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = RetrievalSettings()
    assert (s.grpc_port, s.http_port, s.grpc_host) == (50051, 8003, "127.0.0.1")
    assert s.retrieval_packed_pages

    monkeypatch.setenv("GRPC_PORT", "6000")
    monkeypatch.setenv("RETRIEVAL_PAGE_SIZE", "50")
    s = load_settings(RetrievalSettings)
    assert (s.grpc_port, s.retrieval_page_size) == (6000, 50)

    monkeypatch.setenv("GRPC_TARGET", "example:1")
    assert load_settings(ClientSettings).grpc_target == "example:1"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"GRPC_PORT": "abc"}, "GRPC_PORT='abc'"),
        ({"GRPC_PORT": "70000"}, "GRPC_PORT"),
        ({"RETRIEVAL_PAGE_SIZE": "0"}, "RETRIEVAL_PAGE_SIZE"),
        ({"GRPC_PORT": "9000", "HTTP_PORT": "9000"}, "HTTP_PORT and GRPC_PORT must differ"),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as info:
        load_settings(RetrievalSettings)
    assert needle in str(info.value)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging() replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_services_start_with_settings_then_logging_or_a_clear_exit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = logging.getLogger("test.cli")
    monkeypatch.setenv("GRPC_PORT", "51000")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    settings = settings_and_logging(RetrievalSettings, log)
    assert settings is not None and settings.grpc_port == 51000
    assert logging.getLogger().level == logging.WARNING

    monkeypatch.setenv("GRPC_PORT", "many")
    assert settings_and_logging(RetrievalSettings, log) is None
    assert "invalid settings: GRPC_PORT='many'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the client


def test_client_parses_labels_and_times() -> None:
    assert parse_label("job=node") == ("job", "node")
    assert parse_label("q=a=b") == ("q", "a=b")
    with pytest.raises(InputError, match="not name=value"):
        parse_label("job")
    assert parse_time("1767225600") == T0
    assert parse_time("2026-01-01T00:00:00Z") == T0
    assert parse_time("2026-01-01T01:00:00+01:00") == T0
    assert parse_time("2026-01-01 00:00:00") == T0  # UTC when no zone is given
    assert parse_time("-3h", now=T0) == T0 - 3 * 3600
    with pytest.raises(InputError, match="ISO 8601"):
        parse_time("yesterday")


def test_client_builds_requests() -> None:
    sel = selector(metric="up", labels={"job": "a"})
    assert (sel.metric, dict(sel.labels), sel.series_key) == ("up", {"job": "a"}, "")
    assert time_range() is None
    tr = time_range(T0, None)
    assert tr is not None and tr.HasField("start") and not tr.HasField("end")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["adf"], "name a series"),
        (["hp", "--label", "job=a"], "--label needs --metric"),
        (["forecast", "--key", "k", "--metric", "m"], "either --key or --metric"),
        (["hp", "--metric", "m", "--start", "soon"], "ISO 8601"),
    ],
)
def test_client_refuses_bad_arguments_with_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # An unroutable target: the arguments are refused before any call is made.
    assert client_main(["--target", "127.0.0.1:9", *argv]) == 2
    assert needle in capsys.readouterr().err


def test_tables_align_columns() -> None:
    out = render.table(["name", "value"], [("a", "1"), ("longer", "1,000")])
    lines = out.splitlines()

    assert lines[0] == "name    value"
    assert lines[2] == "a           1"
    assert lines[3] == "longer  1,000"
    assert len({len(ln) for ln in lines}) == 1


@pytest.mark.parametrize(
    ("x", "shown"),
    [
        (0.0, "0"),
        (-2.8657, "-2.8657"),
        (0.083713, "0.083713"),
        (1_715_498_607.9, "1,715,498,608"),
        (1.5e-7, "1.5000e-07"),
        (12.5, "12.5"),
    ],
)
def test_numbers_are_readable(x: float, shown: str) -> None:
    assert render.fmt_num(x) == shown


def test_latest_aggregate_per_window_shortest_first() -> None:
    def agg(window: str, end: int) -> pb.Aggregate:
        a = pb.Aggregate(window=window)
        a.end.seconds = end
        return a

    latest = render.latest_per_window([agg("12h", 1), agg("1h", 1), agg("1h", 2), agg("3h", 1)])

    assert [(a.window, a.end.seconds) for a in latest] == [("1h", 2), ("3h", 1), ("12h", 1)]


def test_adf_verdict_compares_with_the_5_percent_critical_value() -> None:
    adf = pb.DickeyFuller(
        statistic=-3.5,
        p_value=0.008,
        critical_values=pb.CriticalValues(pct1=-3.4, pct5=-2.9, pct10=-2.6),
        stationary=True,
    )
    adf.window_end.seconds = T0
    text = render.adf_block(adf)

    assert "verdict: stationary at 5% (statistic -3.5 < critical -2.9)" in text
    assert "critical 1%" in text and "-3.4" in text


def test_acf_summary_counts_significant_lags() -> None:
    lags = [pb.AutocorrelationLag(lag=i, value=v) for i, v in enumerate([1.0, 0.5, 0.01, -0.3])]

    text = render.acf_block(None, 0.1, lags)

    assert "3 lags" in text and "significant beyond +/-0.1: 2 lags: 1, 3" in text


def _record(level: int, msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logging.LogRecord(GRPC_CORE_LOGGER, level, "x.py", 1, msg, args, exc_info)


def test_client_gone_filter_turns_grpcs_send_error_into_debug_and_passes_the_rest() -> None:
    f = ClientGoneFilter()
    logger = logging.getLogger(GRPC_CORE_LOGGER)
    old = logger.level
    try:
        logger.setLevel(logging.INFO)
        gone = _record(logging.ERROR, CLIENT_GONE + " [%s]", "/svc/List", exc=True)
        assert f.filter(gone) is False  # DEBUG now, below the logger's level: dropped
        assert gone.levelno == logging.DEBUG and gone.exc_info is None
        assert "/svc/List" in gone.getMessage()

        logger.setLevel(logging.DEBUG)
        gone = _record(logging.ERROR, CLIENT_GONE + " [%s]", "/svc/List", exc=True)
        assert f.filter(gone) is True  # shown when DEBUG is asked for, without traceback
        assert gone.levelname == "DEBUG" and gone.exc_info is None

        other = _record(logging.ERROR, "Unexpected [%s] raised by servicer", "ValueError")
        assert f.filter(other) is True
        assert other.levelno == logging.ERROR  # a real server error stays an error
    finally:
        logger.setLevel(old)
