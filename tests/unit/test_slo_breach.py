"""Forecast breach probabilities (hand-computed normal tails) and their /metrics collector."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sla_manager.evaluation import Z95, Bounds, FloatArray
from sla_manager.slo.breach import (
    BreachExporter,
    SliForecast,
    SliSnapshot,
    bad_fraction,
    breach_probability,
    point_probabilities,
)


def _arr(*xs: float) -> FloatArray:
    return np.array(xs, dtype=np.float64)


def test_point_probabilities_are_normal_tails() -> None:
    # σ = 10 from the 95 % interval; max 110 is 1σ above 100: 1 − Φ(1) = 0.158655...;
    # min 80 is 2σ below: Φ(−2) = 0.022750...
    value, half = _arr(100.0), Z95 * 10
    p = point_probabilities(Bounds(80.0, 110.0), value, value - half, value + half)
    assert p[0] == pytest.approx(
        0.5 * math.erfc(1 / math.sqrt(2)) + 0.5 * math.erfc(2 / math.sqrt(2))
    )
    assert p[0] == pytest.approx(0.158655 + 0.022750, abs=1e-6)
    # On the bound: one half; far outside: 1.
    on = point_probabilities(Bounds(None, 100.0), value, value - half, value + half)
    assert on[0] == pytest.approx(0.5)
    far = point_probabilities(Bounds(None, 10.0), value, value - half, value + half)
    assert far[0] == pytest.approx(1.0)


def test_degenerate_intervals_and_nan() -> None:
    b = Bounds(None, 50.0)
    # No spread: the point forecast decides; NaN never breaches.
    p = point_probabilities(
        b, _arr(60.0, 40.0, math.nan), _arr(60.0, 40.0, 0.0), _arr(60.0, 40.0, 1.0)
    )
    assert p.tolist() == [1.0, 0.0, 0.0]


def test_breach_probability_is_the_largest_point_over_series() -> None:
    b = Bounds(None, 110.0)
    half = Z95 * 10
    low = SliForecast(
        _arr(80.0, 90.0), _arr(80.0 - half, 90.0 - half), _arr(80.0 + half, 90.0 + half)
    )
    high = SliForecast(_arr(100.0), _arr(100.0 - half), _arr(100.0 + half))
    empty = SliForecast(_arr(), _arr(), _arr())
    assert breach_probability(b, [low, high, empty]) == pytest.approx(0.158655, abs=1e-6)
    assert breach_probability(b, [empty]) is None


def test_the_collector_answers_from_its_snapshot_and_refreshes_off_the_scrape() -> None:
    now = [0.0]
    calls: list[int] = []
    gate = threading.Event()
    answers: list[dict[str, SliSnapshot] | Exception] = [
        {"fd": SliSnapshot(inside=0.0, probability=0.75, forecast_age_s=12.0)},
        RuntimeError("MySQL down"),
    ]

    def compute() -> dict[str, SliSnapshot]:
        gate.wait(10)
        calls.append(1)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    exporter = BreachExporter(compute, refresh_s=30, clock=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(exporter)
    # The first scrape does not wait for the computation: nothing yet.
    assert b'sla_sli_breach_probability{sli="fd"}' not in generate_latest(registry)
    gate.set()
    _wait(lambda: not exporter._running)
    text = generate_latest(registry).decode()
    assert 'sla_sli_breach_probability{sli="fd"} 0.75' in text
    assert 'sla_sli_inside{sli="fd"} 0.0' in text
    assert calls == [1]  # not due again before refresh_s
    now[0] = 31.0
    generate_latest(registry)  # due: starts the refresh, which fails
    _wait(lambda: len(calls) == 2 and not exporter._running)
    # A failed refresh keeps the last snapshot.
    assert 'sla_sli_breach_probability{sli="fd"} 0.75' in generate_latest(registry).decode()


def _wait(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "condition not met in 10 s"
        time.sleep(0.01)


def test_bad_fraction_over_the_horizon_hand_computed() -> None:
    # max 110. Series a: σ 10 at t=1 (100: P 0.158655) and t=2 (120: P 0.841345, its 95 %
    # band reaches below 110 so not "whole"); series b: no spread at t=2 (200: bad) and t=3
    # (50: good). Per timestamp the worst series: 0.158655, 1, 0.
    b = Bounds(None, 110.0)
    half = Z95 * 10
    a = SliForecast(
        _arr(100.0, 120.0), _arr(100.0 - half, 120.0 - half), _arr(100.0 + half, 120.0 + half)
    )
    c = SliForecast(_arr(200.0, 50.0), _arr(200.0, 50.0), _arr(200.0, 50.0))
    ts_a = np.array([1, 2], dtype=np.int64)
    ts_c = np.array([2, 3], dtype=np.int64)
    frac = bad_fraction(b, [(ts_a, a), (ts_c, c)])
    assert frac is not None and frac.points == 3
    assert frac.expected == pytest.approx((0.158655 + 1.0 + 0.0) / 3, abs=1e-6)
    assert frac.low == pytest.approx(1 / 3)  # t=2: b is wholly outside
    assert frac.high == pytest.approx(2 / 3)  # t=1 and t=2 reach outside
    assert bad_fraction(b, []) is None
