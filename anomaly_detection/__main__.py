"""``python -m anomaly_detection``: the streaming detector.

Consumes ``KAFKA_SAMPLES_TOPIC`` as consumer group ``KAFKA_GROUP_ID``, judges every closed
tumbling window of every series and produces one record per window to
``KAFKA_ANOMALY_TOPIC``; malformed samples records go to ``KAFKA_SAMPLES_DLQ_TOPIC``.
Serves /metrics on ``HTTP_HOST``:``HTTP_PORT``.

While the broker is unreachable it logs and waits (backoff up to 30 s); it never exits for
that. SIGTERM/SIGINT: a last checkpoint (results flushed, state written, offsets
committed), then exit 0. Exit 2: invalid settings.
"""

from __future__ import annotations

import logging
import sys

from prometheus_client import start_http_server

from anomaly_detection.detector import Detector
from anomaly_detection.metrics import DetectorMetrics
from anomaly_detection.settings import DetectorSettings
from sla_common.cli import EXIT_BAD_SETTINGS, service_start, stop_on_signals

log = logging.getLogger("anomaly_detection")


def cmd_run(settings: DetectorSettings) -> int:
    metrics = DetectorMetrics(settings.anomaly_max_exposed_series)
    server, _thread = start_http_server(
        settings.http_port, addr=settings.http_host, registry=metrics.registry
    )
    log.info("metrics on http://%s:%d/metrics", settings.http_host, server.server_address[1])
    stop = stop_on_signals(log, "checkpointing, then stopping")
    log.info(
        "detecting: %s -> %s, %d ms windows, grace %d ms, normal %s",
        settings.kafka_samples_topic,
        settings.kafka_anomaly_topic,
        settings.anomaly_window_ms,
        settings.anomaly_grace_ms,
        "static (NORMAL_MEAN/NORMAL_STDDEV)" if settings.normal_mean is not None else "learned",
    )
    for o in settings.anomaly_normal_overrides:
        log.info("static normal %g±%g for %s", o.mean, o.std, o.selector)
    try:
        Detector(settings, metrics, stop=stop).run()
    finally:
        server.shutdown()
    log.info("anomaly_detection stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    settings = service_start("python -m anomaly_detection", __doc__, DetectorSettings, log, argv)
    if settings is None:
        return EXIT_BAD_SETTINGS
    return cmd_run(settings)


if __name__ == "__main__":
    sys.exit(main())
