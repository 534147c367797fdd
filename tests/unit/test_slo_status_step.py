"""The raw-query baseline of GET /slos/{name} stays inside the client's subquery bound; the
budget history (GET /slos/{name}/budget-history) spreads its points over the period."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest

from sla_common.prometheus import MAX_POINTS_PER_QUERY, PrometheusClient, RangeSeries
from sla_manager.models import Sli
from sla_manager.slo.model import Slo, SloSpec
from sla_manager.slo.rules import ERROR_RATIO
from sla_manager.slo.status import budget_history, history_grid, raw_ratio_expr, subquery_step


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


# --------------------------------------------------------------------------- budget history


class _RangeOnly:
    """Answers range queries with the recorded ratios of two windows: 1 % over the period
    (30d), 50 % over 1h, at every second point; records the queries."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, float, float, float]] = []

    def query_range(self, query: str, start: float, end: float, step: float) -> list[RangeSeries]:
        self.asked.append((query, start, end, step))
        ts = np.arange(start, end + step / 2, step)[::2]
        return [
            RangeSeries({"__name__": f"{ERROR_RATIO}30d", "slo": "s"}, ts, np.full(ts.size, 0.01)),
            RangeSeries({"__name__": f"{ERROR_RATIO}1h", "slo": "s"}, ts, np.full(ts.size, 0.5)),
        ]


def _threshold_slo() -> tuple[Slo, Sli]:
    sli = Sli(
        name="fd", selector="up", min=None, max=1.0, description="", labels={},
        created_at=0, updated_at=0,
    )  # fmt: skip
    spec = SloSpec(sli="fd", objective=99.5, period="30d")
    return Slo(name="s", **spec.model_dump(), created_at=0, updated_at=0), sli


@pytest.mark.parametrize(
    ("period_s", "points", "step"),
    [
        (30 * 86_400, 121, 21_600),
        (30 * 86_400, 2, 30 * 86_400),
        (86_400, 7, 14_400),
        (86_400, 500, 174),
    ],
)
def test_the_history_spreads_its_points_over_the_period(
    period_s: int, points: int, step: int
) -> None:
    start, got = history_grid(period_s, points, 1_000_000.0)
    assert got == step and start == 1_000_000.0 - step * (points - 1)
    assert period_s <= step * (points - 1) < period_s + points  # whole seconds, rounded up


def test_the_history_is_the_period_ratio_as_budget_left_with_gaps_as_null() -> None:
    slo, sli = _threshold_slo()
    prom = _RangeOnly()
    end = 1_760_000_000.0
    h = budget_history(
        cast(PrometheusClient, prom), slo, sli, source="recording_rules", raw_step_s=60,
        end=end, points=5,
    )  # fmt: skip
    (query, start, stop, step), *more = prom.asked
    assert not more and 'slo="s"' in query and stop == end and step == 30 * 86_400 / 4
    assert h.start == start and h.step_s == step and h.budget_total == 0.005
    # 1 % against a 0.5 % budget: twice spent, 1 - 2 = -1 left; the 1h series is not read
    assert [v for _t, v in h.points] == pytest.approx([-1.0, None, -1.0, None, -1.0])
    assert [t for t, _v in h.points] == [start + k * step for k in range(5)]
    # from the SLI itself: the raw period expression, the subquery within its bound
    prom = _RangeOnly()
    budget_history(
        cast(PrometheusClient, prom), slo, sli, source="raw_queries", raw_step_s=60,
        end=end, points=5,
    )  # fmt: skip
    assert prom.asked[0][0] == raw_ratio_expr(slo, sli, "30d", 60)
    assert prom.asked[0][0].endswith("[30d:240s])")
