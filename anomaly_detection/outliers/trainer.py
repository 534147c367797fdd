"""Training jobs on a Kafka topic, consumed by a group of trainer processes.

Why a Kafka topic rather than Spark: the suite already runs the broker, a consumer group
already gives the reference's job queue (each job to one live member; a member that dies
stops heartbeating, and after ``KAFKA_SESSION_TIMEOUT_MS`` its partitions and their
uncommitted jobs go to another member), and a job is one small series (seconds of CPU),
nothing a cluster scheduler is needed for.

A job (:class:`TrainJob`, JSON, key = series key) names one series and the range to train
on. A trainer reads the series from Prometheus, trains (:func:`.model.train`), stores the
model (:class:`.store.MysqlStore`, replacing an older one atomically), and only then commits
the job's offset: a trainer killed mid-job leaves it uncommitted, and the member that takes
its partition trains it again (at least once; a second training of a series is harmless,
the newer version wins).

Scoring (:func:`score_once`): the series of a selector scored over the last interval by
their models, one anomaly record per point (detector ``autoencoder``) to
``KAFKA_ANOMALY_TOPIC``, which data_storage stores like the other detectors' records.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, start_http_server
from pydantic import BaseModel, ConfigDict, Field

from anomaly_detection.metrics import ModelScores, ScheduledModelMetrics
from anomaly_detection.outliers.model import ModelParams, train
from anomaly_detection.outliers.settings import OutlierSettings
from anomaly_detection.outliers.store import ModelCache, ModelStore
from sla_common.anomalies import (
    AnomalyRecord,
    AnomalySeries,
    AnomalyWindow,
    Detector,
    Normal,
)
from sla_common.kafka import close_producer, ensure_topics, make_consumer, make_producer
from sla_common.prometheus import PrometheusClient
from sla_common.series import series_key

log = logging.getLogger(__name__)

DETECTOR = "autoencoder"
DETECTOR_VERSION = "1"
# A training may take minutes on a loaded machine: the poll interval must outlast it.
MAX_POLL_INTERVAL_MS = 600_000


class TrainJob(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    series: str = Field(min_length=1, description="series key; also the PromQL selector")
    start: float = Field(ge=0)
    end: float = Field(gt=0)
    step: float = Field(gt=0)

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


def params_of(s: OutlierSettings) -> ModelParams:
    return ModelParams(
        backend=s.outliers_backend,
        window=s.outliers_window,
        epochs=s.outliers_epochs,
        k=s.outliers_k,
        rescale=s.outliers_rescale,
        loss=s.outliers_loss,
        seed=s.outliers_seed,
    )


def jobs_for(
    prom: PrometheusClient, selectors: Iterable[str], start: float, end: float, step: float
) -> list[TrainJob]:
    """One job per series the selectors give now (found with an instant query at ``end``)."""
    jobs: dict[str, TrainJob] = {}
    for sel in selectors:
        for sample in prom.query(sel, end):
            key = series_key(sample.labels.get("__name__", ""), sample.labels)
            jobs[key] = TrainJob(series=key, start=start, end=end, step=step)
    return list(jobs.values())


def submit(s: OutlierSettings, jobs: list[TrainJob]) -> int:
    ensure_topics(
        s.kafka_bootstrap_servers, [s.kafka_outlier_jobs_topic], s.kafka_outlier_partitions
    )
    producer = make_producer(s.kafka_bootstrap_servers, "outlier-submit")
    try:
        for job in jobs:
            producer.send(s.kafka_outlier_jobs_topic, key=job.series.encode(), value=job.to_bytes())
        producer.flush(timeout=30)
    finally:
        close_producer(producer, 10)
    log.info("submitted %d training jobs to %s", len(jobs), s.kafka_outlier_jobs_topic)
    return len(jobs)


def run_job(job: TrainJob, prom: PrometheusClient, store: ModelStore, p: ModelParams) -> bool:
    """Train and store one series' model; False when the series has too little data."""
    got = prom.query_range(job.series, job.start, job.end, job.step)
    if not got or len(got[0].values) <= p.window:
        log.warning(
            "job %s: %d points, too few to train", job.series, len(got[0].values) if got else 0
        )
        return False
    s = got[0]
    labels = {k: v for k, v in s.labels.items() if k != "__name__"}
    model = train(s.timestamps, s.values, p, job.series, labels)
    stored = store.put(model)
    log.info(
        "trained %s: version %d, %d windows in %.2f s, val loss %s, error %.4g ± %.4g%s",
        job.series,
        model.meta.version,
        model.meta.train_windows,
        model.meta.train_seconds,
        model.meta.val_loss,
        model.meta.error_mean,
        model.meta.error_std,
        "" if stored else " (not stored: a newer model is there)",
    )
    return True


