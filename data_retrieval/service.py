"""The RetrievalService servicer: async generators over the database, one page at a time.

Shaped like grpc's asyncio route_guide server: the RPC methods are thin async generators,
the work is in pure helpers (:mod:`validation`, :mod:`paging`, :mod:`queries`,
:mod:`convert`). A stream reads its next pages in database threads while a page is on its
way to the client (:func:`paging.in_order`), holds a handful of pages at most, and stops
reading as soon as the client cancels or its deadline passes (reads in flight finish, and
their pages are dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

import grpc

from data_retrieval import convert, queries
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from data_retrieval.batching import Coalescer
from data_retrieval.db import Database, DatabaseUnavailable
from data_retrieval.explain import Explainer
from data_retrieval.metrics import RetrievalMetrics
from data_retrieval.paging import (
    MORE,
    Chunk,
    Cursor,
    More,
    PageMessage,
    Position,
    decode_token,
    encode_token,
    fingerprint,
    in_order,
    with_tokens,
)
from data_retrieval.queries import PointTable, Row, SeriesRow
from data_retrieval.settings import RetrievalSettings
from data_retrieval.validation import (
    RequestError,
    Selector,
    TimeRange,
    invalid,
    latest_range,
    not_found,
    parse_anomaly_filter,
    parse_at,
    parse_limit,
    parse_selector,
    parse_time_range,
)
from sla_common import anomaly_store
from sla_common.anomaly_store import AnomalyFilter
from sla_common.mysql import Connection

log = logging.getLogger(__name__)


class SeriesPage(PageMessage, Protocol):
    """A page of one series' items."""

    @property
    def series(self) -> pb.SeriesRef: ...


T = TypeVar("T")
M = TypeVar("M", bound=PageMessage)
R = TypeVar("R", bound=SeriesPage)
Context = grpc.aio.ServicerContext[Any, Any]

SERIES_BATCH = 500  # series resolved per query while streaming their points
SERIES_PAGE = 500  # series per ListSeries message (each carries its labels and skips)
AMBIGUOUS_SHOWN = 3


@dataclass(frozen=True)
class StreamSpec(Generic[R]):
    """One server-streaming RPC over a per-series table."""

    method: str
    table: PointTable
    new: Callable[[], R]
    header: Callable[[Connection, int], Row]  # per-series values, read once per series
    head: Callable[[R, Row], None]
    fill: Callable[[R, Iterable[Row]], None]


HP = StreamSpec(
    "ListHodrickPrescott",
    queries.HP,
    pb.ListHodrickPrescottResponse,
    queries.hp_header,
    convert.head_hp,
    convert.fill_hp,
)
DECOMPOSITION = StreamSpec(
    "ListDecomposition",
    queries.DECOMPOSITION,
    pb.ListDecompositionResponse,
    queries.decomposition_header,
    convert.head_decomposition,
    convert.fill_decomposition,
)
ACF = StreamSpec(
    "ListAutocorrelation",
    queries.ACF,
    pb.ListAutocorrelationResponse,
    queries.acf_header,
    convert.head_acf,
    convert.fill_acf,
)
AGGREGATES = StreamSpec(
    "ListAggregates",
    queries.AGGREGATES,
    pb.ListAggregatesResponse,
    queries.no_header,
    convert.head_none,
    convert.fill_aggregates,
)
FORECAST = StreamSpec(
    "ListForecast",
    queries.FORECAST,
    pb.ListForecastResponse,
    queries.forecast_header,
    convert.head_forecast,
    convert.fill_forecast,
)

ListPointsRequest = (
    pb.ListHodrickPrescottRequest
    | pb.ListDecompositionRequest
    | pb.ListAutocorrelationRequest
    | pb.ListAggregatesRequest
    | pb.ListForecastRequest
)


@dataclass
class _Budget:
    """Items a stream may still send (None: no limit), shared by its series' readers."""

    remaining: int | None


RawItem = tuple[SeriesRow, Row, "queries.RawPage"]


@dataclass(frozen=True)
class ListQuery:
    selector: Selector
    time_range: TimeRange
    limit: int | None
    cursor: Cursor | None


class Calls:
    """Database calls on behalf of one RPC.

    Its deadline needs no timer here: when it passes, grpc cancels the RPC's task, which
    abandons the call being awaited. A call is not started once no time is left.
    """

    def __init__(self, database: Database, context: Context) -> None:
        self._db = database
        self._context = context

    async def __call__(self, fn: Callable[[Connection], T]) -> T:
        left = self._context.time_remaining()
        if left is not None and left <= 0:
            raise TimeoutError("no time left before the deadline")
        return await self._db.run(fn)


