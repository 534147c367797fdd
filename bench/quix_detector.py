"""The same detector on quixstreams — for the benchmark that compares the engines only.

It is not the service: on the local broker (tansu) quixstreams' state recovery fails at
every restart with local state (``InvalidStoreChangelogOffset``: tansu's ListOffsets(latest)
is wrong; see the README's detector section), so ``python -m anomaly_detection`` runs
:mod:`anomaly_detection.detector`, a plain consumer loop with checkpointed state.

::

    samples (bytes) --decode--> one row per (record, window): partial count/mean/M2
        |-- malformed --> samples.dlq (original key/value + dlq.* headers, reason)
        '-- tumbling_window(ANOMALY_WINDOW_MS, grace ANOMALY_GRACE_MS).agg(MeanStd).final()
              --judge (stateful: the series' learned normal)--> anomaly (JSON record)

Delivery is at-least-once (exactly-once is not available on the local broker): a window
result may be emitted twice after a crash, with the same idempotency key (series key,
detector name, window start), so consumers upsert. The window state and the learned
normals live in RocksDB with changelog topics (recovery: see above).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from quixstreams import Application, State
from quixstreams.dataframe.windows.aggregations import Aggregator
from quixstreams.models import TopicConfig

from anomaly_detection.judge import Rule
from anomaly_detection.metrics import DetectorMetrics
from anomaly_detection.rules import Baseline
from anomaly_detection.settings import DetectorSettings
from anomaly_detection.windows import Partial, merge, partials
from sla_common.samples import SampleFormatError, decode_batch

log = logging.getLogger(__name__)

BASELINE_KEY = "baseline"
RETENTION_MS = 7 * 86_400_000

# A partial row: [start_ms, last_ms, n, mean, m2, metric, labels]
Row = dict[str, Any]


class MeanStd(Aggregator):
    """Merges partial rows of one window; keeps the series' metric and labels with it."""

    @property
    def state_suffix(self) -> str:
        return "meanstd1"

    def initialize(self) -> list[Any] | None:
        return None

    def agg(self, old: list[Any] | None, new: Row, timestamp: int) -> list[Any]:
        p = Partial(new["s"], new["t"], new["n"], new["mean"], new["m2"])
        if old is None:
            return [p.last_ms, p.n, p.mean, p.m2, new["metric"], new["labels"]]
        a = Partial(new["s"], old[0], old[1], old[2], old[3])
        m = merge(a, p)
        return [m.last_ms, m.n, m.mean, m.m2, old[4], old[5]]

    def result(self, value: list[Any] | None) -> list[Any] | None:
        return value


