"""``python -m anomaly_detection.receiver``: serve remote write on HTTP_HOST:HTTP_PORT.

At start it tries once to create the samples topic and connect to Kafka; a broker that is
down is not fatal (requests answer 503 until it is back). SIGTERM/SIGINT: stop accepting,
finish the requests in flight, close the producer, exit 0.

Exit codes: 0 stopped, 2 invalid settings (naming the variable), 3 the HTTP server could
not start.
"""

from __future__ import annotations

import logging
import sys

from kafka.errors import KafkaError

from anomaly_detection.receiver.app import WRITE_PATH, create_app
from anomaly_detection.receiver.publish import Publisher
from anomaly_detection.receiver.settings import ReceiverSettings
from sla_common.asgi import serve
from sla_common.cli import EXIT_BAD_SETTINGS, service_start

log = logging.getLogger("anomaly_detection.receiver")

EXIT_SERVER = 3


def main(argv: list[str] | None = None) -> int:
    prog = "python -m anomaly_detection.receiver"
    settings = service_start(prog, __doc__, ReceiverSettings, log, argv)
    if settings is None:
        return EXIT_BAD_SETTINGS
    publisher = Publisher(settings)
    try:
        publisher.connect()
    except KafkaError as e:
        log.warning(
            "Kafka %s not reachable at start (%s); answering 503 until it is",
            settings.kafka_bootstrap_servers,
            type(e).__name__,
        )
    app = create_app(settings, publisher)
    log.info(
        "receiving remote write on http://%s:%d%s into topic %s",
        settings.http_host,
        settings.http_port,
        WRITE_PATH,
        settings.kafka_samples_topic,
    )
    try:
        started = serve(
            app, settings.http_host, settings.http_port, access_log=settings.receiver_access_log
        )
    finally:
        publisher.close()
    return 0 if started else EXIT_SERVER


if __name__ == "__main__":
    sys.exit(main())
