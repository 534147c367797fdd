"""``python -m data_retrieval``: the gRPC retrieval service (RetrievalService, health,
reflection) on GRPC_HOST:GRPC_PORT, its /metrics on HTTP_HOST:HTTP_PORT.

Every call but health checking needs ``authorization: Bearer <GRPC_API_TOKEN>`` when the
token is set (required with ENVIRONMENT=production); GRPC_TLS_CERT_FILE and
GRPC_TLS_KEY_FILE serve TLS. Reads MySQL (MYSQL_*); starts even while MySQL is down (calls
answer UNAVAILABLE until it is back). SIGTERM/SIGINT: health NOT_SERVING,
GRPC_SHUTDOWN_DRAIN_S of drain, then GRPC_SHUTDOWN_GRACE_S for the calls in flight. The
client is ``python -m data_retrieval.client``.

Exit codes: 0 stopped by a signal, 1 cannot listen, 2 invalid settings.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from data_retrieval.server import serve
from data_retrieval.settings import RetrievalSettings
from sla_common.cli import EXIT_BAD_SETTINGS, service_start

log = logging.getLogger("data_retrieval")


def main(argv: list[str] | None = None) -> int:
    settings = service_start("python -m data_retrieval", __doc__, RetrievalSettings, log, argv)
    if settings is None:
        return EXIT_BAD_SETTINGS
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
