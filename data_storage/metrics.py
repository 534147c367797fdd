"""The storage consumer's own metrics, served on /metrics and scraped by Prometheus.

Every instance owns its registry (tests build their own; the service serves its one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from data_storage.rows import TABLES

# A batch write takes from a few ms (a handful of small messages) to seconds (50k rows).
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)

DLQ_REASONS = (
    "too_large",
    "empty",
    "invalid_json",
    "unknown_schema_version",
    "missing_field",
    "wrong_type",
    "non_finite",
    "invalid",
    "key_mismatch",
    "future_timestamp",
    "unstorable",
    "db_rejected",
)


@dataclass
class StorageMetrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    # One set per stream in a process: the analyses' keep the plain names, another
    # stream's carry its name (sla_storage_anomaly_messages_consumed, ...).
    prefix: str = "sla_storage"
    tables: tuple[str, ...] = tuple(t.name for t in TABLES)

    def __post_init__(self) -> None:
        r, p = self.registry, self.prefix
        self.messages_consumed = Counter(
            f"{p}_messages_consumed",
            "Kafka records consumed (each counted once per delivery).",
            registry=r,
        )
        self.messages_stored = Counter(
            f"{p}_messages_stored",
            "Valid messages whose batch was written and committed to MySQL.",
            registry=r,
        )
        self.rows_written = Counter(
            f"{p}_rows_written",
            "Rows sent in committed upserts, per table (an updated row counts once).",
            ["table"],
            registry=r,
        )
        self.batch_write_duration = Histogram(
            f"{p}_batch_write_duration_seconds",
            "Duration of one batch's MySQL transaction, from BEGIN to COMMIT.",
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        self.batch_messages = Histogram(
            f"{p}_batch_messages",
            "Records per batch (valid and dead-lettered).",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.dlq_messages = Counter(
            f"{p}_dlq_messages",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.dlq_undeliverable = Counter(
            f"{p}_dlq_undeliverable",
            "Records the dead-letter topic refused even without their value: logged with their "
            "coordinates and digest, and skipped.",
            registry=r,
        )
        self.write_errors = Counter(
            f"{p}_write_errors",
            "Failed batch writes, by kind (transient: retried; data: record isolated; "
            "unexpected: no message of the batch writable for a non-MySQL error, retried).",
            ["kind"],
            registry=r,
        )
        self.kafka_errors = Counter(
            f"{p}_kafka_errors",
            "Failed Kafka operations (poll, commit, dead-letter produce), retried.",
            ["operation"],
            registry=r,
        )
        self.commits = Counter(
            f"{p}_offset_commits", "Successful Kafka offset commits.", registry=r
        )
        self.last_commit = Gauge(
            f"{p}_last_commit_timestamp_seconds",
            "Unix time of the last successful offset commit.",
            registry=r,
        )
        self.mysql_up = Gauge(
            f"{p}_mysql_up",
            "1 while the last MySQL operation succeeded, 0 while MySQL is failing.",
            registry=r,
        )
        self.topic_recreations = Counter(
            f"{p}_topic_recreations",
            "Times the consumed topic was found re-created (new topic id) and read again from "
            "its beginning.",
            registry=r,
        )
        self.purged_rows = Counter(
            f"{p}_purged_rows",
            "Rows deleted by the retention purge, per table.",
            ["table"],
            registry=r,
        )
        for table in self.tables:
            self.rows_written.labels(table)
            self.purged_rows.labels(table)
        for reason in DLQ_REASONS:
            self.dlq_messages.labels(reason)
        for kind in ("transient", "data", "unexpected"):
            self.write_errors.labels(kind)
        for op in ("poll", "commit", "dlq"):
            self.kafka_errors.labels(op)
