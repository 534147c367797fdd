"""From Prometheus range results to the explanation's matrix (sla_manager.explain.features)."""

from __future__ import annotations

import numpy as np

from sla_manager.explain.features import bucket_means, counter_rates, to_matrix


def test_counter_rates_are_reset_aware() -> None:
    v = np.array([0.0, 15, 30, 45, 5, 20, 35])
    r = counter_rates(v, 15, 2)
    # the reset at index 4 counts as 5 (restarted from 0): windows over it see 15 + 5 in 30 s
    assert np.allclose(r[2:], [1.0, 1.0, 20 / 30, 20 / 30, 1.0])
    assert np.allclose(r[:2], r[2])
    assert (r >= 0).all()
    assert np.allclose(counter_rates(np.array([0.0, 30.0]), 15, 4), [2.0, 2.0])
    assert len(counter_rates(np.array([]), 15, 4)) == 0


def test_to_matrix_places_fills_and_reports_gaps() -> None:
    grid = np.array([100.0, 115, 130, 145, 160])
    m, present = to_matrix(
        [
            (np.array([115.0, 145.0]), np.array([1.0, 3.0])),  # gaps filled
            (np.array([100.0, 115.0, 130.0, 145.0, 160.0]), np.arange(5.0)),
            (np.array([]), np.array([])),  # no sample at all
            (np.array([130.0004, 999.0]), np.array([7.0, 8.0])),  # off-grid one ignored
        ],
        grid,
    )
    assert np.allclose(m[0], [1, 1, 1, 3, 3])
    assert present[0].tolist() == [False, True, False, True, False]
    assert np.allclose(m[1], np.arange(5.0))
    assert np.isnan(m[2]).all() and not present[2].any()
    assert np.allclose(m[3], 7.0)
    assert present[3].sum() == 1


def test_bucket_means_average_the_samples_of_equal_buckets() -> None:
    grid = 100.0 + 15 * np.arange(7)
    row = np.array([1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0])
    present = np.array([True, True, False, False, True, True, True])
    step, points = bucket_means(grid, row, present, 3)  # 7 points: buckets of 3, 3, 1
    assert step == 45.0
    # the filled values where there was no sample do not count; no sample at all: None
    assert points == [(100.0, 2.0), (145.0, 10.0), (190.0, 13.0)]
    step, points = bucket_means(grid, row, np.zeros(7, dtype=bool), 10)
    assert step == 15.0 and [v for _t, v in points] == [None] * 7
    assert bucket_means(grid[:0], row[:0], present[:0], 5) == (0.0, [])
