"""The SLA manager's pure rules: range states, violation intervals, forecast breaches."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sla_manager import evaluation as ev
from sla_manager.evaluation import Bounds, Interval

STEP = 60.0
T0 = 1_800_000_000.0


def _series(values: list[float], step: float = STEP) -> tuple[np.ndarray, np.ndarray]:
    ts = T0 + step * np.arange(len(values), dtype=np.float64)
    return ts, np.array(values, dtype=np.float64)


# --------------------------------------------------------------------------- Bounds


def test_bounds_are_inclusive_and_nan_is_undefined() -> None:
    b = Bounds(10.0, 20.0)
    assert [b.state(v) for v in (9.999, 10.0, 15.0, 20.0, 20.001)] == [
        "below",
        "inside",
        "inside",
        "inside",
        "above",
    ]
    assert b.state(math.nan) == "undefined"
    assert b.state(math.inf) == "above" and b.state(-math.inf) == "below"
    values = np.array([9.0, 10.0, math.nan, 21.0])
    assert b.outside(values).tolist() == [True, False, False, True]
    assert b.excess(values).tolist() == [1.0, 0.0, 0.0, 1.0]


def test_one_sided_bounds() -> None:
    only_max = Bounds(None, 5.0)
    only_min = Bounds(-1.0, None)
    values = np.array([-1e12, 5.0, 6.0])
    assert only_max.outside(values).tolist() == [False, False, True]
    assert only_min.outside(values).tolist() == [True, False, False]
    assert Bounds(3.0, 3.0).state(3.0) == "inside"


@pytest.mark.parametrize(("lo", "hi"), [(None, None), (2.0, 1.0)])
def test_bounds_refuse_an_empty_or_inverted_range(lo: float | None, hi: float | None) -> None:
    with pytest.raises(ValueError, match=r"min|range"):
        Bounds(lo, hi)


# --------------------------------------------------------------------------- intervals


def test_consecutive_violations_merge_and_duration_counts_one_step_each() -> None:
    ts, vs = _series([1, 25, 30, 22, 1, 1, 21, 1])
    found = ev.violations(ts, vs, Bounds(None, 20.0), STEP, T0, T0 + 7 * STEP)

    assert found.evaluations == 8
    assert found.violating.tolist() == [1, 2, 3, 6]
    assert found.intervals == (
        Interval(
            start=T0 + 60,
            end=T0 + 180,
            samples=3,
            duration_s=180.0,
            worst_value=30.0,
            worst_at=T0 + 120,
            open_start=False,
            open_end=False,
        ),
        Interval(
            start=T0 + 360,
            end=T0 + 360,
            samples=1,
            duration_s=60.0,
            worst_value=21.0,
            worst_at=T0 + 360,
            open_start=False,
            open_end=False,
        ),
    )
    assert found.time_outside_s == 4 * STEP


def test_a_missing_evaluation_splits_a_run() -> None:
    # Prometheus returned nothing at T0 + 120 (no sample within the look-back).
    ts = np.array([T0, T0 + 60, T0 + 180, T0 + 240])
    vs = np.array([50.0, 50.0, 50.0, 1.0])
    found = ev.violations(ts, vs, Bounds(None, 20.0), STEP, T0, T0 + 240)

    assert [(i.start, i.end, i.samples) for i in found.intervals] == [
        (T0, T0 + 60, 2),
        (T0 + 180, T0 + 180, 1),
    ]
    assert found.intervals[0].open_start and not found.intervals[1].open_end


def test_open_ends_and_worst_on_both_sides_of_a_range() -> None:
    ts, vs = _series([-5, 100, 12, 11, -50])
    # end is not on the step grid: the last evaluation is T0 + 240
    found = ev.violations(ts, vs, Bounds(0.0, 20.0), STEP, T0, T0 + 270)

    first, last = found.intervals
    assert (first.start, first.end, first.worst_value) == (T0, T0 + 60, 100.0)
    assert first.open_start and not first.open_end
    assert (last.start, last.worst_value) == (T0 + 240, -50.0)
    assert last.open_end and not last.open_start


def test_worst_value_ties_go_to_the_earliest_sample() -> None:
    ts, vs = _series([30, 30, 25])
    (only,) = ev.violations(ts, vs, Bounds(None, 20.0), STEP, T0, T0 + 120).intervals
    assert only.worst_at == T0


def test_millisecond_jitter_in_timestamps_does_not_split_a_run() -> None:
    ts = np.array([T0 + 0.123, T0 + 60.124, T0 + 120.122])
    vs = np.array([50.0, 50.0, 50.0])
    found = ev.violations(ts, vs, Bounds(None, 1.0), STEP, T0 + 0.123, T0 + 120.123)
    (only,) = found.intervals
    assert only.samples == 3 and only.open_start and only.open_end


def test_nan_never_violates_and_breaks_nothing_else() -> None:
    ts, vs = _series([50, math.nan, 50])
    found = ev.violations(ts, vs, Bounds(None, 1.0), STEP, T0, T0 + 120)
    assert found.violating.tolist() == [0, 2]
    assert [i.samples for i in found.intervals] == [1, 1]


def test_no_samples_no_intervals() -> None:
    empty = np.array([], dtype=np.float64)
    found = ev.violations(empty, empty, Bounds(0.0, 1.0), STEP, T0, T0 + 3600)
    assert found.evaluations == 0 and found.intervals == () and found.time_outside_s == 0


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.one_of(st.floats(-100, 100), st.just(math.nan)), min_size=0, max_size=60),
    keep=st.lists(st.booleans(), min_size=60, max_size=60),
    lo=st.one_of(st.none(), st.floats(-50, 0)),
    hi=st.one_of(st.none(), st.floats(0, 50)),
)
def test_intervals_partition_exactly_the_violating_samples(
    values: list[float], keep: list[bool], lo: float | None, hi: float | None
) -> None:
    if lo is None and hi is None:
        hi = 0.0
    bounds = Bounds(lo, hi)
    grid = T0 + STEP * np.arange(len(values), dtype=np.float64)
    # Drop some evaluations, as Prometheus does where there is no data.
    chosen = np.array(keep[: len(values)], dtype=np.bool_)
    ts, vs = grid[chosen], np.array(values, dtype=np.float64)[chosen]
    found = ev.violations(ts, vs, bounds, STEP, T0, T0 + STEP * max(len(values) - 1, 0))

    outside = [i for i, v in enumerate(vs.tolist()) if bounds.state(v) in ("below", "above")]
    assert found.violating.tolist() == outside
    assert sum(i.samples for i in found.intervals) == len(outside)
    assert found.time_outside_s == pytest.approx(len(outside) * STEP)
    covered: list[int] = []
    for a, b in zip(found.intervals, found.intervals[1:], strict=False):
        assert a.end < b.start  # ordered, disjoint
    for interval in found.intervals:
        members = [i for i in outside if interval.start <= ts[i] <= interval.end]
        assert len(members) == interval.samples
        # inside an interval the samples are adjacent steps, all of them violating
        assert np.all(np.diff(ts[members]) == STEP)
        assert interval.duration_s == interval.end - interval.start + STEP
        assert interval.worst_value == max(
            (vs[i] for i in members), key=lambda v: float(bounds.excess(np.array([v]))[0])
        )
        covered += members
    assert covered == outside


# --------------------------------------------------------------------------- forecasts


def test_forecast_points_leave_by_point_then_80_then_95() -> None:
    bounds = Bounds(None, 100.0)
    value = np.array([50.0, 95.0, 97.0, 101.0, 90.0])
    lower80 = value - 5
    upper80 = np.array([60.0, 99.0, 102.0, 110.0, 95.0])
    lower95 = value - 10
    upper95 = np.array([70.0, 103.0, 104.0, 120.0, 100.0])

    kinds = ev.forecast_breaches(bounds, value, lower80, upper80, lower95, upper95)

    assert kinds == [None, "interval95", "interval80", "point", None]
    assert ev.worst_breach(kinds) == "point"
    assert ev.worst_breach([None, "interval95", "interval80"]) == "interval80"
    assert ev.worst_breach([None, None]) is None


def test_forecast_lower_bounds_count_for_a_minimum() -> None:
    bounds = Bounds(10.0, None)
    one = np.array([12.0])
    kinds = ev.forecast_breaches(bounds, one, one - 1, one + 1, one - 3, one + 3)
    assert kinds == ["interval95"]


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("10m", 600), ("1h", 3600), ("12h", 43200), ("1d", 86400)],
)
def test_durations(text: str, seconds: int) -> None:
    assert ev.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "0", "0h", "1.5h", "-1h", "1y", "h", "1 h", "12345678s", "1h\n", " 1h"]
)
def test_bad_durations_are_refused_clearly(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        ev.parse_duration(text)


def test_evaluation_count_includes_both_ends() -> None:
    assert ev.evaluation_count(0, 3600, 60) == 61
    assert ev.evaluation_count(0, 3599, 60) == 60
    assert ev.last_evaluation(0, 3599, 60) == 3540


def test_narrow_filters_on_exact_label_values_sorts_and_caps() -> None:
    items = [
        {"device": "/dev/sda2", "job": "host"},
        {"device": "tmpfs", "job": "host"},
        {"device": "/dev/sda1", "job": "host"},
        {"device": "/dev/sda2", "job": "node"},
    ]
    kept, total = ev.narrow(items, lambda i: i, {"job": "host"}, limit=2)
    assert total == 3
    assert [i["device"] for i in kept] == ["/dev/sda1", "/dev/sda2"]
    kept, total = ev.narrow(items, lambda i: i, {"device": "/dev/sda2", "job": "host"}, 10)
    assert (kept, total) == ([items[0]], 1)


def test_json_cannot_carry_non_finite_values() -> None:
    assert ev.finite_or_none(1.5) == 1.5
    assert ev.finite_or_none(math.nan) is None and ev.finite_or_none(-math.inf) is None


# --------------------------------------------------------------------------- no data


def test_no_data_intervals_after_the_first_value_only() -> None:
    # Grid T0 .. T0 + 9 steps; the series starts at step 2, misses 4-5, stops after 7.
    present = [2, 3, 6, 7]
    ts = T0 + STEP * np.array(present, dtype=np.float64) + 0.0004  # ms rounding
    gaps = ev.no_data_intervals(ts, STEP, T0, T0 + 9 * STEP)
    assert gaps == (
        ev.NoDataInterval(T0 + 4 * STEP, T0 + 5 * STEP, 2, 2 * STEP, False),
        ev.NoDataInterval(T0 + 8 * STEP, T0 + 9 * STEP, 2, 2 * STEP, True),
    )


def test_no_data_intervals_none_for_a_complete_or_empty_series() -> None:
    ts, _ = _series([1.0] * 10)
    assert ev.no_data_intervals(ts, STEP, T0, T0 + 9 * STEP) == ()
    assert ev.no_data_intervals(np.array([]), STEP, T0, T0 + 9 * STEP) == ()
    # Only the tail of an end that is not on the grid: the last evaluation is T0 + 9 steps.
    assert ev.no_data_intervals(ts, STEP, T0, T0 + 9 * STEP + 30) == ()


@given(st.lists(st.booleans(), min_size=1, max_size=60))
@settings(max_examples=200)
def test_no_data_intervals_cover_exactly_the_missing_steps_after_the_first(
    mask: list[bool],
) -> None:
    n = len(mask)
    ts = T0 + STEP * np.flatnonzero(mask).astype(np.float64)
    gaps = ev.no_data_intervals(ts, STEP, T0, T0 + (n - 1) * STEP)
    covered = {round((g.start - T0) / STEP) + k for g in gaps for k in range(g.evaluations)}
    first = mask.index(True) if any(mask) else n
    assert covered == {i for i in range(first, n) if not mask[i]}
    assert all(g.duration_s == g.evaluations * STEP for g in gaps)
    assert [g.open_end for g in gaps].count(True) == (1 if any(mask) and not mask[-1] else 0)


# --------------------------------------------------------------------------- comparable forecasts


@pytest.mark.parametrize(
    ("sli", "transform", "etl", "code"),
    [
        ('x{job="a"}', "none", "x", None),  # both plain: the same raw values
        ('{__name__="x"}', "none", 'x{job="a"}', None),
        ("sum(x)", "none", "sum(x)", None),  # the ETL analysed this very expression
        ('x{job="a"}', "rate", "x", "counter_rate"),
        ("x_total", "rate", "x_total", "counter_rate"),
        ('x{job="a"} offset 1m', "none", "x", "expression"),
        ('x{job="a"} > 0', "none", "x", "expression"),
        ('label_replace(x, "a", "b", "", "")', "none", "x", "expression"),
        ("x", "none", "x offset 5m", "expression"),  # the ETL's own is the expression
    ],
)
def test_forecast_comparable_only_for_the_quantity_the_sli_evaluates(
    sli: str, transform: str, etl: str, code: str | None
) -> None:
    found = ev.forecast_incomparable(sli, transform, etl)
    assert (found[0] if found else None) == code