def work(s: OutlierSettings, store: ModelStore, stop: threading.Event) -> None:
    """Consume and run jobs until ``stop``; commit each job's offset once it is done."""
    ensure_topics(
        s.kafka_bootstrap_servers, [s.kafka_outlier_jobs_topic], s.kafka_outlier_partitions
    )
    consumer = make_consumer(
        s.kafka_bootstrap_servers,
        "outlier-trainer",
        s.kafka_outlier_group_id,
        session_timeout_ms=s.kafka_session_timeout_ms,
        heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
        max_poll_records=1,
        max_poll_interval_ms=MAX_POLL_INTERVAL_MS,
    )
    consumer.subscribe([s.kafka_outlier_jobs_topic])
    # scripts/stack.py waits for this line (the trainer has no port to probe).
    log.info(
        "trainer ready: consuming %s as group %s",
        s.kafka_outlier_jobs_topic,
        s.kafka_outlier_group_id,
    )
    p = params_of(s)
    prom = PrometheusClient(s.prometheus_url, s.prometheus_timeout_s)
    try:
        while not stop.is_set():
            batch = consumer.poll(timeout_ms=500, max_records=1)
            for _tp, records in batch.items():
                for rec in records:
                    try:
                        job = TrainJob.model_validate_json(rec.value)
                    except ValueError:
                        log.warning("skipping a malformed job at offset %d", rec.offset)
                    else:
                        log.info("job %s (offset %d)", job.series, rec.offset)
                        run_job(job, prom, store, p)
                    consumer.commit()
    finally:
        prom.close()
        consumer.close(autocommit=False)


def records_for(
    prom: PrometheusClient, cache: ModelCache, selector: str, start: float, end: float, step: float
) -> list[AnomalyRecord]:
    """Anomaly records (detector ``autoencoder``) of every point in ``[start, end]`` of the
    selector's series that have a model; the model's window before ``start`` is read too."""
    pad = 1024 * step  # at most the longest window allowed
    got = prom.query_range(selector, start - pad, end, step)
    keys = [series_key(g.metric or "", g.labels) for g in got]
    models = cache.models_for(keys)
    out: list[AnomalyRecord] = []
    for key, g in zip(keys, got, strict=True):
        model = models.get(key)
        if model is None or len(g.values) < model.meta.params.window:
            continue
        sc = model.score(g.values)
        m = model.meta
        k = m.params.k
        err_std_units = m.error_std * (m.scaler.b if m.scaler.method != "tanhlog" else 1.0)
        labels = {a: b for a, b in g.labels.items() if a != "__name__"}
        for i, t in enumerate(g.timestamps):
            v, e, z = float(g.values[i]), float(sc.expected[i]), float(sc.score[i])
            if t < start or not all(map(_finite, (v, e, z))):
                continue
            status = "ERROR" if sc.outlier[i] else ("WARN" if z > k / 2 else "SAFE")
            out.append(
                AnomalyRecord(
                    detector=Detector(name=DETECTOR, version=DETECTOR_VERSION),
                    series=AnomalySeries(key=key, metric=g.metric or "", labels=labels),
                    window=AnomalyWindow(start=float(t), end=float(t) + step),
                    count=1,
                    mean=v,
                    std=0.0,
                    normal=Normal(mean=e, std=max(err_std_units, 0.0), source="learned"),
                    deviation=z,
                    status=status,
                )
            )
    return out


def _finite(x: float) -> bool:
    return math.isfinite(x)


