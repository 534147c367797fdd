"""Tumbling event-time windows of one series: assignment, partial statistics, late samples.

A samples record carries a batch of one series' samples. :func:`partials` folds it into one
:class:`Partial` (count, mean, M2 — Welford/Chan, numerically stable) per window the batch
touches, so the windowing engine handles one row per (record, window), not one per sample.
:func:`merge` combines partials of the same window (Chan et al.'s parallel update).

Windows are ``[start, start + size)`` in Unix milliseconds, ``start`` a multiple of the size
(aligned to the epoch, as the reference's Spark ``window()`` and quixstreams' tumbling
windows are). A window closes when the series' own event time has passed its end by the
grace period: ``end <= latest - grace``; a sample for a closed window is late and dropped
(counted). :class:`SeriesWindows` implements exactly that for the in-process replay and
the plain-loop benchmark; the detector gets the same semantics from quixstreams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


def window_start(ts_ms: int, size_ms: int) -> int:
    return ts_ms - ts_ms % size_ms


@dataclass(frozen=True)
class Partial:
    """Samples of one window: the newest timestamp, count, mean and M2 (sum of squared diffs)."""

    start_ms: int
    last_ms: int
    n: int
    mean: float
    m2: float

    @property
    def var(self) -> float:
        return self.m2 / self.n if self.n else 0.0


def merge(a: Partial | None, b: Partial) -> Partial:
    """The partial of both (same window): Chan's parallel count/mean/M2."""
    if a is None or a.n == 0:
        return b
    n = a.n + b.n
    delta = b.mean - a.mean
    mean = a.mean + delta * b.n / n
    m2 = a.m2 + b.m2 + delta * delta * a.n * b.n / n
    return Partial(a.start_ms, max(a.last_ms, b.last_ms), n, mean, m2)


def partials(ts_ms: Sequence[int], values: Sequence[float], size_ms: int) -> list[Partial]:
    """One partial per window the samples touch, in order of first appearance."""
    acc: dict[int, list[float]] = {}  # start -> [last, n, mean, m2]
    for t, x in zip(ts_ms, values, strict=True):
        start = t - t % size_ms
        s = acc.get(start)
        if s is None:
            acc[start] = [t, 1, x, 0.0]
            continue
        s[0] = max(s[0], t)
        s[1] += 1
        d = x - s[2]
        s[2] += d / s[1]
        s[3] += d * (x - s[2])
    return [Partial(k, int(v[0]), int(v[1]), v[2], v[3]) for k, v in acc.items()]


@dataclass
class SeriesWindows:
    """The open windows of one series and its event-time high-water mark."""

    size_ms: int
    grace_ms: int
    latest_ms: int = -1
    open: dict[int, Partial] = field(default_factory=dict)
    late_samples: int = 0

    def add(self, p: Partial) -> list[Partial]:
        """Fold ``p`` in (or count it late); return the windows this closes, oldest first."""
        latest = max(self.latest_ms, p.last_ms)
        if p.start_ms + self.size_ms <= latest - self.grace_ms:
            self.late_samples += p.n
        else:
            self.open[p.start_ms] = merge(self.open.get(p.start_ms), p)
        self.latest_ms = latest
        return self.expire()

    def expire(self) -> list[Partial]:
        limit = self.latest_ms - self.grace_ms
        done = sorted(s for s in self.open if s + self.size_ms <= limit)
        return [self.open.pop(s) for s in done]

    def add_batch(self, ts_ms: Sequence[int], values: Sequence[float]) -> list[Partial]:
        closed: list[Partial] = []
        for p in partials(ts_ms, values, self.size_ms):
            closed.extend(self.add(p))
        return closed
