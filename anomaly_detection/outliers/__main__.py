"""``python -m anomaly_detection.outliers [serve|trainer|submit|schedule]``.

- ``serve`` (default): the executor, ``POST /calculate`` on ``HTTP_HOST``:``HTTP_PORT``
  (default 8006; see :mod:`.executor`).
- ``trainer``: a member of the trainers' consumer group on ``KAFKA_OUTLIER_JOBS_TOPIC``
  (run several; see :mod:`.trainer`).
- ``submit SELECTOR... [--hours H] [--step S] [--end EPOCH]``: one training job per series
  the selectors give, over the ``H`` hours (default ``OUTLIERS_TRAIN_HOURS``) before ``end``.
- ``schedule``: training jobs for ``OUTLIERS_SELECTORS`` every
  ``OUTLIERS_TRAIN_INTERVAL_S``, and scoring into the anomaly store every
  ``OUTLIERS_SCORE_INTERVAL_S``; /metrics (``anomaly_score{model="autoencoder"}``) on
  ``HTTP_HOST``:``HTTP_PORT``.

Exit 2: invalid settings or arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from anomaly_detection.outliers.settings import OutlierSettings
from anomaly_detection.outliers.store import ModelCache, MysqlStore
from sla_common.cli import EXIT_BAD_SETTINGS, settings_and_logging, stop_on_signals
from sla_common.prometheus import PrometheusClient

log = logging.getLogger("anomaly_detection.outliers")


def _serve(s: OutlierSettings) -> int:
    import uvicorn  # noqa: PLC0415

    from anomaly_detection.outliers.executor import create_app  # noqa: PLC0415

    prom = PrometheusClient(s.prometheus_url, s.prometheus_timeout_s, max_concurrent=8)
    app = create_app(prom, ModelCache(MysqlStore(s)), s.outliers_max_series, s.outliers_max_points)
    log.info("outliers executor on http://%s:%d/calculate", s.http_host, s.http_port)
    uvicorn.run(app, host=s.http_host, port=s.http_port, log_level="warning")
    prom.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m anomaly_detection.outliers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("serve")
    sub.add_parser("trainer")
    sub.add_parser("schedule")
    sp = sub.add_parser("submit")
    sp.add_argument("selectors", nargs="+")
    sp.add_argument("--hours", type=float)
    sp.add_argument("--step", type=float)
    sp.add_argument("--end", type=float)
    a = parser.parse_args(argv)
    s = settings_and_logging(OutlierSettings, log)
    if s is None:
        return EXIT_BAD_SETTINGS
    from anomaly_detection.outliers import trainer  # noqa: PLC0415

    if a.cmd in (None, "serve"):
        return _serve(s)
    if a.cmd == "trainer":
        stop = stop_on_signals(log, "stopping after the job in hand")
        trainer.work(s, MysqlStore(s), stop)
        return 0
    if a.cmd == "schedule":
        stop = stop_on_signals(log, "stopping")
        trainer.schedule(s, MysqlStore(s), stop)
        return 0
    end = a.end if a.end is not None else time.time()
    hours = a.hours if a.hours is not None else s.outliers_train_hours
    step = a.step if a.step is not None else s.outliers_step_s
    with PrometheusClient(s.prometheus_url, s.prometheus_timeout_s) as prom:
        jobs = trainer.jobs_for(prom, a.selectors, end - hours * 3600, end, step)
    trainer.submit(s, jobs)
    return 0 if jobs else 1


if __name__ == "__main__":
    sys.exit(main())
