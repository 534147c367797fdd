"""The grpc.aio server: RetrievalService, standard health checking and reflection.

Every call passes two interceptors (:mod:`data_retrieval.interceptors`): the bearer token
(GRPC_API_TOKEN; health checking needs none) and the refusal of requests that do not
parse (INVALID_ARGUMENT). With GRPC_TLS_CERT_FILE/GRPC_TLS_KEY_FILE the port serves TLS.

:func:`create_server` builds and binds it (port 0: any free port, which tests use) without
serving; :meth:`RetrievalServer.start` serves; :meth:`RetrievalServer.stop` is the graceful
shutdown of grpc's health ``_async.py``: every service NOT_SERVING first, a drain delay for
whoever watches health, then ``server.stop(grace)``, then the database threads and the
Prometheus client of ``Explain``.
:func:`serve` is ``python -m data_retrieval``: all that, plus /metrics and the signals.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from data_retrieval import queries
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from data_retrieval.db import Database, DatabaseUnavailable
from data_retrieval.explain import Explainer
from data_retrieval.interceptors import BearerToken, UndecodableRequests
from data_retrieval.metrics import RetrievalMetrics
from data_retrieval.service import RetrievalServicer
from data_retrieval.settings import RetrievalSettings
from sla_common.mysql import Connection

log = logging.getLogger(__name__)

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["RetrievalService"].full_name
HEALTH_SERVICE_NAME = "grpc.health.v1.Health"
STARTUP_CHECK_TIMEOUT_S = 5.0


class Health(Protocol):
    """What we use of grpc_health's asyncio HealthServicer (its stubs lack the module)."""

    async def set(self, service: str, status: Any) -> None: ...

    async def enter_graceful_shutdown(self) -> None: ...


@dataclass
class RetrievalServer:
    server: grpc.aio.Server
    health: Health
    database: Database
    metrics: RetrievalMetrics
    settings: RetrievalSettings
    explainer: Explainer | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        await self.server.start()
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float | None = None, drain: float = 0.0) -> None:
        """Health NOT_SERVING; answer for ``drain`` s more; then stop with ``grace`` s for
        the calls in flight (None: cancel them at once); then close the database."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        await self.health.enter_graceful_shutdown()
        if drain > 0:
            await asyncio.sleep(drain)
        await self.server.stop(grace)
        await asyncio.to_thread(self.database.close)
        if self.explainer is not None:
            self.explainer.close()

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


GRPC_CORE_LOGGER = "grpc._cython.cygrpc"
CLIENT_GONE = "ExecuteBatchError raised in core by servicer method"


class ClientGoneFilter(logging.Filter):
    """grpc.aio's ERROR + traceback for a stream whose client left is one DEBUG line here.

    When a client cancels or its deadline passes while a streaming handler is producing,
    grpc's core fails the next send (``ExecuteBatchError``) and grpc logs it as an error
    with a traceback, although nothing failed on the server: the handler is closed, the
    RPC is counted as CANCELLED (``sla_retrieval_requests_total``). Any other record of
    grpc's logger passes unchanged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(CLIENT_GONE):
            original = record.getMessage()
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg = "stream ended by its client (cancelled or deadline passed): %s"
            record.args = (original,)
            record.exc_info, record.exc_text = None, None
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def _quiet_client_gone() -> None:
    logger = logging.getLogger(GRPC_CORE_LOGGER)
    if not any(isinstance(f, ClientGoneFilter) for f in logger.filters):
        logger.addFilter(ClientGoneFilter())


def _interceptors(
    settings: RetrievalSettings, metrics: RetrievalMetrics
) -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
    prefix = f"/{SERVICE_NAME}/"

    def refused(method: str, code: grpc.StatusCode) -> None:
        if method.startswith(prefix):  # our own methods only: a bounded set of labels
            metrics.requests.labels(method[len(prefix) :], code.name).inc()

    # The token first: a caller without it gets UNAUTHENTICATED, its bytes never parsed.
    chain: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
    token = settings.api_token()
    if token is not None:
        chain.append(
            BearerToken(token, open_prefixes=(f"/{HEALTH_SERVICE_NAME}/",), on_refused=refused)
        )
    chain.append(UndecodableRequests(on_refused=refused))
    return chain


