"""Settings of the outlier executor and trainers (``python -m anomaly_detection.outliers``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from sla_common.mysql import MysqlSettings
from sla_common.promql import split_selectors

TOPIC = r"^[A-Za-z0-9._-]+$"


class OutlierSettings(MysqlSettings):
    http_port: int = Field(default=8006, ge=0, le=65535)
    # /calculate bounds: one request may not fetch more than this.
    outliers_max_series: int = Field(default=100, ge=1)
    outliers_max_points: int = Field(default=11_000, ge=32)
    # Trainers: a consumer group on the jobs topic; a job trains one series.
    kafka_outlier_jobs_topic: str = Field(default="outlier.jobs", min_length=1, pattern=TOPIC)
    kafka_outlier_group_id: str = Field(default="outlier_trainers", min_length=1, max_length=255)
    kafka_outlier_partitions: int = Field(default=3, ge=1)
    kafka_session_timeout_ms: int = Field(default=6000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=1000, ge=100)
    # Scored points go here as anomaly records (detector "autoencoder"); data_storage stores.
    kafka_anomaly_topic: str = Field(default="anomaly", min_length=1, pattern=TOPIC)
    # Training: the history each job reads, its step, and the model's parameters.
    outliers_train_hours: float = Field(default=24.0, gt=0)
    outliers_step_s: float = Field(default=60.0, gt=0)
    outliers_backend: Literal["keras", "mlp"] = "keras"
    outliers_window: int = Field(default=32, ge=2, le=1024)
    outliers_epochs: int = Field(default=20, ge=1, le=10_000)
    outliers_k: float = Field(default=5.0, gt=0)
    outliers_rescale: Literal["standard", "minmax", "tanhlog"] = "standard"
    outliers_loss: Literal["mse", "log_cosh"] = "mse"
    # Keras' (and the MLP's) random seed: the same data and settings train the same model.
    outliers_seed: int = Field(default=0, ge=0, le=2**31 - 1)
    # Schedule (the `schedule` command): every this many seconds, a training job per series
    # of OUTLIERS_SELECTORS (a JSON list, or selectors separated by ";" or new lines: commas
    # occur inside label matchers; none: nothing scheduled) and a scoring pass.
    outliers_selectors: Annotated[tuple[str, ...], NoDecode] = ()
    outliers_train_interval_s: float = Field(default=86_400.0, gt=0)
    outliers_score_interval_s: float = Field(default=300.0, gt=0)
    # The schedule's /metrics (on HTTP_HOST:HTTP_PORT): anomaly_score{model="autoencoder"}
    # of at most this many series.
    outliers_max_exposed_series: int = Field(default=1000, ge=0)

    @field_validator("outliers_selectors", mode="before")
    @classmethod
    def _split_selectors(cls, v: object) -> object:
        if v == () or (isinstance(v, str) and not v.strip()):
            return ()  # nothing scheduled
        return split_selectors(v)