class Pipeline:
    """Builds the quixstreams application from the settings; ``run`` blocks until stopped."""

    def __init__(self, settings: DetectorSettings, metrics: DetectorMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.rule = Rule.from_settings(settings)

    def application(self) -> Application:
        s = self.settings
        app = Application(
            broker_address=s.kafka_bootstrap_servers,
            consumer_group=s.kafka_group_id,
            auto_offset_reset="earliest",
            commit_interval=s.anomaly_commit_interval_s,
            state_dir=s.anomaly_state_dir,
            processing_guarantee="at-least-once",
            consumer_extra_config={
                "session.timeout.ms": s.kafka_session_timeout_ms,
                "heartbeat.interval.ms": s.kafka_heartbeat_interval_ms,
            },
            loglevel=None,
            # The caller waits for the broker and builds a new application (see __main__).
            broker_availability_timeout=60.0,
        )
        topic_config = TopicConfig(
            num_partitions=s.kafka_partitions,
            replication_factor=1,
            extra_config={"retention.ms": str(RETENTION_MS)},
        )
        samples = app.topic(
            s.kafka_samples_topic,
            key_deserializer="str",
            value_deserializer="bytes",
            config=topic_config,
        )
        # tansu describes only explicitly set configs; quixstreams derives its changelog
        # topics' retention from the input's and fails without one. A samples
        # topic created by someone else without retention.ms gets ours for that purpose.
        samples.broker_config.extra_config.setdefault("retention.ms", str(RETENTION_MS))
        anomaly = app.topic(
            s.kafka_anomaly_topic,
            key_serializer="str",
            value_serializer="bytes",
            config=topic_config,
        )
        dlq = app.topic(
            s.kafka_samples_dlq_topic,
            key_serializer="str",
            value_serializer="bytes",
            config=topic_config,
        )
        self.build(app, samples, anomaly, dlq)
        return app

    def build(self, app: Application, samples: Any, anomaly: Any, dlq: Any) -> None:
        s = self.settings
        size = s.anomaly_window_ms
        metrics = self.metrics
        sdf = app.dataframe(samples)

        def decode(raw: bytes, key: str | None, _ts: int, _headers: Any) -> list[Row]:
            metrics.records.inc()
            try:
                if not isinstance(raw, bytes):
                    raise SampleFormatError("value is empty")
                if not key:
                    raise SampleFormatError("record has no key (the series key)")
                batch = decode_batch(raw, key.encode())
            except SampleFormatError as e:
                reason = str(e)[:200]
                metrics.dead_letters.labels(_reason_label(reason)).inc()
                log.warning("samples record dead-lettered: %s", reason)
                return [{"dlq": reason, "raw": raw if isinstance(raw, bytes) else b""}]
            metrics.samples.inc(len(batch.values))
            return [
                {
                    "s": p.start_ms,
                    "t": p.last_ms,
                    "n": p.n,
                    "mean": p.mean,
                    "m2": p.m2,
                    "metric": batch.metric,
                    "labels": batch.labels,
                }
                for p in partials(batch.timestamps_ms, batch.values, size)
            ]

        rows = sdf.apply(decode, metadata=True, expand=True)

        bad = rows.filter(lambda r: "dlq" in r)
        bad = bad.set_headers(
            lambda r, _k, _t, headers: [
                *(headers or []),
                ("dlq.reason", r["dlq"].encode()),
                ("dlq.source_topic", s.kafka_samples_topic.encode()),
            ]
        )
        bad.apply(lambda r: r["raw"]).to_topic(dlq)

        good = rows.filter(lambda r: "dlq" not in r)
        good = good.set_timestamp(lambda r, _k, _t, _h: r["t"])

        def on_late(
            value: Row, _key: Any, _ts: int, late_by_ms: int, *_args: Any, **_kw: Any
        ) -> bool:
            metrics.late.inc(value["n"])
            log.debug("late samples dropped: %d, late by %d ms", value["n"], late_by_ms)
            return False

        windows = (
            good.tumbling_window(size, grace_ms=s.anomaly_grace_ms, on_late=on_late)  # type: ignore[arg-type]
            .agg(w=MeanStd())
            .final()
        )
        rule = self.rule

        def judge(
            value: dict[str, Any], key: str, _ts: int, _h: Any, state: State[Any, Any]
        ) -> bytes:
            last, n, mean, m2, metric, labels = value["w"]
            baseline = Baseline.from_list(state.get(BASELINE_KEY) or [0, 0.0, 0.0])
            p = Partial(value["start"], last, n, mean, m2)
            rec = rule.record(key, metric, labels, baseline, p)
            state.set(BASELINE_KEY, baseline.to_list())
            metrics.observe(key, metric, labels, rec.deviation, rec.status)
            metrics.window_end.set(rec.window.end)
            metrics.lag.set(max(0.0, time.time() - rec.window.end))
            if rec.status in ("WARN", "ERROR"):
                log.warning(
                    "%s %s%s window %.3f-%.3f mean %.6g normal %.6g±%.6g (%s) deviation %.2f",
                    rec.status,
                    metric,
                    labels,
                    rec.window.start,
                    rec.window.end,
                    rec.mean,
                    rec.normal.mean,
                    rec.normal.std,
                    rec.normal.source,
                    rec.deviation,
                )
            return rec.to_bytes()

        windows.apply(judge, metadata=True, stateful=True).to_topic(anomaly)


def _reason_label(reason: str) -> str:
    """A bounded label for the dead-letter counter: the reason up to its first detail."""
    for known in KNOWN_REASONS:
        if reason.startswith(known):
            return known
    return "invalid"


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
    "a record holds",
    "more than",
)
