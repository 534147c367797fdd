"""The storage consumer: a Kafka topic -> MySQL, exactly once in effect.

One consumer per :class:`~data_storage.streams.Stream`: the ETL's analyses
(``prometheusdata``) or the detectors' anomaly records (``anomaly``), each in its own
consumer group, with its own checks, sink and dead-letter topic.

At-least-once delivery plus idempotent writes (see :mod:`data_storage.rows`). A batch is
the unit of work, in the order of quix-streams' checkpoint:

    1. collect records: up to N messages, R rows, or T ms after the first one;
    2. validate each against the message contract; invalid ones are set aside for the DLQ;
    3. write the valid ones in ONE MySQL transaction (server trouble: roll back, back off,
       retry the same batch; a message MySQL itself refuses is isolated and dead-lettered);
    4. produce the dead letters (original key and bytes, ``dlq.*`` headers; without the
       value when the topic refuses it whole, see :mod:`data_storage.deadletter`) and wait
       for the broker's acknowledgement;
    5. commit the offsets of every record of the batch, only now;
    6. clear the batch (always, in ``finally``).

A crash anywhere before step 5 redelivers the batch, which upserts the same rows again.
While MySQL or the broker is down the consumer waits with backoff and logs; it never
commits past what it has written, and it keeps its group membership alive meanwhile.
SIGTERM (the ``stop`` event) ends the collection, finishes and commits the current batch,
and leaves the group. A batch still waiting for a dependency when stop arrives is left
uncommitted: it is redelivered to whoever consumes next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata

from data_storage.deadletter import DeadLetter, DeadLetterQueue
from data_storage.metrics import StorageMetrics
from data_storage.settings import StorageSettings
from data_storage.streams import Stream, analyses
from data_storage.validate import Rejected
from data_storage.writer import Sink, WriteResult
from sla_common.kafka import TopicWatch, close_producer, ensure_topics, make_producer
from sla_common.mysql import Backoff, Stopped, is_data_error, retry
from sla_common.mysql_startup import MYSQL_ERRORS

log = logging.getLogger(__name__)

POLL_MS = 200  # the longest the loop is deaf to the stop flag while idle
KEEPALIVE_EVERY_S = 1.0
SUMMARY_EVERY_S = 60.0
# Errors of a commit that lost the race with a rebalance: the batch is redelivered.
MEMBERSHIP_ERRORS = (
    CommitFailedError,
    IllegalGenerationError,
    UnknownMemberIdError,
    RebalanceInProgressError,
    FencedInstanceIdError,
)
DB_ERRORS = MYSQL_ERRORS
# What kafka-python raises when the partitions passed to seek/pause/resume were taken away
# by a rebalance on its IO thread after ``assignment()`` listed them: ValueError
# ("Unassigned partition"), KeyError (pause/resume), IllegalStateError (a KafkaError).
ASSIGNMENT_RACE_ERRORS = (KafkaError, ValueError, KeyError)


@dataclass
class Item:
    """One record of the batch: the message if it is valid, else why it is not."""

    record: Any  # kafka ConsumerRecord
    msg: Any = None  # the stream's message type (an AnalysisMessage, an AnomalyRecord)
    rejected: Rejected | None = None
    letter: DeadLetter | None = None  # its way to the DLQ, kept across retries of the batch

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)


@dataclass
class Batch:
    row_count: Callable[[Any], int]  # rows a message becomes
    items: list[Item] = field(default_factory=list)
    rows: int = 0
    started: float | None = None

    def add(self, item: Item) -> None:
        if self.started is None:
            self.started = time.monotonic()
        self.items.append(item)
        if item.msg is not None:
            self.rows += self.row_count(item.msg)

    def good(self) -> list[Item]:
        return [i for i in self.items if i.msg is not None]

    def bad(self) -> list[Item]:
        return [i for i in self.items if i.rejected is not None]

    def messages(self) -> list[Any]:
        return [i.msg for i in self.items if i.msg is not None]

    def offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset to commit: one past the batch's last record."""
        out: dict[TopicPartition, int] = {}
        for i in self.items:
            tp = i.tp
            out[tp] = max(out.get(tp, 0), i.record.offset + 1)
        return out

    def drop(self, partitions: Iterable[TopicPartition]) -> int:
        """Take out the records of ``partitions``; a batch left empty is a new one again.

        Its deadline (``started``) goes with its last record: an empty batch whose clock
        kept running would look due forever, and :meth:`StorageConsumer.fill_batch` would
        return before every poll, so the consumer would never poll again (nor rejoin its
        group, which only a poll drives) while :meth:`StorageConsumer.consume` skips the
        empty batch.
        """
        gone = set(partitions)
        before = len(self.items)
        self.items = [i for i in self.items if i.tp not in gone]
        self.rows = sum(self.row_count(i.msg) for i in self.items if i.msg is not None)
        if not self.items:
            self.started = None
        return before - len(self.items)

    def clear(self) -> None:
        self.items = []
        self.rows = 0
        self.started = None


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    """Collects revoked partitions; kafka-python calls this on its own IO thread.

    kafka-python 3.0 runs the group protocol on that thread too: the assignment can change
    between any two calls the loop makes (``assignment()`` then ``seek``/``pause``), which
    the loop has to survive (see :data:`ASSIGNMENT_RACE_ERRORS`).
    """

    def __init__(self, group_id: str = "") -> None:
        self.group_id = group_id
        self._lock = threading.Lock()
        self._revoked: set[TopicPartition] = set()

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        with self._lock:
            self._revoked.update(revoked)

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        # The group names the consumer: one process runs one per stream.
        log.info(
            "group %s: assigned partitions %s",
            self.group_id,
            sorted((tp.topic, tp.partition) for tp in assigned),
        )

    def take(self) -> set[TopicPartition]:
        with self._lock:
            out, self._revoked = self._revoked, set()
        return out


