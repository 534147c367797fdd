"""Detector settings (``python -m anomaly_detection``): the shared names plus its own.

Window: ``ANOMALY_WINDOW_MS`` defaults to 60 000 (one minute): with Prometheus' usual 15 s
scrape interval a window holds 4 samples, enough for a mean and a spread, and a result
follows a change within about a minute plus the grace period. The reference used 500 ms
windows over a sample stream many times faster; set 500 to reproduce it.
"""

from __future__ import annotations

import json
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from sla_common.promql import equality_selector
from sla_common.settings import CommonSettings

TOPIC = r"^[A-Za-z0-9._-]+$"
MAX_OVERRIDES = 1000
MAX_SEASONS = 4


class NormalOverride(BaseModel):
    """One entry of ``ANOMALY_NORMAL_OVERRIDES``: the reference's constants for the series a
    selector matches (a plain selector with ``=`` matchers only, as ``GET /anomalies`` takes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    selector: str = Field(min_length=1, max_length=4096)
    mean: float = Field(allow_inf_nan=False)
    std: float = Field(ge=0, allow_inf_nan=False)

    @field_validator("selector")
    @classmethod
    def _plain_equality_selector(cls, v: str) -> str:
        metric, labels = equality_selector(v)  # ValueError with the reason
        if metric is None and not any(labels.values()):
            # Prometheus refuses such a selector too: it would match (nearly) every series.
            raise ValueError(
                "the selector needs a metric name or a non-empty matcher "
                "(for every series, set NORMAL_MEAN/NORMAL_STDDEV)"
            )
        return v.strip()


class DetectorSettings(CommonSettings):
    http_port: int = Field(default=8005, ge=0, le=65535)

    kafka_samples_topic: str = Field(default="samples", min_length=1, pattern=TOPIC)
    kafka_anomaly_topic: str = Field(default="anomaly", min_length=1, pattern=TOPIC)
    kafka_samples_dlq_topic: str = Field(default="samples.dlq", min_length=1, pattern=TOPIC)
    kafka_group_id: str = Field(default="anomaly_detection", min_length=1, max_length=255)
    kafka_partitions: int = Field(default=3, ge=1, description="for topics it has to create")
    kafka_session_timeout_ms: int = Field(default=6000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=1000, ge=100)

    anomaly_detector_name: str = Field(default="sigma", min_length=1, max_length=64)
    anomaly_window_ms: int = Field(default=60_000, ge=10, le=86_400_000)
    anomaly_grace_ms: int = Field(default=15_000, ge=0, le=86_400_000)
    anomaly_warn_stddevs: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    anomaly_error_stddevs: float = Field(default=2.0, gt=0, allow_inf_nan=False)
    # Learned normal: EW half-life in event time; LEARNING until this many windows learned.
    anomaly_baseline_halflife_s: float = Field(default=6 * 3600.0, gt=0, allow_inf_nan=False)
    anomaly_min_history_windows: int = Field(default=30, ge=1)
    # Cycles a series' normal may follow, in seconds (comma-separated; empty: none): a day
    # and a week. Each series learns each one per phase and uses it only once it predicts
    # the series better than the plain normal (anomaly_detection.rules.Season).
    anomaly_season_periods_s: Annotated[tuple[int, ...], NoDecode] = Field(
        default=(86_400, 604_800), max_length=MAX_SEASONS
    )
    # The recurring tail: a deviation a series exceeds on more than this many windows a day
    # (learned over about a week, raw, not winsorized) is its normal at that size, and the
    # learned band widens until its ERROR band reaches it (anomaly_detection.rules.TailRule).
    # 0 turns it off.
    anomaly_recurring_per_day: float = Field(default=2.0, ge=0, le=1_000, allow_inf_nan=False)
    # The reference's constants: set both and every series is judged against them (source
    # "static") instead of its learned normal.
    normal_mean: float | None = Field(default=None, allow_inf_nan=False)
    normal_stddev: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # The same per selector, a JSON list of {"selector", "mean", "std"}: a series takes the
    # first entry whose selector matches it, else NORMAL_MEAN/NORMAL_STDDEV if set, else
    # its learned normal.
    anomaly_normal_overrides: Annotated[tuple[NormalOverride, ...], NoDecode] = Field(
        default=(), max_length=MAX_OVERRIDES
    )
    # /metrics carries anomaly_score/anomaly_status for at most this many series (the
    # first ones seen by this process); the rest are counted, not exposed.
    anomaly_max_exposed_series: int = Field(default=1000, ge=0)
    # Per-partition checkpoints (open windows, learned normals, offset). Processes of one
    # group share it; a partition without one starts fresh from the committed offset.
    anomaly_state_dir: str = Field(default="state", min_length=1)
    # Results flushed, state checkpointed and offsets committed this often (at-least-once;
    # results are idempotent).
    anomaly_commit_interval_s: float = Field(default=1.0, gt=0)

    @field_validator("anomaly_season_periods_s", mode="before")
    @classmethod
    def _periods_csv(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(p.strip() for p in v.split(",") if p.strip())
        return v

    @field_validator("anomaly_season_periods_s")
    @classmethod
    def _periods_valid(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        for p in v:
            if not 3600 <= p <= 35 * 86_400:
                raise ValueError(f"a season period is between 3600 and 3024000 s, not {p}")
        if len(set(v)) != len(v):
            raise ValueError("a season period is listed twice")
        return v

    @field_validator("anomaly_normal_overrides", mode="before")
    @classmethod
    def _overrides_json(cls, v: object) -> object:
        if isinstance(v, str):
            if not v.strip():
                return ()
            try:
                v = json.loads(v)
            except json.JSONDecodeError as e:
                raise ValueError(f"not JSON ({e.msg} at character {e.pos})") from None
            if not isinstance(v, list):
                raise ValueError(
                    'expected a JSON list of {"selector": ..., "mean": ..., "std": ...}'
                )
        return v

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.normal_mean is None) != (self.normal_stddev is None):
            raise ValueError("set both NORMAL_MEAN and NORMAL_STDDEV, or neither")
        seen: set[tuple[str | None, tuple[tuple[str, str], ...]]] = set()
        for o in self.anomaly_normal_overrides:
            metric, labels = equality_selector(o.selector)
            key = (metric, tuple(sorted(labels.items())))
            if key in seen:
                raise ValueError(
                    f"ANOMALY_NORMAL_OVERRIDES: selector {o.selector[:200]!r} is listed twice "
                    "(the first match wins, so the second would never apply)"
                )
            seen.add(key)
        if self.anomaly_warn_stddevs > self.anomaly_error_stddevs:
            raise ValueError("ANOMALY_WARN_STDDEVS must not exceed ANOMALY_ERROR_STDDEVS")
        topics = {self.kafka_samples_topic, self.kafka_anomaly_topic, self.kafka_samples_dlq_topic}
        if len(topics) != 3:
            raise ValueError(
                "KAFKA_SAMPLES_TOPIC, KAFKA_ANOMALY_TOPIC and KAFKA_SAMPLES_DLQ_TOPIC must differ"
            )
        if self.kafka_heartbeat_interval_ms * 3 > self.kafka_session_timeout_ms:
            raise ValueError(
                "KAFKA_HEARTBEAT_INTERVAL_MS must be at most a third of KAFKA_SESSION_TIMEOUT_MS"
            )
        return self
