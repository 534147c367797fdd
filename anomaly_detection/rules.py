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

The series' own cycle (:class:`Season`, ``ANOMALY_SEASON_PERIODS_S``): per candidate period
a normal per phase, used instead of the plain one only once it predicts the series better
(see the class). On NAB it removes most false alarms on the edges of daily patterns, which
a 6 h half-life follows only partly (BENCHMARKS.md).

Recurring deviations (:class:`TailRule`, ``ANOMALY_RECURRING_PER_DAY``): the winsorizing
above keeps a spike from becoming normal, which is wrong for a series that spikes a dozen
times a day. Each normal (the plain one and each season) also learns the recurring tail of
its *raw* deviations — the size exceeded on ``per_day`` windows a day, forgotten in about a
week — and its band widens until the ERROR band reaches it: a deviation the series shows
that often is its normal at that size; a larger one is still an ERROR. A Gaussian series'
tail stays inside its ERROR band: nothing changes for it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

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


DAY_MS = 86_400_000
TAIL_MEMORY_DAYS = 7.0  # the recurring tail forgets in about a week (the longest calendar cycle)


@dataclass(frozen=True)
class TailRule:
    """How the recurring tail is learned: ``rate``, the share of windows allowed beyond it
    (``per_day`` windows a day), and ``step``, the Robbins-Monro step that makes it halve in
    :data:`TAIL_MEMORY_DAYS` without an exceedance (``exp(-step·rate·N) = 1/2`` over the
    ``N`` windows of that many days, and ``rate·N = TAIL_MEMORY_DAYS·per_day``)."""

    rate: float
    step: float

    @classmethod
    def of(cls, window_ms: int, per_day: float) -> TailRule | None:
        if per_day <= 0:
            return None
        rate = min(0.5, per_day * window_ms / DAY_MS)
        return cls(rate, math.log(2.0) / (TAIL_MEMORY_DAYS * per_day))

    def learn(self, tail: float, d: float, start: float) -> float:
        """One step of the tail: the ``1 - rate`` quantile of the absolute deviations ``d``
        (raw, not winsorized). A deviation beyond it raises it by ``exp(step·(1 - rate))``,
        any other lowers it by ``exp(-step·rate)``: it settles where ``rate`` of the windows
        exceed it. A tail of 0 (not started) starts at ``start``, the caller's ERROR band, so
        it widens nothing until deviations beyond that band recur; while that band is 0 (a
        constant series so far) it does not start."""
        if tail <= 0:
            if start <= 0:
                return 0.0
            tail = start
        if d > tail:
            return tail * math.exp(self.step * (1.0 - self.rate))
        return tail * math.exp(-self.step * self.rate)


@dataclass
class Baseline:
    """A series' learned normal: windows learned, EW mean and EW variance of its samples."""

    n: int = 0
    mean: float = 0.0
    var: float = 0.0
    tail: float = 0.0  # the recurring tail (TailRule): 0 until learned or when off

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 0.0))

    def learn(
        self,
        w_mean: float,
        w_var: float,
        alpha: float,
        clip: float | None = None,
        tail: TailRule | None = None,
    ) -> None:
        """Fold one closed window (its sample mean and population variance) in.

        ``clip``: winsorize at ``mean ± clip·std`` (the robust update; None: plain EW). The
        caller passes None while the series is still LEARNING: an early, too narrow band
        must not freeze what is being learned. ``tail``: also learn the recurring tail of the
        raw deviations from the mean, from the first judged window on (``clip`` set), starting
        at the ERROR band (None: not learned).
        """
        if self.n == 0:
            self.n, self.mean, self.var = 1, w_mean, max(w_var, 0.0)
            return
        if tail is not None and clip is not None:
            self.tail = tail.learn(self.tail, abs(w_mean - self.mean), clip * self.std)
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
        return [self.n, self.mean, self.var, self.tail]

    @classmethod
    def from_list(cls, raw: list[float]) -> Baseline:
        """Also reads a checkpoint from before the tail (three numbers: tail 0)."""
        tail = float(raw[3]) if len(raw) > 3 else 0.0
        return cls(int(raw[0]), float(raw[1]), float(raw[2]), tail)


# ---------------------------------------------------------------- the series' own cycle

SEASON_BIN_MS = 900_000  # a quarter of an hour: 96 phases a day
MAX_SEASON_BINS = 168  # at most one phase per hour of a week: bounded state per series
SEASON_HALFLIFE_PERIODS = 2.0  # a changed cycle is half learned after two of its periods
VISITS_CAP = 1_000_000


