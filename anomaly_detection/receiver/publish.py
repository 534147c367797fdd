"""Publishing records to the samples topic and waiting for the broker's acknowledgement.

One producer (kafka-python, ``acks=all``) is shared by every request. A request's records are
sent, then each future is awaited within the request's deadline: only when all of them are
acknowledged may the request be answered 2xx. Any failure (broker down, slow, topic lost)
raises :class:`PublishError` and the producer is replaced: the next request re-creates the
topic if the broker lost it (tansu forgets topics on restart) and connects afresh. Records of
a failed request that still reach the broker count as duplicates once Prometheus sends the
request again: delivery is at-least-once, never at-most-once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka.errors import KafkaError

from anomaly_detection.receiver.decode import Record
from anomaly_detection.receiver.settings import ReceiverSettings
from sla_common.kafka import close_producer, make_producer

log = logging.getLogger(__name__)


class PublishError(Exception):
    """The broker did not acknowledge every record in time; ``str(e)`` says why."""


class BrokerDown(KafkaError):  # type: ignore[misc]
    """The last connection attempt failed moments ago: not tried again yet."""


# After a failed connection attempt, requests fail at once for this long instead of each
# waiting out its own attempt (Prometheus may send from many shards at a time).
RECONNECT_PAUSE_S = 1.0


ProducerFactory = Callable[[ReceiverSettings, float], Any]


def _real_producer(settings: ReceiverSettings, timeout_s: float) -> Any:
    timeout_ms = max(1000, int(timeout_s * 1000))
    settings.ensure_samples_topic(timeout_ms)
    return make_producer(
        settings.kafka_bootstrap_servers,
        "anomaly-receiver",
        linger_ms=5,
        max_block_ms=timeout_ms,
        request_timeout_ms=timeout_ms,
        compression=settings.kafka_compression,
    )


class Publisher:
    def __init__(
        self, settings: ReceiverSettings, factory: ProducerFactory = _real_producer
    ) -> None:
        self.settings = settings
        self._factory = factory
        self._lock = threading.Lock()
        self._producer: Any = None
        self._down_until = 0.0
        self.clock: Callable[[], float] = time.monotonic

    def _current(self, timeout_s: float) -> Any:
        with self._lock:
            if self._producer is None:
                if self.clock() < self._down_until:
                    raise BrokerDown("the last connection attempt failed just now")
                try:
                    self._producer = self._factory(self.settings, timeout_s)
                except KafkaError:
                    self._down_until = self.clock() + RECONNECT_PAUSE_S
                    raise
                log.info(
                    "connected to Kafka %s, topic %s",
                    self.settings.kafka_bootstrap_servers,
                    self.settings.kafka_samples_topic,
                )
            return self._producer

    def _discard(self, producer: Any) -> None:
        with self._lock:
            if self._producer is not producer:
                return  # another request replaced it already
            self._producer = None
        close_producer(producer, 1.0)

    def connect(self) -> None:
        """Create the topic and the producer now; raises KafkaError when the broker is down."""
        self._current(self.settings.receiver_publish_timeout_s)

    def publish(self, records: Sequence[Record]) -> None:
        """Send ``records`` and wait for all acknowledgements; PublishError if not in time."""
        if not records:
            return
        timeout_s = self.settings.receiver_publish_timeout_s
        deadline = time.monotonic() + timeout_s
        try:
            producer = self._current(timeout_s)
        except KafkaError as e:
            raise PublishError(f"Kafka unavailable: {type(e).__name__}") from None
        topic = self.settings.kafka_samples_topic
        try:
            futures = [producer.send(topic, key=r.key, value=r.value) for r in records]
            for future in futures:
                future.get(timeout=max(0.001, deadline - time.monotonic()))
        except KafkaError as e:
            self._discard(producer)
            raise PublishError(f"Kafka did not acknowledge: {type(e).__name__}") from None

    def close(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            close_producer(producer, timeout_s)
