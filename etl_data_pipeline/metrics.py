"""The ETL's own metrics, scraped by Prometheus so the SLA manager can report ETL timings.

Every instance owns its registry (tests build their own; the service serves its one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Analyses take from ~0.1 ms (ACF) to seconds (a seasonal fit on long history).
ANALYSIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


@dataclass
class EtlMetrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        r = self.registry
        self.analysis_duration = Histogram(
            "sla_etl_analysis_duration_seconds",
            "Time one analysis took on one series.",
            ["analysis"],
            buckets=ANALYSIS_BUCKETS,
            registry=r,
        )
        self.cycle_duration = Histogram(
            "sla_etl_cycle_duration_seconds",
            "Duration of a whole ETL cycle (fetch, analyse, publish).",
            buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self.stage_duration = Histogram(
            "sla_etl_stage_duration_seconds",
            "Duration of each stage of a cycle.",
            ["stage"],
            buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self.cycles = Counter(
            "sla_etl_cycles", "ETL cycles by result (success, failed).", ["result"], registry=r
        )
        self.series_analysed = Counter(
            "sla_etl_series_analysed",
            "Series whose analyses ran and made a message (published or not).",
            registry=r,
        )
        self.series_failed = Counter(
            "sla_etl_series_failed",
            "Series whose analysis raised, or whose message was too large to publish.",
            registry=r,
        )
        self.analyses_skipped = Counter(
            "sla_etl_analyses_skipped",
            "Analyses skipped on a series, by analysis and reason.",
            ["analysis", "reason"],
            registry=r,
        )
        self.selector_errors = Counter(
            "sla_etl_selector_errors",
            "Selectors Prometheus rejected or that failed in a cycle.",
            registry=r,
        )
        # One label value per configured selector (bounded by ETL_SELECTORS).
        self.selectors_empty = Counter(
            "sla_etl_selectors_empty",
            "Cycles in which a configured selector matched no series.",
            ["selector"],
            registry=r,
        )
        self.messages_published = Counter(
            "sla_etl_messages_published", "Messages acknowledged by the broker.", registry=r
        )
        self.last_success = Gauge(
            "sla_etl_last_success_timestamp_seconds",
            "Unix time at which the last successful cycle ended.",
            registry=r,
        )
        # Histograms cannot say what the slowest run was; these gauges can, and
        # max_over_time() over them gives the maximum over any window in Prometheus.
        self.analysis_cycle_max = Gauge(
            "sla_etl_analysis_cycle_max_seconds",
            "Longest time one analysis took on one series during the last cycle.",
            ["analysis"],
            registry=r,
        )
        self.last_cycle_duration = Gauge(
            "sla_etl_last_cycle_duration_seconds", "Duration of the last cycle.", registry=r
        )
        self.series_in_last_cycle = Gauge(
            "sla_etl_series_last_cycle",
            "Series published by the last successful cycle.",
            registry=r,
        )
        for result in ("success", "failed"):
            self.cycles.labels(result)
