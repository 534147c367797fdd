"""``/etl/execution-time``'s figures are consistent: exact counts that never shrink as the
window grows, and quantiles no larger than the maximum."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sla_common.prometheus import InstantSample, RangeSeries
from sla_manager.routes.etl import (
    LOOKBACK_S,
    _collect,
    capped,
    counter_increase,
    execution_queries,
)


def test_counter_increase_is_exact_and_handles_a_restart() -> None:
    ts = [100, 115, 130, 145, 160]
    vs = [3, 5, 7, 1, 4]
    # from the base 7 at 130: a restart (1 run since), then +3
    assert counter_increase(ts, vs, since=130) == 4.0
    # the last sample at or before `since` is the base: 3 -> 5 -> 7, restart, 1 -> 4
    assert counter_increase(ts, vs, since=114) == 8.0
    assert counter_increase(ts, vs, since=160) == 0.0
    # no sample at or before `since`: the counter started in the window, from zero
    assert counter_increase(ts, vs, since=99) == 11.0


def test_a_counter_that_started_inside_the_window_counts_from_zero() -> None:
    # 2.36 then 2.10 a minute later was increase() extrapolating a series that began in the
    # window; the process's counter began at zero, so its first sample is all increase
    assert counter_increase([1000, 1015, 1030], [2, 3, 3], since=0) == 3.0


@given(
    st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=40),
    st.integers(min_value=0, max_value=700),
    st.integers(min_value=0, max_value=700),
)
def test_counts_never_shrink_as_the_window_grows(rises: list[int], a: int, b: int) -> None:
    values = np.cumsum(rises).astype(float)
    values[len(values) // 2 :] -= values[len(values) // 2 - 1] if len(values) > 1 else 0  # reset
    values = np.maximum(values, 0)
    ts = 15.0 * np.arange(values.size)
    short, long_ = max(a, b), min(a, b)  # `since` further back = a longer window
    n_short = counter_increase(ts, values, since=short)
    n_long = counter_increase(ts, values, since=long_)
    assert n_long >= n_short >= 0
    assert n_long == int(n_long)


def test_quantiles_are_capped_at_the_maximum() -> None:
    stats: dict[str, float | None] = {
        "count": 3.0,
        "p50_s": 3e-4,
        "p95_s": 4.75e-4,
        "max_s": 3.65e-4,
    }
    assert capped(stats) == {"count": 3.0, "p50_s": 3e-4, "p95_s": 3.65e-4, "max_s": 3.65e-4}
    unknown: dict[str, float | None] = {"count": 3.0, "p50_s": 0.1, "p95_s": 0.2, "max_s": None}
    assert capped(unknown) == unknown
    assert capped({"count": 0.0, "p50_s": None, "p95_s": None, "max_s": 1.0})["p95_s"] is None


def test_queries_read_raw_samples_for_the_count_and_promql_for_the_rest() -> None:
    q = execution_queries("h", "g", 'job="x"', 3600, "analysis")
    assert q["count"] == f'h_count{{job="x"}}[{3600 + LOOKBACK_S}s]'
    assert q["p95_s"] == (
        'histogram_quantile(0.95, sum by (analysis, le) (increase(h_bucket{job="x"}[3600s])))'
    )
    assert q["max_s"] == 'max by (analysis) (max_over_time(g{job="x"}[3600s]))'
    assert execution_queries("h", "g", "", 60, "")["p50_s"].startswith(
        "histogram_quantile(0.5, sum by (le) ("
    )


class FakePrometheus:
    def query_samples(self, selector: str, time: float) -> list[RangeSeries]:
        def s(analysis: str, instance: str, vs: list[float]) -> RangeSeries:
            ts = np.array([time - 30, time - 15, time], dtype=np.float64)
            return RangeSeries(
                {"analysis": analysis, "instance": instance}, ts, np.array(vs, dtype=np.float64)
            )

        return [s("acf", "a", [0, 1, 2]), s("acf", "b", [5, 6, 6]), s("hp", "a", [1, 1, 1])]

    def query(self, query: str, time: float | None = None) -> list[InstantSample]:
        value = {"p50_s": 0.0003, "p95_s": 0.000475, "max_s": 0.000365}
        stat = "max_s" if "max_over_time" in query else "p95_s" if "0.95" in query else "p50_s"
        return [InstantSample({"analysis": "acf"}, time or 0.0, value[stat])]


def test_collect_sums_counts_per_analysis_and_caps_p95() -> None:
    q = execution_queries("h", "g", 'job="x"', 20, "analysis")
    got = _collect(FakePrometheus(), q, 1000.0, 20, "analysis")  # type: ignore[arg-type]
    # window (980, 1000]: acf on a rose 0 -> 1 -> 2 (+2), on b 5 -> 6 -> 6 (+1); hp not at all
    assert got["acf"] == {"count": 3.0, "p50_s": 0.0003, "p95_s": 0.000365, "max_s": 0.000365}
    assert got["hp"]["count"] == 0.0
