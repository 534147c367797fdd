"""The gRPC server on port 0 over a fake database layer: fast, deterministic fault branches.

The real server (create_server: interceptors, servicer, health, reflection) runs in the
test's event loop; the database is :class:`FakeDatabase` (``Database``'s interface) and the
queries the servicer runs are replaced by in-memory ones. Faults happen on a chosen call:
the database down mid-stream, a call that never returns (deadline, cancellation). The
real-database tests are in tests/integration/test_retrieval.py.

Also here: the bearer token, TLS with a certificate made by the test, requests whose bytes
are not protobuf, and the server's bounds on limit and time range.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from data_retrieval import queries
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from data_retrieval.client.api import ClientError, RetrievalClient, collect, points_of, selector
from data_retrieval.client.settings import ClientSettings
from data_retrieval.db import DatabaseUnavailable
from data_retrieval.metrics import RetrievalMetrics
from data_retrieval.queries import PointTable, RawPage, SeriesInfo, SeriesRow
from data_retrieval.server import SERVICE_NAME, RetrievalServer, create_server
from data_retrieval.settings import RetrievalSettings
from data_retrieval.validation import Selector, TimeRange
from sla_common.settings import SettingsError, load_settings

HOST = "127.0.0.1"
T0 = 1_767_225_600
STEP = 15
PAGE = 5
METRIC = "m"
TOKEN = "a-test-token-of-32-characters-xx"
INVALID = grpc.StatusCode.INVALID_ARGUMENT
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


# --------------------------------------------------------------------------- the fakes


class FakeCursor:
    """What the header queries get: no row (their values are then None)."""

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, sql: str, args: Any = None) -> None:
        pass

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []


class FakeConnection:
    def cursor(self) -> FakeCursor:
        return FakeCursor()


@dataclass
class FakeDatabase:
    """``Database``'s interface. Call number ``fail_from`` and every later one raise
    DatabaseUnavailable (or ``error``); from ``hang_from`` on, a call waits until cancelled."""

    fail_from: int | None = None
    error: Exception | None = None
    hang_from: int | None = None
    calls: int = 0
    hanging: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    async def run(self, fn: Callable[[Any], Any], *, timeout: float | None = None) -> Any:
        self.calls += 1
        if self.fail_from is not None and self.calls >= self.fail_from:
            raise self.error or DatabaseUnavailable("the database cannot be reached (fake)")
        if self.hang_from is not None and self.calls >= self.hang_from:
            self.hanging.set()
            try:
                await asyncio.Event().wait()  # nothing sets it: only a cancellation ends this
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return fn(FakeConnection())

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeStore:
    """In-memory series and HP points, served by stand-ins of the query functions."""

    series: list[SeriesRow]
    points: dict[int, list[tuple[int, float, float]]]
    ranges: list[TimeRange] = field(default_factory=list)  # what each page read

    def matching(self, sel: Selector, after_id: int | None) -> list[SeriesRow]:
        return [
            s
            for s in self.series
            if (sel.metric is None or s.metric == sel.metric)
            and (sel.key is None or s.key == sel.key)
            and (after_id is None or s.id > after_id)
        ]

    def find_series(
        self, conn: Any, sel: Selector, after_id: int | None, n: int
    ) -> list[SeriesRow]:
        return self.matching(sel, after_id)[:n]

    def list_series(
        self, conn: Any, sel: Selector, after_id: int | None, n: int
    ) -> list[SeriesInfo]:
        return [
            SeriesInfo(s, s.metric, "raw", T0, T0, None, ())
            for s in self.matching(sel, after_id)[:n]
        ]

    def latest_time(self, conn: Any, spec: PointTable, series_id: int) -> int | None:
        rows = self.points.get(series_id, [])
        return max(r[0] for r in rows) if rows else None

    def fetch_page(
        self,
        conn: Any,
        spec: PointTable,
        series_id: int,
        time_range: TimeRange,
        after: Sequence[Any] | None,
        n: int,
        *,
        packed: bool,
    ) -> RawPage:
        self.ranges.append(time_range)
        rows = [
            r
            for r in self.points.get(series_id, [])
            if time_range.contains(r[0]) and (not after or r[0] > after[0])
        ][:n]
        return RawPage(len(rows), (rows[-1][0],) if rows else (), rows=list(rows))


def make_store(n_series: int = 3, n_points: int = 12) -> FakeStore:
    series = [
        SeriesRow(i, f'{METRIC}{{instance="i{i}"}}', METRIC, {"instance": f"i{i}"})
        for i in range(1, n_series + 1)
    ]
    points = {
        s.id: [(T0 + STEP * k, float(s.id * 1000 + k), 0.5) for k in range(n_points)]
        for s in series
    }
    return FakeStore(series, points)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = make_store()
    for name in ("find_series", "list_series", "latest_time", "fetch_page"):
        monkeypatch.setattr(queries, name, getattr(fake, name))
    return fake


def settings(**overrides: Any) -> RetrievalSettings:
    values: dict[str, Any] = {
        "grpc_host": HOST,
        "grpc_port": 0,
        "http_port": 0,
        "environment": "test",
        "grpc_api_token": None,
        "grpc_tls_cert_file": None,
        "grpc_tls_key_file": None,
        "retrieval_page_size": PAGE,
        "retrieval_db_threads": 2,
    }
    values.update(overrides)
    return RetrievalSettings(**values)


@dataclass
class Running:
    server: RetrievalServer
    target: str
    metrics: RetrievalMetrics

    def value(self, name: str, **labels: str) -> float:
        got = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got


@asynccontextmanager
async def serving(database: FakeDatabase | None = None, **overrides: Any) -> AsyncIterator[Running]:
    metrics = RetrievalMetrics()
    fake: Any = database or FakeDatabase()  # Database's interface, not its class
    server, port = create_server(settings(**overrides), metrics=metrics, database=fake)
    await server.start()
    try:
        yield Running(server, f"{HOST}:{port}", metrics)
    finally:
        await server.stop(None)


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Bounded wait on a condition (a loaded machine may be slow, never this slow)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


def hp_request(**fields: Any) -> pb.ListHodrickPrescottRequest:
    return pb.ListHodrickPrescottRequest(selector=pb.SeriesSelector(metric=METRIC), **fields)


async def read_all(stub: Any, request: Any, **kw: Any) -> list[Any]:
    return [msg async for msg in stub.ListHodrickPrescott(request, timeout=10, **kw)]


def grpc_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# --------------------------------------------------------------------------- servicer faults


def test_database_down_mid_stream_is_unavailable_after_what_was_sent(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    # call 1 finds the series, 2-3 read two pages of the first one, 4 finds MySQL gone
    db = FakeDatabase(fail_from=4)

    async def scenario() -> tuple[list[Any], grpc.StatusCode, str, float]:
        async with (
            serving(db, retrieval_db_threads=1) as srv,
            grpc.aio.insecure_channel(srv.target) as ch,
        ):
            got: list[Any] = []
            try:
                async for msg in pb_grpc.RetrievalServiceStub(ch).ListHodrickPrescott(
                    hp_request(), timeout=10
                ):
                    got.append(msg)
            except grpc.aio.AioRpcError as e:
                code, details = e.code(), e.details() or ""
            count = srv.value(
                "sla_retrieval_requests_total", method="ListHodrickPrescott", code="UNAVAILABLE"
            )
            return got, code, details, count

    got, code, details, count = asyncio.run(scenario())

    assert code == grpc.StatusCode.UNAVAILABLE
    assert "the database cannot be reached" in details
    assert [len(m.points) for m in got] == [PAGE]  # the page before the failed read's
    assert got[0].next_page_token  # ... resumable from there
    assert count == 1
    assert grpc_errors(caplog) == []  # an outage is a WARNING, not a traceback


def test_an_unexpected_database_error_is_internal_and_logged_once(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    db = FakeDatabase(fail_from=1, error=RuntimeError("bug"))

    async def scenario() -> grpc.StatusCode:
        async with serving(db) as srv, grpc.aio.insecure_channel(srv.target) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await read_all(pb_grpc.RetrievalServiceStub(ch), hp_request())
            assert info.value.details() == "internal error (logged by the server)"
            return info.value.code()

    assert asyncio.run(scenario()) == grpc.StatusCode.INTERNAL
    logged = grpc_errors(caplog)
    assert [r.getMessage() for r in logged] == ["ListHodrickPrescott failed"]
    assert logged[0].name == "data_retrieval.service"


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_a_stream_waiting_on_the_database_ends_on_cancel_and_deadline(
    store: FakeStore, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    db = FakeDatabase(hang_from=2)  # the series are found, their first page never comes

    async def scenario() -> tuple[grpc.StatusCode | None, float, float]:
        async with serving(db) as srv, grpc.aio.insecure_channel(srv.target) as ch:
            stub = pb_grpc.RetrievalServiceStub(ch)
            code = None
            if how == "cancel":
                call = stub.ListHodrickPrescott(hp_request(), timeout=30)
                await asyncio.wait_for(db.hanging.wait(), 10)
                call.cancel()
            else:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ListHodrickPrescott(hp_request(), timeout=0.5).read()
                code = info.value.code()
            await asyncio.wait_for(db.cancelled.wait(), 10)  # the database wait is abandoned
            await wait_for(
                lambda: (
                    srv.value("sla_retrieval_active_streams", method="ListHodrickPrescott") == 0
                ),
                "the stream to end",
            )
            cancelled = srv.value(
                "sla_retrieval_requests_total", method="ListHodrickPrescott", code="CANCELLED"
            )
            return code, cancelled, float(db.calls)

    code, cancelled, calls = asyncio.run(scenario())

    if how == "deadline":
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert cancelled == 1
    assert calls <= 1 + 2  # the lookup, and one page read per read-ahead series at most
    assert grpc_errors(caplog) == []


def test_a_bad_page_token_is_invalid_argument_before_any_database_call(
    store: FakeStore,
) -> None:
    db = FakeDatabase()

    async def scenario() -> list[tuple[grpc.StatusCode, str]]:
        out = []
        async with serving(db) as srv, grpc.aio.insecure_channel(srv.target) as ch:
            stub = pb_grpc.RetrievalServiceStub(ch)
            other = await read_all(
                stub,
                pb.ListHodrickPrescottRequest(
                    selector=pb.SeriesSelector(series_key=store.series[0].key), limit=1
                ),
            )
            calls = db.calls
            for token in ("not-a-token", "A" * 5000, other[-1].next_page_token):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await read_all(stub, hp_request(page_token=token))
                out.append((info.value.code(), info.value.details() or ""))
            assert db.calls == calls
        return out

    got = asyncio.run(scenario())

    assert [code for code, _ in got] == [INVALID] * 3
    assert "not a token this server issued" in got[0][1]
    assert "not a token this server issued" in got[1][1]
    assert "belongs to a different request" in got[2][1]


# --------------------------------------------------------------------------- bounds


def _points(pages: Sequence[Any]) -> list[tuple[str, int]]:
    return [(m.series.key, p.time.seconds) for m in pages for p in m.points]


def test_limit_zero_means_the_servers_cap_and_tokens_resume_the_rest(store: FakeStore) -> None:
    everything = [(s.key, ts) for s in store.series for ts, _, _ in store.points[s.id]]  # 36
    cap = 2 * PAGE

    async def scenario() -> tuple[list[list[Any]], list[Any], list[Any], int]:
        async with serving(retrieval_max_limit=cap) as srv:
            async with grpc.aio.insecure_channel(srv.target) as ch:
                stub = pb_grpc.RetrievalServiceStub(ch)
                calls, token = [], ""
                while True:
                    pages = await read_all(stub, hp_request(page_token=token))
                    calls.append(pages)
                    token = pages[-1].next_page_token
                    if not token:
                        break
                huge = await read_all(stub, hp_request(limit=2**31 - 1))
                series = [
                    m async for m in stub.ListSeries(pb.ListSeriesRequest(limit=0), timeout=10)
                ]
            async with RetrievalClient(srv.target, timeout_s=10) as client:
                followed = await collect(client.hodrick_prescott(selector(metric=METRIC)))
            return calls, huge, [*series, *followed], len(series)

    calls, huge, rest, n_series_pages = asyncio.run(scenario())

    sizes = [sum(len(m.points) for m in c) for c in calls]
    assert all(cap - PAGE < n <= cap for n in sizes[:-1]), sizes  # whole pages up to the cap
    assert [p for c in calls for p in _points(c)] == everything  # each once, in order
    assert len(_points(huge)) == cap  # a limit above the cap is the cap
    series_pages, followed = rest[:n_series_pages], rest[n_series_pages:]
    assert sum(len(m.series) for m in series_pages) == 3
    assert _points(followed) == everything  # the client follows the tokens by itself


def test_a_one_sided_or_absent_time_range_is_bounded_by_the_maximum(store: FakeStore) -> None:
    max_range = 10 * STEP
    newest = {s.id: max(r[0] for r in store.points[s.id]) for s in store.series}

    async def scenario() -> list[list[Any]]:
        async with (
            serving(retrieval_max_range_s=max_range) as srv,
            grpc.aio.insecure_channel(srv.target) as ch,
        ):
            stub = pb_grpc.RetrievalServiceStub(ch)
            key = pb.SeriesSelector(series_key=store.series[0].key)
            start, end = pb.TimeRange(), pb.TimeRange()
            start.start.seconds = T0
            end.end.seconds = T0 + 11 * STEP
            return [
                await read_all(stub, pb.ListHodrickPrescottRequest(selector=key)),
                await read_all(stub, pb.ListHodrickPrescottRequest(selector=key, time_range=start)),
                await read_all(stub, pb.ListHodrickPrescottRequest(selector=key, time_range=end)),
            ]

    absent, from_start, to_end = asyncio.run(scenario())

    sid = store.series[0].id
    # none: the series' newest max_range; start only: max_range from it; end only: up to it
    assert [t for _, t in _points(absent)] == [
        ts for ts, _, _ in store.points[sid] if ts > newest[sid] - max_range
    ]
    assert [t for _, t in _points(from_start)] == [T0 + STEP * k for k in range(10)]
    assert [t for _, t in _points(to_end)] == [T0 + STEP * k for k in range(1, 11)]
    assert all(r.bounded and r.end - r.start <= max_range for r in store.ranges)  # type: ignore[operator]


def test_the_cap_is_at_least_a_page() -> None:
    with pytest.raises(ValidationError, match="RETRIEVAL_MAX_LIMIT must be at least"):
        settings(retrieval_max_limit=PAGE - 1)


# --------------------------------------------------------------------------- not protobuf


METHODS = [
    f"/{SERVICE_NAME}/{m}"
    for m in (
        "ListSeries",
        "GetDickeyFuller",
        "ListHodrickPrescott",
        "ListDecomposition",
        "ListAutocorrelation",
        "ListAggregates",
        "ListForecast",
        "ListAnomalies",
    )
] + ["/grpc.health.v1.Health/Check"]
GARBAGE = (b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x02\xc3\x28")  # corrupt, short, bad UTF-8


def test_bytes_that_are_not_protobuf_are_invalid_argument_and_one_debug_line(
    store: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="data_retrieval")

    async def scenario() -> tuple[list[tuple[grpc.StatusCode, str]], float]:
        out = []
        async with serving() as srv, grpc.aio.insecure_channel(srv.target) as ch:
            for method in METHODS:
                raw = ch.unary_stream(method, request_serializer=None, response_deserializer=None)
                for garbage in GARBAGE:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        async for _ in raw(garbage, timeout=10):
                            pass
                    out.append((info.value.code(), info.value.details() or ""))
            refused = srv.value(
                "sla_retrieval_requests_total", method="GetDickeyFuller", code="INVALID_ARGUMENT"
            )
            return out, refused

    got, refused = asyncio.run(scenario())

    assert {code for code, _ in got} == {INVALID}
    assert "is not a valid sla_monitor.retrieval.v1.GetDickeyFullerRequest message" in got[3][1]
    assert grpc_errors(caplog) == []
    debug = [
        r
        for r in caplog.records
        if r.name == "data_retrieval.interceptors" and "do not parse" in r.getMessage()
    ]
    assert len(debug) == len(METHODS) * len(GARBAGE)
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in debug)
    assert refused == len(GARBAGE)


# --------------------------------------------------------------------------- the token


def test_the_token_is_required_checked_and_health_stays_open(store: FakeStore) -> None:
    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with serving(grpc_api_token=TOKEN) as srv:
            async with grpc.aio.insecure_channel(srv.target) as ch:
                stub = pb_grpc.RetrievalServiceStub(ch)
                for name, metadata in {
                    "none": None,
                    "wrong": (("authorization", f"Bearer {TOKEN[:-1]}y"),),
                    "basic": (("authorization", f"Basic {TOKEN}"),),
                    "longer": (("authorization", f"Bearer {TOKEN}x"),),
                }.items():
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await read_all(stub, hp_request(), metadata=metadata)
                    out[name] = (info.value.code(), info.value.details())
                # the token is checked before the bytes are parsed
                raw = ch.unary_unary(
                    f"/{SERVICE_NAME}/GetDickeyFuller",
                    request_serializer=None,
                    response_deserializer=None,
                )
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await raw(b"\xff\xff", timeout=10)
                out["garbage"] = info.value.code()
                good = (("authorization", f"Bearer {TOKEN}"),)
                out["ok"] = len(_points(await read_all(stub, hp_request(limit=3), metadata=good)))
                health = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10
                )
                out["health"] = health.status
            async with RetrievalClient(srv.target, timeout_s=10, token=TOKEN) as client:
                out["client"] = len(await client.series())
            async with RetrievalClient(srv.target, timeout_s=10) as client:
                with pytest.raises(ClientError) as err:
                    await client.series()
                out["client without"] = err.value.code
            out["counted"] = srv.value(
                "sla_retrieval_requests_total",
                method="ListHodrickPrescott",
                code="UNAUTHENTICATED",
            )
        return out

    out = asyncio.run(scenario())

    assert out["none"] == (
        UNAUTHENTICATED,
        "this server needs 'authorization: Bearer <token>' metadata (GRPC_API_TOKEN)",
    )
    assert out["wrong"] == out["basic"] == out["longer"] == (UNAUTHENTICATED, "wrong token")
    assert TOKEN not in str(out)
    assert out["garbage"] == UNAUTHENTICATED
    assert out["ok"] == 3
    assert out["health"] == health_pb2.HealthCheckResponse.SERVING
    assert out["client"] == 3
    assert out["client without"] == UNAUTHENTICATED
    assert out["counted"] == 4


def test_without_a_token_outside_production_calls_are_open(store: FakeStore) -> None:
    async def scenario() -> int:
        async with serving() as srv, RetrievalClient(srv.target, timeout_s=10) as client:
            return len(await client.series())

    assert asyncio.run(scenario()) == 3


def test_token_policy_names_the_variable_never_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for token, needle in [
        (None, "GRPC_API_TOKEN must be set when ENVIRONMENT=production"),
        ("   ", "GRPC_API_TOKEN must be set"),
        ("short-secret-1", "GRPC_API_TOKEN is shorter than 16"),
        ("changeme", "GRPC_API_TOKEN is a placeholder"),
    ]:
        with pytest.raises(ValidationError) as info:
            RetrievalSettings(environment="production", mysql_password="pw", grpc_api_token=token)
        messages = " ".join(str(e["msg"]) for e in info.value.errors())
        assert needle in messages
        assert token is None or not token.strip() or token not in messages
    ok = RetrievalSettings(environment="production", mysql_password="pw", grpc_api_token=TOKEN)
    assert ok.api_token() == TOKEN and TOKEN not in repr(ok)
    monkeypatch.setenv("GRPC_API_TOKEN", TOKEN)
    monkeypatch.setenv("GRPC_TLS_CA_FILE", "")
    client = load_settings(ClientSettings)
    assert client.api_token() == TOKEN and client.grpc_tls_ca_file is None


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


def make_cert(directory: Path, name: str) -> Cert:
    """A self-signed certificate for 127.0.0.1 and localhost (its own CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = Cert(directory / f"{name}.crt", directory / f"{name}.key")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cert, Cert]]:
    directory = tmp_path_factory.mktemp("tls")
    yield make_cert(directory, "server"), make_cert(directory, "stranger")


