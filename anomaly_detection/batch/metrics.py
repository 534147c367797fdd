"""The scheduled job's /metrics: the latest score per series, runs, their duration.

``anomaly_score{model="iforest", for="<metric>", ...the series' own labels}`` is the
latest scored point's score in [0, 1] (above 0.5: an anomaly), the streaming detector's
gauge name with a ``model`` label so both can be told apart; at most
``BATCH_MAX_EXPOSED_SERIES`` series are exposed (the rest counted).
"""

from __future__ import annotations

import json
import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from anomaly_detection.batch.core import MODEL_NAME
from anomaly_detection.metrics import ModelScores


class BatchMetrics:
    def __init__(self, max_series: int, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.max_series = max_series
        self.scores = ModelScores(
            MODEL_NAME, "latest scored point's anomaly score in [0, 1] (batch models)", max_series
        )
        r.register(self.scores)
        self.runs = Counter(
            "anomaly_batch_runs", "train/score runs, by kind and status", ["kind", "status"],
            registry=r,
        )  # fmt: skip
        self.seconds = Gauge(
            "anomaly_batch_last_run_seconds", "duration of the latest run", ["kind"], registry=r
        )
        self.last_end = Gauge(
            "anomaly_batch_last_run_end_seconds",
            "end of the range of the latest complete run",
            ["kind"],
            registry=r,
        )
        self.series = Gauge(
            "anomaly_batch_series", "series of the latest run, by outcome", ["kind", "outcome"],
            registry=r,
        )  # fmt: skip
        self.not_exposed = Gauge(
            "anomaly_batch_series_not_exposed",
            "scored series not on anomaly_score (BATCH_MAX_EXPOSED_SERIES reached)",
            registry=r,
        )

    def observe_run(
        self, kind: str, status: str, seconds: float, end: float, summaries: list[dict[str, Any]]
    ) -> None:
        self.runs.labels(kind, status).inc()
        self.seconds.labels(kind).set(seconds)
        if status == "complete":
            self.last_end.labels(kind).set(end)
        counts: dict[str, int] = {}
        for r in summaries:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        for outcome, n in counts.items():
            self.series.labels(kind, outcome).set(n)
        if kind == "score":
            self._scores(summaries)

    def _scores(self, summaries: list[dict[str, Any]]) -> None:
        for r in summaries:
            if r["outcome"] != "scored" or math.isnan(r["last_score"]):
                continue
            labels = json.loads(r["labels"])
            self.scores.observe(r["series_key"], r["metric"], labels, r["last_score"])
        self.not_exposed.set(len(self.scores.refused))
