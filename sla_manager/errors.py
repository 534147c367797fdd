"""How failures become HTTP answers, in one place (and the OpenAPI ``responses`` saying so).

- A dependency that is down or failing (Prometheus unreachable or 5xx, MySQL unreachable,
  lost, timing out, or every pooled connection busy) → **503** with ``Retry-After``; the
  next request tries again on a fresh connection, so the service recovers by itself.
- Prometheus rejecting a query → **400** with Prometheus' own error text.
- Request validation → **422** in FastAPI's usual shape (``detail``: list of errors with
  ``loc`` and ``msg``), including the cross-parameter checks made in the routes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pymysql
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymysql.constants import ER

from sla_common.mysql import errno_of
from sla_common.mysql_pool import PoolClosed, PoolExhausted
from sla_common.prometheus import PrometheusError, PrometheusUnavailable
from sla_manager.metrics import SlaMetrics
from sla_manager.models import BadRequestBody, ErrorBody

log = logging.getLogger(__name__)

# MySQL errors caused by the server's state rather than by this code: worth a retry later.
_SERVER_SIDE_PROGRAMMING_ERRNOS = {ER.NO_SUCH_TABLE, ER.BAD_DB_ERROR}


def validation_error(loc: tuple[str, ...], msg: str, value: Any) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])


def _unavailable(
    metrics: SlaMetrics, retry_after_s: int, dependency: str, detail: str
) -> JSONResponse:
    metrics.dependency_failures.labels(dependency).inc()
    return JSONResponse(
        {"detail": detail}, status_code=503, headers={"Retry-After": str(retry_after_s)}
    )


def install_handlers(app: FastAPI, metrics: SlaMetrics, retry_after_s: int) -> None:
    async def prometheus_down(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("Prometheus unavailable: %s", exc)
        return _unavailable(metrics, retry_after_s, "prometheus", f"Prometheus unavailable: {exc}")

    async def prometheus_rejected(_request: Request, exc: Exception) -> JSONResponse:
        message = str(getattr(exc, "message", exc))
        if getattr(exc, "status", 400) == 200:  # answered, with a matrix or a string
            detail = f"the selector must evaluate to an instant vector or a scalar: {message}"
        else:
            detail = f"Prometheus rejected the query: {message}"
        body = BadRequestBody(
            detail=detail,
            error_type=str(getattr(exc, "error_type", "unknown")),
            prometheus_error=message,
        )
        return JSONResponse(body.model_dump(), status_code=400)

    async def mysql_failed(_request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, pymysql.err.ProgrammingError) and (
            errno_of(exc) not in _SERVER_SIDE_PROGRAMMING_ERRNOS
        ):
            log.error("SQL error (a bug): %s", exc, exc_info=exc)
            return JSONResponse({"detail": "internal error"}, status_code=500)
        log.warning("MySQL unavailable: %s: %s", type(exc).__name__, exc)
        return _unavailable(
            metrics, retry_after_s, "mysql", f"MySQL unavailable: {type(exc).__name__}: {exc}"
        )

    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]] = {
        PrometheusUnavailable: prometheus_down,
        PrometheusError: prometheus_rejected,
        pymysql.err.MySQLError: mysql_failed,
        PoolExhausted: mysql_failed,
        PoolClosed: mysql_failed,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, handler)


def _doc(model: type[Any], description: str) -> dict[str, Any]:
    return {"model": model, "description": description}


# FastAPI's type for `responses=`: status code (or "default") → OpenAPI response object.
Responses = dict[int | str, dict[str, Any]]

UNAVAILABLE: Responses = {503: _doc(ErrorBody, "Prometheus or MySQL is down (see Retry-After)")}
NOT_FOUND: Responses = {404: _doc(ErrorBody, "no SLI of that name")}
AUTH: Responses = {
    401: _doc(ErrorBody, "no `Authorization: Bearer` token"),
    403: _doc(ErrorBody, "wrong token, or writes disabled (no SLA_API_TOKEN set)"),
}
PROMQL: Responses = {
    400: _doc(BadRequestBody, "Prometheus rejected the selector (its own text), or unreadable body")
}
CONFLICT: Responses = {409: _doc(ErrorBody, "an SLI of that name exists")}
