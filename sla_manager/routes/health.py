"""``/healthz`` (which dependencies answer), ``/readyz`` (503 unless both do), ``/metrics``.

``/healthz`` answers 200 as long as the process serves, with the state of each dependency
in the body: a liveness probe must not restart the service because MySQL is down (that
would not bring MySQL back). ``/readyz`` is the one to gate traffic on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pymysql
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sla_common.mysql_pool import PoolClosed, PoolExhausted
from sla_common.prometheus import PrometheusBusy, PrometheusError, PrometheusUnavailable
from sla_manager.deps import ServicesDep
from sla_manager.models import DependencyHealth, HealthResponse
from sla_manager.services import Services

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])

_FAILURES = (
    pymysql.err.Error,
    OSError,
    PoolExhausted,
    PoolClosed,
    PrometheusError,
    PrometheusUnavailable,
    PrometheusBusy,
)


def _probe(check: Callable[[], object]) -> DependencyHealth:
    t0 = time.perf_counter()
    try:
        check()
    except _FAILURES as e:
        return DependencyHealth(
            ok=False,
            latency_ms=round(1000 * (time.perf_counter() - t0), 3),
            error=f"{type(e).__name__}: {e}",
        )
    return DependencyHealth(
        ok=True, latency_ms=round(1000 * (time.perf_counter() - t0), 3), error=None
    )


def _health(services: Services) -> HealthResponse:
    mysql = _probe(services.slis.ping)
    # A real query, not just /-/ready: it is what every evaluation needs.
    prometheus = _probe(lambda: services.prometheus.query("1"))
    return HealthResponse(
        status="ok" if mysql.ok and prometheus.ok else "degraded",
        mysql=mysql,
        prometheus=prometheus,
    )


@router.get("/healthz", summary="Liveness, and which dependencies answer")
def healthz(services: ServicesDep) -> HealthResponse:
    return _health(services)


@router.get(
    "/readyz",
    summary="200 when MySQL and Prometheus answer, else 503",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "a dependency does not answer"}},
)
def readyz(services: ServicesDep) -> JSONResponse:
    health = _health(services)
    if health.status == "ok":
        return JSONResponse(health.model_dump())
    return JSONResponse(
        health.model_dump(),
        status_code=503,
        headers={"Retry-After": str(services.settings.sla_retry_after_s)},
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
