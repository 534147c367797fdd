"""How failures become HTTP answers, in one place (and the OpenAPI ``responses`` saying so).

- A dependency that is down or failing (Prometheus unreachable or 5xx, MySQL unreachable,
  lost, timing out, or every pooled connection busy) → **503** with ``Retry-After``; the
  next request tries again on a fresh connection, so the service recovers by itself.
- Prometheus rejecting a query → **400** with Prometheus' own error text.
- Request validation → **422** in FastAPI's usual shape (``detail``: list of errors with
  ``loc`` and ``msg``), including the cross-parameter checks made in the routes. The input
  each error echoes is made JSON-safe and capped (:data:`MAX_ECHO_CHARS`), as is ``msg``:
  a 1 MiB field is not sent back whole, and NaN or a lone surrogate cannot turn the 422
  into a 500.
- Every Prometheus query slot taken (SLA_PROMETHEUS_MAX_CONCURRENT) → **503** with
  ``Retry-After``; Prometheus giving up on a query at its timeout → **503** too; a
  Prometheus answer larger than SLA_PROMETHEUS_MAX_RESPONSE_BYTES, or a subquery of too
  many steps (refused before it is sent) → **422**.
- A body larger than SLA_MAX_BODY_BYTES → **413** ``Content Too Large`` (FastAPI's
  ``max_body_size``: refused on its Content-Length, or once that much has streamed in).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pymysql
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymysql.constants import ER

from sla_common.mysql import errno_of
from sla_common.mysql_pool import PoolClosed, PoolExhausted
from sla_common.prometheus import (
    PrometheusBusy,
    PrometheusError,
    PrometheusQueryTooExpensive,
    PrometheusResultTooLarge,
    PrometheusTimeout,
    PrometheusUnavailable,
)
from sla_manager.metrics import SlaMetrics
from sla_manager.models import BadRequestBody, ErrorBody
from sla_manager.settings import SlaSettings

log = logging.getLogger(__name__)

# MySQL errors caused by the server's state rather than by this code: worth a retry later.
_SERVER_SIDE_PROGRAMMING_ERRNOS = {ER.NO_SUCH_TABLE, ER.BAD_DB_ERROR}
# The most of an input (as JSON text) and of a message a 422 sends back.
MAX_ECHO_CHARS = 200
MAX_MESSAGE_CHARS = 500


def validation_error(loc: tuple[str, ...], msg: str, value: Any) -> RequestValidationError:
    """A 422 in the same shape as FastAPI's own validation errors."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])


def _clip(text: str, limit: int) -> str:
    """``text`` cut at ``limit`` characters, saying how long it was; lone surrogates escaped
    (``\\ud800``), since they have no UTF-8 encoding."""
    cut = text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
    return cut.encode("utf-8", "backslashreplace").decode("utf-8")


def echo_safe(value: Any, limit: int = MAX_ECHO_CHARS) -> Any:
    """``value`` as a 422 may echo it: unchanged when it is small and strict JSON (finite
    numbers, valid Unicode), else its JSON text (NaN spelled out), cut at ``limit``."""
    if isinstance(value, str):
        return _clip(value, limit)
    try:
        value = jsonable_encoder(value)
        strict = json.dumps(value, ensure_ascii=False, allow_nan=False)
        strict.encode("utf-8")
    except (TypeError, ValueError, RecursionError):  # NaN/Inf; UnicodeEncodeError
        try:
            return _clip(json.dumps(value, allow_nan=True, default=repr), limit)
        except (TypeError, ValueError, RecursionError):
            return _clip(repr(value), limit)
    return value if len(strict) <= limit else _clip(strict, limit)


def safe_errors(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's validation errors with every field JSON-safe and bounded."""
    out = []
    for error in list(errors)[:20]:
        item: dict[str, Any] = {
            "type": str(error.get("type", "value_error")),
            "loc": [p if isinstance(p, int) else echo_safe(str(p), 100) for p in error["loc"]],
            "msg": echo_safe(str(error.get("msg", "")), MAX_MESSAGE_CHARS),
        }
        if "input" in error:
            item["input"] = echo_safe(error["input"])
        if isinstance(error.get("ctx"), dict):
            item["ctx"] = {str(k): echo_safe(v) for k, v in error["ctx"].items()}
        out.append(item)
    return out


def _unavailable(
    metrics: SlaMetrics, retry_after_s: int, dependency: str, detail: str
) -> JSONResponse:
    metrics.dependency_failures.labels(dependency).inc()
    return JSONResponse(
        {"detail": detail}, status_code=503, headers={"Retry-After": str(retry_after_s)}
    )


def install_handlers(app: FastAPI, metrics: SlaMetrics, settings: SlaSettings) -> None:
    retry_after_s = settings.sla_retry_after_s

    async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        return JSONResponse({"detail": safe_errors(errors)}, status_code=422)

    async def prometheus_down(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("Prometheus unavailable: %s", exc)
        return _unavailable(metrics, retry_after_s, "prometheus", f"Prometheus unavailable: {exc}")

    async def prometheus_timeout(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("Prometheus query timed out: %s", exc)
        return _unavailable(
            metrics,
            retry_after_s,
            "prometheus",
            f"Prometheus unavailable: it gave up on the query after PROMETHEUS_TIMEOUT_S="
            f"{settings.prometheus_timeout_s:g} s (too expensive a selector or range, or "
            "Prometheus overloaded)",
        )

    async def prometheus_busy(_request: Request, exc: Exception) -> JSONResponse:
        metrics.overloaded.inc()
        return JSONResponse(
            {
                "detail": f"busy: {exc}; at most SLA_PROMETHEUS_MAX_CONCURRENT="
                f"{settings.sla_prometheus_max_concurrent} Prometheus queries run at once, "
                "try again later"
            },
            status_code=503,
            headers={"Retry-After": str(retry_after_s)},
        )

    async def too_much(_request: Request, exc: Exception) -> JSONResponse:
        error = {
            "type": str(getattr(exc, "error_type", "too_large")),
            "loc": [],
            "msg": str(getattr(exc, "message", exc)),
        }
        return JSONResponse({"detail": [error]}, status_code=422)

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
        RequestValidationError: invalid_request,
        PrometheusUnavailable: prometheus_down,
        PrometheusTimeout: prometheus_timeout,
        PrometheusBusy: prometheus_busy,
        PrometheusResultTooLarge: too_much,
        PrometheusQueryTooExpensive: too_much,
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

UNAVAILABLE: Responses = {
    503: _doc(ErrorBody, "Prometheus or MySQL is down or busy (see Retry-After)")
}
TOO_LARGE: Responses = {413: {"description": "the body is larger than SLA_MAX_BODY_BYTES"}}
NOT_FOUND: Responses = {404: _doc(ErrorBody, "no SLI of that name")}
AUTH: Responses = {
    401: _doc(ErrorBody, "no `Authorization: Bearer` token"),
    403: _doc(ErrorBody, "wrong token, or writes disabled (no SLA_API_TOKEN set)"),
}
PROMQL: Responses = {
    400: _doc(BadRequestBody, "Prometheus rejected the selector (its own text), or unreadable body")
}
CONFLICT: Responses = {409: _doc(ErrorBody, "an SLI of that name exists")}
UNSUPPORTED_MEDIA: Responses = {
    415: _doc(ErrorBody, "the body is not application/merge-patch+json or application/json")
}
