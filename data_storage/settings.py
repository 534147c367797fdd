"""Storage settings: the shared names plus what only the storage consumer reads."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from sla_common.mysql import MysqlSettings

TOPIC = r"^[A-Za-z0-9._-]+$"


class StorageSettings(MysqlSettings):
    http_port: int = Field(default=8002, ge=0, le=65535)

    kafka_group_id: str = Field(default="data_storage", min_length=1, max_length=255)
    # What this process stores: the ETL's analyses (KAFKA_TOPIC), the detectors' anomaly
    # records (KAFKA_ANOMALY_TOPIC), or both, each by its own consumer in its own group.
    storage_streams: Annotated[list[Literal["analyses", "anomaly"]], NoDecode] = Field(
        default=["analyses", "anomaly"], min_length=1, description="comma-separated"
    )
    kafka_anomaly_topic: str = Field(default="anomaly", min_length=1, pattern=TOPIC)
    kafka_anomaly_dlq_topic: str = Field(default="anomaly.dlq", min_length=1, pattern=TOPIC)
    kafka_anomaly_group_id: str | None = Field(
        default=None, min_length=1, max_length=255, description="default KAFKA_GROUP_ID.anomaly"
    )
    kafka_partitions: int = Field(default=3, ge=1, description="for topics it has to create")
    # Joins in ~3 s on tansu instead of ~23 s with the default 45 s (data_storage/README.md).
    kafka_session_timeout_ms: int = Field(default=6000, ge=1000)
    kafka_heartbeat_interval_ms: int = Field(default=1000, ge=100)
    kafka_max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    kafka_request_timeout_ms: int = Field(default=10_000, ge=1000)

    # A batch closes at whichever comes first: N messages, R rows, T ms after its first one.
    storage_batch_max_messages: int = Field(default=500, ge=1, le=100_000)
    storage_batch_max_rows: int = Field(default=50_000, ge=1)
    storage_batch_max_wait_ms: int = Field(default=1000, ge=0)
    # Larger messages go to the DLQ unparsed. Default = the ETL producer's max request size.
    storage_max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Messages dated later than now + this (window end, produced_at, grid, aggregates;
    # forecast points + their horizon) go to the DLQ as future_timestamp: a forged or
    # clock-skewed message would otherwise become the "newest" run and never be purged.
    storage_max_future_skew_s: int = Field(default=300, ge=0)

    # Rows whose time (ts / window end) is older than this are purged; 0 keeps everything.
    storage_retention_s: int = Field(default=7 * 86_400, ge=0)
    storage_purge_interval_s: float = Field(default=300.0, gt=0)
    storage_purge_batch_rows: int = Field(default=5000, ge=1)
    storage_purge_budget_s: float = Field(default=2.0, gt=0, description="per purge pass")

    # How often the topic's id is checked: a re-created topic (a restarted tansu) is read
    # again from its beginning instead of from offsets of the topic that is gone. 0: never.
    storage_topic_check_s: float = Field(default=5.0, ge=0)

    storage_backoff_base_s: float = Field(default=0.5, gt=0)
    storage_max_backoff_s: float = Field(default=30.0, gt=0)

    @field_validator("storage_streams", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.kafka_heartbeat_interval_ms * 3 > self.kafka_session_timeout_ms:
            raise ValueError(
                "KAFKA_HEARTBEAT_INTERVAL_MS must be at most a third of KAFKA_SESSION_TIMEOUT_MS"
            )
        if self.kafka_dlq_topic == self.kafka_topic:
            raise ValueError("KAFKA_DLQ_TOPIC must differ from KAFKA_TOPIC")
        topics = (
            self.kafka_topic,
            self.kafka_dlq_topic,
            self.kafka_anomaly_topic,
            self.kafka_anomaly_dlq_topic,
        )
        if len(set(topics)) != len(topics):
            raise ValueError(
                "KAFKA_TOPIC, KAFKA_DLQ_TOPIC, KAFKA_ANOMALY_TOPIC and KAFKA_ANOMALY_DLQ_TOPIC "
                "must differ"
            )
        if self.anomaly_group_id == self.kafka_group_id:
            raise ValueError("KAFKA_ANOMALY_GROUP_ID must differ from KAFKA_GROUP_ID")
        if self.storage_backoff_base_s > self.storage_max_backoff_s:
            raise ValueError("STORAGE_BACKOFF_BASE_S must not exceed STORAGE_MAX_BACKOFF_S")
        return self

    @property
    def anomaly_group_id(self) -> str:
        return self.kafka_anomaly_group_id or f"{self.kafka_group_id}.anomaly"
