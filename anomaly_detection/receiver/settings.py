"""The receiver's settings: the shared names plus what only it reads (from the environment)."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from sla_common.kafka import DEFAULT_COMPRESSION, MAX_MESSAGE_BYTES, Compression, ensure_topics
from sla_common.settings import CommonSettings

TOPIC_PATTERN = r"^[A-Za-z0-9._-]+$"
MIB = 1024 * 1024


class SamplesTopicSettings(CommonSettings):
    """Where raw samples go (the receiver and the example-samples producer)."""

    kafka_samples_topic: str = Field(default="samples", min_length=1, pattern=TOPIC_PATTERN)
    # Used only for topics it has to create (it never changes an existing one).
    kafka_partitions: int = Field(default=3, ge=1, le=1024)
    # Explicit on the topic: quixstreams (the detector) reads it, and tansu reports only
    # explicit configs (README, "The streaming anomaly detector").
    kafka_samples_retention_ms: int = Field(default=7 * 86_400_000, ge=60_000)
    kafka_compression: Compression = DEFAULT_COMPRESSION

    def ensure_samples_topic(self, timeout_ms: int) -> None:
        """Create the samples topic if missing; raises KafkaError when the broker is down."""
        ensure_topics(
            self.kafka_bootstrap_servers,
            [self.kafka_samples_topic],
            partitions=self.kafka_partitions,
            timeout_ms=timeout_ms,
            max_message_bytes=MAX_MESSAGE_BYTES,
            configs={"retention.ms": str(self.kafka_samples_retention_ms)},
        )


class ReceiverSettings(SamplesTopicSettings):
    http_port: int = Field(default=8004, ge=0, le=65535)

    # The compressed body (checked before it is read in full) and the decompressed
    # WriteRequest (checked against snappy's declared length, before decompressing).
    receiver_max_body_bytes: int = Field(default=8 * MIB, ge=1024)
    receiver_max_decompressed_bytes: int = Field(default=64 * MIB, ge=1024)
    # How long a request waits for the broker's acknowledgement before answering 503.
    receiver_publish_timeout_s: float = Field(default=10.0, gt=0, le=300)
    receiver_retry_after_s: int = Field(default=5, ge=1, le=3600)
    receiver_access_log: bool = False

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.receiver_max_decompressed_bytes < self.receiver_max_body_bytes:
            raise ValueError(
                "RECEIVER_MAX_DECOMPRESSED_BYTES must be at least RECEIVER_MAX_BODY_BYTES"
            )
        return self
