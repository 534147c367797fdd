"""The scheduled job's /metrics: the latest score per series, runs, their duration.

``anomaly_score{model="iforest", for="<metric>", ...the series' own labels}`` is the
latest scored point's score in [0, 1] (above 0.5: an anomaly), the streaming detector's
gauge name with a ``model`` label so both can be told apart; at most
``BATCH_MAX_EXPOSED_SERIES`` series are exposed (the rest of the latest score run counted in
``anomaly_batch_series_not_exposed``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from anomaly_detection.batch.core import MODEL_NAME
from anomaly_detection.metrics import ModelScores, ScheduledModelMetrics


class BatchMetrics(ScheduledModelMetrics):
    def __init__(self, max_series: int, registry: CollectorRegistry | None = None) -> None:
        scores = ModelScores(
            MODEL_NAME, "latest scored point's anomaly score in [0, 1] (batch models)", max_series
        )
        super().__init__(
            scores, "anomaly_batch_series_not_exposed", "BATCH_MAX_EXPOSED_SERIES", registry
        )
        r = self.registry
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
        self.observe_scores(
            (r["series_key"], r["metric"], json.loads(r["labels"]), r["last_score"])
            for r in summaries
            if r["outcome"] == "scored" and not math.isnan(r["last_score"])
        )
