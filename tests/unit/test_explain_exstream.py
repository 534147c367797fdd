"""EXstream (sla_manager.explain.exstream): entropies and distance against hand-computed
cases, each filter, the clustering, predicates and their text."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

import sla_manager.explain.exstream as mod
from sla_manager.explain.exstream import (
    ExplainConfig,
    Predicate,
    best_predicate,
    class_entropy,
    correlation_clusters,
    distances,
    explain,
    format_value,
    predicate_text,
    reward_leap,
    segmentation_entropy,
    unit_of,
    worst_case_entropy,
)

LN2 = math.log(2)
GIB = 2.0**30


def _h(*sizes: int) -> float:
    n = sum(sizes)
    return sum(s / n * math.log(n / s) for s in sizes)


# --------------------------------------------------------------------------- entropies


def test_class_entropy_hand_computed() -> None:
    assert float(class_entropy(1, 1)) == pytest.approx(LN2)
    assert float(class_entropy(1, 3)) == pytest.approx(0.25 * math.log(4) + 0.75 * math.log(4 / 3))
    assert float(class_entropy(5, 0)) == 0.0
    assert np.allclose(class_entropy([2, 3], [2, 1]), [LN2, _h(3, 1)])


def test_worst_case_entropy_of_mixed_segments() -> None:
    # a == r: alternate one by one, 2a singletons.
    assert float(worst_case_entropy(1, 1)) == pytest.approx(LN2)
    assert float(worst_case_entropy(2, 2)) == pytest.approx(math.log(4))
    # 1 vs 3: R A RR -> segments of 1, 1, 2 within 4 points (1 + 2 runs of the majority).
    assert float(worst_case_entropy(1, 3)) == pytest.approx(_h(1, 1, 2))
    assert float(worst_case_entropy(3, 1)) == pytest.approx(_h(1, 1, 2))
    # 2 vs 7: 2 singletons, 3 runs of 7 as equal as possible (3, 2, 2).
    assert float(worst_case_entropy(2, 7)) == pytest.approx(_h(1, 1, 3, 2, 2))
    # it is the worst order: no other order of 2 vs 7 has more entropy than this one.
    assert float(worst_case_entropy(2, 7)) >= _h(1, 1, 1, 6) - 1e-12


def test_segmentation_entropy_counts_runs_of_one_class() -> None:
    # sorted classes R R A R A A: segments of 2, 1, 1, 2 points.
    h, mixed = segmentation_entropy([[1, 2, 3, 4, 5, 6]], [[0, 0, 1, 0, 1, 1]])
    assert h[0] == pytest.approx(_h(2, 1, 1, 2))
    assert mixed[0] == 0


def test_perfect_separation_is_distance_one() -> None:
    d = distances([[1, 2, 3, 10, 11], [9, 8, 7, 1, 0]], [False, False, False, True, True])
    assert np.allclose(d.distance, 1.0)
    assert np.allclose(d.segmentation_entropy, d.class_entropy)
    # imbalanced classes too (1 anomalous point above 99 reference points)
    x = np.arange(100.0)
    cls = np.zeros(100, dtype=bool)
    cls[-1] = True
    assert distances(x[None, :], cls).distance[0] == pytest.approx(1.0)


def test_interleaved_values_hand_computed() -> None:
    # R A R A ... 10 alternating points: 10 singletons, D = ln 2 / ln 10.
    cls = np.arange(10) % 2 == 1
    d = distances(np.arange(10.0)[None, :], cls)
    assert d.distance[0] == pytest.approx(LN2 / math.log(10))
    # R R A R A A
    d = distances([[1, 2, 3, 4, 5, 6]], np.array([0, 0, 1, 0, 1, 1], dtype=bool))
    assert d.distance[0] == pytest.approx(LN2 / _h(2, 1, 1, 2))


def test_identical_distributions_are_near_zero() -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((20, 2880))
    cls = np.zeros(2880, dtype=bool)
    cls[-240:] = True
    d = distances(x, cls).distance
    assert d.max() < 0.1
    # while a shifted copy of the same noise is far
    y = x.copy()
    y[:, -240:] += 10
    assert distances(y, cls).distance.min() == pytest.approx(1.0)


def test_mixed_segments_are_penalised() -> None:
    # A = {5, 5, 5}, R = {1, 2, 5}: the tie at 5 is a mixed segment of 1 R and 3 A.
    cls = np.array([False, False, False, True, True, True])
    tied = distances([[1, 2, 5, 5, 5, 5]], cls)
    expected_h = _h(2, 4) + 4 / 6 * _h(1, 1, 2)
    assert tied.segmentation_entropy[0] == pytest.approx(expected_h)
    assert tied.distance[0] == pytest.approx(LN2 / expected_h)
    assert tied.mixed_points[0] == 4
    # the same values without the tie separate perfectly
    assert distances([[1, 2, 4.9, 5, 5, 5]], cls).distance[0] == pytest.approx(1.0)
    # a constant feature is one mixed segment: as bad as full alternation
    flat = distances([[3.0] * 6], cls)
    assert flat.distance[0] == pytest.approx(LN2 / math.log(6))
    assert flat.distance[0] < 0.5


def test_distance_is_in_unit_interval_on_random_data() -> None:
    rng = np.random.default_rng(3)
    x = np.round(rng.standard_normal((200, 300)), 1)  # many ties
    cls = rng.random(300) < 0.2
    d = distances(x, cls).distance
    assert (d > 0).all()
    assert (d <= 1).all()


# --------------------------------------------------------------------------- filters


def test_reward_leap_keeps_what_is_above_the_largest_drop() -> None:
    assert reward_leap([1.0, 0.98, 0.95, 0.4, 0.35]) == 3
    assert reward_leap([0.9, 0.2, 0.19]) == 1
    assert reward_leap([0.7]) == 1
    assert reward_leap([1.0, 1.0]) == 2  # no drop between them: the drop is after them
    assert reward_leap([0.9, 0.88, 0.05]) == 2
    assert reward_leap([]) == 0
    # the drop is searched among the first window + 1 values only
    assert reward_leap([1.0, 0.9, 0.8, 0.7, 0.1], window=2) == 1


def _step_case(n: int = 1440, n_a: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, n))
    x[0, -n_a:] -= 8  # the cause: a step down in the anomalous interval
    x[1] = -2 * x[0] + 0.01 * rng.standard_normal(n)  # follows the cause (anti-correlated)
    x[2] = np.linspace(0, 50, n) + 0.1 * rng.standard_normal(n)  # drifts all the time
    x[3, -n_a:] += 2.5  # a weaker, unrelated change
    a = np.zeros(n, dtype=bool)
    a[-n_a:] = True
    r = np.zeros(n, dtype=bool)
    r[: n - n_a] = True
    return x, a, r


def test_false_positive_filter_drops_a_drifting_feature() -> None:
    x, a, r = _step_case()
    e = explain(x, a, r)
    assert e.distances.distance[2] > 0.8  # the drift separates the intervals well...
    assert 2 in [s.index for s in e.false_positives]  # ...but so it does within the reference
    assert list(e.order).index(2) >= e.demoted_from
    assert sorted(e.order) == list(range(len(x)))
    assert e.ranked[0].index in {0, 1}
    # with thresholds above any reachable value nothing is dropped: ranked by the distance
    # alone (the paper's ranking) the drift ranks with them
    off = ExplainConfig(window_false_positive_ratio=10.0, window_false_positive_distance=10.0)
    e2 = explain(x, a, r, config=dataclasses.replace(off, rank_by="distance"))
    assert 2 in e2.kept
    # ranked by the distance over its chance level it stays below the cause even unfiltered:
    # it separates windows of the reference as well as it separates the anomaly
    e3 = explain(x, a, r, config=off)
    assert not e3.false_positives
    by = {s.index: s for s in e3.ranked}
    assert e3.ranked[0].index in {0, 1} and 2 not in e3.kept
    assert by[2].chance_distance > 0.5 > by[0].chance_distance
    assert by[2].score == pytest.approx(by[2].distance / by[2].chance_distance)
    assert by[2].score < by[0].score / 5


def test_false_positive_intervals_can_be_given() -> None:
    x, a, r = _step_case()
    n = x.shape[1]
    fp_ref = np.zeros(n, dtype=bool)
    fp_ref[:600] = True
    fp_anom = np.zeros(n, dtype=bool)
    fp_anom[600:660] = True
    e = explain(x, a, r, false_positive_intervals=[(fp_ref, fp_anom)])
    assert list(e.order).index(2) >= e.demoted_from
    assert sorted(e.order) == list(range(len(x)))
    with pytest.raises(ValueError, match="reference-only"):
        explain(x, a, r, false_positive_intervals=[(fp_ref, a)])
    with pytest.raises(ValueError, match="at least one pair"):
        explain(x, a, r, false_positive_intervals=[])


def test_window_thresholds_apply_without_given_pairs() -> None:
    x, a, r = _step_case()
    e = explain(x, a, r)
    d_fp = {s.index: s.reference_distance for s in e.ranked + e.false_positives}
    d = e.distances.distance
    lenient = ExplainConfig(window_false_positive_ratio=10.0, window_false_positive_distance=10.0)
    kept = explain(x, a, r, config=lenient).ranked  # the windows' thresholds are used...
    assert 2 in {s.index for s in kept}
    strict = ExplainConfig(false_positive_ratio=1e-6, false_positive_distance=1e-6)
    assert explain(x, a, r, config=strict).ranked[0].index in {0, 1}  # ...not the pair's
    assert d_fp[2] >= 0.7 * d[2] or d_fp[2] >= 0.8


def test_ties_go_to_the_feature_that_moved_furthest_out() -> None:
    n, n_a = 400, 40
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, (2, n))
    x[0, -n_a:] = rng.uniform(1.2, 1.3, n_a)  # just above the reference's range
    x[1, -n_a:] = rng.uniform(5.0, 5.1, n_a)  # far above it
    a = np.zeros(n, dtype=bool)
    a[-n_a:] = True
    # (ranked by the distance alone: over the chance level, which differs by noise between
    # the two, they would not tie)
    e = explain(x, a, ~a, config=ExplainConfig(false_positive_ratio=10.0, rank_by="distance"))
    assert [s.index for s in e.ranked] == [1, 0]
    assert e.ranked[0].margin > e.ranked[1].margin > 0
    assert e.ranked[0].distance == e.ranked[1].distance == pytest.approx(1.0)


def test_lead_points_count_as_reference_where_the_sli_was_calm() -> None:
    """10 reference points, 3 gap points, 2 anomalous points. Feature 0 left its range 2
    points before the anomaly and stayed there (a batch job that started earlier): with its
    lead points as reference (the SLI inside its reference range there) the sorted classes
    are R x 11, A, R, A, so D = H(2, 12) / H(11, 1, 1, 1). Feature 1 kept climbing (a leak's
    ramp): its lead points are below the anomaly's, D stays 1. Feature 2 has no lead."""
    ref = np.arange(10.0)
    x = np.array(
        [
            [*ref, 5.0, 20.0, 22.0, 21.0, 23.0],
            [*ref, 5.0, 20.0, 21.0, 22.0, 23.0],
            [*ref, 5.0, 4.0, 3.0, 10.5, 11.0],
        ]
    )
    a = np.zeros(15, dtype=bool)
    a[-2:] = True
    r = np.zeros(15, dtype=bool)
    r[:10] = True
    base = ExplainConfig(
        rank_by="distance", window_false_positive_ratio=10.0, window_false_positive_distance=10.0
    )
    calm = np.array([*ref, 5.0, 5.0, 5.0, 50.0, 60.0])
    e = explain(x, a, r, sli=calm, config=base)
    d = e.distances.distance
    assert d[0] == pytest.approx(_h(2, 12) / _h(11, 1, 1, 1))
    assert d[1] == pytest.approx(1.0) and d[2] == pytest.approx(1.0)
    assert [s.index for s in e.ranked][-1] == 0
    assert next(s for s in e.ranked if s.index == 0).plain_distance == pytest.approx(1.0)
    assert [s.lead_points for s in sorted(e.ranked, key=lambda s: s.index)] == [2, 2, 0]
    # the SLI already out of its range at the first lead point: only the second counts,
    # R x 10, A, R, A: D = H(2, 11) / H(10, 1, 1, 1)
    partly = np.array([*ref, 5.0, 50.0, 5.0, 50.0, 60.0])
    d = explain(x, a, r, sli=partly, config=base).distances.distance
    assert d[0] == pytest.approx(_h(2, 11) / _h(10, 1, 1, 1))
    # the SLI responding all along (a disk filling at a steady rate), no SLI, or the lead
    # view off: the lead points are not used
    responding = np.array([*ref, 5.0, 50.0, 50.0, 50.0, 60.0])
    for sli in (responding, None):
        assert np.allclose(explain(x, a, r, sli=sli, config=base).distances.distance, 1.0)
    off = dataclasses.replace(base, lead_view="none")
    assert np.allclose(explain(x, a, r, sli=calm, config=off).distances.distance, 1.0)
    with pytest.raises(ValueError, match="sli"):
        explain(x, a, r, sli=calm[1:], config=base)


