"""Request and response models of the REST API (pydantic; the OpenAPI schema comes from here).

Requests are strict: unknown fields are refused (``extra="forbid"``), numbers must be JSON
numbers and finite. Responses carry epoch seconds (UTC) and report values JSON cannot hold
(NaN, ±Inf) as ``null``, with ``state`` still saying where the value lies.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictStr,
    WithJsonSchema,
    model_validator,
)

from sla_manager.evaluation import (
    DEFAULT_BREACH_PROBABILITY_THRESHOLD,
    DURATION_PATTERN,
    Bounds,
    Breach,
    Distribution,
    DistributionSource,
    PredictionMode,
    parse_duration,
)

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
LABEL_NAME_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
MAX_EPOCH_S = 32_503_680_000  # year 3000: catches milliseconds passed as seconds
MAX_WINDOW_S = 7 * 86_400
MAX_HORIZON_S = 86_400
MAX_STEP_S = 86_400
MAX_NO_DATA_WINDOW_S = 86_400
# Prometheus' own limit on points per series of one range query.
MAX_POINTS_PER_SERIES = 11_000

_SLUG = re.compile(SLUG_PATTERN)
_SLUG_RULE = (
    "lower-case letters, digits and '-', starting with a letter or digit; at most 63 characters"
)


def _slug(text: str) -> str:
    if not _SLUG.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid name: {_SLUG_RULE}")
    return text


def _duration(text: str) -> str:
    parse_duration(text)  # its ValueError says what a duration looks like
    return text


# The checks are validators rather than `pattern=` so that the 422 says what is expected
# in words; the JSON schema still carries the pattern, for clients and generators.
Slug = Annotated[
    StrictStr,
    AfterValidator(_slug),
    WithJsonSchema(
        {"type": "string", "pattern": SLUG_PATTERN, "description": _SLUG_RULE},
    ),
    Field(examples=["fd-allocated"]),
]
LabelName = Annotated[StrictStr, Field(pattern=LABEL_NAME_PATTERN, max_length=128)]
LabelValue = Annotated[StrictStr, Field(max_length=1024)]
Epoch = Annotated[
    float,
    Field(ge=0, le=MAX_EPOCH_S, allow_inf_nan=False, description="Unix time in seconds (UTC)"),
]
Duration = Annotated[
    str,
    AfterValidator(_duration),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "a whole number with an optional unit s, m, h, d or w (e.g. 1h)",
        }
    ),
]
Bound = Annotated[StrictFloat, Field(allow_inf_nan=False)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


# --------------------------------------------------------------------------- SLIs


class SliSpec(_Request):
    """What PUT /slis/{name} replaces (a rename is DELETE + POST)."""

    # "min, max or both" in the schema too, so that clients and generators can see it;
    # min <= max cannot be said in JSON Schema and is checked below.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["min"], "properties": {"min": {"type": "number"}}},
                {"required": ["max"], "properties": {"max": {"type": "number"}}},
            ]
        }
    )

    selector: StrictStr = Field(
        min_length=1,
        max_length=4096,
        pattern=r"\S",
        description="PromQL selector or expression returning an instant vector or a scalar; "
        "checked by Prometheus when stored",
        examples=['node_filefd_allocated{job="host"}'],
    )
    min: Bound | None = Field(default=None, description="values below it violate")
    max: Bound | None = Field(default=None, description="values above it violate")
    description: StrictStr = Field(default="", max_length=2048)
    labels: dict[LabelName, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="narrow the SLI to the series having all these label values "
        "(exact match on the query's result, so it works for any expression)",
        examples=[{"device": "/dev/sda2"}],
    )
    missing_data_is_violation: StrictBool = Field(
        default=False,
        description="count a series without data (and an SLI whose selector matches "
        "nothing) as a violation; reported as no_data either way",
    )
    breach_probability_threshold: Annotated[StrictFloat, Field(gt=0, le=1)] = Field(
        default=DEFAULT_BREACH_PROBABILITY_THRESHOLD,
        description="a forecast whose probability of leaving the range within the horizon "
        "is at least this is a predicted violation (forecast-violations, mode=probability)",
    )

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both: an SLI needs an allowed range")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    def bounds(self) -> Bounds:
        return Bounds(self.min, self.max)


class SliCreate(SliSpec):
    name: Slug


class Sli(_Response):
    name: str
    selector: str
    min: float | None
    max: float | None
    description: str
    labels: dict[str, str]
    missing_data_is_violation: bool = False
    breach_probability_threshold: float = DEFAULT_BREACH_PROBABILITY_THRESHOLD
    created_at: int
    updated_at: int

    def bounds(self) -> Bounds:
        return Bounds(self.min, self.max)


# --------------------------------------------------------------------------- query parameters


class ListQuery(_Request):
    limit: int = Field(default=100, ge=1, le=1000, description="at most this many, by name")
    after: Annotated[str | None, Field(max_length=63, description="page after this name")] = None


class StatusQuery(_Request):
    time: Epoch | None = Field(default=None, description="evaluate at this time (default now)")
    window: Duration = Field(
        default="1h",
        description="a series with a value in this window before `time` but none at `time` "
        "is reported as no_data (at most 1d)",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if parse_duration(self.window) > MAX_NO_DATA_WINDOW_S:
            raise ValueError(f"window must be at most {MAX_NO_DATA_WINDOW_S // 3600} h")
        return self


class ViolationsQuery(_Request):
    window: Duration | None = Field(
        default=None, description="the range ending at `end`, e.g. 1h, 3h, 12h (default 1h)"
    )
    start: Epoch | None = Field(default=None, description="instead of `window`")
    end: Epoch | None = Field(default=None, description="default now")
    step: Duration | None = Field(
        default=None, description="evaluation step (default SLA_VIOLATION_STEP_S, 60 s)"
    )
    samples: bool = Field(default=True, description="list each violating sample")
    values: bool = Field(
        default=False,
        description="also list every evaluation of each series as `[timestamp, value]` (the "
        "pages' charts draw them)",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.window is not None and self.start is not None:
            raise ValueError("give either window or start, not both")
        if self.window is not None and not 1 <= parse_duration(self.window) <= MAX_WINDOW_S:
            raise ValueError(f"window must be at most {MAX_WINDOW_S // 86_400} days")
        if self.step is not None and parse_duration(self.step) > MAX_STEP_S:
            raise ValueError(f"step must be at most {MAX_STEP_S} s")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        return self


class ForecastQuery(_Request):
    horizon: Duration = Field(default="10m", description="how far ahead of `at` to look")
    at: Epoch | None = Field(default=None, description="evaluate as of this time (default now)")
    mode: PredictionMode = Field(
        default="probability",
        description="what counts as a predicted violation: probability (the breach "
        "probability is at least the SLI's breach_probability_threshold), point (a point "
        "forecast outside), interval80 (an 80 % interval reaching outside, or a point), "
        "interval95 (a 95 % interval reaching outside, or either of those)",
    )
    all_points: bool = Field(
        default=False, description="also list every stored point with its intervals"
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if parse_duration(self.horizon) > MAX_HORIZON_S:
            raise ValueError(f"horizon must be at most {MAX_HORIZON_S // 3600} h")
        return self


class ExecutionTimeQuery(_Request):
    window: Duration = Field(default="12h", description="the range ending at `end`")
    end: Epoch | None = Field(default=None, description="default now")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if parse_duration(self.window) > 31 * 86_400:
            raise ValueError("window must be at most 31 days")
        return self


class EtlCyclesQuery(ExecutionTimeQuery):
    limit: int = Field(default=200, ge=1, le=2000, description="the newest cycles first")


class EtlCycleQuery(_Request):
    limit: int = Field(default=1000, ge=1, le=10_000, description="series, by key")


class SkipCountOut(_Response):
    analysis: str
    reason: str
    series: int = Field(description="series on which the analysis was skipped for the reason")


class EtlCycleOut(_Response):
    run_id: str
    window_start: int = Field(description="the analysed window, Unix seconds")
    window_end: int
    step_s: int
    first_produced_at: int = Field(description="when the cycle's first message was made")
    last_produced_at: int
    series_analysed: int = Field(description="series analysed (a message each), as stored")
    series_with_skips: int = Field(description="of them, series with an analysis skipped")
    skipped: list[SkipCountOut] = Field(description="skipped analyses by analysis and reason")


class EtlCyclesResponse(_Response):
    window: str
    window_s: int
    end: float
    cycles: list[EtlCycleOut] = Field(description="newest first")


class SeriesSkipOut(_Response):
    analysis: str
    reason: str
    detail: str


class EtlCycleSeriesOut(_Response):
    series: str
    samples: int = Field(description="raw samples in the window")
    skipped: list[SeriesSkipOut]


class EtlCycleResponse(EtlCycleOut):
    series: list[EtlCycleSeriesOut] = Field(description="by key, at most `limit`")
    truncated: bool = Field(description="more series were analysed than listed")


# --------------------------------------------------------------------------- evaluations


class SeriesRef(_Response):
    metric: str | None = Field(description="the __name__ label, when the result has one")
    labels: dict[str, str] = Field(description="the other labels")


SeriesState = Literal["inside", "below", "above", "undefined", "no_data"]
SliState = Literal["ok", "violated", "no_data"]
VIOLATED_DESCRIPTION = (
    "a series is outside the range; or, when the SLI's missing_data_is_violation is true, "
    "a series has no data or the selector matches nothing"
)
SLI_STATE_DESCRIPTION = (
    "no_data: the selector (after `labels`) matches nothing; violated: a series is outside "
    "the range, or has no data and the SLI counts missing data as a violation; else ok"
)


class LatestAnomaly(_Response):
    status: Literal["SAFE", "WARN", "ERROR", "LEARNING"]
    deviation: float = Field(description="in normal standard deviations")
    window_start: float
    window_end: float


class SeriesStatus(SeriesRef):
    timestamp: float
    value: float | None = Field(description="null when NaN or ±Inf, or without data")
    state: SeriesState = Field(
        description="no_data: a value within `window` before the evaluation, none at it"
    )
    inside: bool | None = Field(description="null when the value is NaN or missing")
    last_seen: float | None = Field(
        description="no_data series: the last evaluation (at most 5 min apart) with a value"
    )
    anomalies: dict[str, LatestAnomaly] = Field(
        default_factory=dict,
        description="per anomaly detector (sigma, iforest...), its newest stored window of "
        "this series (see GET /anomalies); empty when none is stored",
    )


class StatusResponse(_Response):
    sli: str
    min: float | None
    max: float | None
    evaluated_at: float
    window: str = Field(description="the no-data look-back")
    state: SliState = Field(description=SLI_STATE_DESCRIPTION)
    violated: bool = Field(description=VIOLATED_DESCRIPTION)
    missing_data_is_violation: bool
    series_total: int = Field(description="series the selector returned, after `labels`")
    truncated: bool = Field(description="more than SLA_MAX_SERIES series: the rest are left out")
    inside: int
    outside: int
    undefined: int
    no_data: int = Field(description="series with a value within `window` but none now")
    series: list[SeriesStatus]


class ViolatingSample(_Response):
    timestamp: float
    value: float | None
    state: Literal["below", "above"]


class ViolationInterval(_Response):
    start: float = Field(description="first violating evaluation")
    end: float = Field(description="last violating evaluation")
    samples: int
    duration_s: float = Field(description="end - start + step")
    worst_value: float | None = Field(description="the value farthest outside the range")
    worst_at: float
    open_start: bool = Field(description="starts at the first evaluation: may begin earlier")
    open_end: bool = Field(description="ends at the last evaluation: may still go on")


class NoDataIntervalOut(_Response):
    start: float = Field(description="first evaluation without a value")
    end: float = Field(description="last evaluation of the run without a value")
    evaluations: int
    duration_s: float = Field(description="end - start + step")
    open_end: bool = Field(description="reaches the last evaluation: the series is still gone")


class SeriesViolationsOut(SeriesRef):
    evaluations: int = Field(description="evaluations with a value")
    violating: int = Field(description="evaluations outside the range")
    time_outside_s: float
    samples: list[ViolatingSample] | None = Field(description="null when samples=false")
    values: list[tuple[float, float | None]] | None = Field(
        default=None,
        description="with values=true: every evaluation as [timestamp, value] (value null "
        "when NaN or ±Inf); null otherwise",
    )
    intervals: list[ViolationInterval]
    no_data_intervals: list[NoDataIntervalOut] = Field(
        description="evaluations without a value after the series' first one (a series "
        "that stopped reporting); violations only if the SLI's missing_data_is_violation"
    )
    time_no_data_s: float
    violated: bool = Field(
        description="violating > 0, or no-data intervals and missing_data_is_violation"
    )


class ViolationsResponse(_Response):
    sli: str
    min: float | None
    max: float | None
    window: str | None
    start: float
    end: float
    step_s: int
    evaluations_per_series: int = Field(description="evaluation timestamps in [start, end]")
    state: SliState = Field(
        description="no_data: the selector (after `labels`) matched nothing in the whole "
        "range; violated: a series is `violated`; else ok"
    )
    violated: bool = Field(description=VIOLATED_DESCRIPTION)
    missing_data_is_violation: bool
    series_total: int
    truncated: bool
    violating_series: int = Field(description="series that are `violated`")
    no_data_series: int = Field(description="series with no-data intervals")
    series: list[SeriesViolationsOut]


class _ForecastBand(_Response):
    ts: int
    value: float
    lower80: float
    upper80: float
    lower95: float
    upper95: float


class ForecastPointOut(_ForecastBand):
    leaves_by: Breach | None = Field(
        description="point: the point forecast is outside; interval80 / interval95: only "
        "that prediction interval leaves the range; null: none does (mode=probability with "
        "a threshold below 0.05)"
    )
    breach_probability: float = Field(description="probability that this point is outside")


class ForecastBandPoint(_ForecastBand):
    breach_probability: float | None = Field(
        description="probability that this point is outside; null when not comparable"
    )


class ForecastInfo(_Response):
    produced_at: int
    window_end: int = Field(description="end of the history window the forecast came from")
    age_s: float = Field(description="at - produced_at")
    stale: bool = Field(description="older than two ETL cycles (2 × ETL_INTERVAL_S)")
    model: str | None


class SeriesForecastOut(SeriesRef):
    series_key: str
    transform: str | None = Field(description="how the ETL analysed it (rate for counters)")
    forecast: ForecastInfo | None = Field(description="null: no stored forecast")
    comparable: bool | None = Field(
        description="the forecast is of the quantity the SLI evaluates (null: no forecast); "
        "when false, nothing is compared: no violations are reported for the series"
    )
    reason_code: Literal["counter_rate", "expression"] | None = Field(
        description="why not comparable: counter_rate (a counter forecast as its rate, the "
        "SLI on its raw value), expression (the SLI's selector is another expression)"
    )
    reason: str | None = Field(description="the same in words")
    points: int = Field(description="stored forecast points in (at, at + horizon]")
    covered_until: int | None = Field(description="the last of those points")
    breach_probability: float | None = Field(
        description="probability that the series leaves the range within the horizon: the "
        "largest of its points' (null: no forecast, not comparable, or no point in the "
        "horizon)"
    )
    distribution: Distribution | None = Field(
        description="the predictive distribution behind breach_probability"
    )
    distribution_source: DistributionSource | None = Field(
        description="forecast: the distribution the ETL stored with each point; "
        "interval95_fallback: an older forecast without one, taken as a normal around the "
        "point forecast with σ = (upper95 − lower95) / 3.92"
    )
    predicted_violation: bool = Field(description="a predicted violation in the query's mode")
    violations: list[ForecastPointOut] = Field(
        description="the points that count as a predicted violation in the query's mode"
    )
    all_points: list[ForecastBandPoint] | None = Field(
        default=None,
        description="with all_points=true: every stored point in (at, at + horizon] with its "
        "80 % and 95 % intervals; null otherwise",
    )
    first_breach_at: int | None = Field(description="first of those points")
    first_point_breach_at: int | None = Field(description="first point forecast outside")
    leaves_by: Breach | None = Field(description="the most severe way any point leaves")


class ForecastViolationsResponse(_Response):
    sli: str
    min: float | None
    max: float | None
    at: float
    horizon: str
    horizon_s: int
    stale_after_s: float
    series_total: int
    truncated: bool
    series_without_forecast: int
    stale_series: int
    incomparable_series: int = Field(description="series whose forecast is not comparable")
    mode: PredictionMode = Field(description="what counts as a predicted violation")
    breach_probability_threshold: float = Field(
        description="the SLI's: in mode probability, a series whose breach_probability is "
        "at least this is a predicted violation"
    )
    probability_method: Literal["max_over_points"] = Field(
        description="how a series' breach_probability is made of its points': the largest "
        "(a lower bound of leaving the range at least once, exact when the points' errors "
        "move together, as in exponential smoothing)"
    )
    violating_series: int = Field(description="series that are a predicted violation")
    series: list[SeriesForecastOut]


# --------------------------------------------------------------------------- ETL, health


class ExecutionStats(_Response):
    count: float | None = Field(
        description="runs in the window (exact increase of the counter, never extrapolated)"
    )
    p50_s: float | None
    p95_s: float | None
    max_s: float | None


class AnalysisExecution(ExecutionStats):
    analysis: str


class ExecutionTimeResponse(_Response):
    window: str
    window_s: int
    end: float
    cycle: ExecutionStats
    analyses: list[AnalysisExecution]


class DependencyHealth(_Response):
    ok: bool
    latency_ms: float
    error: str | None


class HealthResponse(_Response):
    status: Literal["ok", "degraded"]
    mysql: DependencyHealth
    prometheus: DependencyHealth


class ErrorBody(_Response):
    detail: str


class BadRequestBody(ErrorBody):
    """400: Prometheus rejected the query (its words in ``prometheus_error``), or the body
    could not be read at all (not UTF-8: FastAPI's own 400, without the Prometheus fields)."""

    error_type: str | None = Field(default=None, description="Prometheus' errorType")
    prometheus_error: str | None = Field(default=None, description="Prometheus' own text")
