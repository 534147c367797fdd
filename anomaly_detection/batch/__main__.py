"""``python -m anomaly_detection.batch {train,score,schedule}``: isolation-forest anomaly
scores of the selectors' series, on Apache Spark (``SPARK_MASTER``, default ``local[*]``).

- ``train``: one model per series from its last ``BATCH_TRAIN_WINDOW_S`` (stored with its
  metadata and artefact in ``anomaly_models``);
- ``score``: every point of the last ``BATCH_SCORE_WINDOW_S`` scored by the newest model of
  its series, upserted into ``anomalies`` (detector ``iforest``);
- ``schedule`` (the default): train at start and every ``BATCH_TRAIN_INTERVAL_S``, score every
  ``BATCH_SCORE_INTERVAL_S``, serving /metrics on ``HTTP_HOST``:``HTTP_PORT`` meanwhile;
- ``train score`` (several of train and score): those runs in that order in one process
  and one Spark session (one JVM start, not one a run), stopping at the first run not
  recorded complete.

``--end EPOCH`` (train, score): the end of the range instead of now. Exit 0: the run (every
run) is recorded complete; 1: recorded failed (a fetch failed after its retries, or an error);
2: invalid settings. SIGTERM/SIGINT stop the schedule between runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from anomaly_detection.batch.settings import BatchSettings
from sla_common.cli import EXIT_BAD_SETTINGS, settings_and_logging, stop_on_signals

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from anomaly_detection.batch import job

log = logging.getLogger("anomaly_detection.batch")


# pyspark, pandas and scikit-learn are imported only once the settings are valid: a bad
# setting is reported in a second, not after seconds of imports.


class LazySpark:
    """The session, started on first use (a run whose selectors match nothing, or whose
    Prometheus is down, never starts a JVM); stopped by :meth:`stop` if started."""

    def __init__(self, s: BatchSettings) -> None:
        self.settings = s
        self.session: SparkSession | None = None

    def __call__(self) -> SparkSession:
        from anomaly_detection.batch import job  # noqa: PLC0415 (see above)

        if self.session is None:
            self.session = job.spark_session(self.settings)
        return self.session

    def stop(self) -> None:
        if self.session is not None:
            self.session.stop()
            self.session = None


def cmd_once(s: BatchSettings, kinds: Sequence[job.Kind], end: float | None) -> int:
    """The runs of ``kinds`` in order on one session; 0 when every one was recorded
    complete, 1 at the first that was not (the ones after it do not run)."""
    from anomaly_detection.batch import job  # noqa: PLC0415 (see above)

    spark = LazySpark(s)
    try:
        for kind in kinds:
            try:
                result = job.run(spark, s, kind, end)
            except Exception as e:  # noqa: BLE001 (recorded as failed by job.run; one line, exit 1)
                log.error("%s run failed: %s: %s", kind, type(e).__name__, e)
                return 1
            for skip in result.skips:
                log.info("skipped: %s", skip)
            if result.status != "complete":
                return 1
    finally:
        spark.stop()
    return 0


def cmd_schedule(s: BatchSettings, stop: threading.Event) -> int:
    from prometheus_client import start_http_server  # noqa: PLC0415 (see above)

    from anomaly_detection.batch import job  # noqa: PLC0415
    from anomaly_detection.batch.metrics import BatchMetrics  # noqa: PLC0415

    metrics = BatchMetrics(s.batch_max_exposed_series)
    server, _thread = start_http_server(s.http_port, addr=s.http_host, registry=metrics.registry)
    log.info("metrics on http://%s:%d/metrics", s.http_host, server.server_address[1])
    spark = LazySpark(s)
    next_run = {"train": time.monotonic(), "score": time.monotonic()}
    intervals = {"train": s.batch_train_interval_s, "score": s.batch_score_interval_s}
    kinds: tuple[job.Kind, ...] = ("train", "score")
    try:
        while not stop.is_set():
            for kind in kinds:
                now = time.monotonic()
                if now < next_run[kind] or stop.is_set():
                    continue
                next_run[kind] = now + intervals[kind]
                try:
                    r = job.run(spark, s, kind)
                    metrics.observe_run(kind, r.status, r.seconds, r.end, r.summaries)
                except Exception:  # recorded as failed by job.run; the schedule goes on
                    log.exception("%s run failed", kind)
                    metrics.runs.labels(kind, "failed").inc()
            stop.wait(max(0.0, min(next_run.values()) - time.monotonic()))
    finally:
        spark.stop()
        server.shutdown()
    log.info("anomaly_detection.batch stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m anomaly_detection.batch",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # No argparse choices: Python 3.11 checks an empty "*" against them and refuses it.
    parser.add_argument(
        "command", nargs="*", metavar="{train,score,schedule}", help="default: schedule"
    )
    parser.add_argument("--end", type=float, default=None, help="end of the range (epoch s)")
    args = parser.parse_args(argv)
    commands: list[str] = args.command or ["schedule"]
    if bad := [c for c in commands if c not in ("train", "score", "schedule")]:
        parser.error(f"invalid command {bad[0]!r} (choose from train, score, schedule)")
    if "schedule" in commands and len(commands) > 1:
        parser.error("schedule runs alone (not with train or score)")
    settings = settings_and_logging(BatchSettings, log)
    if settings is None:
        return EXIT_BAD_SETTINGS
    if commands == ["schedule"]:
        return cmd_schedule(settings, stop_on_signals(log, "stopping after the current run"))
    kinds: list[job.Kind] = ["train" if c == "train" else "score" for c in commands]
    return cmd_once(settings, kinds, args.end)


if __name__ == "__main__":
    sys.exit(main())
