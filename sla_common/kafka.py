"""Kafka helpers shared by producers and consumers (kafka-python 3.0.x, pinned).

Two facts about the local broker (tansu, memory storage) shape these helpers: it loses
topics on restart (README.md, "What a broker restart can and cannot lose"), so producers
re-ensure their topics whenever they reconnect; and its ``end_offsets`` is unreliable, so
nothing here derives lag from it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

log = logging.getLogger(__name__)

Compression = Literal["none", "gzip", "lz4", "zstd"]
# zstd: ≈ 2.6x smaller ETL messages on the wire than none, lz4 ≈ 1.6x (BENCHMARKS.md, Kafka).
DEFAULT_COMPRESSION: Compression = "zstd"
# The largest record batch the producer sends (its max_request_size, checked by kafka-python
# on the *uncompressed* record) and the max.message.bytes it asks for on the topics it
# creates (checked by the broker on the *compressed* batch): anything the producer accepts
# fits. A 48 h ETL message is ≈ 1.06 MB of JSON, ≈ 0.4 MB with zstd (Apache Kafka's own
# default limit is 1 MiB). docker-compose.yml states the same value for the broker.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def codec(compression: Compression | None) -> str | None:
    """kafka-python's ``compression_type`` for one of our setting's values."""
    return None if compression in (None, "none") else compression


def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    partitions: int = 3,
    timeout_ms: int = 10_000,
    max_message_bytes: int | None = None,
    configs: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    ``max_message_bytes``: the ``max.message.bytes`` of the topics it creates (None: the
    broker's ``message.max.bytes``); ``configs``: more topic configs for them (e.g.
    ``retention.ms``, which quixstreams needs explicit on tansu). Topics that exist are left
    as they are.

    Raises ``kafka.errors.KafkaError`` (e.g. ``KafkaTimeoutError``) when the broker is down,
    after about ``timeout_ms``.
    """
    options: dict[str, Any] = {"num_partitions": partitions, "replication_factor": 1}
    topic_configs = dict(configs or {})
    if max_message_bytes is not None:
        topic_configs["max.message.bytes"] = str(max_message_bytes)
    if topic_configs:
        options["configs"] = topic_configs
    admin = make_admin(bootstrap_servers, "sla-monitor-admin", timeout_ms)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics({topic: options}, timeout_ms=timeout_ms)
                created.append(topic)
            except TopicAlreadyExistsError:  # another process won the race: fine
                pass
        if created:
            log.info("created Kafka topics %s with %d partitions", created, partitions)
        return created
    finally:
        admin.close()


def make_admin(bootstrap_servers: str, client_id: str, timeout_ms: int) -> KafkaAdminClient:
    """An admin client whose bootstrap and requests each give up after ``timeout_ms``."""
    return KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,  # kafka-python waits 30 s for a broker otherwise
        client_id=client_id,
    )


def make_producer(
    bootstrap_servers: str,
    client_id: str,
    *,
    linger_ms: int = 20,
    max_block_ms: int = 10_000,
    request_timeout_ms: int = 10_000,
    compression: Compression = DEFAULT_COMPRESSION,
    max_request_size: int = MAX_MESSAGE_BYTES,
) -> KafkaProducer:
    """A batching, compressing, acks=all producer whose calls never block past ``max_block_ms``.

    ``max_request_size`` bounds each record before compression (kafka-python's check):
    keep it at most the topic's ``max.message.bytes`` so the broker never refuses a batch
    the producer accepted.

    It asks the broker not to create a missing topic (``allow_auto_create_topics=False``):
    Apache Kafka then fails a send to a topic it lost after ``max_block_ms``, and the
    caller re-creates its topics with :func:`ensure_topics` (our partition count) before a
    new producer. tansu 0.6 ignores the flag and creates the topic with its default of 4
    partitions. Close it with :func:`close_producer`.

    Raises ``kafka.errors.KafkaTimeoutError`` ("Unable to bootstrap") when the broker cannot
    be reached within about ``max_block_ms``.
    """
    return KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        linger_ms=linger_ms,
        batch_size=256 * 1024,
        max_block_ms=max_block_ms,
        bootstrap_timeout_ms=max_block_ms,  # kafka-python waits 30 s for a broker otherwise
        request_timeout_ms=request_timeout_ms,
        compression_type=codec(compression),
        max_request_size=max_request_size,
        retries=3,
        retry_backoff_ms=200,
        allow_auto_create_topics=False,
    )


def make_consumer(
    bootstrap_servers: str,
    client_id: str,
    group_id: str,
    *,
    session_timeout_ms: int,
    heartbeat_interval_ms: int,
    max_poll_records: int,
    max_poll_interval_ms: int = 300_000,
    bootstrap_timeout_ms: int = 10_000,
) -> KafkaConsumer:
    """A member of ``group_id`` that commits its offsets itself (once the work is done), starts
    a new group at the earliest offset and never has a missing topic created by a fetch
    (:func:`ensure_topics` creates ours, with our partition count). Its requests outlast a
    session timeout by 5 s, and it gives up bootstrapping after ``bootstrap_timeout_ms``
    (kafka-python waits 30 s otherwise). Subscribe it to the topics.

    Raises ``kafka.errors.NoBrokersAvailable`` when no broker answers in time.
    """
    return KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=heartbeat_interval_ms,
        request_timeout_ms=session_timeout_ms + 5000,
        bootstrap_timeout_ms=bootstrap_timeout_ms,
        max_poll_records=max_poll_records,
        max_poll_interval_ms=max_poll_interval_ms,
        allow_auto_create_topics=False,
    )