def test_tls_serves_the_client_that_trusts_its_ca_and_no_one_else(
    store: FakeStore, certs: tuple[Cert, Cert]
) -> None:
    server_cert, stranger = certs

    async def attempt(target: str, **client: Any) -> int | grpc.StatusCode:
        async with RetrievalClient(target, timeout_s=5, token=TOKEN, **client) as c:
            try:
                return len(await c.series())
            except ClientError as e:
                return e.code

    async def scenario() -> dict[str, int | grpc.StatusCode]:
        async with serving(
            grpc_api_token=TOKEN,
            grpc_tls_cert_file=server_cert.cert,
            grpc_tls_key_file=server_cert.key,
        ) as srv:
            return {
                "trusted": await attempt(srv.target, tls_ca_file=server_cert.cert),
                "plaintext": await attempt(srv.target),
                "other ca": await attempt(srv.target, tls_ca_file=stranger.cert),
            }

    got = asyncio.run(scenario())

    assert got == {
        "trusted": 3,
        "plaintext": grpc.StatusCode.UNAVAILABLE,
        "other ca": grpc.StatusCode.UNAVAILABLE,
    }


def test_tls_settings_need_both_files_and_readable_ones(
    certs: tuple[Cert, Cert], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_cert, _ = certs
    with pytest.raises(ValidationError, match="set both GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE"):
        settings(grpc_tls_cert_file=server_cert.cert)
    with pytest.raises(ValidationError, match=r"GRPC_TLS_KEY_FILE: .* is not a readable file"):
        settings(grpc_tls_cert_file=server_cert.cert, grpc_tls_key_file=tmp_path / "none.key")
    assert settings(grpc_tls_cert_file=server_cert.cert, grpc_tls_key_file=server_cert.key).tls
    monkeypatch.setenv("GRPC_TLS_CA_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(SettingsError, match="GRPC_TLS_CA_FILE"):
        load_settings(ClientSettings)


def test_the_client_reads_only_the_pages_it_was_asked_for(store: FakeStore) -> None:
    """limit > 0: one call, at most that many items (no following of the token)."""

    async def scenario() -> list[Any]:
        async with (
            serving(retrieval_max_limit=PAGE) as srv,
            RetrievalClient(srv.target, timeout_s=10) as client,
        ):
            return await collect(client.hodrick_prescott(selector(metric=METRIC), limit=3))

    pages = asyncio.run(scenario())
    assert len(points_of(pages)) == 3 and pages[-1].next_page_token