def _tls_credentials(settings: RetrievalSettings) -> grpc.ServerCredentials | None:
    if settings.grpc_tls_cert_file is None or settings.grpc_tls_key_file is None:
        return None
    try:
        chain = settings.grpc_tls_cert_file.read_bytes()
        key = settings.grpc_tls_key_file.read_bytes()
    except OSError as e:
        raise RuntimeError(f"cannot read the TLS certificate or key: {e}") from e
    return grpc.ssl_server_credentials([(key, chain)])


def create_server(
    settings: RetrievalSettings,
    *,
    metrics: RetrievalMetrics | None = None,
    database: Database | None = None,
) -> tuple[RetrievalServer, int]:
    """The server, bound to GRPC_HOST:GRPC_PORT but not started, and the port it got.

    Raises RuntimeError when the address cannot be bound.
    """
    _quiet_client_gone()
    metrics = metrics or RetrievalMetrics()
    database = database or Database(settings, metrics)
    # No SO_REUSEPORT (grpc's default on Linux): a second server on a taken port must fail,
    # not silently share the port with the first one.
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0)], interceptors=_interceptors(settings, metrics)
    )
    explainer = Explainer(settings)
    pb_grpc.add_RetrievalServiceServicer_to_server(
        RetrievalServicer(settings, database, metrics, explainer), server
    )
    health: Health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    credentials = _tls_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:  # older grpc returned 0 instead of raising
        raise RuntimeError(f"cannot bind {address}")
    return RetrievalServer(server, health, database, metrics, settings, explainer), port


def _ping(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.execute(f"SELECT 1 FROM {queries.HP.table} LIMIT 1")  # noqa: S608 (name from code)
        cur.fetchall()


async def serve(settings: RetrievalSettings) -> int:
    """Run until SIGTERM/SIGINT, then shut down gracefully. Returns the exit status."""
    metrics = RetrievalMetrics()
    http, _thread = start_http_server(
        settings.http_port, addr=settings.http_host, registry=metrics.registry
    )
    log.info("metrics on http://%s:%d/metrics", settings.http_host, http.server_address[1])
    try:
        try:
            server, port = create_server(settings, metrics=metrics)
        except RuntimeError as e:
            log.error("cannot listen on %s:%d: %s", settings.grpc_host, settings.grpc_port, e)
            return 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.start()
        log.info(
            "data_retrieval serving %s on %s:%d (%s, %s; MySQL %s:%d/%s)",
            SERVICE_NAME,
            settings.grpc_host,
            port,
            "TLS" if settings.tls else "plaintext",
            "bearer token required" if settings.api_token() else "no token required",
            settings.mysql_host,
            settings.mysql_port,
            settings.mysql_database,
        )
        if settings.environment == "production" and not settings.tls:
            log.warning(
                "gRPC without TLS in production: the token travels in clear text; set "
                "GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE, or terminate TLS in front of it"
            )
        try:
            await server.database.run(_ping, timeout=STARTUP_CHECK_TIMEOUT_S)
        except (DatabaseUnavailable, TimeoutError) as e:
            # Not fatal: calls answer UNAVAILABLE until MySQL is there, then just work.
            log.warning("MySQL not usable yet (%s); serving anyway", e or "timeout")
        await stop.wait()
        log.info(
            "stopping: health NOT_SERVING, draining %.1f s, then %.1f s for calls in flight",
            settings.grpc_shutdown_drain_s,
            settings.grpc_shutdown_grace_s,
        )
        await server.stop(settings.grpc_shutdown_grace_s, settings.grpc_shutdown_drain_s)
    finally:
        http.shutdown()
    log.info("data_retrieval stopped")
    return 0
