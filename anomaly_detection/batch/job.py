"""The Spark side: one train or score run over every series of the selectors.

The driver lists the series (``/api/v1/series``, no samples), records the run as
``running``, and hands Spark a small table of series in groups of
``BATCH_SERIES_PER_TASK``; ``groupBy("grp").applyInPandas`` runs one task per group on the
executors, and each task fetches its series' history from Prometheus itself, trains or
scores them (:mod:`anomaly_detection.batch.core`) and writes models or scores to MySQL
(:mod:`anomaly_detection.batch.store`): the samples never pass through the driver. A task
returns one summary row per series (outcome, points, anomalies, the latest score), which
is all the driver collects. The run is recorded ``complete`` at the end when every series
was done or skipped for a typed reason; ``failed`` when a fetch failed after its retries
or the job raised.

Adaptive query execution is off: it would coalesce the small shuffle of series into one
partition, i.e. one task for everything.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
from pyspark.sql import SparkSession

from anomaly_detection.batch import core, fetch, store
from anomaly_detection.batch.settings import BatchSettings
from sla_common.mysql import Connection, close_quietly, connect
from sla_common.prometheus import PrometheusBusy, PrometheusClient, PrometheusUnavailable

log = logging.getLogger(__name__)

# PySpark 4.3 warns on every pandas >= 3 it meets ("not yet fully supported"); what this job
# uses of it (applyInPandas with Arrow, string/long/double/int columns) is what its tests
# run, on the pinned pandas.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")

Kind = Literal["train", "score"]
SUMMARY_SCHEMA = (
    "series_key string, metric string, labels string, outcome string, detail string, "
    "points long, anomalies long, last_time double, last_score double"
)
SUMMARY_COLUMNS = [c.strip().split(" ")[0] for c in SUMMARY_SCHEMA.split(",")]


def spark_session(s: BatchSettings, master: str | None = None) -> SparkSession:
    """A session on ``master`` (default ``SPARK_MASTER``); SPARK_LOCAL_IP is exported
    first (the JVM reads it at start), and executors run this interpreter's Python."""
    os.environ["SPARK_LOCAL_IP"] = s.spark_local_ip
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master or s.spark_master)
        .appName("sla-monitor-anomaly-batch")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.bindAddress", s.spark_local_ip)
        .config("spark.driver.host", s.spark_driver_host or s.spark_local_ip)
    )
    if s.batch_driver_java_options.strip():
        # Read when the JVM starts: PySpark passes the builder's settings to spark-submit.
        builder = builder.config("spark.driver.extraJavaOptions", s.batch_driver_java_options)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def version_of(started: float) -> str:
    """A model version: the training run's start, UTC to the second."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))


def aligned_range(end: float, window_s: int, step_s: int) -> tuple[float, float]:
    """[start, end] of ``window_s`` ending at the last step multiple at or before ``end``:
    the same points on every run whatever the wall clock (idempotent re-runs)."""
    stop = math.floor(end / step_s) * step_s
    return float(stop - window_s + step_s), float(stop)


@dataclass(frozen=True)
class Task:
    """What a task needs, shipped to the executors with the function."""

    settings: BatchSettings
    kind: Kind
    start: float
    end: float
    run_id: int
    version: str


def _summary(ref: store.SeriesRef, outcome: str, detail: str = "", **kw: Any) -> dict[str, Any]:
    return {
        "series_key": ref.key,
        "metric": ref.metric,
        "labels": json.dumps(dict(ref.labels), sort_keys=True),
        "outcome": outcome,
        "detail": detail,
        "points": int(kw.get("points", 0)),
        "anomalies": int(kw.get("anomalies", 0)),
        "last_time": float(kw.get("last_time", math.nan)),
        "last_score": float(kw.get("last_score", math.nan)),
    }


def run_group(task: Task, pdf: pd.DataFrame) -> pd.DataFrame:
    """One task: every series of one group (rows of ``labels`` JSON), one summary each.
    A fetch that failed after its retries is that series' ``fetch_failed``; any other
    error fails the task (Spark retries it; its writes are idempotent)."""
    s = task.settings
    refs = [store.SeriesRef.of(json.loads(x)) for x in pdf["labels"]]
    one = _train_one if task.kind == "train" else _score_one
    out = []
    c = fetch.client(s)
    conn = connect(s)
    try:
        for ref in refs:
            try:
                out.append(one(task, c, conn, ref))
            except (PrometheusUnavailable, PrometheusBusy) as e:
                out.append(_summary(ref, "fetch_failed", f"{type(e).__name__}: {e}"[:500]))
    finally:
        c.close()
        close_quietly(conn)
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


def _train_one(
    task: Task, c: PrometheusClient, conn: Connection, ref: store.SeriesRef
) -> dict[str, Any]:
    s = task.settings
    t, v = fetch.history(s, c, ref, task.start, task.end, s.batch_step_s)
    params = core.Params(
        s.batch_step_s, s.batch_windows_s, s.batch_min_points, s.batch_contamination, s.batch_trees
    )
    model = core.train(ref.key, t, v, params)
    if isinstance(model, core.Skip):
        return _summary(ref, model.reason, model.detail, points=len(t))
    store.save_model(conn, task.run_id, ref, model, task.version)
    return _summary(ref, "trained", points=model.points)


def _score_one(
    task: Task, c: PrometheusClient, conn: Connection, ref: store.SeriesRef
) -> dict[str, Any]:
    s = task.settings
    stored = store.latest_model(conn, ref.key)
    if stored is None:
        return _summary(ref, "no_model", "no trained model of this series: run train first")
    old = core.stale(stored.features)
    if old is not None:
        return _summary(ref, old.reason, old.detail)
    m = stored.model
    step = m.params.step_s
    lookback = core.lookback_s(m.params)
    t, v = fetch.history(s, c, ref, task.start - lookback, task.end, step)
    scored = core.score(m, t, v, task.start)
    n = store.write_scores(conn, ref, m, stored.version, scored)
    if n == 0:
        return _summary(ref, "too_short", "no finite point in the scored range")
    return _summary(
        ref,
        "scored",
        points=n,
        anomalies=int(scored.flags.sum()),
        last_time=float(scored.times[-1]),
        last_score=float(scored.scores[-1]),
    )


@dataclass
class RunResult:
    run_id: int
    kind: Kind
    status: str
    start: float
    end: float
    summaries: list[dict[str, Any]] = field(default_factory=list)
    skips: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def points(self) -> int:
        return sum(int(r["points"]) for r in self.summaries if r["outcome"] in DONE)


DONE = ("trained", "scored")


def groups(series: list[store.SeriesRef], per_task: int) -> Iterator[tuple[int, str]]:
    """(group, labels JSON) rows: consecutive series in key order, ``per_task`` a group."""
    for i, ref in enumerate(series):
        yield i // per_task, json.dumps(ref.prometheus_labels(), sort_keys=True)


def run(
    spark: Callable[[], SparkSession], s: BatchSettings, kind: Kind, end: float | None = None
) -> RunResult:
    """One train or score run ending at ``end`` (default now). ``spark`` gives the session
    once there is something to distribute (not before the series are listed)."""
    t0 = time.perf_counter()
    now = time.time() if end is None else end
    window = s.batch_train_window_s if kind == "train" else s.batch_score_window_s
    start, stop = aligned_range(now, window, s.batch_step_s)
    conn = connect(s)
    try:
        run_id = store.start_run(conn, kind, start, stop, s.spark_master)
        result = RunResult(run_id, kind, "failed", start, stop)
        try:
            _run(spark, s, result)
        except BaseException as e:
            store.finish_run(
                conn, run_id, "failed", total=len(result.summaries), done=0, points=0,
                skips=result.skips, error=f"{type(e).__name__}: {e}"[:2000],
            )  # fmt: skip
            raise
        failed = [r for r in result.summaries if r["outcome"] == "fetch_failed"]
        result.status = "failed" if failed else "complete"
        done = sum(1 for r in result.summaries if r["outcome"] in DONE)
        store.finish_run(
            conn, run_id, result.status, total=len(result.summaries), done=done,
            points=result.points, skips=result.skips,
            error=f"{len(failed)} series not fetched: {failed[0]['detail']}" if failed else None,
        )  # fmt: skip
    finally:
        close_quietly(conn)
    result.seconds = time.perf_counter() - t0
    log.info(
        "%s run %d %s: %d series, %d done, %d points, %d skipped, %.1f s",
        kind, result.run_id, result.status, len(result.summaries), done, result.points,
        len(result.skips), result.seconds,
    )  # fmt: skip
    return result


def _run(get_spark: Callable[[], SparkSession], s: BatchSettings, result: RunResult) -> None:
    c = fetch.client(s)
    try:
        found = fetch.discover(s, c, result.start, result.end)
    finally:
        c.close()
    result.skips += found.skips
    if not found.series:
        return
    rows = list(groups(found.series, s.batch_series_per_task))
    n_groups = rows[-1][0] + 1
    spark = get_spark()
    spark.conf.set("spark.sql.shuffle.partitions", str(n_groups))
    df = spark.createDataFrame(rows, "grp int, labels string")
    task = Task(s, result.kind, result.start, result.end, result.run_id, version_of(time.time()))

    def fn(pdf: pd.DataFrame) -> pd.DataFrame:
        return run_group(task, pdf)

    summary = df.groupBy("grp").applyInPandas(fn, SUMMARY_SCHEMA).collect()
    result.summaries = [r.asDict() for r in summary]
    for r in result.summaries:
        if r["outcome"] not in DONE:
            result.skips.append(
                {"series": r["series_key"], "reason": r["outcome"], "detail": r["detail"]}
            )
