"""``python -m etl_data_pipeline [--once]``: the ETL service.

Runs a cycle every ETL_INTERVAL_S and serves its metrics on HTTP_HOST:HTTP_PORT/metrics.
``--once`` runs one cycle and exits 0 if it succeeded, 1 if not, 3 if it published nothing
because no selector matched a series. SIGTERM/SIGINT let the current cycle finish, flush the
producer, and exit 0.
"""

from __future__ import annotations

import argparse
import logging
import sys

from prometheus_client import start_http_server

from etl_data_pipeline.metrics import EtlMetrics
from etl_data_pipeline.pipeline import Pipeline
from etl_data_pipeline.settings import EtlSettings
from sla_common.cli import EXIT_BAD_SETTINGS, settings_and_logging, stop_on_signals

log = logging.getLogger("etl_data_pipeline")

EXIT_NOTHING_MATCHED = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m etl_data_pipeline", description=__doc__)
    parser.add_argument("--once", action="store_true", help="run one cycle, then exit")
    parser.add_argument(
        "--end",
        type=int,
        metavar="EPOCH_S",
        help="with --once: analyse the window ending at this Unix time instead of now",
    )
    parser.add_argument(
        "--no-http", action="store_true", help="do not serve /metrics (default with --once)"
    )
    args = parser.parse_args(argv)
    if args.end is not None and not args.once:
        parser.error("--end needs --once")
    settings = settings_and_logging(EtlSettings, log)
    if settings is None:
        return EXIT_BAD_SETTINGS

    metrics = EtlMetrics()
    if not (args.once or args.no_http):
        server, _thread = start_http_server(
            settings.http_port, addr=settings.http_host, registry=metrics.registry
        )
        log.info("metrics on http://%s:%d/metrics", settings.http_host, server.server_address[1])
    pipeline = Pipeline(settings, metrics)
    log.info(
        "ETL starting: %d selector(s), window %ds step %ds, every %.0fs, Prometheus %s, "
        "Kafka %s topic %s",
        len(settings.etl_selectors),
        settings.etl_window_s,
        settings.etl_step_s,
        settings.etl_interval_s,
        settings.prometheus_url,
        settings.kafka_bootstrap_servers,
        settings.kafka_topic,
    )
    try:
        if args.once:
            report = pipeline.run_cycle(end=args.end)
            if not report.ok:
                return 1
            if report.nothing_matched:
                log.error("%s; exit %d", report.nothing_matched, EXIT_NOTHING_MATCHED)
                return EXIT_NOTHING_MATCHED
            return 0
        stop = stop_on_signals(log, "finishing the current cycle, then stopping")
        pipeline.run_forever(stop)
        return 0
    finally:
        pipeline.close()
        log.info("ETL stopped")


if __name__ == "__main__":
    sys.exit(main())
