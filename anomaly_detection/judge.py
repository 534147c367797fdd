"""One closed window -> one anomaly record, and the series' learned normal moves on.

The normal used for a window is the one learned from the windows *before* it; the window
is folded in afterwards (robustly: see :mod:`anomaly_detection.rules`). A static normal
(the reference's constants) replaces the learned one: the first of
``ANOMALY_NORMAL_OVERRIDES`` whose selector matches the series, else ``NORMAL_MEAN`` /
``NORMAL_STDDEV`` when set. The series still learns meanwhile.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from anomaly_detection.rules import (
    Baseline,
    Season,
    TailRule,
    deviation_of,
    ew_alpha,
    season_bin_ms,
    status_of,
)
from anomaly_detection.settings import DetectorSettings, NormalOverride
from anomaly_detection.windows import Partial
from sla_common.anomalies import (
    AnomalyRecord,
    AnomalySeries,
    AnomalyWindow,
    Detector,
    Normal,
    Status,
)
from sla_common.promql import equality_selector

DETECTOR_VERSION = "1"


@dataclass(frozen=True)
class StaticNormal:
    """A static normal for the series an equality selector matches (PromQL's semantics:
    ``label=""`` matches a series without that label)."""

    metric: str | None
    labels: tuple[tuple[str, str], ...]
    mean: float
    std: float

    @classmethod
    def of(cls, o: NormalOverride) -> StaticNormal:
        metric, labels = equality_selector(o.selector)
        return cls(metric, tuple(sorted(labels.items())), o.mean, o.std)

    def matches(self, metric: str, labels: Mapping[str, str]) -> bool:
        if self.metric is not None and self.metric != metric:
            return False
        return all(labels.get(k, "") == v for k, v in self.labels)


@dataclass(frozen=True)
class Rule:
    window_ms: int
    warn: float = 1.0
    error: float = 2.0
    alpha: float = 0.05
    min_history: int = 30
    static: tuple[float, float] | None = None  # (NORMAL_MEAN, NORMAL_STDDEV)
    overrides: tuple[StaticNormal, ...] = ()  # ANOMALY_NORMAL_OVERRIDES, first match wins
    robust: bool = True
    # Candidate cycles (seconds) each series' normal may follow (ANOMALY_SEASON_PERIODS_S):
    # a season is used once it predicts the series better than the plain normal.
    season_periods_s: tuple[int, ...] = ()
    # ANOMALY_RECURRING_PER_DAY: a deviation the series exceeds on more windows a day than
    # this (over about a week) is its normal at that size; the band widens to it. 0: off.
    recurring_per_day: float = 0.0
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
            overrides=tuple(StaticNormal.of(o) for o in s.anomaly_normal_overrides),
            season_periods_s=s.anomaly_season_periods_s,
            recurring_per_day=s.anomaly_recurring_per_day,
            detector=Detector(name=s.anomaly_detector_name, version=DETECTOR_VERSION),
        )

    def static_for(self, metric: str, labels: Mapping[str, str]) -> tuple[float, float] | None:
        """The static (mean, std) of a series: its first matching override, else the global."""
        for o in self.overrides:
            if o.matches(metric, labels):
                return (o.mean, o.std)
        return self.static

    def seasons_of(self, seasons: dict[int, Season]) -> list[Season]:
        """The series' seasons for this rule's candidate periods (created when missing, or
        when the window size changed their phases)."""
        out = []
        for period_s in self.season_periods_s:
            period_ms = period_s * 1000
            have = seasons.get(period_s)
            if (
                have is None
                or have.period_ms != period_ms
                or have.bin_ms != season_bin_ms(period_ms, self.window_ms)
            ):
                seasons[period_s] = have = Season.new(period_ms, self.window_ms)
            out.append(have)
        return out

    @functools.cached_property
    def _tail(self) -> TailRule | None:
        return TailRule.of(self.window_ms, self.recurring_per_day) if self.robust else None

    def _band(self, std: float, tail: float) -> float:
        """The learned band's std: the spread, widened so that the ERROR band reaches the
        recurring tail (deviations this large recur: they are this series' normal)."""
        if self._tail is None:
            return std
        return max(std, tail / self.error)

    def judge(
        self,
        baseline: Baseline,
        p: Partial,
        static: tuple[float, float] | None = None,
        seasons: dict[int, Season] | None = None,
    ) -> tuple[Status, float, Normal]:
        """(status, deviation, normal) of window ``p``; then ``baseline`` (and the series'
        ``seasons``, period in s -> :class:`Season`) learn ``p``.

        ``static``: the series' static normal (:meth:`static_for`); None: the rule's global
        one, if any. The learned normal is the season predicting the series best, if one
        predicts it better than the plain one (:class:`anomaly_detection.rules.Season`),
        else the plain one."""
        if static is None:
            static = self.static
        cands = self.seasons_of(seasons) if seasons is not None else []
        learning = baseline.n < self.min_history
        tail = self._tail
        if static is not None:
            normal = Normal(mean=static[0], std=static[1], source="static", period_s=0)
        elif not learning:
            std = self._band(baseline.std, baseline.tail)
            normal = Normal(mean=baseline.mean, std=std, source="learned", period_s=0)
            best = min(
                (s for s in cands if s.better(self.window_ms)), key=lambda s: s.err, default=None
            )
            pred = None if best is None else best.predict(p.start_ms)
            if best is not None and pred is not None:
                std = self._band(best.std_at(p.start_ms, self.window_ms, self.alpha), best.tail)
                period_s = best.period_ms // 1000
                normal = Normal(mean=pred, std=std, source="learned", period_s=period_s)
        else:
            normal = Normal(mean=0.0, std=0.0, source="none", period_s=0)
        status: Status
        if normal.source == "none":
            status, dev = "LEARNING", 0.0
        else:
            status = status_of(p.mean, normal.mean, normal.std, self.warn, self.error)
            dev = deviation_of(p.mean, normal.mean, normal.std)
        clip = self.error if self.robust and not learning else None
        plain_mean = baseline.mean if baseline.n else None
        for season in cands:
            season.learn(
                p.start_ms, p.mean, p.var, plain_mean, self.window_ms, self.alpha, clip, tail
            )
        baseline.learn(p.mean, p.var, self.alpha, clip, tail)
        return status, dev, normal

    def record(
        self,
        key: str,
        metric: str,
        labels: Mapping[str, str],
        baseline: Baseline,
        p: Partial,
        seasons: dict[int, Season] | None = None,
    ) -> AnomalyRecord:
        status, dev, normal = self.judge(baseline, p, self.static_for(metric, labels), seasons)
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