def season_bin_ms(period_ms: int, window_ms: int) -> int:
    """The width of one phase of a cycle of ``period_ms``: at least a window, at least
    :data:`SEASON_BIN_MS`, and at most :data:`MAX_SEASON_BINS` phases a period."""
    return max(window_ms, SEASON_BIN_MS, -(-period_ms // MAX_SEASON_BINS))


@functools.lru_cache(maxsize=64)
def _season_weights(period_ms: int, bin_ms: int, window_ms: int) -> tuple[float, float]:
    """(gamma, the error averages' weight) of one window."""
    per_bin = max(1.0, bin_ms / window_ms)  # windows per visit of a phase
    gamma = 1.0 - 0.5 ** (1.0 / (per_bin * SEASON_HALFLIFE_PERIODS))
    return gamma, ew_alpha(window_ms, period_ms / 1000.0)


def offset_var_factor(visits: int, per_visit: float, g: float) -> float:
    """The variance of a phase's offset estimate, in units of the phase's spread, after
    ``visits`` windows of it: the first visit's ``per_visit`` windows are averaged
    (``1 / per_visit``), each later window moves the offset by ``g·r``
    (``f ← (1 - g)²·f + g²``), which settles at ``g / (2 - g)``. In closed form:
    ``s + (f0 - s)·(1 - g)^(2j)``, ``j`` the windows after the first visit.

    A prediction from few visits is uncertain by this much on top of the phase's spread
    (the predictive variance of a mean of few observations is ``σ²·(1 + 1/k)``); a band
    without it fires on a noisy phase in the first days of a cycle (BENCHMARKS.md)."""
    f0 = 1.0 / max(1.0, min(float(visits), per_visit))
    j = max(0.0, visits - per_visit)
    if j == 0.0 or g <= 0.0:
        return f0
    s = g / (2.0 - g)
    return float(s + (f0 - s) * (1.0 - g) ** (2.0 * j))


@dataclass
class Season:
    """A candidate cycle of a series (additive Holt-Winters without trend, per phase bin).

    Prediction for a window starting at ``t``: ``level + offsets[phase(t)]``, once that
    phase has been seen. Per closed window (winsorized at the ERROR band, as the plain
    normal is, once the season has a spread):

    - ``r = x - prediction``; ``level += alpha·r`` (the plain normal's half-life);
      ``offsets[phase] += gamma·(1 - alpha)·r`` (``gamma``: a half-life of
      :data:`SEASON_HALFLIFE_PERIODS` visits of the phase);
    - the recent spread: ``var = (1 - a)·var + a·(r² + window variance)``,
      ``a = max(alpha, 1/k)``; the phase's: the same with ``max(gamma, 1/visits)``; the
      band (:meth:`std_at`) is the larger of the recent one and the phase's (averaged with
      its two neighbours), so a phase noisier than the rest is not judged by the quiet ones;
      the phase's is predictive: times ``1 +`` the variance of its offset estimate
      (:func:`offset_var_factor`: 1 after one visit, settling at ``gamma / (2 - gamma)``),
      so a phase seen on only 2-4 days is not judged as if its offset were known;
    - the first period is taken as it is: the first window sets the level, each phase's
      offset and spread are the mean and spread of its windows' ``x - level``; nothing is
      predicted (or compared) before the phase was seen in an earlier period.

    Whether the cycle is real is decided by prediction, not by a test statistic: for every
    window the phase already had a prediction for, the squared errors of this season and
    of the plain normal are averaged (EW, half-life one period). The season is *used* once
    a full period was predicted and its error is below the plain normal's; otherwise the
    plain normal stays (a series without this cycle never switches).
    """

    period_ms: int
    bin_ms: int
    level: float | None = None
    first_ms: int | None = None  # the first window's start: its period is only learned
    offsets: list[float | None] = field(default_factory=list)
    spreads: list[float] = field(default_factory=list)  # per phase: EW of r² + window var
    visits: list[int] = field(default_factory=list)  # per phase, capped at VISITS_CAP
    var: float = 0.0
    scored: int = 0
    err: float = 0.0
    err_plain: float = 0.0
    tail: float = 0.0  # the recurring tail of |x - prediction| (TailRule)

    @classmethod
    def new(cls, period_ms: int, window_ms: int) -> Season:
        bin_ms = season_bin_ms(period_ms, window_ms)
        n = -(-period_ms // bin_ms)
        return cls(period_ms, bin_ms, offsets=[None] * n, spreads=[0.0] * n, visits=[0] * n)

    def std_at(self, start_ms: int, window_ms: int | None = None, alpha: float = 0.0) -> float:
        """The larger of the recent spread (``var``, the plain normal's half-life) and this
        time of the period's (its phase and the two next to it, averaged), the latter as a
        *predictive* spread: times ``1 +`` :func:`offset_var_factor` of the phase's visits,
        because the phase's offset is itself estimated from those few visits (``window_ms``,
        ``alpha``: the rule's, for the offset's weights; None: one window a phase)."""
        b, n = self.phase(start_ms), len(self.spreads)
        near = [self.spreads[i % n] for i in (b - 1, b, b + 1) if self.visits[i % n]]
        phase = sum(near) / len(near) if near else 0.0
        k = self.visits[b]
        if k and phase > 0:
            w = self.bin_ms if window_ms is None else window_ms
            gamma = _season_weights(self.period_ms, self.bin_ms, w)[0]
            per_bin = max(1.0, self.bin_ms / w)
            phase *= 1.0 + offset_var_factor(k, per_bin, gamma * (1.0 - alpha))
        return math.sqrt(max(self.var, phase, 0.0))

    def phase(self, start_ms: int) -> int:
        return (start_ms % self.period_ms) // self.bin_ms

    def predict(self, start_ms: int) -> float | None:
        off = self.offsets[self.phase(start_ms)]
        return None if self.level is None or off is None else self.level + off

    def windows_per_period(self, window_ms: int) -> int:
        return -(-self.period_ms // window_ms)

    def better(self, window_ms: int) -> bool:
        """A full period predicted, with a smaller error than the plain normal's."""
        return self.scored >= self.windows_per_period(window_ms) and self.err < self.err_plain

    def learn(
        self,
        start_ms: int,
        w_mean: float,
        w_var: float,
        plain_mean: float | None,
        window_ms: int,
        alpha: float,
        clip: float | None = None,
        tail: TailRule | None = None,
    ) -> None:
        """Fold one closed window in; ``plain_mean``: the plain normal's mean before it
        (None: it had none), for the comparison; ``tail``: learn the recurring tail of the
        raw prediction errors once judged (``clip`` set), starting at the season's ERROR band
        (None: not learned)."""
        b = self.phase(start_ms)
        gamma, a_err = _season_weights(self.period_ms, self.bin_ms, window_ms)
        if self.level is None or self.first_ms is None:
            self.level, self.first_ms = w_mean, start_ms
        off = self.offsets[b]
        if off is None or start_ms < self.first_ms + self.period_ms:
            # The first period (or a phase's first visit): the phase's mean and spread of
            # what it saw, nothing predicted yet.
            d, v = w_mean - self.level, max(w_var, 0.0)
            k = self.visits[b] = min(self.visits[b] + 1, VISITS_CAP)
            new = d if off is None else off + (d - off) / k
            dev2 = 0.0 if off is None else (d - off) * (d - new)
            self.offsets[b] = new
            self.spreads[b] += (dev2 + v - self.spreads[b]) / k
            return
        pred = self.level + off
        std = self.std_at(start_ms, window_ms, alpha)
        if tail is not None and clip is not None:
            self.tail = tail.learn(self.tail, abs(w_mean - pred), clip * std)
        if plain_mean is not None:
            a = max(a_err, 1.0 / (self.scored + 1))
            self.err += a * ((w_mean - pred) ** 2 - self.err)
            self.err_plain += a * ((w_mean - plain_mean) ** 2 - self.err_plain)
        x, v = w_mean, max(w_var, 0.0)
        if clip is not None and self.scored > 0 and std > 0:
            band = clip * std
            x = min(max(x, pred - band), pred + band)
            v = min(v, band * band)
        r = x - pred
        k = self.visits[b] = min(self.visits[b] + 1, VISITS_CAP)
        g = max(gamma, 1.0 / k)
        self.spreads[b] += g * (r * r + v - self.spreads[b])
        self.offsets[b] = pred - self.level + gamma * (1.0 - alpha) * r
        self.level += alpha * r
        a = max(alpha, 1.0 / (self.scored + 1))
        self.var = (1.0 - a) * self.var + a * (r * r + v)
        self.scored += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "period": self.period_ms,
            "bin": self.bin_ms,
            "level": self.level,
            "first": self.first_ms,
            "offsets": self.offsets,
            "spreads": self.spreads,
            "visits": self.visits,
            "var": self.var,
            "scored": self.scored,
            "err": [self.err, self.err_plain],
            "tail": self.tail,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Season:
        level = d["level"]
        return cls(
            period_ms=int(d["period"]),
            bin_ms=int(d["bin"]),
            level=None if level is None else float(level),
            first_ms=None if d.get("first") is None else int(d["first"]),
            offsets=[None if o is None else float(o) for o in d["offsets"]],
            spreads=[float(x) for x in d["spreads"]],
            visits=[int(x) for x in d["visits"]],
            var=float(d["var"]),
            scored=int(d["scored"]),
            err=float(d["err"][0]),
            err_plain=float(d["err"][1]),
            tail=float(d.get("tail", 0.0)),
        )
