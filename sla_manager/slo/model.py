"""SLO definitions and answers (pydantic; the OpenAPI schema of ``/slos`` comes from here).

An SLO is an SLI, an objective and a period:

- ``sli``: the name of an existing **threshold** SLI (``/slis``). One evaluation per rule
  evaluation interval; an evaluation is *good* when every series the selector returns is
  inside the SLI's range (a series outside makes the whole evaluation bad).
- ``ratio``: an **event ratio**, as in Sloth and Pyrra: ``errors`` and ``total`` are PromQL
  expressions of per-second event rates with a ``{{.window}}`` placeholder where the range
  goes, e.g. ``sum(rate(http_requests_total{code=~"5.."}[{{.window}}]))``.
- ``objective``: the percentage of good evaluations (or events) promised, e.g. ``99.5``.
- ``period``: the rolling window the objective applies to, e.g. ``30d``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictStr,
    model_validator,
)

from sla_manager.evaluation import parse_duration
from sla_manager.models import Epoch, LabelName, LabelValue, Slug

WINDOW_PLACEHOLDER = "{{.window}}"
MIN_PERIOD_S = 86_400
MAX_PERIOD_S = 365 * 86_400
MAX_QUERY_CHARS = 4096
# Labels the generated rules set themselves: an SLO's own labels may not replace them.
RESERVED_LABELS = frozenset({"slo", "sli", "severity", "alertname"})
_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.DOTALL)


def _ratio_query(text: str) -> str:
    if WINDOW_PLACEHOLDER not in text:
        raise ValueError(
            f"the query needs the {WINDOW_PLACEHOLDER} placeholder where its range goes, e.g. "
            "sum(rate(http_requests_total[{{.window}}]))"
        )
    others = [t for t in _TEMPLATE.findall(text) if t != WINDOW_PLACEHOLDER]
    if others:
        raise ValueError(f"only {WINDOW_PLACEHOLDER} may be templated, not {others[0]}")
    return text


def _period(text: str) -> str:
    seconds = parse_duration(text)
    if not MIN_PERIOD_S <= seconds <= MAX_PERIOD_S:
        raise ValueError("period must be between 1d and 365d, e.g. 7d, 28d, 30d")
    return text


def _labels(labels: dict[str, str]) -> dict[str, str]:
    for name in labels:
        if name in RESERVED_LABELS or name.startswith("__"):
            raise ValueError(
                f"label {name!r} is set by the generated rules: use another name "
                f"(reserved: {', '.join(sorted(RESERVED_LABELS))}, and names starting with __)"
            )
    return labels


RatioQuery = Annotated[
    StrictStr,
    Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=r"\S"),
    AfterValidator(_ratio_query),
]
Period = Annotated[
    StrictStr,
    AfterValidator(_period),
    Field(description="the rolling period of the objective, 1d to 365d", examples=["30d"]),
]
Objective = Annotated[
    StrictFloat,
    Field(
        gt=0,
        lt=100,
        allow_inf_nan=False,
        description="percent of good evaluations or events",
        examples=[99.5],
    ),
]
Probability = Annotated[StrictFloat, Field(gt=0, lt=1, allow_inf_nan=False)]
SloLabels = Annotated[
    dict[LabelName, LabelValue],
    Field(max_length=32),
    AfterValidator(_labels),
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class RatioSli(_Request):
    errors: RatioQuery = Field(
        description="per-second rate of bad events, with {{.window}} as its range",
        examples=['sum(rate(http_requests_total{code=~"5.."}[{{.window}}]))'],
    )
    total: RatioQuery = Field(
        description="per-second rate of all events, with {{.window}} as its range",
        examples=["sum(rate(http_requests_total[{{.window}}]))"],
    )

    def errors_at(self, window: str) -> str:
        return self.errors.replace(WINDOW_PLACEHOLDER, window)

    def total_at(self, window: str) -> str:
        return self.total.replace(WINDOW_PLACEHOLDER, window)


class SloSpec(_Request):
    """What PUT /slos/{name} replaces."""

    sli: Slug | None = Field(default=None, description="an existing threshold SLI's name")
    ratio: RatioSli | None = Field(default=None, description="instead of `sli`: an event ratio")
    objective: Objective
    period: Period = "30d"
    description: StrictStr = Field(default="", max_length=2048)
    labels: SloLabels = Field(
        default_factory=dict, description="added to the SLO's recorded series and alerts"
    )
    breach_probability: Probability | None = Field(
        default=None,
        description="threshold SLIs: alert when the forecast's breach probability stays above "
        "this (default SLO_BREACH_PROBABILITY)",
    )

    @model_validator(mode="after")
    def _one_sli(self) -> Self:
        if (self.sli is None) == (self.ratio is None):
            raise ValueError("give exactly one of `sli` (a threshold SLI's name) or `ratio`")
        if self.ratio is not None and self.breach_probability is not None:
            raise ValueError("breach_probability applies to threshold SLIs (`sli`) only")
        return self

    @property
    def kind(self) -> Literal["threshold", "ratio"]:
        return "threshold" if self.sli is not None else "ratio"

    @property
    def period_s(self) -> int:
        return parse_duration(self.period)

    @property
    def error_budget(self) -> float:
        """The allowed fraction of bad evaluations or events (99.5 % → 0.005), rounded so
        that 100 - 99.5 gives 0.005 and not 0.0050000000000000044."""
        return round((100.0 - self.objective) / 100.0, 12)


class SloCreate(SloSpec):
    name: Slug


class Slo(_Response):
    name: str
    sli: str | None
    ratio: dict[str, str] | None
    objective: float
    period: str
    description: str
    labels: dict[str, str]
    breach_probability: float | None
    created_at: int
    updated_at: int

    def spec(self) -> SloSpec:
        return SloSpec.model_validate(
            self.model_dump(include=set(SloSpec.model_fields)), strict=False
        )


# --------------------------------------------------------------------------- answers


class BurnRateOut(_Response):
    window: str
    error_ratio: float | None = Field(description="bad / all over the window; null: no data")
    burn_rate: float | None = Field(description="error_ratio / error budget; 1 = sustainable")


class BudgetOut(_Response):
    total: float = Field(description="the allowed error ratio over the period (1 - objective)")
    consumed: float | None = Field(description="fraction of the budget used in the period")
    remaining: float | None = Field(description="1 - consumed (negative: overspent)")
    total_s: float | None = Field(
        description="threshold SLIs: the budget as time outside the range over the period"
    )
    consumed_s: float | None
    total_events: float | None = Field(description="ratio SLIs: bad events the budget allows")
    consumed_events: float | None = Field(description="ratio SLIs: bad events in the period")


class ProjectionOut(_Response):
    """Threshold SLOs: the budget's future from the stored forecasts of the SLI's series."""

    horizon_s: int = Field(description="how far the forecasts reach (SLO_BREACH_HORIZON_S)")
    forecast_points: int = Field(description="forecast timestamps used")
    bad_fraction: float = Field(
        description="expected fraction of the coming evaluations outside the range"
    )
    bad_fraction_low: float = Field(description="timestamps whose 95 % interval is all outside")
    bad_fraction_high: float = Field(description="timestamps whose 95 % interval reaches outside")
    burn_rate: float
    burn_rate_low: float
    burn_rate_high: float
    exhaustion_s: float | None = Field(
        description="time to exhaustion if the forecast burn rate held; null: not burning"
    )
    exhaustion_s_earliest: float | None = Field(description="at the high burn rate")
    exhaustion_s_latest: float | None = Field(description="at the low one; null: not burning")


class AlertWindowOut(_Response):
    """One burn-rate alert condition (``SLO_WINDOWS``): burn rate above ``factor`` over
    both windows."""

    severity: str
    factor: float
    long: str
    short: str


class SloAlertOut(_Response):
    alertname: str
    state: str = Field(description="Prometheus' alertstate: pending or firing")
    severity: str | None
    labels: dict[str, str] = Field(description="the alert's labels")


class SloStatus(_Response):
    slo: str
    definition: Slo
    kind: Literal["threshold", "ratio"]
    objective: float
    period: str
    evaluated_at: float
    compliance: float | None = Field(description="percent good over the period; null: no data")
    meets_objective: bool | None
    budget: BudgetOut
    burn_rates: list[BurnRateOut]
    burn_rate_window: str = Field(description="the window of the current burn rate")
    exhaustion_s: float | None = Field(
        description="seconds until the budget is used up at the current burn rate; 0: already "
        "exhausted; null: not burning (or no data)"
    )
    source: Literal["recording_rules", "raw_queries"] = Field(
        description="recording_rules: read from the generated rules' series"
    )
    projection: ProjectionOut | None = Field(
        default=None,
        description="threshold SLOs with fresh stored forecasts: exhaustion projected from them",
    )
    alert_windows: list[AlertWindowOut] = Field(
        default_factory=list, description="the burn-rate alerts' thresholds (SLO_WINDOWS)"
    )
    alerts: list[SloAlertOut] | None = Field(
        default=None,
        description="the SLO's alerts pending or firing in Prometheus (its ALERTS series) at "
        "`evaluated_at`; null unless alerts=true",
    )


class SloStatusQuery(_Request):
    source: Literal["recording_rules", "raw_queries"] = Field(
        default="recording_rules",
        description="recording_rules: the generated rules' series (one query, fast; data from "
        "when Prometheus loaded the rules); raw_queries: from the SLI itself, a query per window",
    )
    time: Epoch | None = Field(default=None, description="evaluate at this time (default now)")
    alerts: bool = Field(
        default=False, description="also list the SLO's pending and firing alerts (one query)"
    )


DEFAULT_HISTORY_POINTS = 121
MAX_HISTORY_POINTS = 500


class BudgetHistoryQuery(_Request):
    source: Literal["recording_rules", "raw_queries"] = Field(
        default="recording_rules",
        description="as in GET /slos/{name}: recording_rules has no history before "
        "Prometheus loaded the rules, raw_queries computes each point from the SLI itself",
    )
    end: Epoch | None = Field(default=None, description="the last point's time (default now)")
    points: int = Field(
        default=DEFAULT_HISTORY_POINTS,
        ge=2,
        le=MAX_HISTORY_POINTS,
        description="how many times, evenly spread over the period ending at `end`",
    )


class BudgetHistoryOut(_Response):
    slo: str
    period: str
    source: Literal["recording_rules", "raw_queries"]
    start: float
    end: float
    step_s: int = Field(description="seconds between points: the period over points - 1")
    budget_total: float = Field(description="the allowed error ratio (1 - objective)")
    points: list[tuple[float, float | None]] = Field(
        description="`[t, remaining]`: the budget left at t, as `GET /slos/{name}?time=t` "
        "answers it (over the period ending at t); null: no data then"
    )
