"""One closed window -> one anomaly record, and the series' learned normal moves on.

The normal used for a window is the one learned from the windows *before* it; the window
is folded in afterwards (robustly: see :mod:`anomaly_detection.rules`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from anomaly_detection.rules import Baseline, deviation_of, ew_alpha, status_of
from anomaly_detection.settings import DetectorSettings
from anomaly_detection.windows import Partial
from sla_common.anomalies import (
    AnomalyRecord,
    AnomalySeries,
    AnomalyWindow,
    Detector,
    Normal,
    Status,
)

DETECTOR_VERSION = "1"


@dataclass(frozen=True)
class Rule:
    window_ms: int
    warn: float = 1.0
    error: float = 2.0
    alpha: float = 0.05
    min_history: int = 30
    static: tuple[float, float] | None = None  # (NORMAL_MEAN, NORMAL_STDDEV)
    robust: bool = True
    detector: Detector = field(
        default_factory=lambda: Detector(name="sigma", version=DETECTOR_VERSION)
    )

    @classmethod
    def from_settings(cls, s: DetectorSettings) -> Rule:
        static = None
        if s.normal_mean is not None and s.normal_stddev is not None:
            static = (s.normal_mean, s.normal_stddev)
        return cls(
            window_ms=s.anomaly_window_ms,
            warn=s.anomaly_warn_stddevs,
            error=s.anomaly_error_stddevs,
            alpha=ew_alpha(s.anomaly_window_ms, s.anomaly_baseline_halflife_s),
            min_history=s.anomaly_min_history_windows,
            static=static,
            detector=Detector(name=s.anomaly_detector_name, version=DETECTOR_VERSION),
        )

    def judge(self, baseline: Baseline, p: Partial) -> tuple[Status, float, Normal]:
        """(status, deviation, normal) of window ``p``; then ``baseline`` learns ``p``."""
        if self.static is not None:
            normal = Normal(mean=self.static[0], std=self.static[1], source="static")
        elif baseline.n >= self.min_history:
            normal = Normal(mean=baseline.mean, std=baseline.std, source="learned")
        else:
            normal = Normal(mean=0.0, std=0.0, source="none")
        status: Status
        if normal.source == "none":
            status, dev = "LEARNING", 0.0
        else:
            status = status_of(p.mean, normal.mean, normal.std, self.warn, self.error)
            dev = deviation_of(p.mean, normal.mean, normal.std)
        learning = baseline.n < self.min_history
        clip = self.error if self.robust and not learning else None
        baseline.learn(p.mean, p.var, self.alpha, clip)
        return status, dev, normal

    def record(
        self, key: str, metric: str, labels: Mapping[str, str], baseline: Baseline, p: Partial
    ) -> AnomalyRecord:
        status, dev, normal = self.judge(baseline, p)
        return AnomalyRecord(
            detector=self.detector,
            series=AnomalySeries(key=key, metric=metric, labels=dict(labels)),
            window=AnomalyWindow(
                start=p.start_ms / 1000.0, end=(p.start_ms + self.window_ms) / 1000.0
            ),
            count=p.n,
            mean=p.mean,
            std=math.sqrt(max(p.var, 0.0)),
            normal=normal,
            deviation=dev,
            status=status,
        )
