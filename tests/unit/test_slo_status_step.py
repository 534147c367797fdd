"""The raw-query baseline of GET /slos/{name} stays inside the client's subquery bound."""

from __future__ import annotations

import pytest

from sla_common.prometheus import MAX_POINTS_PER_QUERY
from sla_manager.slo.status import subquery_step


@pytest.mark.parametrize(
    ("window_s", "step_s", "expected"),
    [
        (300, 60, 60),  # 5 evaluations
        (3 * 86_400, 60, 60),  # 4,320: within the bound
        (30 * 86_400, 60, 240),  # 43,200 at 60 s: 10,800 at 240 s
        (28 * 86_400, 15, 225),
        (MAX_POINTS_PER_QUERY * 60, 60, 60),  # exactly the bound
        (MAX_POINTS_PER_QUERY * 60 + 1, 60, 120),
    ],
)
def test_the_step_is_the_smallest_multiple_within_the_bound(
    window_s: int, step_s: int, expected: int
) -> None:
    step = subquery_step(window_s, step_s)
    assert step == expected
    assert step % step_s == 0 and window_s / step <= MAX_POINTS_PER_QUERY