def close_producer(producer: Any, timeout_s: float) -> bool:
    """Close ``producer`` within about ``timeout_s``; True if everything buffered was sent.

    kafka-python 3.0's ``close(timeout)`` flushes first and raises ``KafkaTimeoutError``
    when the flush times out, *before* stopping its sender thread: the producer stays
    alive, keeps its connections and would deliver the buffered records whenever the
    broker comes back, long after its caller reported them as failed. Here, in that case,
    the sender is force-closed, which fails the records still buffered, then the producer
    is closed for good.
    """
    try:
        producer.close(timeout=timeout_s)
        return True
    except KafkaTimeoutError:
        pass
    sender = getattr(producer, "_sender", None)  # kafka-python 3.0.x (pinned) internals
    if sender is not None:
        sender.force_close()
        sender.join(timeout_s)
    try:
        producer.close(timeout=timeout_s)
    except KafkaError as e:
        log.warning("Kafka producer did not close cleanly: %s: %s", type(e).__name__, e)
    return False


class TopicWatch:
    """Notices, on a daemon thread, when ``topic`` is re-created (its topic id changes).

    A consumer's fetch positions survive a topic being deleted and created again (tansu
    forgets every topic on restart; the ETL re-creates them). Apache Kafka answers a fetch
    past the new log's end with OFFSET_OUT_OF_RANGE and the consumer resets; tansu 0.6
    answers with an empty batch, so the consumer would wait at its old offset until the new
    log grew past it and skip everything before. Whoever consumes ``topic`` polls
    :meth:`take` and, when it returns a change, rewinds. The check is a Metadata request
    for ``topic`` through an admin client every ``interval_s`` (it never creates the
    topic); while the broker is down it fails quietly and is tried again. The reference
    id is taken by :meth:`first_look`, before the consumer fetches anything.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        interval_s: float,
        timeout_ms: int,
        stop: threading.Event,
    ) -> None:
        self.bootstrap_servers, self.topic = bootstrap_servers, topic
        self.interval_s, self.timeout_ms, self._stop = interval_s, timeout_ms, stop
        self._lock = threading.Lock()
        self._seen: str | None = None
        self._change: tuple[str, str] | None = None
        self.checks = 0  # looks taken so far, failed ones included (tests wait on it)
        self._thread = threading.Thread(target=self._run, name=f"topic-watch-{topic}", daemon=True)

    def start(self) -> TopicWatch:
        self._thread.start()
        return self

    def take(self) -> tuple[str, str] | None:
        """(old id, new id) if the topic was re-created since the last call, else None."""
        with self._lock:
            change, self._change = self._change, None
        return change

    def current_id(self) -> str | None:
        with self._lock:
            return self._seen

    def check(self, admin: Any) -> str | None:
        """One look at the topic's id through ``admin`` (None: missing at the moment);
        raises KafkaError when it fails."""
        rows = admin.describe_topics([self.topic])
        row = rows[0] if rows else {}
        topic_id = row.get("topic_id") if row.get("error_code") == 0 else None
        if topic_id is None:  # missing at the moment: the id it comes back with decides
            return None
        topic_id = str(topic_id)
        with self._lock:
            if self._seen is not None and topic_id != self._seen:
                first = self._change[0] if self._change else self._seen
                self._change = (first, topic_id)
            self._seen = topic_id
        return topic_id

    def first_look(self) -> str:
        """The topic's id now, through an admin client of its own: the reference a later
        change is measured against. Call it (retried) before consuming anything, so that
        the records fetched are known to belong to this id: a watch whose first look came
        only after a broker restart would take the new topic's id for the original and
        never report the change. Raises KafkaError when the broker cannot tell (the topic
        missing included)."""
        admin = make_admin(self.bootstrap_servers, "sla-monitor-topic-watch", self.timeout_ms)
        try:
            topic_id = self.check(admin)
        finally:
            _close_quietly(admin)
        if topic_id is None:
            raise UnknownTopicOrPartitionError(f"topic {self.topic} has no id yet")
        return topic_id

    def _run(self) -> None:
        admin: Any = None
        while not self._stop.is_set():
            try:
                if admin is None:
                    admin = make_admin(
                        self.bootstrap_servers, "sla-monitor-topic-watch", self.timeout_ms
                    )
                self.check(admin)
            except (KafkaError, OSError) as e:
                log.debug("topic watch of %s: %s: %s", self.topic, type(e).__name__, e)
                _close_quietly(admin)
                admin = None
            except Exception as e:  # noqa: BLE001 - a watch that died would never report again
                # kafka-python 3.0 raises a few non-Kafka errors from a client whose IO
                # loop failed (RuntimeError "NetworkSelector closed!"): a new client, next time.
                log.warning("topic watch of %s: %s: %s", self.topic, type(e).__name__, e)
                _close_quietly(admin)
                admin = None
            with self._lock:
                self.checks += 1
            self._stop.wait(self.interval_s)
        _close_quietly(admin)


def _close_quietly(admin: Any) -> None:
    if admin is not None:
        try:
            admin.close()
        except Exception as e:  # noqa: BLE001 - best effort: it is dropped either way
            log.debug("closing an admin client: %s: %s", type(e).__name__, e)


__all__ = [
    "DEFAULT_COMPRESSION",
    "MAX_MESSAGE_BYTES",
    "Compression",
    "KafkaError",
    "TopicWatch",
    "close_producer",
    "codec",
    "ensure_topics",
    "make_admin",
    "make_producer",
]
