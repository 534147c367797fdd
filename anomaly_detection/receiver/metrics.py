"""The receiver's own metrics, in its own registry (served on ``/metrics``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

from anomaly_detection.receiver.decode import DROP_REASONS

CODES = ("204", "400", "413", "503")
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class ReceiverMetrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "anomaly_receiver_requests",
            "Remote-write requests answered, by HTTP status code.",
            ["code"],
            registry=r,
        )
        self.samples_received = Counter(
            "anomaly_receiver_samples_received",
            "Samples in remote-write requests that decoded (dropped ones included).",
            registry=r,
        )
        self.samples_published = Counter(
            "anomaly_receiver_samples_published",
            "Samples the broker acknowledged on the samples topic.",
            registry=r,
        )
        self.records_published = Counter(
            "anomaly_receiver_records_published",
            "Records (one series' samples of one request) the broker acknowledged.",
            registry=r,
        )
        self.samples_dropped = Counter(
            "anomaly_receiver_samples_dropped",
            "Samples not published, by reason (stale_marker: Prometheus' staleness NaN).",
            ["reason"],
            registry=r,
        )
        self.publish_failures = Counter(
            "anomaly_receiver_publish_failures",
            "Requests answered 503 because the broker did not acknowledge in time.",
            registry=r,
        )
        self.publish_seconds = Histogram(
            "anomaly_receiver_publish_duration_seconds",
            "From sending a request's records to the broker's last acknowledgement.",
            buckets=PUBLISH_BUCKETS,
            registry=r,
        )
        for code in CODES:
            self.requests.labels(code)
        for reason in DROP_REASONS:
            self.samples_dropped.labels(reason)
