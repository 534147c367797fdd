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

    def __post_init__(self) -> None:
        r = self.registry
        self.messages_consumed = Counter(
            "sla_storage_messages_consumed",
            "Kafka records consumed (each counted once per delivery).",
            registry=r,
        )
        self.messages_stored = Counter(
            "sla_storage_messages_stored",
            "Valid messages whose batch was written and committed to MySQL.",
            registry=r,
        )
        self.rows_written = Counter(
            "sla_storage_rows_written",
            "Rows sent in committed upserts, per table (an updated row counts once).",
            ["table"],
            registry=r,
        )
        self.batch_write_duration = Histogram(
            "sla_storage_batch_write_duration_seconds",
            "Duration of one batch's MySQL transaction, from BEGIN to COMMIT.",
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        self.batch_messages = Histogram(
            "sla_storage_batch_messages",
            "Records per batch (valid and dead-lettered).",
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.dlq_messages = Counter(
            "sla_storage_dlq_messages",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.dlq_undeliverable = Counter(
            "sla_storage_dlq_undeliverable",
            "Records the dead-letter topic refused even without their value: logged with their "
            "coordinates and digest, and skipped.",
            registry=r,
        )
        self.write_errors = Counter(
            "sla_storage_write_errors",
            "Failed batch writes, by kind (transient: retried; data: record isolated; "
            "unexpected: no message of the batch writable for a non-MySQL error, retried).",
            ["kind"],
            registry=r,
        )
        self.kafka_errors = Counter(
            "sla_storage_kafka_errors",
            "Failed Kafka operations (poll, commit, dead-letter produce), retried.",
            ["operation"],
            registry=r,
        )
        self.commits = Counter(
            "sla_storage_offset_commits", "Successful Kafka offset commits.", registry=r
        )
        self.last_commit = Gauge(
            "sla_storage_last_commit_timestamp_seconds",
            "Unix time of the last successful offset commit.",
            registry=r,
        )
        self.mysql_up = Gauge(
            "sla_storage_mysql_up",
            "1 while the last MySQL operation succeeded, 0 while MySQL is failing.",
            registry=r,
        )
        self.topic_recreations = Counter(
            "sla_storage_topic_recreations",
            "Times the consumed topic was found re-created (new topic id) and read again from "
            "its beginning.",
            registry=r,
        )
        self.purged_rows = Counter(
            "sla_storage_purged_rows",
            "Rows deleted by the retention purge, per table.",
            ["table"],
            registry=r,
        )
        for t in TABLES:
            self.rows_written.labels(t.name)
            self.purged_rows.labels(t.name)
        for reason in DLQ_REASONS:
            self.dlq_messages.labels(reason)
        for kind in ("transient", "data", "unexpected"):
            self.write_errors.labels(kind)
        for op in ("poll", "commit", "dlq"):
            self.kafka_errors.labels(op)