def score_once(
    s: OutlierSettings,
    prom: PrometheusClient,
    cache: ModelCache,
    producer: Any,
    start: float,
    end: float,
    metrics: ScheduledModelMetrics | None = None,
) -> int:
    """One scoring pass: the records to ``KAFKA_ANOMALY_TOPIC``; each series' latest point's
    score (its ``deviation``) on ``metrics`` once the records are flushed."""
    n = 0
    latest: dict[str, AnomalyRecord] = {}
    for sel in _selectors(s):
        for rec in records_for(prom, cache, sel, start, end, s.outliers_step_s):
            producer.send(s.kafka_anomaly_topic, key=rec.kafka_key(), value=rec.to_bytes())
            n += 1
            last = latest.get(rec.series.key)
            if last is None or rec.window.start >= last.window.start:
                latest[rec.series.key] = rec
    producer.flush(timeout=30)
    if metrics is not None:
        metrics.observe_scores(
            (key, rec.series.metric, rec.series.labels, rec.deviation)
            for key, rec in latest.items()
        )
    return n


def _selectors(s: OutlierSettings) -> list[str]:
    return list(s.outliers_selectors)


def schedule(s: OutlierSettings, store: ModelStore, stop: threading.Event) -> None:
    """Every ``OUTLIERS_TRAIN_INTERVAL_S`` a job per series of ``OUTLIERS_SELECTORS``; every
    ``OUTLIERS_SCORE_INTERVAL_S`` a scoring pass over the interval just ended."""
    metrics = ScheduleMetrics(s.outliers_max_exposed_series)
    server, _thread = start_http_server(s.http_port, addr=s.http_host, registry=metrics.registry)
    log.info("metrics on http://%s:%d/metrics", s.http_host, server.server_address[1])
    prom = PrometheusClient(s.prometheus_url, s.prometheus_timeout_s)
    cache = ModelCache(store)
    ensure_topics(s.kafka_bootstrap_servers, [s.kafka_anomaly_topic], s.kafka_outlier_partitions)
    producer = make_producer(s.kafka_bootstrap_servers, "outlier-scorer")
    next_train = 0.0
    last_scored = time.time() - s.outliers_score_interval_s
    try:
        while not stop.is_set():
            now = time.time()
            try:
                if now >= next_train:
                    span = s.outliers_train_hours * 3600
                    submit(s, jobs_for(prom, _selectors(s), now - span, now, s.outliers_step_s))
                    next_train = now + s.outliers_train_interval_s
                n = score_once(s, prom, cache, producer, last_scored, now, metrics)
                log.info(
                    "scored %.0f s: %d records to %s", now - last_scored, n, s.kafka_anomaly_topic
                )
                metrics.observe_pass("complete", n)
                last_scored = now
            except Exception:  # a pass that failed is retried at the next interval
                log.exception("scheduled pass failed")
                metrics.observe_pass("failed", 0)
            stop.wait(s.outliers_score_interval_s)
    finally:
        close_producer(producer, 10)
        prom.close()
        server.shutdown()


class ScheduleMetrics(ScheduledModelMetrics):
    """The schedule's /metrics: ``anomaly_score{model="autoencoder", for=<metric>, ...the
    series' own labels}`` = the latest scored point's error in training-error standard
    deviations above their mean (above ``OUTLIERS_K``: an outlier), and the passes."""

    def __init__(self, max_series: int, registry: CollectorRegistry | None = None) -> None:
        scores = ModelScores(
            DETECTOR,
            "latest scored point's reconstruction error in training-error std devs above "
            "their mean (autoencoder; above k: an outlier)",
            max_series,
        )
        super().__init__(
            scores, "outlier_series_not_exposed", "OUTLIERS_MAX_EXPOSED_SERIES", registry
        )
        self.passes = Counter(
            "outlier_score_passes", "scoring passes, by status", ["status"], registry=self.registry
        )
        self.records = Counter(
            "outlier_score_records", "anomaly records sent", registry=self.registry
        )
        for status in ("complete", "failed"):
            self.passes.labels(status)

    def observe_pass(self, status: str, records: int) -> None:
        self.passes.labels(status).inc()
        self.records.inc(records)


def describe(job: TrainJob) -> str:
    return json.dumps(job.model_dump())
