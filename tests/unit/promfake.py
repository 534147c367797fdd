"""A fake Prometheus for ``run_explanation`` (the explanation routes' core): what it asks
of Prometheus is ``count(<selector>)`` at an instant and range queries of the selector.

The series come from a *source*: ``source(start, end, step)`` gives the series a range
query over [start, end] at ``step`` returns; the fake leaves out every sample before the
history's ``first`` (as Prometheus has nothing earlier) and answers ``count`` with
``count`` series from ``first`` on. It records the ranges asked for in ``ranges``."""

from __future__ import annotations

from collections.abc import Callable

from sla_common.prometheus import InstantSample, RangeSeries

SeriesSource = Callable[[float, float, float], list[RangeSeries]]


class FakePrometheus:
    def __init__(self, source: SeriesSource, *, first: float, count: int) -> None:
        self.source = source
        self.first = first
        self.count = count
        self.ranges: list[tuple[float, float]] = []

    def query(self, query: str, time: float | None = None) -> list[InstantSample]:
        assert query.startswith("count(") and time is not None
        return [InstantSample({}, time, float(self.count))] if time >= self.first else []

    def query_range(self, query: str, start: float, end: float, step: float) -> list[RangeSeries]:
        self.ranges.append((start, end))
        out = []
        for s in self.source(start, end, step):
            keep = s.timestamps >= self.first
            if keep.any():
                out.append(RangeSeries(s.labels, s.timestamps[keep], s.values[keep]))
        return out
