"""Settings of the Spark batch job (``python -m anomaly_detection.batch``).

Defaults: the ETL's selectors, one point a minute, a day of training history (so time of
day is a feature only from two days on, day of week from two weeks), rolling windows of
5 min, 30 min and 3 h, an hour re-scored every 5 minutes, a re-train every 6 hours.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from sla_common.mysql import MysqlSettings
from sla_common.promql import SEED_SELECTORS, split_selectors


class BatchSettings(MysqlSettings):
    # 8007: the outliers executor has 8006 (scripts/stack.py gives each the same).
    http_port: int = Field(default=8007, ge=0, le=65535)

    # Any Spark master URL: local[*] (this machine's cores), local[N], spark://host:7077...
    spark_master: str = Field(default="local[*]", min_length=1, max_length=255)
    # The address Spark binds (exported as SPARK_LOCAL_IP before the JVM starts): loopback
    # by default, so a local run opens no port beyond it. For a cluster, an address the
    # workers reach, and SPARK_DRIVER_HOST the name they reach the driver by.
    spark_local_ip: str = Field(default="127.0.0.1", min_length=1)
    spark_driver_host: str | None = None
    # JVM options of the driver (spark.driver.extraJavaOptions; "" leaves Spark's own). The
    # driver only plans the job, moves a table of series and collects one summary row per
    # series (the work is in the Python workers), so the client compiler alone and the serial
    # collector: less CPU at start (a session starts in about 2/3 of the time on a loaded
    # machine), nothing to lose later. A local[*] master's executors are in this JVM too.
    batch_driver_java_options: str = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

    # Series selectors (plain vector selectors: /api/v1/series reads them); a JSON list or
    # selectors separated by ";" or new lines.
    batch_selectors: Annotated[tuple[str, ...], NoDecode] = SEED_SELECTORS
    batch_model: Literal["iforest"] = "iforest"
    batch_step_s: int = Field(default=60, ge=1, le=3600)
    batch_train_window_s: int = Field(default=86_400, ge=60)
    batch_score_window_s: int = Field(default=3600, ge=1)
    # Rolling mean / std windows of the features, in seconds (at least two steps each).
    batch_windows_s: Annotated[tuple[int, ...], NoDecode] = (300, 1800, 10_800)
    batch_min_points: int = Field(default=120, ge=16)
    # The threshold rule: a point is an anomaly when its score is above 0.5, i.e. when the
    # forest isolates it faster than all but this fraction of its training points (or its
    # deviations lie outside the training range).
    batch_contamination: float = Field(default=0.005, gt=0, lt=0.5)
    batch_trees: int = Field(default=100, ge=1, le=2000)
    batch_series_per_task: int = Field(default=8, ge=1)
    batch_max_series: int = Field(default=5000, ge=1)
    batch_fetch_attempts: int = Field(default=4, ge=1, le=100)
    batch_fetch_backoff_s: float = Field(default=1.0, gt=0)
    # Scheduled mode: re-score every N s, re-train every M s (and at start).
    batch_score_interval_s: float = Field(default=300.0, gt=0)
    batch_train_interval_s: float = Field(default=6 * 3600.0, gt=0)
    batch_max_exposed_series: int = Field(default=1000, ge=0)

    @field_validator("batch_selectors", mode="before")
    @classmethod
    def _split_selectors(cls, v: object) -> object:
        return split_selectors(v)

    @field_validator("batch_windows_s", mode="before")
    @classmethod
    def _split_windows(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(int(p) for p in v.replace(";", ",").split(",") if p.strip())
        return v

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.batch_windows_s:
            raise ValueError("BATCH_WINDOWS_S needs at least one window")
        if min(self.batch_windows_s) < 2 * self.batch_step_s:
            raise ValueError("every BATCH_WINDOWS_S must cover at least two BATCH_STEP_S")
        if self.batch_train_window_s < self.batch_min_points * self.batch_step_s:
            raise ValueError("BATCH_TRAIN_WINDOW_S must hold BATCH_MIN_POINTS steps")
        return self
