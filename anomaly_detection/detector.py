"""The detector: a consumer-group loop over ``samples`` with explicit, checkpointed state.

Why not quixstreams (BENCHMARKS.md, README): on the local broker its state recovery fails
(``InvalidStoreChangelogOffset`` at every restart with local state, because tansu's
``ListOffsets(latest)`` is wrong; see the README's detector section), so a killed detector
could not be restarted without clearing state and re-learning. This loop keeps the same
windows in plain Python.

State and delivery, per assigned partition of ``KAFKA_SAMPLES_TOPIC``:

1. records are decoded (a malformed one goes to ``KAFKA_SAMPLES_DLQ_TOPIC`` with the reason
   in ``dlq.*`` headers), folded into the series' open windows; every window that closes is
   judged and its record produced to ``KAFKA_ANOMALY_TOPIC``;
2. every ``ANOMALY_COMMIT_INTERVAL_S`` (and on SIGTERM) a checkpoint: the producer is
   flushed (every result and dead letter so far acknowledged), then the partition's state
   — open windows, learned normals, the next offset — is written atomically to
   ``ANOMALY_STATE_DIR/<group>/<topic>-<partition>.json``, then the offset is committed;
3. a process that gets a partition (start, restart after SIGKILL, rebalance) loads that
   file and seeks to its offset: state and position always match, so no window result is
   lost. Results produced after the last checkpoint are produced again, identical, with
   the same idempotent key (series, detector, window start): delivery is at-least-once.
   Processes of one group on one host share the directory; on several hosts give it a
   shared volume, or a partition moving hosts restarts from the committed offset with
   fresh state (LEARNING again; logged).

A failed send (broker down) rolls every partition back to its last checkpoint and reads
again from there once the broker answers; nothing is committed meanwhile. A samples topic
that was re-created (a restarted tansu forgets every topic) is noticed by its topic id
(:class:`sla_common.kafka.TopicWatch`) and read again from its beginning; the learned
normals and open windows are kept (a checkpoint remembers the topic id of its offset).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from anomaly_detection.judge import Rule
from anomaly_detection.metrics import DetectorMetrics
from anomaly_detection.rules import Baseline, Season
from anomaly_detection.settings import DetectorSettings
from anomaly_detection.windows import Partial, SeriesWindows
from sla_common.anomalies import AnomalyRecord
from sla_common.kafka import (
    TopicWatch,
    close_producer,
    ensure_topics,
    make_consumer,
    make_producer,
)
from sla_common.samples import SampleFormatError, decode_batch

log = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_REASON = 200


@dataclass
class Series:
    metric: str
    labels: dict[str, str]
    windows: SeriesWindows
    baseline: Baseline = field(default_factory=Baseline)
    seasons: dict[int, Season] = field(default_factory=dict)  # period (s) -> its phases

    def to_json(self) -> dict[str, Any]:
        w = self.windows
        return {
            "metric": self.metric,
            "labels": self.labels,
            "latest": w.latest_ms,
            "late": w.late_samples,
            "open": [[p.start_ms, p.last_ms, p.n, p.mean, p.m2] for p in w.open.values()],
            "baseline": self.baseline.to_list(),
            "seasons": {str(k): v.to_json() for k, v in self.seasons.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], size_ms: int, grace_ms: int) -> Series:
        w = SeriesWindows(size_ms, grace_ms, latest_ms=int(d["latest"]))
        w.late_samples = int(d.get("late", 0))
        for s, last, n, mean, m2 in d["open"]:
            w.open[int(s)] = Partial(int(s), int(last), int(n), float(mean), float(m2))
        seasons = {int(k): Season.from_json(v) for k, v in d.get("seasons", {}).items()}
        return cls(d["metric"], dict(d["labels"]), w, Baseline.from_list(d["baseline"]), seasons)


@dataclass
class PartitionState:
    """What this process knows of one partition: the next offset and its series."""

    offset: int | None  # None: no checkpoint; continue from the group's committed offset
    series: dict[str, Series] = field(default_factory=dict)
    dirty: bool = False
    topic_id: str | None = None  # the samples topic's id the offset belongs to


class StateStore:
    """Checkpoint files, one per partition, written atomically (temp file, fsync, rename)."""

    def __init__(self, root: Path, size_ms: int, grace_ms: int) -> None:
        self.root = root
        self.size_ms = size_ms
        self.grace_ms = grace_ms
        root.mkdir(parents=True, exist_ok=True)

    def path(self, tp: TopicPartition) -> Path:
        return self.root / f"{tp.topic}-{tp.partition}.json"

    def load(self, tp: TopicPartition) -> PartitionState:
        try:
            doc = json.loads(self.path(tp).read_text())
        except FileNotFoundError:
            return PartitionState(offset=None)
        if doc.get("v") != STATE_VERSION or doc.get("window_ms") != self.size_ms:
            log.warning(
                "checkpoint %s is for another version or window size; starting %s fresh",
                self.path(tp),
                tp,
            )
            return PartitionState(offset=None)
        series = {
            k: Series.from_json(v, self.size_ms, self.grace_ms) for k, v in doc["series"].items()
        }
        return PartitionState(
            offset=int(doc["offset"]), series=series, topic_id=doc.get("topic_id")
        )

    def save(self, tp: TopicPartition, ps: PartitionState) -> None:
        doc = {
            "v": STATE_VERSION,
            "window_ms": self.size_ms,
            "offset": ps.offset,
            "topic_id": ps.topic_id,
            "series": {k: s.to_json() for k, s in ps.series.items()},
        }
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{tp.topic}-{tp.partition}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(tp))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    """Collects assignment changes; the main loop applies them (kafka-python may call us
    from its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._assigned: set[TopicPartition] = set()
        self._revoked: set[TopicPartition] = set()

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        with self._lock:
            self._revoked.update(revoked)
            self._assigned.difference_update(revoked)

    def on_partitions_lost(self, lost: list[TopicPartition]) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        with self._lock:
            self._assigned.update(assigned)

    def take(self) -> tuple[set[TopicPartition], set[TopicPartition]]:
        with self._lock:
            a, r = self._assigned, self._revoked
            self._assigned, self._revoked = set(), set()
        return a, r


class SendFailed(Exception):
    """A result or dead letter was not acknowledged: roll back to the last checkpoint."""


class Detector:
    def __init__(
        self,
        settings: DetectorSettings,
        metrics: DetectorMetrics,
        stop: threading.Event | None = None,
    ) -> None:
        self.s = settings
        self.metrics = metrics
        self.stop = stop or threading.Event()
        self.rule = Rule.from_settings(settings)
        self.store = StateStore(
            Path(settings.anomaly_state_dir) / settings.kafka_group_id,
            settings.anomaly_window_ms,
            settings.anomaly_grace_ms,
        )
        self.parts: dict[TopicPartition, PartitionState] = {}
        self.pending: list[Any] = []
        self.consumer: Any = None
        self.producer: Any = None
        self.rebalances = _Rebalances()
        self.backoff = 1.0
        self.watch: TopicWatch | None = None

    # ------------------------------------------------------------------ set-up

    def prepare(self) -> None:
        """Topics, producer and consumer; waits (with backoff) while the broker is down."""
        s = self.s
        while not self.stop.is_set():
            try:
                ensure_topics(
                    s.kafka_bootstrap_servers,
                    [s.kafka_samples_topic, s.kafka_anomaly_topic, s.kafka_samples_dlq_topic],
                    partitions=s.kafka_partitions,
                )
                self.producer = make_producer(
                    s.kafka_bootstrap_servers, "anomaly_detection", linger_ms=5
                )
                self.consumer = self._make_consumer()
                self.watch = TopicWatch(
                    s.kafka_bootstrap_servers,
                    s.kafka_samples_topic,
                    TOPIC_CHECK_S,
                    5000,
                    self.stop,
                ).start()
                self.backoff = 1.0
                return
            except KafkaError as e:
                self._wait(f"broker not reachable ({type(e).__name__}: {e})")

    def _make_consumer(self) -> Any:
        s = self.s
        consumer = make_consumer(
            s.kafka_bootstrap_servers,
            "anomaly_detection",
            s.kafka_group_id,
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
            max_poll_records=2000,
        )
        consumer.subscribe([s.kafka_samples_topic], listener=self.rebalances)
        return consumer

    def _wait(self, why: str) -> None:
        log.warning("%s; retrying in %.0f s", why, self.backoff)
        self.stop.wait(self.backoff)
        self.backoff = min(self.backoff * 2, MAX_BACKOFF_S)

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False, timeout_ms=5000)
            except KafkaError as e:
                log.warning("closing the Kafka consumer: %s", e)
            self.consumer = None
        if self.producer is not None:
            if not close_producer(self.producer, 5.0):
                log.warning("the producer closed with records unsent (not checkpointed)")
            self.producer = None

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        """Until the stop flag: poll, detect, checkpoint; a last checkpoint on the way out."""
        try:
            self.prepare()
            last = time.monotonic()
            while not self.stop.is_set():
                self.poll_once()
                if time.monotonic() - last >= self.s.anomaly_commit_interval_s:
                    self.checkpoint_or_rollback()
                    last = time.monotonic()
            if self.consumer is not None:
                self.checkpoint_or_rollback(final=True)
        finally:
            self.close()

    def poll_once(self, timeout_ms: int = 200) -> int:
        batches = self.consumer.poll(timeout_ms=timeout_ms)
        fresh = self.apply_rebalances() | self.rewind_if_recreated()
        n = 0
        for tp, records in batches.items():
            ps = self.parts.get(tp)
            if ps is None:
                if tp not in self.consumer.assignment():
                    continue  # revoked since the fetch: its next owner reads these
                self._load(tp)  # assigned while we were polling
                fresh.add(tp)
                ps = self.parts.get(tp)
                if ps is None:
                    continue
            for rec in records:
                if ps.offset is not None and rec.offset < ps.offset:
                    continue  # already in the state (fetched before a seek)
                if tp in fresh and ps.offset is not None and rec.offset > ps.offset:
                    break  # fetched past the checkpoint: the seek reads them again
                self.process(ps, rec)
                ps.offset = rec.offset + 1
                ps.dirty = True
                n += 1
        return n

    def apply_rebalances(self) -> set[TopicPartition]:
        assigned, revoked = self.rebalances.take()
        for tp in revoked:
            # Not checkpointed here: the partition may already be another member's, which
            # reads the last checkpoint and produces the same results again if needed.
            if self.parts.pop(tp, None) is not None:
                log.info("partition %s revoked", tp)
        for tp in assigned:
            self._load(tp)
        return assigned

    def rewind_if_recreated(self) -> set[TopicPartition]:
        """Partitions whose offsets belong to a topic that is gone: read the new one from 0."""
        current = self.watch.current_id() if self.watch is not None else None
        if self.watch is not None:
            self.watch.take()
        if current is None:
            return set()
        rewound = set()
        for tp, ps in self.parts.items():
            if ps.topic_id is None:
                ps.topic_id = current
            elif ps.topic_id != current:
                log.warning(
                    "topic %s was re-created: reading partition %d from its beginning "
                    "(learned normals kept)",
                    tp.topic,
                    tp.partition,
                )
                self._ensure_output_topics()
                ps.topic_id, ps.offset, ps.dirty = current, 0, True
                with contextlib.suppress(KafkaError):
                    self.consumer.seek(tp, 0)
                rewound.add(tp)
        return rewound

    def _ensure_output_topics(self) -> None:
        s = self.s
        with contextlib.suppress(KafkaError):
            ensure_topics(
                s.kafka_bootstrap_servers,
                [s.kafka_anomaly_topic, s.kafka_samples_dlq_topic],
                partitions=s.kafka_partitions,
            )

    def _load(self, tp: TopicPartition) -> None:
        ps = self.store.load(tp)
        current = self.watch.current_id() if self.watch is not None else None
        if ps.offset is not None and current is not None and ps.topic_id not in (None, current):
            log.warning("partition %s: checkpoint of a topic that is gone; from 0", tp)
            ps.offset, ps.topic_id = 0, current
        if ps.offset is not None:
            try:
                self.consumer.seek(tp, ps.offset)
            except KafkaError as e:  # revoked again meanwhile: its next owner has it
                log.info("partition %s not resumed: %s", tp, e)
                return
            log.info(
                "partition %s: resuming from checkpoint at offset %d (%d series)",
                tp,
                ps.offset,
                len(ps.series),
            )
        else:
            log.info("partition %s: no checkpoint; from the group's committed offset", tp)
        self.parts[tp] = ps

    def process(self, ps: PartitionState, rec: Any) -> None:
        m = self.metrics
        m.records.inc()
        try:
            if rec.key is None:
                raise SampleFormatError("record has no key (the series key)")
            if rec.value is None:
                raise SampleFormatError("value is empty")
            batch = decode_batch(rec.value, rec.key)
        except SampleFormatError as e:
            self.dead_letter(rec, str(e)[:MAX_REASON])
            return
        m.samples.inc(len(batch.values))
        series = ps.series.get(batch.key)
        if series is None:
            series = Series(
                batch.metric,
                dict(batch.labels),
                SeriesWindows(self.s.anomaly_window_ms, self.s.anomaly_grace_ms),
            )
            ps.series[batch.key] = series
        late = series.windows.late_samples
        closed = series.windows.add_batch(batch.timestamps_ms, batch.values)
        if series.windows.late_samples > late:
            m.late.inc(series.windows.late_samples - late)
        for p in closed:
            self.emit(batch.key, series, p)

    def emit(self, key: str, series: Series, p: Partial) -> None:
        rec = self.rule.record(
            key, series.metric, series.labels, series.baseline, p, series.seasons
        )
        self.pending.append(
            self.producer.send(self.s.kafka_anomaly_topic, key=key.encode(), value=rec.to_bytes())
        )
        self.metrics.observe(key, series.metric, series.labels, rec.deviation, rec.status)
        self.metrics.window_end.set(rec.window.end)
        self.metrics.lag.set(max(0.0, time.time() - rec.window.end))
        if rec.status in ("WARN", "ERROR"):
            _log_alarm(rec)

    def dead_letter(self, rec: Any, reason: str) -> None:
        self.metrics.dead_letters.labels(reason_label(reason)).inc()
        log.warning(
            "samples record %s[%d]@%d dead-lettered: %s",
            rec.topic,
            rec.partition,
            rec.offset,
            reason,
        )
        headers = [
            *[(k, v) for k, v in (rec.headers or [])],
            ("dlq.reason", reason.encode()),
            ("dlq.source_topic", rec.topic.encode()),
            ("dlq.source_partition", str(rec.partition).encode()),
            ("dlq.source_offset", str(rec.offset).encode()),
        ]
        self.pending.append(
            self.producer.send(
                self.s.kafka_samples_dlq_topic, key=rec.key, value=rec.value, headers=headers
            )
        )

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_or_rollback(self, final: bool = False) -> None:
        try:
            self.checkpoint()
            self.backoff = 1.0
        except (SendFailed, KafkaError) as e:
            if final:
                log.warning("last checkpoint failed (%s); the next start reads again", e)
                return
            self.rollback(f"{type(e).__name__}: {e}")

    def checkpoint(self) -> None:
        """Flush (all results acknowledged), write each changed partition's state, commit."""
        self.apply_rebalances()
        pending, self.pending = self.pending, []
        if pending:
            self.producer.flush(timeout=10)
            for f in pending:
                if not f.is_done or f.failed():
                    raise SendFailed(str(f.exception) if f.is_done else "send not acknowledged")
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp, ps in self.parts.items():
            if ps.dirty and ps.offset is not None:
                self.store.save(tp, ps)
                ps.dirty = False
                offsets[tp] = OffsetAndMetadata(ps.offset, "", -1)
        if offsets:
            try:
                self.consumer.commit(offsets)
            except KafkaError as e:  # the checkpoint files are what a restart reads
                log.warning("offset commit failed (%s); checkpoints are written", e)

    def rollback(self, why: str) -> None:
        """Forget everything since the last checkpoint and read it again."""
        self.pending = []
        log.warning("%s: rolling back to the last checkpoint", why)
        if self.producer is not None:
            close_producer(self.producer, 1.0)
            self.producer = None
        self._ensure_output_topics()
        while not self.stop.is_set():
            try:
                self.producer = make_producer(
                    self.s.kafka_bootstrap_servers, "anomaly_detection", linger_ms=5
                )
                break
            except KafkaError as e:
                self._wait(f"broker not reachable ({type(e).__name__})")
        for tp in list(self.parts):
            ps = self.store.load(tp)
            if ps.offset is None:
                committed = None
                with contextlib.suppress(KafkaError):
                    committed = self.consumer.committed(tp)
                if committed is None:
                    self.consumer.seek_to_beginning(tp)
                else:
                    self.consumer.seek(tp, committed)
            else:
                self.consumer.seek(tp, ps.offset)
            self.parts[tp] = ps


MAX_BACKOFF_S = 30.0
TOPIC_CHECK_S = 2.0

KNOWN_REASONS = (
    "not JSON",
    "not a JSON object",
    "unknown schema version",
    "record key",
    "record has no key",
    "value is empty",
    "t and x",
    "timestamps",
    "values",
    "metric",
    "labels",
    "label ",
    "a record holds",
    "more than",
)


def reason_label(reason: str) -> str:
    """A bounded label for the dead-letter counter (reasons may quote input)."""
    for known in KNOWN_REASONS:
        if reason.startswith(known):
            return known.strip()
    return "invalid"


def _log_alarm(rec: AnomalyRecord) -> None:
    log.warning(
        "%s %s%s window %s-%s mean %.6g normal %.6g±%.6g (%s) deviation %.2f",
        rec.status,
        rec.series.metric,
        rec.series.labels,
        rec.window.start,
        rec.window.end,
        rec.mean,
        rec.normal.mean,
        rec.normal.std,
        rec.normal.source,
        rec.deviation,
    )