def status_of(
    exc: RequestError | DatabaseUnavailable | TimeoutError,
) -> tuple[grpc.StatusCode, str]:
    """The status an expected failure is reported with (anything else is INTERNAL)."""
    if isinstance(exc, RequestError):
        return exc.code, exc.message
    if isinstance(exc, DatabaseUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    return grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed while reading the database"


class RetrievalServicer(pb_grpc.RetrievalServiceServicer):
    def __init__(
        self,
        settings: RetrievalSettings,
        database: Database,
        metrics: RetrievalMetrics,
        explainer: Explainer | None = None,
    ) -> None:
        self.settings = settings
        self.db = database
        self.metrics = metrics
        self.explainer = explainer or Explainer(settings)
        self._adf_batches = Coalescer(self._adf_batch, slots=settings.retrieval_db_threads)

    # ------------------------------------------------------------------ the RPCs

    async def ListSeries(  # noqa: N802 (gRPC method name)
        self, request: pb.ListSeriesRequest, context: Context
    ) -> AsyncIterator[pb.ListSeriesResponse]:
        async for msg in self._stream("ListSeries", context, self._list_series(request, context)):
            yield msg

    async def GetDickeyFuller(  # noqa: N802
        self, request: pb.GetDickeyFullerRequest, context: Context
    ) -> pb.DickeyFuller:
        return await self._unary("GetDickeyFuller", context, self._dickey_fuller(request, context))

    async def ListHodrickPrescott(  # noqa: N802
        self, request: pb.ListHodrickPrescottRequest, context: Context
    ) -> AsyncIterator[pb.ListHodrickPrescottResponse]:
        async for msg in self._stream(HP.method, context, self._points(HP, request, context)):
            yield msg

    async def ListDecomposition(  # noqa: N802
        self, request: pb.ListDecompositionRequest, context: Context
    ) -> AsyncIterator[pb.ListDecompositionResponse]:
        chunks = self._points(DECOMPOSITION, request, context)
        async for msg in self._stream(DECOMPOSITION.method, context, chunks):
            yield msg

    async def ListAutocorrelation(  # noqa: N802
        self, request: pb.ListAutocorrelationRequest, context: Context
    ) -> AsyncIterator[pb.ListAutocorrelationResponse]:
        async for msg in self._stream(ACF.method, context, self._points(ACF, request, context)):
            yield msg

    async def ListAggregates(  # noqa: N802
        self, request: pb.ListAggregatesRequest, context: Context
    ) -> AsyncIterator[pb.ListAggregatesResponse]:
        chunks = self._points(AGGREGATES, request, context)
        async for msg in self._stream(AGGREGATES.method, context, chunks):
            yield msg

    async def ListForecast(  # noqa: N802
        self, request: pb.ListForecastRequest, context: Context
    ) -> AsyncIterator[pb.ListForecastResponse]:
        chunks = self._points(FORECAST, request, context)
        async for msg in self._stream(FORECAST.method, context, chunks):
            yield msg

    async def ListAnomalies(  # noqa: N802
        self, request: pb.ListAnomaliesRequest, context: Context
    ) -> AsyncIterator[pb.ListAnomaliesResponse]:
        chunks = self._anomalies(request, context)
        async for msg in self._stream("ListAnomalies", context, chunks):
            yield msg

    async def Explain(  # noqa: N802
        self, request: pb.ExplainRequest, context: Context
    ) -> pb.ExplainResponse:
        return await self._unary("Explain", context, self.explainer.explain(request, context))

    # ------------------------------------------------------------------ accounting, errors

    async def _unary(self, method: str, context: Context, work: Awaitable[T]) -> T:
        t0 = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await work
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except (RequestError, DatabaseUnavailable, TimeoutError) as e:
            code, message = self._failed(method, e)
            await context.abort(code, message)
        except Exception:
            log.exception("%s failed", method)
            code = grpc.StatusCode.INTERNAL
            await context.abort(code, "internal error (logged by the server)")
        finally:
            self._account(method, code, t0)

    async def _stream(
        self, method: str, context: Context, chunks: AsyncGenerator[Chunk[M], None]
    ) -> AsyncIterator[M]:
        t0 = time.perf_counter()
        code = grpc.StatusCode.OK
        sent = self.metrics.items_sent.labels(method)
        self.metrics.active_streams.labels(method).inc()
        try:
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    sent.inc(chunk.items)
                    yield chunk.message
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED  # the client went away, or its deadline passed
            raise
        except (RequestError, DatabaseUnavailable, TimeoutError) as e:
            code, message = self._failed(method, e)
            await context.abort(code, message)
        except Exception:
            log.exception("%s failed", method)
            code = grpc.StatusCode.INTERNAL
            await context.abort(code, "internal error (logged by the server)")
        finally:
            self.metrics.active_streams.labels(method).dec()
            self._account(method, code, t0)

    def _failed(
        self, method: str, exc: RequestError | DatabaseUnavailable | TimeoutError
    ) -> tuple[grpc.StatusCode, str]:
        code, message = status_of(exc)
        log.log(
            logging.WARNING if code == grpc.StatusCode.UNAVAILABLE else logging.DEBUG,
            "%s: %s: %s",
            method,
            code.name,
            message,
        )
        return code, message

    def _account(self, method: str, code: grpc.StatusCode, t0: float) -> None:
        self.metrics.requests.labels(method, code.name).inc()
        self.metrics.request_duration.labels(method).observe(time.perf_counter() - t0)

    # ------------------------------------------------------------------ requests

    def _list_query(
        self,
        method: str,
        request: ListPointsRequest | pb.ListSeriesRequest,
        position_types: tuple[type, ...],
        *,
        allow_everything: bool = False,
    ) -> ListQuery:
        selector = parse_selector(request.selector, allow_everything=allow_everything)
        time_range = TimeRange()
        if not isinstance(request, pb.ListSeriesRequest) and request.HasField("time_range"):
            time_range = parse_time_range(request.time_range, self.settings.retrieval_max_range_s)
        limit = parse_limit(request.limit, self.settings.retrieval_max_limit)
        cursor = None
        if request.page_token:
            cursor = decode_token(request.page_token, method, fingerprint(request), position_types)
        return ListQuery(selector, time_range, limit, cursor)

    # ------------------------------------------------------------------ ListSeries

    async def _list_series(
        self, request: pb.ListSeriesRequest, context: Context
    ) -> AsyncGenerator[Chunk[pb.ListSeriesResponse], None]:
        q = self._list_query("ListSeries", request, (), allow_everything=True)
        token_fp = fingerprint(request)
        source = self._series_list_pages(q, Calls(self.db, context))
        chunks = with_tokens(source, partial(encode_token, "ListSeries", token_fp))
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def _series_list_pages(
        self, q: ListQuery, call: Calls
    ) -> AsyncGenerator[Chunk[pb.ListSeriesResponse] | More, None]:
        remaining = q.limit if q.limit is not None else self.settings.retrieval_max_limit
        after_id = q.cursor.series_id if q.cursor is not None else None
        page = min(self.settings.retrieval_page_size, SERIES_PAGE)
        fetched = self.metrics.rows_fetched.labels("ListSeries")
        while True:
            if remaining == 0:
                probe = await call(
                    partial(queries.find_series, sel=q.selector, after_id=after_id, n=1)
                )
                if probe:
                    yield MORE
                return
            n = min(page, remaining)
            infos = await call(partial(queries.list_series, sel=q.selector, after_id=after_id, n=n))
            fetched.inc(len(infos))
            if infos:
                after_id = infos[-1].row.id
                remaining -= len(infos)
                msg = pb.ListSeriesResponse(series=[convert.series(i) for i in infos])
                yield Chunk(msg, len(infos), Cursor(after_id))
            if len(infos) < n:
                return

    # ------------------------------------------------------------------ ListAnomalies

    async def _anomalies(
        self, request: pb.ListAnomaliesRequest, context: Context
    ) -> AsyncGenerator[Chunk[pb.ListAnomaliesResponse], None]:
        method = "ListAnomalies"
        f = parse_anomaly_filter(request, self.settings.retrieval_max_range_s)
        limit = parse_limit(request.limit, self.settings.retrieval_max_limit)
        token_fp = fingerprint(request)
        after = None
        if request.page_token:
            cursor = decode_token(request.page_token, method, token_fp, (int, int))
            start_ms, row_id = cursor.after
            after = anomaly_store.Position(int(start_ms), int(row_id))
        source = self._anomaly_pages(f, after, limit, Calls(self.db, context))
        chunks = with_tokens(source, partial(encode_token, method, token_fp))
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def _anomaly_pages(
        self,
        f: AnomalyFilter,
        after: anomaly_store.Position | None,
        limit: int | None,
        call: Calls,
    ) -> AsyncGenerator[Chunk[pb.ListAnomaliesResponse] | More, None]:
        """Keyset pages of at most RETRIEVAL_PAGE_SIZE anomalies, up to the limit (or the
        server's cap); MORE when that stopped the stream and more rows match."""
        remaining = limit if limit is not None else self.settings.retrieval_max_limit
        fetched = self.metrics.rows_fetched.labels("ListAnomalies")
        while True:
            if remaining == 0:
                probe = await call(partial(anomaly_store.list_anomalies, f=f, after=after, limit=1))
                if probe:
                    yield MORE
                return
            n = min(self.settings.retrieval_page_size, remaining)
            rows = await call(partial(anomaly_store.list_anomalies, f=f, after=after, limit=n))
            fetched.inc(len(rows))
            if rows:
                after = rows[-1].position
                remaining -= len(rows)
                msg = pb.ListAnomaliesResponse(anomalies=[convert.anomaly(a) for a in rows])
                yield Chunk(msg, len(rows), Cursor(0, (after.start_ms, after.id)))
            if len(rows) < n:
                return

    # ------------------------------------------------------------------ GetDickeyFuller

    async def _dickey_fuller(
        self, request: pb.GetDickeyFullerRequest, context: Context
    ) -> pb.DickeyFuller:
        selector = parse_selector(request.selector)
        at = parse_at(request)
        batched = None
        if selector.key is not None and at is None:  # the common call: batched under load
            batched = await self._adf_batches.get(selector.key)
        if batched is not None and batched[1] is not None:
            series, row = batched[0], batched[1]
        else:  # anything else, and every error with its message
            series, row = await Calls(self.db, context)(partial(self._adf_lookup, selector, at))
        self.metrics.rows_fetched.labels("GetDickeyFuller").inc()
        return convert.dickey_fuller(convert.series_ref(series), row)

    async def _adf_batch(self, keys: Sequence[str]) -> dict[str, tuple[SeriesRow, Row | None]]:
        return await self.db.run(partial(queries.adf_by_keys, keys=keys))

    @staticmethod
    def _adf_lookup(sel: Selector, at: int | None, conn: Connection) -> tuple[SeriesRow, Row]:
        """In a database thread: the one series ``sel`` names, and its ADF row."""
        found = queries.series_with_adf(conn, sel, at, AMBIGUOUS_SHOWN + 1)
        if not found:
            raise not_found(f"no series matches {sel.describe()}; ListSeries shows what is stored")
        series, row = found[0]
        if len(found) > 1 and series.key != sel.exact_key:
            keys = ", ".join(s.key for s, _ in found[:AMBIGUOUS_SHOWN])
            more = ", ..." if len(found) > AMBIGUOUS_SHOWN else ""
            raise invalid(
                f"{sel.describe()} matches several series ({keys}{more}); a Dickey-Fuller "
                "test is per series: add labels to name one, or use selector.series_key"
            )
        if row is None:
            when = f" with a window ending at or before {at}" if at is not None else ""
            skip = queries.latest_skip(conn, series.id, "adf")
            why = f" (the analysis skipped it: {skip[0]}: {skip[1]})" if skip else ""
            raise not_found(f"no Dickey-Fuller test stored for {series.key}{when}{why}")
        return series, row

    # ------------------------------------------------------------------ point streams

    async def _points(
        self, spec: StreamSpec[R], request: ListPointsRequest, context: Context
    ) -> AsyncGenerator[Chunk[R], None]:
        q = self._list_query(spec.method, request, spec.table.position_types)
        token_fp = fingerprint(request)
        source = self._point_pages(spec, q, Calls(self.db, context))
        chunks = with_tokens(source, partial(encode_token, spec.method, token_fp))
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def _matching_series(
        self, call: Calls, sel: Selector, first_id: int | None
    ) -> AsyncGenerator[SeriesRow, None]:
        """The series ``sel`` matches, by id, from ``first_id`` on; NOT_FOUND if none at all."""
        after_id = None if first_id is None else first_id - 1
        while True:
            batch = await call(
                partial(queries.find_series, sel=sel, after_id=after_id, n=SERIES_BATCH)
            )
            if not batch and first_id is None and after_id is None:
                raise not_found(
                    f"no series matches {sel.describe()}; ListSeries shows what is stored"
                )
            for series in batch:
                yield series
            if len(batch) < SERIES_BATCH:
                return
            after_id = batch[-1].id

    async def _point_pages(
        self, spec: StreamSpec[R], q: ListQuery, call: Calls
    ) -> AsyncGenerator[Chunk[R] | More, None]:
        """Pages as response messages: read ahead (:func:`paging.in_order`), decoded in a
        worker thread while the next reads run, then sent.

        With a ``limit`` the series are read one after the other (how many items a series
        may still give depends on the ones before it); without, ``retrieval_db_threads``
        series at a time, so MySQL formats one series' pages while another's are sent, and
        the server's cap (RETRIEVAL_MAX_LIMIT) ends the stream before the first page that
        would exceed it (the settings keep the cap at least a page).
        """
        budget = _Budget(q.limit)
        ahead = 1 if q.limit is not None else self.settings.retrieval_db_threads
        cap = None if q.limit is not None else self.settings.retrieval_max_limit
        sent = 0
        raws = in_order(self._per_series_pages(spec, q, call, budget), ahead=ahead)
        async with contextlib.aclosing(raws):
            async for item in raws:
                if isinstance(item, More):
                    yield item
                    return
                series, header, raw = item
                if cap is not None:
                    if sent + raw.count > cap:
                        yield MORE  # the token of the page before resumes here
                        return
                    sent += raw.count
                ref = convert.series_ref(series)
                msg = await asyncio.to_thread(self._build, spec, ref, header, raw)
                yield Chunk(msg, raw.count, Cursor(series.id, raw.last))

    async def _per_series_pages(
        self, spec: StreamSpec[R], q: ListQuery, call: Calls, budget: _Budget
    ) -> AsyncGenerator[AsyncGenerator[RawItem | More, None], None]:
        """One page reader per matching series, in series order."""
        first_id = q.cursor.series_id if q.cursor is not None else None
        series_iter = self._matching_series(call, q.selector, first_id)
        async with contextlib.aclosing(series_iter):
            async for series in series_iter:
                after: Position | None = None
                if q.cursor is not None and series.id == q.cursor.series_id:
                    after = q.cursor.after
                yield self._pages_of(spec, q.time_range, call, series, after, budget)

    async def _pages_of(
        self,
        spec: StreamSpec[R],
        time_range: TimeRange,
        call: Calls,
        series: SeriesRow,
        after: Position | None,
        budget: _Budget,
    ) -> AsyncGenerator[RawItem | More, None]:
        """The pages of one series after ``after``, as read, within the budget; MORE when
        the budget is spent and this series still has items."""
        page_size = self.settings.retrieval_page_size
        header: Row | None = None
        # No bounds: this series' own newest RETRIEVAL_MAX_RANGE_S, found with its first page.
        bounded = time_range if time_range.bounded else None
        while True:
            probing = budget.remaining == 0
            n = page_size if budget.remaining is None else max(1, min(page_size, budget.remaining))
            fetch = partial(self._fetch_page, spec, series.id, bounded, after, n, header)
            raw, header, bounded = await call(fetch)
            if probing:
                if raw.count:
                    yield MORE
                return
            if raw.count:
                after = raw.last
                if budget.remaining is not None:
                    budget.remaining -= raw.count
                yield series, header or (), raw
            if raw.count < n:
                return

    def _fetch_page(
        self,
        spec: StreamSpec[R],
        series_id: int,
        time_range: TimeRange | None,
        after: Position | None,
        n: int,
        header: Row | None,
        conn: Connection,
    ) -> tuple[queries.RawPage, Row | None, TimeRange]:
        """In a database thread: one page of one series, the series' header values (read
        with its first non-empty page), and the range read (None: the series' newest
        RETRIEVAL_MAX_RANGE_S, found here)."""
        if time_range is None:
            latest = queries.latest_time(conn, spec.table, series_id)
            if latest is None:
                return queries.RawPage(0, ()), header, TimeRange(0, 0)
            time_range = latest_range(latest, self.settings.retrieval_max_range_s)
        raw = queries.fetch_page(
            conn,
            spec.table,
            series_id,
            time_range,
            after,
            n,
            packed=self.settings.retrieval_packed_pages,
        )
        self.metrics.rows_fetched.labels(spec.method).inc(raw.count)
        if header is None and raw.count:
            header = spec.header(conn, series_id)
        return raw, header, time_range

    @staticmethod
    def _build(spec: StreamSpec[R], ref: pb.SeriesRef, header: Row, raw: queries.RawPage) -> R:
        """In a worker thread: the response message of one page."""
        msg = spec.new()
        msg.series.CopyFrom(ref)
        spec.head(msg, header)
        spec.fill(msg, queries.rows(spec.table, raw))
        return msg
