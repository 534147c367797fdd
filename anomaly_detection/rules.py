"""The status rule and the learned normal band — pure functions, no Kafka, no clock.

Status (the reference's rule; ``m1`` = ``ANOMALY_WARN_STDDEVS`` = 1 and ``m2`` =
``ANOMALY_ERROR_STDDEVS`` = 2 by default)::

    |window mean - normal mean| > m2 * normal std  -> ERROR
    |window mean - normal mean| > m1 * normal std  -> WARN
    otherwise                                      -> SAFE

The reference (a Spark job) compares with strict ``>``, so a window exactly one normal
standard deviation away is SAFE; so do we.

Learned normal (:class:`Baseline`): an exponentially weighted mean and variance of the
series' *samples*, updated once per closed window with the window's count, mean and
variance, half-life ``ANOMALY_BASELINE_HALFLIFE_S`` of event time. Two choices, measured on
NAB (BENCHMARKS.md):

- robust: the window's mean enters the update *winsorized* at the ERROR band
  (normal mean ± m2·normal std), and the window's own spread only up to that band. A short
  incident therefore moves the band by at most ``alpha·m2·std`` per window — it does not
  become normal — while a lasting level shift is absorbed over a few half-lives instead
  of alarming forever (a static band's failure mode);
- warm-up: while fewer windows than the half-life's worth were seen, the weight is
  ``1/n`` (a plain cumulative mean), so early windows are not over-weighted by a tiny
  ``alpha`` and the first estimate is not the first window alone.

A series is ``LEARNING`` until ``ANOMALY_MIN_HISTORY_WINDOWS`` windows have been learned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sla_common.anomalies import Status

# A deviation is reported finite: a zero normal std (a constant series) and a change give
# this many standard deviations, with the sign of the change.
MAX_DEVIATION = 1e12


def deviation_of(mean: float, normal_mean: float, normal_std: float) -> float:
    """``(mean - normal_mean) / normal_std``, finite (± :data:`MAX_DEVIATION` when std is 0)."""
    diff = mean - normal_mean
    if normal_std > 0:
        d = diff / normal_std
    else:
        d = 0.0 if diff == 0 else math.copysign(MAX_DEVIATION, diff)
    return max(-MAX_DEVIATION, min(MAX_DEVIATION, d))


def status_of(
    mean: float, normal_mean: float, normal_std: float, warn: float = 1.0, error: float = 2.0
) -> Status:
    """The reference's rule: strictly beyond ``error``·std is ERROR, beyond ``warn``·std WARN."""
    diff = abs(mean - normal_mean)
    if diff > error * normal_std:
        return "ERROR"
    if diff > warn * normal_std:
        return "WARN"
    return "SAFE"


def ew_alpha(window_ms: int, halflife_s: float) -> float:
    """The weight of one window in an exponentially weighted average of half-life ``halflife_s``."""
    return float(1.0 - 0.5 ** (window_ms / 1000.0 / halflife_s))


@dataclass
class Baseline:
    """A series' learned normal: windows learned, EW mean and EW variance of its samples."""

    n: int = 0
    mean: float = 0.0
    var: float = 0.0

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))

    def learn(self, w_mean: float, w_var: float, alpha: float, clip: float | None = None) -> None:
        """Fold one closed window (its sample mean and population variance) in.

        ``clip``: winsorize at ``mean ± clip·std`` (the robust update; None: plain EW). The
        caller passes None while the series is still LEARNING: an early, too narrow band
        must not freeze what is being learned.
        """
        if self.n == 0:
            self.n, self.mean, self.var = 1, w_mean, max(w_var, 0.0)
            return
        a = max(alpha, 1.0 / (self.n + 1))
        x, v = w_mean, max(w_var, 0.0)
        if clip is not None and self.var > 0:
            band = clip * self.std
            x = min(max(x, self.mean - band), self.mean + band)
            v = min(v, band * band)
        diff = x - self.mean
        incr = a * diff
        self.mean += incr
        self.var = (1.0 - a) * (self.var + diff * incr) + a * v
        self.n += 1

    def to_list(self) -> list[float]:
        return [self.n, self.mean, self.var]

    @classmethod
    def from_list(cls, raw: list[float]) -> Baseline:
        return cls(int(raw[0]), float(raw[1]), float(raw[2]))