class BatchAbandoned(Exception):
    """The stop flag arrived while the batch waited for a dependency; nothing was committed."""


class NothingWritable(Exception):
    """No message of the batch could be written, each for an unexpected (non-MySQL) error.

    That says more about the writer than about the messages: the batch is retried like
    after a server error, and nothing is dead-lettered for it.
    """


# What makes the write step back off and retry the same batch.
RETRIED_WRITE_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, NothingWritable)


@dataclass
class StorageConsumer:
    """The loop: Kafka records in, the sink (:class:`Writer`) and the DLQ, then the commit.

    The sink and the Kafka clients can be given (fakes, in the unit tests); otherwise the
    writer is made from the settings and the clients by :meth:`prepare`.
    """

    settings: StorageSettings
    metrics: StorageMetrics = field(default_factory=StorageMetrics)
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.time
    stream: Stream | None = None  # default: the analyses (KAFKA_TOPIC)
    make_writer: Callable[[StorageSettings], Sink[Any]] | None = None  # default: the stream's
    consumer: Any = field(default=None, repr=False)  # KafkaConsumer
    producer: Any = field(default=None, repr=False)  # KafkaProducer of the dead letters

    def __post_init__(self) -> None:
        st = self._stream = self.stream = self.stream or analyses(self.settings)
        self.writer = (self.make_writer or st.make_writer)(self.settings)
        self.batch = Batch(st.row_count)
        self._revocations = _Revocations(st.group_id)
        self._watch: TopicWatch | None = None
        # Set when the topic was re-created, until its partitions were seen assigned and
        # rewound (see _rewind_if_recreated).
        self._rewind_pending = False
        self._last_purge = time.monotonic()
        self._last_summary = time.monotonic()
        self._since_summary = [0, 0, 0]  # messages, rows, dead letters
        # Rows per message, learnt as messages come; starts at the stream's guess (a full
        # 12 h ETL message) so the first poll cannot bring hundreds of large ones at once.
        self._rows_per_msg = st.first_rows_per_message

    def backoff(self) -> Backoff:
        return Backoff(self.settings.storage_backoff_base_s, self.settings.storage_max_backoff_s)

    # ------------------------------------------------------------------ start / stop

    def prepare(self) -> None:
        """Wait for the database (the schema is `python -m sla_common.migrate`'s job, and
        `python -m data_storage` checks its version before this), each retried until done.

        Raises :class:`Stopped` if the stop flag arrives first.
        """
        s, st = self.settings, self._stream
        retry(
            self.writer.connection,
            what=f"MySQL {s.mysql_host}:{s.mysql_port}/{s.mysql_database}",
            retry_on=DB_ERRORS,
            backoff=self.backoff(),
            stop=self.stop,
        )
        self.metrics.mysql_up.set(1)
        retry(
            lambda: ensure_topics(
                s.kafka_bootstrap_servers,
                [st.topic, st.dlq_topic],
                partitions=s.kafka_partitions,
                timeout_ms=s.kafka_request_timeout_ms,
                max_message_bytes=s.storage_max_message_bytes,
            ),
            what=f"Kafka {s.kafka_bootstrap_servers} topic set-up",
            retry_on=(KafkaError, OSError),
            backoff=self.backoff(),
            stop=self.stop,
        )
        self.producer = self.producer or retry(
            lambda: make_producer(
                s.kafka_bootstrap_servers,
                "data_storage-dlq",
                max_block_ms=s.kafka_request_timeout_ms,
                request_timeout_ms=s.kafka_request_timeout_ms,
            ),
            what="Kafka dead-letter producer",
            retry_on=(KafkaError, OSError),
            backoff=self.backoff(),
            stop=self.stop,
        )
        watch = None
        if s.storage_topic_check_s > 0:
            watch = TopicWatch(
                s.kafka_bootstrap_servers,
                st.topic,
                s.storage_topic_check_s,
                s.kafka_request_timeout_ms,
                self.stop,
            )
            # The id the records about to be fetched belong to, known before the first
            # fetch: otherwise a first look that fails (a loaded host, a short request
            # timeout) until after a broker restart takes the new topic's id for the one
            # the positions came from, and the re-creation is never noticed.
            retry(
                watch.first_look,
                what=f"Kafka topic {st.topic} id",
                retry_on=(KafkaError, OSError),
                backoff=self.backoff(),
                stop=self.stop,
            )
        self.consumer = self.consumer or retry(
            self._make_consumer,
            what="Kafka consumer",
            retry_on=(KafkaError, OSError),
            backoff=self.backoff(),
            stop=self.stop,
        )
        if watch is not None:
            self._watch = watch.start()
        log.info(
            "consuming %s as group %s from %s into MySQL %s:%d/%s",
            st.topic,
            st.group_id,
            s.kafka_bootstrap_servers,
            s.mysql_host,
            s.mysql_port,
            s.mysql_database,
        )

    def _make_consumer(self) -> Any:
        s = self.settings
        consumer = KafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers,
            client_id="data_storage",
            group_id=self._stream.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
            max_poll_interval_ms=s.kafka_max_poll_interval_ms,
            max_poll_records=s.storage_batch_max_messages,
            request_timeout_ms=max(s.kafka_request_timeout_ms, s.kafka_session_timeout_ms + 1000),
            bootstrap_timeout_ms=s.kafka_request_timeout_ms,
            # Room for one over-limit record, so it can be fetched and dead-lettered.
            max_partition_fetch_bytes=2 * s.storage_max_message_bytes,
            fetch_max_bytes=4 * s.storage_max_message_bytes,
            reconnect_backoff_max_ms=int(s.storage_max_backoff_s * 1000),
            # A topic a restarted broker forgot is re-created by ensure_topics (here or in
            # the ETL) with our partition count, never by a fetch with the broker's default.
            allow_auto_create_topics=False,
        )
        consumer.subscribe([self._stream.topic], listener=self._revocations)
        return consumer

    def close(self) -> None:
        """Leave the group (so the next member need not wait a session timeout), close all."""
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                consumer.close(autocommit=False, timeout_ms=self.settings.kafka_request_timeout_ms)
            except KafkaError as e:
                log.warning("closing the Kafka consumer: %s", e)
        producer, self.producer = self.producer, None
        if producer is not None and not close_producer(producer, 5.0):
            log.warning("the dead-letter producer closed with records unsent")
        self.writer.close()

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        """Consume until the stop flag is set; returns after the last batch is committed."""
        try:
            try:
                self.prepare()
            except Stopped:
                log.info("stopped before start-up completed")
                return
            self.consume()
        finally:
            self.close()

    def consume(self) -> None:
        """Batch after batch until the stop flag is set (the clients are ready)."""
        while not self.stop.is_set():
            self.fill_batch()
            if self.batch.items:
                self.process_batch()
            self.maybe_purge()
            self._maybe_summary()

    def fill_batch(self) -> None:
        """Step 1-2: poll and validate until the batch is full, due, or stop is set."""
        s = self.settings
        max_wait = s.storage_batch_max_wait_ms / 1000
        while not self.stop.is_set():
            self._apply_revocations()
            if self._rewind_if_recreated():
                return
            if self._rewind_pending:
                self._rewind()
            b = self.batch
            room_msgs = s.storage_batch_max_messages - len(b.items)
            room_rows = s.storage_batch_max_rows - b.rows
            if room_msgs <= 0 or room_rows <= 0:
                return
            timeout_ms = POLL_MS
            if b.started is not None:
                left = b.started + max_wait - time.monotonic()
                if left <= 0:
                    return
                timeout_ms = max(1, min(POLL_MS, int(left * 1000)))
            # Few enough records that a batch overshoots its row budget by one message at most.
            ask = max(1, min(room_msgs, int(room_rows / self._rows_per_msg) + 1))
            try:
                polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=ask)
            except KafkaError as e:
                self.metrics.kafka_errors.labels("poll").inc()
                log.warning("Kafka poll failed: %s: %s", type(e).__name__, e)
                self.stop.wait(1.0)
                continue
            for records in polled.values():
                for record in records:
                    self._add(record)

    def _rewind_if_recreated(self) -> bool:
        """When the topic was re-created: store the batch uncommitted, read from the start.

        True when it did so (the caller's batch is then empty and committed nothing). The
        batch's records come from the topic that is gone: they are written (they are real
        analyses) but their offsets mean nothing in the new topic, so none is committed.
        Reading the new topic from its beginning may re-read records a rejoin already
        delivered: the upserts make that harmless.
        """
        change = self._watch.take() if self._watch is not None else None
        if change is None:
            return False
        topic = self._stream.topic
        self.metrics.topic_recreations.inc()
        held = len(self.batch.items)
        log.warning(
            "topic %s was re-created (id %s -> %s; a restarted broker that lost it?): "
            "reading it again from its beginning; %d fetched record(s) of the old topic "
            "written without an offset commit",
            topic,
            change[0],
            change[1],
            held,
        )
        if held:
            self.process_batch(commit=False)
        self._rewind_pending = True
        self._rewind()
        return True

    def _rewind(self) -> bool:
        """Seek the topic's assigned partitions to their beginning; True when it did.

        Until it did, the rewind stays pending and is tried again before every poll. A
        rejoin does not reset positions: kafka-python 3.0 keeps the position of every
        partition a member is assigned again, so a rewind lost to a rebalance (no
        partition assigned at that moment, or the assignment changed under the seek on
        kafka-python's IO thread) would leave the consumer at offsets of the topic that is
        gone, where tansu answers with empty batches until the new log outgrows them.
        Then it takes the records after them only.
        """
        topic = self._stream.topic
        try:
            mine = [tp for tp in self.consumer.assignment() if tp.topic == topic]
            if not mine:
                return False
            self.consumer.seek_to_beginning(*mine)
        except ASSIGNMENT_RACE_ERRORS as e:
            log.info(
                "rewinding %s: the assignment changed meanwhile (%s: %s); trying again",
                topic,
                type(e).__name__,
                e,
            )
            return False
        self._rewind_pending = False
        log.info(
            "rewound %s partitions %s to their beginning", topic, sorted(p.partition for p in mine)
        )
        return True

    def _add(self, record: Any) -> None:
        self.metrics.messages_consumed.inc()
        s = self.settings
        result = self._stream.check(
            record.key,
            record.value,
            s.storage_max_message_bytes,
            not_after=self.clock() + s.storage_max_future_skew_s,
        )
        if isinstance(result, Rejected):
            self.batch.add(Item(record, rejected=result))
            return
        self.batch.add(Item(record, msg=result))
        # A running mean of rows per message sizes the next poll (see fill_batch).
        self._rows_per_msg = 0.7 * self._rows_per_msg + 0.3 * self.batch.row_count(result)

    def _apply_revocations(self) -> None:
        revoked = self._revocations.take()
        if revoked and self.batch.items:
            dropped = self.batch.drop(revoked)
            if dropped:
                log.info(
                    "partitions revoked: %d uncommitted record(s) of them dropped from the "
                    "batch; their new owner consumes them",
                    dropped,
                )

    def process_batch(self, commit: bool = True) -> None:
        """Steps 3-6 for the current batch (5. left out when not ``commit``)."""
        b = self.batch
        try:
            self.metrics.batch_messages.observe(len(b.items))
            result = self._write_with_retry()  # 3.
            self._dead_letter_with_retry()  # 4.
            if not commit or self._commit_with_retry():  # 5.
                self._account(result)
        except BatchAbandoned:
            log.warning(
                "stopping with an uncommitted batch of %d record(s)%s",
                len(b.items),
                "; they will be consumed again" if commit else " of a topic that is gone",
            )
        finally:
            b.clear()  # 6.

    # ------------------------------------------------------------------ 3. write

    def _write_with_retry(self) -> WriteResult | None:
        backoff = self.backoff()
        failures = 0
        while True:
            self._apply_revocations()
            msgs = self.batch.messages()
            if not msgs:
                return None
            try:
                try:
                    result = self.writer.write(msgs)
                except DB_ERRORS as e:
                    if not is_data_error(e):
                        raise
                    result = self._isolate(e)
                except Exception:  # a bug must not stop the whole stream: isolate, dead-letter
                    log.exception("unexpected error writing a batch; isolating its messages")
                    result = self._isolate(None)
            except RETRIED_WRITE_ERRORS as e:
                self.writer.drop_connection()
                if isinstance(e, NothingWritable):
                    self.metrics.write_errors.labels("unexpected").inc()
                else:
                    self._mysql_failed()
                    self.metrics.write_errors.labels("transient").inc()
                failures += 1
                delay = backoff.next_delay()
                log.warning(
                    "MySQL write of %d message(s) failed: %s: %s; rolled back, nothing "
                    "committed, retrying the same batch in %.1fs",
                    len(msgs),
                    type(e).__name__,
                    e,
                    delay,
                )
                self._wait_alive(delay)
                continue
            if failures:
                log.info("MySQL write succeeded after %d failed attempt(s)", failures)
            self.metrics.mysql_up.set(1)
            self.metrics.batch_write_duration.observe(result.seconds)
            return result

    def _isolate(self, error: BaseException | None) -> WriteResult:
        """A batch MySQL refused: write message by message, dead-letter the refused ones."""
        self.metrics.write_errors.labels("data").inc()
        if error is not None:
            log.warning("MySQL refused the batch (%s); writing its messages one by one", error)
        msgs = self.batch.messages()
        result, refused = self.writer.write_each(msgs)
        if len(refused) == len(msgs) and not any(is_data_error(r.error) for r in refused):
            raise NothingWritable(f"{type(refused[0].error).__name__}: {refused[0].error}")
        bad = {id(r.msg): r for r in refused}
        for item in self.batch.items:
            if item.msg is not None and id(item.msg) in bad:
                err = bad[id(item.msg)].error
                item.rejected = Rejected("db_rejected", f"{type(err).__name__}: {err}"[:1000])
                item.msg = None
        return result

    def _mysql_failed(self) -> None:
        self.metrics.mysql_up.set(0)

    # ------------------------------------------------------------------ 4. dead letters

    def _dead_letter_with_retry(self) -> None:
        letters = []
        for item in self.batch.items:
            if item.rejected is not None:
                if item.letter is None:
                    item.letter = DeadLetter(item.record, item.rejected)
                letters.append(item.letter)
        if not letters:
            return
        s = self.settings
        queue = DeadLetterQueue(
            self.producer,
            self._stream.dlq_topic,
            self._stream.group_id,
            s.kafka_request_timeout_ms / 1000,
            self.metrics,
        )
        backoff = self.backoff()
        while True:
            try:
                queue.send(letters)  # only what is not acknowledged yet
                return
            except KafkaError as e:
                self.metrics.kafka_errors.labels("dlq").inc()
                delay = backoff.next_delay()
                log.warning(
                    "dead-lettering %d record(s) failed: %s: %s; retrying in %.1fs",
                    sum(1 for d in letters if not d.finished),
                    type(e).__name__,
                    e,
                    delay,
                )
                self._wait_alive(delay)

    # ------------------------------------------------------------------ 5. commit

    def _commit_with_retry(self) -> bool:
        """Commit the batch's offsets; False when a rebalance took its partitions meanwhile."""
        backoff = self.backoff()
        while True:
            self._apply_revocations()
            offsets = {
                tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self.batch.offsets().items()
            }
            if not offsets:
                return False
            try:
                self.consumer.commit(offsets, timeout_ms=self.settings.kafka_request_timeout_ms)
            except MEMBERSHIP_ERRORS as e:
                self.metrics.kafka_errors.labels("commit").inc()
                log.warning(
                    "offset commit refused after a rebalance (%s); the batch was written and "
                    "will be consumed and upserted again by the partitions' new owner",
                    type(e).__name__,
                )
                return False
            except KafkaError as e:
                self.metrics.kafka_errors.labels("commit").inc()
                delay = backoff.next_delay()
                log.warning(
                    "offset commit failed: %s: %s; retrying in %.1fs", type(e).__name__, e, delay
                )
                self._wait_alive(delay)
                continue
            self.metrics.commits.inc()
            self.metrics.last_commit.set(self.clock())
            return True

    def _account(self, result: WriteResult | None) -> None:
        good, bad = len(self.batch.good()), len(self.batch.bad())
        self.metrics.messages_stored.inc(good)
        rows = 0
        if result is not None:
            for table, n in result.rows.items():
                if n:
                    self.metrics.rows_written.labels(table).inc(n)
            rows = result.total_rows
        self._since_summary[0] += good
        self._since_summary[1] += rows
        self._since_summary[2] += bad
        log.debug(
            "batch committed: %d stored (%d rows in %.3fs), %d dead-lettered",
            good,
            rows,
            result.seconds if result else 0.0,
            bad,
        )

    # ------------------------------------------------------------------ waiting

    def _wait_alive(self, seconds: float) -> None:
        """Sleep ``seconds`` while keeping group membership; BatchAbandoned on stop."""
        deadline = time.monotonic() + seconds
        while True:
            self._keepalive()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.stop.wait(min(KEEPALIVE_EVERY_S, left)):
                raise BatchAbandoned

    def _keepalive(self) -> None:
        """A poll that fetches nothing: it tells the group this member is alive.

        Without it a member waiting longer than KAFKA_MAX_POLL_INTERVAL_MS for MySQL would
        be evicted and its partitions shuffled for nothing. Records that still arrive (from
        partitions assigned by a rebalance during this poll) are put back by seeking.
        """
        consumer = self.consumer
        if consumer is None:
            return
        try:
            consumer.pause(*consumer.assignment())
            polled = consumer.poll(timeout_ms=0)
            for tp, records in polled.items():
                if records:
                    consumer.seek(tp, min(r.offset for r in records))
        except ASSIGNMENT_RACE_ERRORS as e:  # a rebalance meanwhile: its new owner reads them
            log.debug("keep-alive poll: %s: %s", type(e).__name__, e)
        finally:
            try:
                consumer.resume(*consumer.assignment())
            except ASSIGNMENT_RACE_ERRORS as e:
                log.debug("resume: %s: %s", type(e).__name__, e)

    # ------------------------------------------------------------------ retention

    def maybe_purge(self) -> None:
        s = self.settings
        if s.storage_retention_s <= 0:
            return
        if time.monotonic() - self._last_purge < s.storage_purge_interval_s:
            return
        self._last_purge = time.monotonic()
        cutoff = int(self.clock()) - s.storage_retention_s
        try:
            purged = self.writer.purge(cutoff, s.storage_purge_batch_rows, s.storage_purge_budget_s)
        except DB_ERRORS as e:
            self.writer.drop_connection()
            self._mysql_failed()
            log.warning(
                "retention purge failed: %s: %s; next try in %.0fs",
                type(e).__name__,
                e,
                s.storage_purge_interval_s,
            )
            return
        for table, n in purged.items():
            self.metrics.purged_rows.labels(table).inc(n)
        if purged:
            log.info("retention purge (older than %d): %s", cutoff, purged)

    def _maybe_summary(self) -> None:
        if time.monotonic() - self._last_summary < SUMMARY_EVERY_S:
            return
        msgs, rows, dead = self._since_summary
        if msgs or dead:
            log.info(
                "last %.0fs: %d message(s) stored (%d rows), %d dead-lettered",
                time.monotonic() - self._last_summary,
                msgs,
                rows,
                dead,
            )
        self._since_summary = [0, 0, 0]
        self._last_summary = time.monotonic()
