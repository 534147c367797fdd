"""Error-budget and burn-rate arithmetic: pure, hand-checkable, no I/O.

Definitions (the SRE workbook's, as Sloth and Pyrra use them):

- error budget ``B = 1 - objective`` (99.5 % → 0.005): the fraction of evaluations or events
  that may be bad over the period;
- compliance over the period ``= 1 - e_period`` where ``e_w`` is the error ratio (bad / all)
  over window ``w``;
- budget consumed ``= e_period / B`` (a fraction of the budget; above 1 = overspent),
  remaining ``= 1 - consumed``;
- burn rate over ``w`` ``= e_w / B``: 1 spends exactly the budget in one period, 14.4 spends
  2 % of a 30-day budget in one hour;
- time to exhaustion at burn rate ``b``: the budget goes at ``b / period`` of itself per
  second, so the remaining fraction ``r`` lasts ``r · period / b`` seconds (0 when already
  spent, None when ``b`` is 0 or unknown). This ignores old errors leaving the rolling
  window, like every burn-rate figure: it is the pessimistic, actionable one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    total: float  # allowed error ratio
    consumed: float | None  # fraction of the budget spent
    remaining: float | None
    total_s: float | None  # threshold SLIs: seconds of "outside" the period allows
    consumed_s: float | None
    total_events: float | None  # ratio SLIs: bad events the period allows
    consumed_events: float | None


@dataclass(frozen=True)
class SloFigures:
    compliance: float | None  # percent
    meets_objective: bool | None
    budget: Budget
    burn_rates: Mapping[str, float | None]  # window → burn rate
    exhaustion_s: float | None


def finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def error_budget(objective_percent: float) -> float:
    return round((100.0 - objective_percent) / 100.0, 12)


def burn_rate(error_ratio: float | None, budget: float) -> float | None:
    e = finite(error_ratio)
    return None if e is None else e / budget


def time_to_exhaustion(
    remaining: float | None, rate: float | None, period_s: float
) -> float | None:
    if remaining is None or rate is None:
        return None
    if remaining <= 0:
        return 0.0
    if rate <= 0:
        return None
    return remaining * period_s / rate


def figures(
    objective_percent: float,
    period_s: float,
    period_error_ratio: float | None,
    window_error_ratios: Mapping[str, float | None],
    current_window: str,
    *,
    threshold: bool,
    period_total_rate: float | None = None,
) -> SloFigures:
    """Everything ``GET /slos/{name}`` answers, from the error ratios the rules record.

    ``period_total_rate`` (ratio SLIs): mean events per second over the period, for the
    budget in events.
    """
    budget = error_budget(objective_percent)
    e = finite(period_error_ratio)
    consumed = None if e is None else e / budget
    remaining = None if consumed is None else 1.0 - consumed
    rates = {w: burn_rate(r, budget) for w, r in window_error_ratios.items()}
    total_events = consumed_events = None
    total_rate = finite(period_total_rate)
    if not threshold and total_rate is not None:
        events = total_rate * period_s
        total_events = budget * events
        consumed_events = None if e is None else e * events
    return SloFigures(
        compliance=None if e is None else 100.0 * (1.0 - e),
        meets_objective=None if e is None else 100.0 * (1.0 - e) >= objective_percent,
        budget=Budget(
            total=budget,
            consumed=consumed,
            remaining=remaining,
            total_s=budget * period_s if threshold else None,
            consumed_s=None if not threshold or e is None else e * period_s,
            total_events=total_events,
            consumed_events=consumed_events,
        ),
        burn_rates=rates,
        exhaustion_s=time_to_exhaustion(remaining, rates.get(current_window), period_s),
    )
