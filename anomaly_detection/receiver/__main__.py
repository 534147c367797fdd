"""``python -m anomaly_detection.receiver``: serve remote write on HTTP_HOST:HTTP_PORT.

At start it tries once to create the samples topic and connect to Kafka; a broker that is
down is not fatal (requests answer 503 until it is back). SIGTERM/SIGINT: stop accepting,
finish the requests in flight, close the producer, exit 0.

Exit codes: 0 stopped, 2 invalid settings (naming the variable), 3 the HTTP server could
not start.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

import uvicorn
from kafka.errors import KafkaError

from anomaly_detection.receiver.app import WRITE_PATH, create_app
from anomaly_detection.receiver.publish import Publisher
from anomaly_detection.receiver.settings import ReceiverSettings
from sla_common.cli import settings_and_logging

log = logging.getLogger("anomaly_detection.receiver")

EXIT_SETTINGS = 2
EXIT_SERVER = 3


class _Server(uvicorn.Server):
    """Exit 0 after a graceful shutdown on SIGTERM (as sla_manager's server does)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m anomaly_detection.receiver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    settings = settings_and_logging(ReceiverSettings, log)
    if settings is None:
        return EXIT_SETTINGS
    publisher = Publisher(settings)
    try:
        publisher.connect()
    except KafkaError as e:
        log.warning(
            "Kafka %s not reachable at start (%s); answering 503 until it is",
            settings.kafka_bootstrap_servers,
            type(e).__name__,
        )
    server = _Server(
        uvicorn.Config(
            create_app(settings, publisher),
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=settings.receiver_access_log,
            timeout_graceful_shutdown=30,
            server_header=False,
        )
    )
    log.info(
        "receiving remote write on http://%s:%d%s into topic %s",
        settings.http_host,
        settings.http_port,
        WRITE_PATH,
        settings.kafka_samples_topic,
    )
    try:
        server.run()
    finally:
        publisher.close()
    return 0 if server.started else EXIT_SERVER


if __name__ == "__main__":
    sys.exit(main())
