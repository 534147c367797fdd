"""The detector's /metrics: per-series anomaly_score (bounded), counts, lag.

``anomaly_score`` follows vmanomaly's convention (a gauge per monitored series carrying the
series' own labels plus ``for`` = its metric name), but is *signed*: the latest window's
deviation in normal standard deviations, so alert rules can tell up from down
(``abs(anomaly_score) > 2`` is the reference's ERROR). ``anomaly_status`` is 0 SAFE,
1 WARN, 2 ERROR, -1 LEARNING. Both carry the series' own labels (a custom collector: the
label set differs per series); at most ``ANOMALY_MAX_EXPOSED_SERIES`` series are exposed
per process, the rest counted in ``anomaly_series_not_exposed``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

STATUS_VALUE = {"SAFE": 0, "WARN": 1, "ERROR": 2, "LEARNING": -1}


LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class _SeriesGauges(Collector):
    """anomaly_score / anomaly_status, one sample per exposed series with its labels."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latest: dict[str, tuple[dict[str, str], float, int]] = {}

    def collect(self) -> Iterator[Metric]:
        score = GaugeMetricFamily(
            "anomaly_score",
            "latest closed window's deviation from the series' normal, in normal std devs",
        )
        status = GaugeMetricFamily(
            "anomaly_status", "latest closed window's status: 0 SAFE, 1 WARN, 2 ERROR, -1 LEARNING"
        )
        with self.lock:
            rows = list(self.latest.values())
        for labels, dev, st in rows:
            score.add_sample("anomaly_score", labels, dev)
            status.add_sample("anomaly_status", labels, st)
        yield score
        yield status


def model_score_labels(metric: str, labels: Mapping[str, str], model: str) -> dict[str, str]:
    """The labels of a scheduled model's ``anomaly_score``: the series' own (valid, not
    ``__``-prefixed; a ``model`` label of its own is replaced), ``for`` = its metric name,
    ``model`` = the scoring model."""
    own = {k: v for k, v in labels.items() if LABEL_NAME.match(k) and not k.startswith("__")}
    own.pop("model", None)
    own["for"] = metric
    own["model"] = model
    return own


# One scored series of a scheduled model's pass: key, metric name, the series' labels, score.
ScoredSeries = tuple[str, str, Mapping[str, str], float]


class ModelScores(Collector):
    """``anomaly_score{model=..., for=<metric>, ...the series' own labels}`` of a scheduled
    model (the batch isolation forest, the autoencoder): the latest scored point's score per
    series, at most ``max_series`` series (:meth:`observe_pass` counts a pass's others).
    Register it on the process' registry; the streaming detector's gauge has the same name
    without a ``model`` label."""

    def __init__(self, model: str, help_text: str, max_series: int) -> None:
        self.model = model
        self.help_text = help_text
        self.max_series = max_series
        self.lock = threading.Lock()
        self.latest: dict[str, tuple[dict[str, str], float]] = {}

    def observe_pass(self, scored: Iterable[ScoredSeries]) -> int:
        """Set the gauge of each series of a pass; how many of them were not exposed (the
        bound reached): a count per pass, so series gone since are not counted for the
        process' life."""
        refused = 0
        with self.lock:
            for key, metric, labels, score in scored:
                if key not in self.latest and len(self.latest) >= self.max_series:
                    refused += 1
                    continue
                self.latest[key] = (model_score_labels(metric, labels, self.model), float(score))
        return refused

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("anomaly_score", self.help_text)
        with self.lock:
            rows = list(self.latest.values())
        for labels, value in rows:
            g.add_sample("anomaly_score", labels, value)
        yield g


class ScheduledModelMetrics:
    """What the scheduled models' /metrics share (the batch isolation forest, the
    autoencoder's schedule): their :class:`ModelScores` and the gauge ``not_exposed_name``,
    the series of the latest scoring pass not on ``anomaly_score`` (``bound_setting``
    reached). Each adds its own run counters."""

    def __init__(
        self,
        scores: ModelScores,
        not_exposed_name: str,
        bound_setting: str,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self.scores = scores
        self.registry.register(scores)
        self.not_exposed = Gauge(
            not_exposed_name,
            f"scored series of the latest pass not on anomaly_score ({bound_setting} reached)",
            registry=self.registry,
        )

    def observe_scores(self, scored: Iterable[ScoredSeries]) -> None:
        self.not_exposed.set(self.scores.observe_pass(scored))


class DetectorMetrics:
    def __init__(self, max_series: int, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.max_series = max_series
        self._exposed: set[str] = set()
        self._refused: set[str] = set()
        self.series = _SeriesGauges()
        r.register(self.series)
        self.windows = Counter(
            "anomaly_windows", "closed windows judged, by status", ["status"], registry=r
        )
        self.records = Counter("anomaly_sample_records", "samples records read", registry=r)
        self.samples = Counter("anomaly_samples", "samples read", registry=r)
        self.late = Counter(
            "anomaly_late_samples", "samples dropped: their window had closed", registry=r
        )
        self.dead_letters = Counter(
            "anomaly_dead_letters",
            "malformed samples records dead-lettered",
            ["reason"],
            registry=r,
        )
        self.not_exposed = Gauge(
            "anomaly_series_not_exposed",
            "series judged but not exposed on /metrics (ANOMALY_MAX_EXPOSED_SERIES reached)",
            registry=r,
        )
        self.lag = Gauge(
            "anomaly_event_lag_seconds",
            "wall clock minus the end of the latest window emitted (event-time lag)",
            registry=r,
        )
        self.window_end = Gauge(
            "anomaly_latest_window_end_seconds", "end of the latest window emitted", registry=r
        )
        for s in STATUS_VALUE:
            self.windows.labels(s)

    def observe(
        self, key: str, metric: str, labels: Mapping[str, str], deviation: float, status: str
    ) -> None:
        self.windows.labels(status).inc()
        if key not in self._exposed:
            if len(self._exposed) >= self.max_series:
                self._refused.add(key)
                self.not_exposed.set(len(self._refused))
                return
            self._exposed.add(key)
        own = {k: v for k, v in labels.items() if LABEL_NAME.match(k) and not k.startswith("__")}
        own["for"] = metric
        with self.series.lock:
            self.series.latest[key] = (own, deviation, STATUS_VALUE[status])