def test_seasonal_residuals_stop_a_daily_cycle_from_separating() -> None:
    """A smooth daily cycle separates two distant windows of its values perfectly (D = 1);
    against the same points a day earlier it is noise, and a change of this day is not."""
    day, n_a = 1440, 30
    t = np.arange(2 * day)
    rng = np.random.default_rng(7)
    cycle = 100 + 50 * np.sin(2 * np.pi * t / day) + rng.normal(0, 0.5, len(t))
    shift = 10 + rng.normal(0, 1.0, len(t))
    shift[-n_a:] += 4.0  # this day's change: 4 sd, above the reference's noise
    x = np.vstack([cycle, shift])
    a = np.zeros(len(t), dtype=bool)
    a[-n_a:] = True
    r = np.zeros(len(t), dtype=bool)
    r[-n_a - 420 : -n_a - 60] = True  # 6 h ending 1 h before, while the cycle climbs
    cfg = ExplainConfig(window_false_positive_ratio=10.0, window_false_positive_distance=10.0)
    plain = explain(x, a, r, config=cfg)
    assert plain.distances.distance[0] == pytest.approx(1.0)
    assert plain.ranked[0].seasonal_distance is None
    earlier = np.full(x.shape, np.nan)
    earlier[:, day:] = x[:, :-day]
    e = explain(x, a, r, seasonal=earlier, config=cfg)
    assert e.ranked[0].index == 1
    cyc = next(s for s in e.ranked if s.index == 0)
    assert cyc.plain_distance == pytest.approx(1.0)
    assert cyc.seasonal_distance is not None and cyc.seasonal_distance < 0.3
    assert cyc.distance == cyc.seasonal_distance == e.distances.distance[0]
    # a row without a day of history keeps its plain distance
    earlier[0, -n_a:] = np.nan
    e2 = explain(x, a, r, seasonal=earlier, config=cfg)
    assert e2.distances.distance[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        explain(x, a, r, seasonal=earlier[:, 1:])


def test_pipeline_ranks_clusters_and_explains() -> None:
    x, a, r = _step_case()
    e = explain(x, a, r)
    assert {e.ranked[0].index, e.ranked[1].index} == {0, 1}
    assert e.ranked[0].distance == pytest.approx(1.0)
    assert set(e.kept) == {0, 1}  # the weaker change (3) lies below the leap
    assert len(e.clusters) == 1
    (c,) = e.clusters
    assert {c.representative, *c.moves_with} == {0, 1}
    assert c.correlations[0] == pytest.approx(-1.0, abs=1e-3)
    (p,) = e.predicates
    assert p.index == c.representative
    assert p.balanced_accuracy == pytest.approx(1.0)
    assert e.flags(x)[a].all()
    assert not e.flags(x)[r].any()
    assert set(e.timings_ms) == {"rank", "false_positives", "leap", "clusters", "predicates"}
    s0 = next(s for s in e.ranked if s.index == 0)
    assert s0.direction == "below"
    assert s0.anomalous_range[1] < s0.reference_range[0]


def test_min_distance_and_max_predicates() -> None:
    x, a, r = _step_case()
    e = explain(x, a, r, config=ExplainConfig(min_distance=1.01))
    assert e.kept == () and e.predicates == () and e.clusters == ()
    e = explain(x, a, r, config=ExplainConfig(correlation_threshold=1.0, max_predicates=1))
    assert len(e.clusters) == 2
    assert len(e.predicates) == 1


def test_chunked_and_whole_computations_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 400))
    x[:, -40:] += rng.uniform(0, 3, (50, 1))
    a = np.zeros(400, dtype=bool)
    a[-40:] = True
    r = ~a
    whole = explain(x, a, r)
    monkeypatch.setattr(mod, "_CHUNK_CELLS", 1000)  # 2 rows per chunk
    chunked = explain(x, a, r)
    assert np.array_equal(whole.distances.distance, chunked.distances.distance)
    assert np.array_equal(whole.order, chunked.order)
    assert np.allclose(whole.distances.distance, distances(x, a).distance)


