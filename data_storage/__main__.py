"""``python -m data_storage [run]``: the storage consumer.

    run (default)  consume KAFKA_TOPIC (the analyses) and KAFKA_ANOMALY_TOPIC (the anomaly
                   records) into MySQL, one consumer each (STORAGE_STREAMS chooses), serving
                   /metrics on HTTP_HOST:HTTP_PORT; first waits for MySQL and checks that its
                   schema is at least the version this code needs (it never migrates:
                   ``python -m sla_common.migrate`` does)

Exit codes: 0 done (SIGTERM/SIGINT included: the current batch is committed first),
1 failure (MySQL refused the login, the schema is older than needed), 2 invalid settings.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading

from prometheus_client import start_http_server

from data_storage.consumer import StorageConsumer
from data_storage.metrics import StorageMetrics
from data_storage.settings import StorageSettings
from data_storage.streams import configured
from sla_common.cli import EXIT_BAD_SETTINGS, settings_and_logging, stop_on_signals
from sla_common.mysql import Backoff, Stopped
from sla_common.mysql_startup import LoginRefused, SchemaTooOld, wait_for_schema

log = logging.getLogger("data_storage")


def run_streams(settings: StorageSettings, metrics: StorageMetrics, stop: threading.Event) -> bool:
    """One consumer per configured stream, each in its own thread, until ``stop``.

    False when one of them died of an unexpected error (the others are stopped then).
    """
    failed = threading.Event()

    def run(consumer: StorageConsumer) -> None:
        try:
            consumer.run()
        except Exception:
            log.exception("the %s consumer failed; stopping", threading.current_thread().name)
            failed.set()
            stop.set()

    threads = []
    for stream in configured(settings):
        m = metrics
        if stream.name != "analyses":
            m = StorageMetrics(metrics.registry, f"sla_storage_{stream.name}", stream.tables)
        consumer = StorageConsumer(settings, m, stop=stop, stream=stream)
        threads.append(threading.Thread(target=run, args=(consumer,), name=f"{stream.name}"))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return not failed.is_set()


def cmd_run(settings: StorageSettings) -> int:
    metrics = StorageMetrics()
    server, _thread = start_http_server(
        settings.http_port, addr=settings.http_host, registry=metrics.registry
    )
    log.info("metrics on http://%s:%d/metrics", settings.http_host, server.server_address[1])
    stop = stop_on_signals(log, "finishing and committing the current batch, then stopping")
    try:
        # A consumer without its database waits for it, however long; it does not die.
        wait_for_schema(
            settings,
            deadline_s=math.inf,
            stop=stop,
            backoff=Backoff(settings.storage_backoff_base_s, settings.storage_max_backoff_s),
        )
        if not run_streams(settings, metrics, stop):
            return 1
    except (LoginRefused, SchemaTooOld) as e:
        log.error("%s; not consuming", e)
        return 1
    except Stopped:
        pass
    finally:
        server.shutdown()
    log.info("data_storage stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_storage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="consume into MySQL (the default)")
    parser.parse_args(argv)

    settings = settings_and_logging(StorageSettings, log)
    if settings is None:
        return EXIT_BAD_SETTINGS
    return cmd_run(settings)


if __name__ == "__main__":
    sys.exit(main())
