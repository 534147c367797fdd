"""The recurring tail (anomaly_detection.rules.TailRule, ANOMALY_RECURRING_PER_DAY): a
deviation a series shows on more than N windows a day is its normal at that size.
Hand-computed steps, the widened band in the judge, checkpoints, and the record saying
which learned normal judged a window (normal.period_s)."""

from __future__ import annotations

import math

import pytest

from anomaly_detection.judge import Rule
from anomaly_detection.rules import Baseline, Season, TailRule, ew_alpha
from anomaly_detection.settings import DetectorSettings
from anomaly_detection.windows import Partial
from sla_common.settings import load_settings

W15 = 900_000  # 96 windows a day


def test_the_rule_from_windows_a_day() -> None:
    t = TailRule.of(W15, 2.0)
    assert t is not None
    assert t.rate == 2 / 96  # two windows of the day's 96
    assert t.step == pytest.approx(math.log(2) / 14)  # halves in a week: 7 days x 2 a day
    assert TailRule.of(W15, 0.0) is None  # off


def test_hand_computed_steps() -> None:
    t = TailRule(rate=0.25, step=0.5)
    # not started: it starts at the given ERROR band, then steps; within it: down by
    # exp(-step·rate) = exp(-0.125)
    assert t.learn(0.0, 1.0, 4.0) == pytest.approx(4.0 * math.exp(-0.125))
    assert t.learn(0.0, 3.0, 0.0) == 0.0  # no band yet (constant so far): not started
    # beyond the tail: up by exp(step·(1 - rate)) = exp(0.375)
    assert t.learn(3.0, 5.0, 1.0) == pytest.approx(3.0 * math.exp(0.375))
    assert t.learn(3.0, 1.0, 1.0) == pytest.approx(3.0 * math.exp(-0.125))
    # it settles where `rate` of the deviations exceed it: one in four beyond, three within
    # leaves it where it was (0.375 - 3·0.125 = 0)
    tail = 3.0
    for d in (9.0, 0.0, 0.0, 0.0):
        tail = t.learn(tail, d, 1.0)
    assert tail == pytest.approx(3.0)


def test_learned_only_once_judged_starting_at_the_error_band() -> None:
    t = TailRule.of(W15, 2.0)
    b = Baseline()
    b.learn(10.0, 0.0, 0.5, clip=None, tail=t)
    b.learn(12.0, 0.0, 0.5, clip=None, tail=t)  # LEARNING: clip None, the tail waits
    assert (b.mean, b.var, b.tail) == (11.0, 1.0, 0.0)
    b.learn(11.0, 0.0, 0.5, clip=2.0, tail=t)  # judged: starts at 2·1, |11 - 11| within
    assert t is not None
    assert b.tail == pytest.approx(2.0 * math.exp(-t.step * t.rate))


def _windows(values: list[float]) -> list[Partial]:
    return [Partial(i * W15, i * W15, 1, v, 0.0) for i, v in enumerate(values)]


def _run(rule: Rule, values: list[float]) -> list[str]:
    b = Baseline()
    return [rule.judge(b, p)[0] for p in _windows(values)]


def test_recurring_spikes_stop_alarming_a_larger_one_still_does() -> None:
    # A flat series (1, 0 alternating: std 0.5) with a spike of 10 every 8th window, i.e. 12
    # windows a day: more than the 2 a day a deviation may recur and still be an anomaly.
    values = [10.0 if i % 8 == 7 else float(i % 2) for i in range(960)] + [40.0]
    alpha = ew_alpha(W15, 6 * 3600)
    without = _run(Rule(window_ms=W15, alpha=alpha, min_history=30), values)
    with_tail = _run(
        Rule(window_ms=W15, alpha=alpha, min_history=30, recurring_per_day=2.0), values
    )
    spikes = [i for i in range(480, 960) if i % 8 == 7]  # days 6-10
    assert all(without[i] == "ERROR" for i in spikes)  # the winsorized band never learns them
    # the tail settles where 2 windows a day exceed it: over 5 days, 10 (+1 at the edge),
    # not all 60 spikes. (It starts at the ERROR band and grows ≈ 5 % per exceedance: the
    # first days still alarm, BENCHMARKS.md.)
    assert sum(with_tail[i] == "ERROR" for i in spikes) <= 11
    assert with_tail[-1] == "ERROR" and without[-1] == "ERROR"  # four times the usual spike


def test_the_band_is_the_larger_of_the_spread_and_the_tail_over_the_error_multiplier() -> None:
    rule = Rule(window_ms=W15, min_history=1, recurring_per_day=2.0, error=2.0)
    b = Baseline(n=5, mean=10.0, var=1.0, tail=6.0)
    status, dev, normal = rule.judge(b, Partial(0, 0, 1, 15.0, 0.0))
    assert normal.std == 3.0  # max(1, 6 / 2)
    assert status == "WARN"
    assert dev == pytest.approx(5 / 3)
    b = Baseline(n=5, mean=10.0, var=16.0, tail=6.0)
    assert rule.judge(b, Partial(0, 0, 1, 15.0, 0.0))[2].std == 4.0  # the spread is larger
    off = Rule(window_ms=W15, min_history=1, error=2.0)  # recurring_per_day 0: no tail
    b = Baseline(n=5, mean=10.0, var=1.0, tail=6.0)
    assert off.judge(b, Partial(0, 0, 1, 15.0, 0.0))[:2] == ("ERROR", 5.0)


def test_the_tail_is_checkpointed_and_an_old_checkpoint_loads() -> None:
    b = Baseline(n=3, mean=1.0, var=2.0, tail=4.5)
    assert Baseline.from_list(b.to_list()) == b
    assert Baseline.from_list([3, 1.0, 2.0]) == Baseline(3, 1.0, 2.0, 0.0)
    s = Season.new(86_400_000, W15)
    s.tail = 2.5
    assert Season.from_json(s.to_json()).tail == 2.5
    old = s.to_json()
    del old["tail"]
    assert Season.from_json(old).tail == 0.0


def test_the_record_says_which_normal_judged() -> None:
    rule = Rule(window_ms=W15, min_history=30, season_periods_s=(86_400,))
    b: Baseline = Baseline()
    seasons: dict[int, Season] = {}
    periods = []
    for i in range(96 * 4):  # four days of a daily square wave
        x = 80.0 if (i % 96) >= 48 else 20.0
        x += 0.5 * (i % 3)
        p = Partial(i * W15, i * W15, 1, x, 0.0)
        rec = rule.record("k", "cpu", {}, b, p, seasons)
        periods.append((rec.status, rec.normal.source, rec.normal.period_s))
        assert rec.schema_version == 2
    assert periods[0] == ("LEARNING", "none", 0)
    assert periods[40] == ("SAFE", "learned", 0)  # the plain normal: no cycle yet
    assert periods[-1][1:] == ("learned", 86_400)  # the daily cycle, once it predicts better
    static = Rule(window_ms=W15, static=(1.0, 1.0))
    assert (
        static.record("k", "cpu", {}, Baseline(), Partial(0, 0, 1, 1.0, 0.0)).normal.period_s == 0
    )


def test_recurring_per_day_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(DetectorSettings).anomaly_recurring_per_day == 2.0
    monkeypatch.setenv("ANOMALY_RECURRING_PER_DAY", "0")
    s = load_settings(DetectorSettings)
    assert s.anomaly_recurring_per_day == 0.0
    assert Rule.from_settings(s).recurring_per_day == 0.0
