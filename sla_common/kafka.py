"""Kafka helpers shared by producers and consumers (kafka-python 3.0.x, pinned).

Facts about the local broker (tansu, memory storage) that shape these helpers are in
DESIGN.md: it loses topics on restart, so producers re-ensure their topics whenever they
reconnect, and its ``end_offsets`` is unreliable, so nothing here derives lag from it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    partitions: int = 3,
    timeout_ms: int = 10_000,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Raises ``kafka.errors.KafkaError`` (e.g. ``NoBrokersAvailable``) when the broker is down.
    """
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=timeout_ms,
        client_id="sla-monitor-admin",
    )
    try:
        existing = set(admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics(
                    {topic: {"num_partitions": partitions, "replication_factor": 1}},
                    timeout_ms=timeout_ms,
                )
                created.append(topic)
            except TopicAlreadyExistsError:  # another process won the race: fine
                pass
        if created:
            log.info("created Kafka topics %s with %d partitions", created, partitions)
        return created
    finally:
        admin.close()


def make_producer(
    bootstrap_servers: str,
    client_id: str,
    *,
    linger_ms: int = 20,
    max_block_ms: int = 10_000,
    request_timeout_ms: int = 10_000,
    compression_type: str | None = None,
    max_request_size: int = 4 * 1024 * 1024,
) -> KafkaProducer:
    """A batching, acks=all producer whose calls never block longer than ``max_block_ms``.

    Raises ``kafka.errors.NoBrokersAvailable`` when the broker cannot be reached.
    """
    return KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        linger_ms=linger_ms,
        batch_size=256 * 1024,
        max_block_ms=max_block_ms,
        request_timeout_ms=request_timeout_ms,
        compression_type=compression_type,
        max_request_size=max_request_size,
        retries=3,
        retry_backoff_ms=200,
    )


__all__ = ["KafkaError", "ensure_topics", "make_producer"]