# --------------------------------------------------------------------------- clustering


def test_correlation_clusters_greedy_in_rank_order() -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal(500)
    other = rng.standard_normal(500)
    rows = np.array([base, 2 * base + 0.05 * rng.standard_normal(500), other, -base, np.ones(500)])
    groups = correlation_clusters(rows, 0.9)
    assert [(g[0], g[1]) for g in groups] == [(0, (1, 3)), (2, ()), (4, ())]
    assert groups[0][2][1] == pytest.approx(-1.0)
    assert len(correlation_clusters(rows, 1.0)) >= 4


# --------------------------------------------------------------------------- predicates


def test_best_predicate() -> None:
    op, t, acc = best_predicate([5, 6, 7, 1, 2], [False, False, False, True, True])
    assert (op, t, acc) == ("<", 3.5, 1.0)
    op, t, acc = best_predicate([1, 2, 3, 9, 2.5], [False, False, False, True, True])
    assert op == ">" and t == pytest.approx(2.25) and acc == pytest.approx(1 - 1 / 6)
    assert best_predicate([4, 4, 4], [False, True, False]) == (">", 4.0, 0.5)


def test_predicate_text_in_human_units() -> None:
    p = Predicate(0, "<", 1.9 * GIB, 1.0, 1.0, 0.0)
    key = 'node_memory_MemAvailable_bytes{instance="demo-host:9100"}'
    assert (
        predicate_text(key, "node_memory_MemAvailable_bytes", p)
        == 'node_memory_MemAvailable_bytes{instance="demo-host:9100"} < 1.9 GiB'
    )
    rate = Predicate(0, ">", 12.34 * 2**20, 1.0, 1.0, 0.0)
    assert (
        predicate_text(
            'node_disk_written_bytes_total{device="sda"}', "node_disk_written_bytes_total", rate
        )
        == 'rate(node_disk_written_bytes_total{device="sda"}[5m]) > 12.3 MiB/s'
    )
    assert format_value(20000, "") == "20000"
    assert format_value(41234.5, "") == "41200"
    assert format_value(0.4567, "") == "0.457"
    assert format_value(3 * GIB, "bytes") == "3 GiB"
    assert format_value(512, "bytes") == "512 B"
    assert format_value(1023.6 * 2**20, "bytes") == "1020 MiB"  # 3 significant digits
    assert format_value(0.25, "seconds") == "250 ms"
    assert format_value(12.5, "/s") == "12.5/s"
    assert unit_of("node_cpu_seconds_total") == "s/s"
    assert unit_of("node_filefd_allocated") == ""
    assert unit_of("node_network_receive_packets_total") == "/s"
    assert unit_of("node_vmstat_pgmajfault", counter=True) == "/s"
    assert (
        predicate_text("node_vmstat_pgmajfault{}", "node_vmstat_pgmajfault", rate, counter=True)
        == "rate(node_vmstat_pgmajfault{}[5m]) > 12900000/s"
    )


