"""``run_explanation`` (the explanation routes' core) with a fake Prometheus holding two days
of history: the day before is fetched and used (the seasonal view and the false-positive
pair), and left out when the history does not reach it. The routes against the real stack
are in tests/integration/test_explanations.py (whose demo history is one day long)."""

from __future__ import annotations

import itertools
from typing import Any, cast

import numpy as np
import pytest

import sla_manager.explain.run as run_mod
from sla_common.prometheus import PrometheusClient, RangeSeries
from sla_manager.explain import exstream
from sla_manager.explain.run import DAY_S, run_explanation
from sla_manager.settings import SlaSettings
from tests.unit.promfake import FakePrometheus

STEP = 60.0
END = 1_760_000_000.0
HISTORY_START = END - 2 * DAY_S


NAMES = ("cycle", "cause", "flat")


def fake_prometheus(start: float) -> FakePrometheus:
    """Series ``f(t)`` sampled every STEP from ``start`` (no sample before it)."""
    rng = np.random.default_rng(3)
    noise = {name: rng.normal(0, 1, 4 * 1440) for name in NAMES}

    def values(name: str, t: np.ndarray[Any, np.dtype[np.float64]]) -> Any:
        i = ((t - HISTORY_START) // STEP).astype(int) % len(noise[name])
        n = noise[name][i]
        if name == "cycle":  # a smooth daily cycle
            return 1000 + 400 * np.sin(2 * np.pi * t / DAY_S) + 2 * n
        if name == "cause":  # a step of 6 sd in the last 30 minutes before END
            return 50 + n + np.where(t >= END - 1800, 6.0, 0.0)
        return 10 + n

    def sampled(start: float, end: float, step: float) -> list[RangeSeries]:
        t = np.arange(start, end + step / 2, step)
        return [RangeSeries({"__name__": name, "job": "x"}, t, values(name, t)) for name in NAMES]

    return FakePrometheus(sampled, first=start, count=len(NAMES))


def _run(prom: FakePrometheus, settings: SlaSettings | None = None, **extra: Any) -> Any:
    """The answer for the last 30 min of ``{job="x"}``; ``extra``: more of
    :func:`run_explanation`'s keyword arguments."""
    return run_explanation(
        cast(PrometheusClient, prom),
        settings or SlaSettings(),
        selector='{job="x"}',
        anomalous=[(END - 1800, END)],
        reference=None,
        step=STEP,
        max_ranked=10,
        **extra,
    ).answer


def test_the_day_before_is_fetched_and_stops_the_daily_cycle() -> None:
    prom = fake_prometheus(HISTORY_START)
    body = _run(prom)
    assert len(prom.ranges) == 2 and prom.ranges[1][0] == pytest.approx(prom.ranges[0][0] - DAY_S)
    assert body.day_before is True and body.seasonal == 3
    top = body.ranked[0]
    assert top.series == 'cause{job="x"}'
    # its residual against the same minutes a day earlier (aligned by series key): noisier
    # than its values, still separating; the cycle separates the day-before pair as well
    assert top.plain_distance == pytest.approx(1.0)
    assert top.seasonal_distance is not None and 0.3 < top.seasonal_distance < 1.0
    assert top.distance == top.seasonal_distance
    # every series' chance level (windows of the reference) is reported with it
    assert all(0 < s.chance_distance <= 1 for s in body.ranked)
    assert 'cycle{job="x"}' not in {s.series for s in body.ranked}
    assert 'cycle{job="x"}' in {s.series for s in body.false_positive_series}


def test_without_a_day_of_history_the_reference_windows_are_used() -> None:
    prom = fake_prometheus(END - 12 * 3600)
    body = _run(prom)
    assert len(prom.ranges) == 1  # nothing matched a day earlier: not fetched
    assert body.day_before is False and body.seasonal == 0
    assert all(s.seasonal_distance is None for s in body.ranked)
    assert body.ranked[0].series == 'cause{job="x"}'


def test_a_wide_range_is_fetched_in_slices_under_the_response_cap() -> None:
    whole, sliced = fake_prometheus(HISTORY_START), fake_prometheus(HISTORY_START)
    one = _run(whole)
    # 3 series x 48 bytes a point: 7 points per slice under a 1 KiB answer
    many = _run(sliced, SlaSettings(sla_prometheus_max_response_bytes=1024))
    assert len(whole.ranges) == 2 and len(sliced.ranges) > 100
    starts = sorted(a for a, _ in sliced.ranges)
    assert all(b - a <= 6 * STEP for a, b in sliced.ranges)
    assert (
        starts[0] == whole.ranges[1][0] and max(b for _, b in sliced.ranges) == whole.ranges[0][1]
    )
    assert one.model_dump(exclude={"timings_ms"}) == many.model_dump(exclude={"timings_ms"})


def test_values_are_bounded_buckets_of_the_ranked_series_over_the_fetched_range() -> None:
    prom = fake_prometheus(END - 12 * 3600)
    plain = _run(prom)
    assert plain.values_step is None and all(s.values is None for s in plain.ranked)
    body = _run(prom, values=40)
    assert body.values_step is not None and body.values_step % STEP == 0
    top = body.ranked[0]
    assert top.series == 'cause{job="x"}' and top.values is not None
    assert 0 < len(top.values) <= 40
    ts = [t for t, _v in top.values]
    assert ts[0] == pytest.approx(body.reference[0] // STEP * STEP)
    assert ts[-1] <= END and all(b - a == body.values_step for a, b in itertools.pairwise(ts))
    # the step of 6 sd shows: the last bucket (inside the violation) is above the first
    first, last = top.values[0][1], top.values[-1][1]
    assert first is not None and last is not None and last - first > 4
    assert all(s.values is None for s in body.false_positive_series)


def test_the_violation_route_gives_explain_the_slis_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the lead view: the SLI's series (``exclude_copies_of``) goes to ``explain`` as
    ``sli``, one value per column (NaN over the day before's columns); not without it."""
    seen: list[Any] = []
    real = exstream.explain

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append((args[0], kwargs.get("sli")))
        return real(*args, **kwargs)

    monkeypatch.setattr(run_mod, "explain", spy)
    prom = fake_prometheus(HISTORY_START)
    for own in ('flat{job="x"}', None):
        _run(prom, exclude_copies_of=own)
    (x, sli), (_, no_sli) = seen
    assert no_sli is None
    assert sli is not None and sli.shape == (x.shape[1],)
    half = x.shape[1] // 2  # the day before's columns, then the intervals'
    assert np.isnan(sli[:half]).all()
    assert np.isfinite(sli[half:]).all() and abs(float(np.mean(sli[half:])) - 10) < 1
