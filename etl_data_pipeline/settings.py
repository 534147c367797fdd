"""ETL settings: the shared names plus what only the ETL reads (all from the environment)."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from etl_data_pipeline.analyses import hp_lambda_for_cutoff
from sla_common.kafka import DEFAULT_COMPRESSION, MAX_MESSAGE_BYTES, Compression
from sla_common.promql import SEED_SELECTORS, split_selectors
from sla_common.settings import CommonSettings

DEFAULT_SELECTORS = SEED_SELECTORS


class EtlSettings(CommonSettings):
    http_port: int = Field(default=8001, ge=0, le=65535)

    # PromQL selectors or expressions, each expanded into its series by one range query.
    # From the environment: a JSON list, or selectors separated by ";" or new lines
    # (commas cannot separate them: they occur inside label matchers).
    etl_selectors: Annotated[tuple[str, ...], NoDecode] = DEFAULT_SELECTORS
    etl_interval_s: float = Field(default=60.0, gt=0)
    etl_window_s: int = Field(default=43_200, gt=0)
    etl_step_s: int = Field(default=15, gt=0)
    # Hodrick-Prescott: the trend keeps cycles longer than the cut-off period, the cycle
    # component the shorter ones; lambda = 1/(4(1 - cos(2 pi / P))^2) for a cut-off of P
    # samples (Ravn & Uhlig). ETL_HP_LAMBDA, when set, wins over ETL_HP_CUTOFF_S.
    etl_hp_cutoff_s: int = Field(default=3600, gt=0)
    etl_hp_lambda: float | None = Field(default=None, gt=0)
    etl_acf_nlags: int = Field(default=40, ge=1, le=2000)
    etl_adf_maxlag: int | None = Field(default=None, ge=0)
    etl_adf_autolag: Literal["none", "AIC", "BIC", "t-stat"] = "none"
    # ADF deterministic terms: "ct" constant + trend (default: a series stationary around a
    # trend is not a unit root), "c" constant only, "ctt" + quadratic trend, "n" none.
    etl_adf_regression: Literal["c", "ct", "ctt", "n"] = "ct"
    etl_season_s: int = Field(default=3600, ge=0)
    etl_forecast_horizon_s: int = Field(default=600, gt=0)
    etl_forecast_step_s: int = Field(default=60, gt=0)
    # "rate": counters (type from Prometheus' metadata, else the name: *_total, *_count,
    # *_sum, *_bucket) are analysed as Prometheus' rate() over ETL_RATE_WINDOW_S at each
    # step; "raw": analysed as stored.
    etl_counter_mode: Literal["rate", "raw"] = "rate"
    # Range of rate(): max(4 * ETL_STEP_S, this). 240 s holds 4 scrapes at a 60 s scrape
    # interval, so a rate survives a missed scrape of the slowest usual target.
    etl_rate_window_s: int = Field(default=240, gt=0)
    etl_max_series_per_selector: int = Field(default=2000, ge=1)
    # Split the series across workers: this worker analyses the keys hashing to its index.
    etl_shard_index: int = Field(default=0, ge=0)
    etl_shard_count: int = Field(default=1, ge=1)
    etl_max_backoff_s: float = Field(default=60.0, gt=0)

    kafka_partitions: int = Field(default=3, ge=1)
    # Producer compression (KAFKA_COMPRESSION): zstd measured best for ETL messages.
    kafka_compression: Compression = DEFAULT_COMPRESSION
    # The producer's limit per record (uncompressed) and the max.message.bytes of the topics
    # the ETL creates: keep it at most the broker's message.max.bytes (docker-compose.yml).
    kafka_max_message_bytes: int = Field(default=MAX_MESSAGE_BYTES, ge=64 * 1024)
    kafka_flush_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("etl_selectors", mode="before")
    @classmethod
    def _split_selectors(cls, v: object) -> object:
        return split_selectors(v)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.etl_shard_index >= self.etl_shard_count:
            raise ValueError(
                f"ETL_SHARD_INDEX={self.etl_shard_index} must be below "
                f"ETL_SHARD_COUNT={self.etl_shard_count}"
            )
        if self.etl_window_s < 2 * self.etl_step_s:
            raise ValueError("ETL_WINDOW_S must cover at least two ETL_STEP_S")
        if self.etl_hp_lambda is None and self.etl_hp_cutoff_s <= 2 * self.etl_step_s:
            raise ValueError("ETL_HP_CUTOFF_S must be longer than two ETL_STEP_S")
        return self

    @property
    def rate_window_s(self) -> int:
        """The range of ``rate()``: at least four steps and ETL_RATE_WINDOW_S."""
        return max(4 * self.etl_step_s, self.etl_rate_window_s)

    @property
    def hp_lambda(self) -> float:
        """ETL_HP_LAMBDA, or the lambda whose cut-off period is ETL_HP_CUTOFF_S."""
        if self.etl_hp_lambda is not None:
            return self.etl_hp_lambda
        return hp_lambda_for_cutoff(self.etl_hp_cutoff_s / self.etl_step_s)