# --------------------------------------------------------------------------- input and results


def test_bad_input_is_refused_with_a_reason() -> None:
    x = np.zeros((2, 10))
    a = np.zeros(10, dtype=bool)
    a[-2:] = True
    r = ~a
    with pytest.raises(ValueError, match="both need points"):
        explain(x, np.zeros(10, dtype=bool), r)
    with pytest.raises(ValueError, match="overlap"):
        explain(x, a, np.ones(10, dtype=bool))
    with pytest.raises(ValueError, match="boolean mask"):
        explain(x, a.astype(int), r)
    with pytest.raises(ValueError, match="boolean mask"):
        explain(x, a[:5], r)
    with pytest.raises(ValueError, match="non-empty"):
        explain(np.zeros((0, 10)), a, r)
    bad = x.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="feature 1 has a non-finite"):
        explain(bad, a, r)
    with pytest.raises(ValueError, match="both classes"):
        distances(x, np.zeros(10, dtype=bool))
    bad_configs: list[dict[str, Any]] = [
        {"correlation_threshold": 1.5},
        {"false_positive_quantile": 2.0},
        {"false_positive_ratio": 0.0},
        {"false_positive_distance": -1.0},
        {"false_positive_windows": 0},
        {"min_relative_change": -0.1},
        {"tie_decimals": -1},
        {"max_predicates": 0},
        {"min_distance": -0.5},
        {"lead_view": "gap"},
    ]
    for kwargs in bad_configs:
        with pytest.raises(ValueError):
            ExplainConfig(**kwargs)


def test_results_are_frozen() -> None:
    x, a, r = _step_case()
    e = explain(x, a, r)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.kept = ()  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        e.distances.distance[0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        e.order[0] = 0
    with pytest.raises(TypeError):
        e.timings_ms["rank"] = 0.0  # type: ignore[index]
