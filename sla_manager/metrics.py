"""The SLA manager's own metrics (served on /metrics from the app's own registry).

Requests are labelled by route *template* (``/slis/{name}``), never by raw path, and by
method among the standard ones, so the number of series stays bounded whatever clients
send: unmatched paths share one ``route`` value (``<unmatched>``), any other method name
(``curl -X PROBEA``) one ``method`` value (``other``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"
OTHER_METHOD = "other"
# RFC 9110's methods and PATCH: the ones a label may name.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class SlaMetrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "sla_manager_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "sla_manager_http_request_duration_seconds",
            "Time from request to the end of the response, by method, route and status.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "sla_manager_http_requests_in_flight", "Requests being answered.", registry=r
        )
        self.overloaded = Counter(
            "sla_manager_prometheus_busy",
            "Requests answered 503 because SLA_PROMETHEUS_MAX_CONCURRENT queries were running.",
            registry=r,
        )
        self.dependency_failures = Counter(
            "sla_manager_dependency_failures",
            "Requests answered 503 because a dependency failed, by dependency.",
            ["dependency"],
            registry=r,
        )
        for dep in ("mysql", "prometheus"):
            self.dependency_failures.labels(dep)


class MetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: no extra task or body buffering)."""

    def __init__(self, app: ASGIApp, metrics: SlaMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before responding
        started = time.perf_counter()

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            self.metrics.in_flight.dec()
            self._observe(scope, status, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        # FastAPI sets scope["route"] for its API routes only; the other routes it matched
        # (/openapi.json, /docs, /redoc: static paths) leave their endpoint in the scope.
        path = getattr(scope.get("route"), "path", None)
        if path is None:
            path = scope["path"] if "endpoint" in scope else UNMATCHED
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        labels = (method, path, str(status))
        self.metrics.requests.labels(*labels).inc()
        self.metrics.latency.labels(*labels).observe(seconds)
