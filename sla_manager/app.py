"""``create_app(settings)``: the FastAPI application, with its clients, routers and handlers.

Sync endpoints on purpose: both dependencies are reached through blocking clients the
project already has and tests (PyMySQL, and ``sla_common.prometheus.PrometheusClient`` on
an ``httpx.Client``, which may be shared between threads). FastAPI runs ``def`` endpoints
in its thread pool, whose size (40) bounds the concurrent work per process; the MySQL pool
bounds the connections. An async variant would need an async MySQL driver the lock file
does not have, and would still run PyMySQL in threads; the benchmark shows the thread pool
is well within the latency target.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata

from fastapi import FastAPI

from sla_manager.errors import install_handlers
from sla_manager.metrics import MetricsMiddleware, SlaMetrics
from sla_manager.routes import (
    anomalies,
    etl,
    evaluations,
    explanations,
    health,
    rules,
    slis,
    slos,
)
from sla_manager.routes.pages import install_pages
from sla_manager.services import Services
from sla_manager.settings import SlaSettings
from sla_manager.slo.breach import BreachExporter, compute_snapshot

log = logging.getLogger(__name__)

DESCRIPTION = """\
Service-level indicators over Prometheus: declare a PromQL selector and its allowed range,
then ask whether it is inside now, how often and when it left the range, and whether the
stored Holt-Winters forecasts say it will. Writes need `Authorization: Bearer <SLA_API_TOKEN>`;
reads are open. Times are Unix seconds (UTC).
"""


def _version() -> str:
    try:
        return metadata.version("sla-monitor")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def create_app(settings: SlaSettings, metrics: SlaMetrics | None = None) -> FastAPI:
    """The app; its MySQL connections open on first use (the schema must exist: ``python -m
    sla_common.migrate`` makes it, ``python -m sla_manager`` checks it before serving)."""
    services = Services(settings, metrics or SlaMetrics())
    # Each SLI's state and forecast breach probability, for the predicted-breach alerts.
    services.metrics.registry.register(
        BreachExporter(lambda: compute_snapshot(services), settings.slo_breach_refresh_s)
    )
    if settings.api_token() is None:
        log.warning(
            "SLA_API_TOKEN is not set: reads work, every POST/PUT/PATCH/DELETE /slis is refused "
            "with 403. Set it to enable writes, e.g. SLA_API_TOKEN=$(python -c "
            "'import secrets; print(secrets.token_urlsafe(32))')"
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info(
            "SLA manager serving: Prometheus %s, MySQL %s:%d/%s",
            settings.prometheus_url,
            settings.mysql_host,
            settings.mysql_port,
            settings.mysql_database,
        )
        try:
            yield
        finally:
            services.close()
            log.info("SLA manager stopped")

    app = FastAPI(
        title="SLA Monitor: SLA manager",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        max_body_size=settings.sla_max_body_bytes,  # 413 beyond, counted as it streams in
        docs_url=None,  # served by routes/pages.py with Swagger UI from /static (offline)
        redoc_url=None,  # its script would come from a CDN
    )
    app.state.services = services
    install_handlers(app, services.metrics, settings)
    app.add_middleware(MetricsMiddleware, metrics=services.metrics)
    for module in (slis, evaluations, etl, health, explanations, slos, rules, anomalies):
        app.include_router(module.router)
    install_pages(app)
    return app
