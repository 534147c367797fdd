"""The retrieval service's own metrics, served on /metrics and scraped by Prometheus.

Every instance owns its registry (tests build their own; the service serves its one).
``rows_fetched`` counts rows read from MySQL as they arrive, so a test (or a person) can see
that a cancelled stream stopped reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# A unary call takes ~1 ms; a stream of a whole metric's history can take seconds.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


@dataclass
class RetrievalMetrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "sla_retrieval_requests",
            "Finished RPCs, by method and gRPC status code.",
            ["method", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "sla_retrieval_request_duration_seconds",
            "Duration of an RPC, from its start to its last message or error.",
            ["method"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.active_streams = Gauge(
            "sla_retrieval_active_streams",
            "Server-streaming RPCs in progress.",
            ["method"],
            registry=r,
        )
        self.rows_fetched = Counter(
            "sla_retrieval_rows_fetched",
            "Rows read from MySQL, by method.",
            ["method"],
            registry=r,
        )
        self.items_sent = Counter(
            "sla_retrieval_items_sent",
            "Items (series, points, lags, aggregates) sent to clients, by method.",
            ["method"],
            registry=r,
        )
        self.query_duration = Histogram(
            "sla_retrieval_db_call_duration_seconds",
            "Duration of one database call (one or a few queries, in a worker thread).",
            buckets=QUERY_BUCKETS,
            registry=r,
        )
        self.db_errors = Counter(
            "sla_retrieval_db_errors",
            "Failed database calls: unavailable (server down, unreachable, schema missing) "
            "or internal (anything else).",
            ["kind"],
            registry=r,
        )
        self.reconnects = Counter(
            "sla_retrieval_db_reconnects",
            "Connections found dead on use and replaced by a new one.",
            registry=r,
        )
