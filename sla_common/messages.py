"""The Kafka message contract between the ETL and its consumers (topic ``prometheusdata``).

One message per analysed series per ETL run; key = :func:`sla_common.series.series_key`.
The ETL builds messages with these models and consumers validate against them: a message
that does not validate goes to the dead-letter topic with the reason, never into storage.

Versioning: ``schema_version`` is a literal. A change that old consumers cannot read bumps
it; consumers reject versions they do not know rather than guessing. Version 2 added optional
fields (the series' metric type and rate window, the ADF regression, the HP cut-off, each
forecast point's predictive distribution): version 1 messages still validate (the fields
are absent), while a version 1 consumer refuses version 2 (``extra="forbid"``), which is why
the version moved. Upgrade consumers before producers.

Times are epoch seconds (UTC by definition). Series on the regular analysis grid (HP,
decomposition) carry their values only; timestamp ``i`` is ``grid.start + i * grid.step_s``.
Numbers must be finite: NaN/infinity are refused (an analysis that cannot produce finite
numbers reports itself in ``skipped`` instead).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sla_common.series import series_key

SCHEMA_VERSION = 2
SCHEMA_VERSIONS_READ = (1, 2)

# Bounds that keep one message well under Kafka's default 1 MiB request size.
MAX_GRID_POINTS = 20_000
MAX_ACF_LAGS = 2_000
MAX_FORECAST_POINTS = 1_000

Finite = Annotated[float, Field(allow_inf_nan=False)]
EpochS = Annotated[int, Field(ge=0, le=32_503_680_000)]  # up to year 3000: catches ms


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class SeriesRef(_Model):
    key: str = Field(min_length=1, max_length=4096)
    metric: str = Field(min_length=1, max_length=1024)
    labels: dict[str, str]
    selector: str = Field(description="the configured PromQL selector this series came from")
    transform: Literal["none", "rate"] = "none"
    # Added within version 1 (absent in older messages): how the series was typed, and the
    # range of the rate() it was analysed as (transform "rate").
    metric_type: Literal["counter", "gauge", "unknown"] | None = Field(
        default=None,
        description="counter (analysed as a rate), gauge, or unknown (a PromQL expression)",
    )
    type_source: Literal["metadata", "suffix", "expression"] | None = Field(
        default=None,
        description="Prometheus' /api/v1/metadata, the name's suffix, or not typed",
    )
    rate_window_s: int | None = Field(default=None, gt=0, description="rate()'s range")

    def derived_key(self) -> str:
        """The key ``metric`` and ``labels`` make (the ETL's :func:`series_key`): ``key``."""
        return series_key(self.metric, self.labels)


class Grid(_Model):
    start: EpochS
    step_s: int = Field(gt=0)
    count: int = Field(ge=0, le=MAX_GRID_POINTS)

    def timestamps(self) -> list[int]:
        return [self.start + i * self.step_s for i in range(self.count)]


class Window(_Model):
    start: EpochS
    end: EpochS
    step_s: int = Field(gt=0)
    samples: int = Field(ge=0, description="finite samples Prometheus returned")
    interpolated: int = Field(ge=0, description="grid points filled by interpolation")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end < self.start:
            raise ValueError("window.end is before window.start")
        return self


class CriticalValues(_Model):
    pct1: Finite = Field(alias="1%")
    pct5: Finite = Field(alias="5%")
    pct10: Finite = Field(alias="10%")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Adf(_Model):
    statistic: Finite
    pvalue: Finite = Field(ge=0, le=1)
    used_lag: int = Field(ge=0)
    nobs: int = Field(ge=0)
    critical_values: CriticalValues
    stationary: bool
    autolag: str | None = None
    # Deterministic terms of the test regression; messages before it was reported used "c".
    regression: Literal["c", "ct", "ctt", "n"] = "c"


class Hp(_Model):
    lamb: Finite = Field(gt=0)
    cutoff_period_s: Finite | None = Field(
        default=None, gt=0, description="period at which the trend keeps half of a cycle"
    )
    trend: list[Finite] = Field(max_length=MAX_GRID_POINTS)
    cycle: list[Finite] = Field(max_length=MAX_GRID_POINTS)


class Acf(_Model):
    values: list[Finite] = Field(min_length=1, max_length=MAX_ACF_LAGS + 1)
    conf_bound: Finite = Field(ge=0)


class Decomposition(_Model):
    period: int = Field(ge=2, description="season length in grid points")
    seasonal_strength: Finite = Field(ge=0, le=1)
    trend: list[Finite] = Field(max_length=MAX_GRID_POINTS)
    seasonal: list[Finite] = Field(max_length=MAX_GRID_POINTS)
    resid: list[Finite] = Field(max_length=MAX_GRID_POINTS)


class Aggregate(_Model):
    window: str = Field(pattern=r"^[0-9]+[smhd]$")
    start: EpochS
    end: EpochS
    count: int = Field(ge=1)
    max: Finite
    min: Finite
    mean: Finite
    std: Finite = Field(ge=0)


class ForecastPoint(_Model):
    ts: EpochS
    value: Finite
    lower80: Finite
    upper80: Finite
    lower95: Finite
    upper95: Finite
    # The point's predictive distribution, ``max(floor, loc + scale·T)`` with ``T`` as the
    # forecast's ``distribution`` says (optional: absent in messages of older ETLs).
    loc: Finite | None = None
    scale: Finite | None = Field(default=None, ge=0)


class Forecast(_Model):
    model: str
    step_s: int = Field(gt=0)
    horizon_s: int = Field(gt=0)
    history_points: int = Field(ge=0)
    points: list[ForecastPoint] = Field(min_length=1, max_length=MAX_FORECAST_POINTS)
    max: Finite
    min: Finite
    mean: Finite
    # What the points' loc/scale mean (optional: absent in messages of older ETLs):
    # "normal", or "student_t" with ``df`` degrees of freedom; ``floor`` is the domain's
    # lower limit (0 for a non-negative series), below which no value can fall.
    distribution: Literal["normal", "student_t"] | None = None
    df: Finite | None = Field(default=None, gt=0)
    floor: Finite | None = None

    @model_validator(mode="after")
    def _distribution(self) -> Self:
        if (self.distribution == "student_t") != (self.df is not None):
            raise ValueError("df is required with distribution=student_t and only then")
        return self


class SkippedAnalysis(_Model):
    analysis: str
    reason: str
    detail: str = ""


class AnalysisMessage(_Model):
    schema_version: Literal[1, 2] = 2
    run_id: str = Field(min_length=1, max_length=64)
    produced_at: EpochS
    series: SeriesRef
    window: Window
    grid: Grid
    adf: Adf | None = None
    hp: Hp | None = None
    acf: Acf | None = None
    decomposition: Decomposition | None = None
    aggregates: list[Aggregate] = Field(default_factory=list, max_length=32)
    forecast: Forecast | None = None
    skipped: list[SkippedAnalysis] = Field(default_factory=list)
    durations_ms: dict[str, Finite] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _grid_lengths(self) -> Self:
        n = self.grid.count
        if self.hp is not None and not (len(self.hp.trend) == len(self.hp.cycle) == n):
            raise ValueError(f"hp series must have grid.count={n} points")
        d = self.decomposition
        if d is not None and not (len(d.trend) == len(d.seasonal) == len(d.resid) == n):
            raise ValueError(f"decomposition series must have grid.count={n} points")
        return self

    def kafka_key(self) -> bytes:
        return self.series.key.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> AnalysisMessage:
        """Validate a raw Kafka value; raises ``pydantic.ValidationError`` on anything off."""
        return cls.model_validate_json(raw)
