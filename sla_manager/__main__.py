"""``python -m sla_manager``: the SLA manager's REST API (uvicorn on HTTP_HOST:HTTP_PORT).

Before serving, waits for MySQL (bounded by SLA_STARTUP_WAIT_S, with backoff) and checks
that its schema is at least the version this code needs (a newer one is fine); it never
migrates: ``python -m sla_common.migrate`` does. SIGTERM/SIGINT: uvicorn stops accepting,
finishes the requests in flight, exits 0.

Exit codes: 0 stopped, 1 MySQL unreachable, login refused or schema too old (said in one
log line), 2 invalid settings (naming the variable), 3 the HTTP server could not start.
"""

from __future__ import annotations

import logging
import sys

from sla_common.asgi import serve
from sla_common.cli import EXIT_BAD_SETTINGS, service_start
from sla_common.mysql_startup import MYSQL_ERRORS, LoginRefused, SchemaTooOld, wait_for_schema
from sla_manager.app import create_app
from sla_manager.settings import SlaSettings

log = logging.getLogger("sla_manager")

EXIT_DEPENDENCY = 1
EXIT_SERVER = 3


def prepare_database(settings: SlaSettings) -> None:
    """Wait for MySQL, then check the schema version; raises when it gives up."""
    wait_for_schema(settings, deadline_s=settings.sla_startup_wait_s)


def main(argv: list[str] | None = None) -> int:
    settings = service_start("python -m sla_manager", __doc__, SlaSettings, log, argv)
    if settings is None:
        return EXIT_BAD_SETTINGS
    try:
        prepare_database(settings)
    except (LoginRefused, SchemaTooOld) as e:
        log.error("%s; not serving", e)
        return EXIT_DEPENDENCY
    except MYSQL_ERRORS as e:
        log.error(
            "MySQL %s:%d did not answer within SLA_STARTUP_WAIT_S=%.0f s (%s: %s); not serving",
            settings.mysql_host,
            settings.mysql_port,
            settings.sla_startup_wait_s,
            type(e).__name__,
            e,
        )
        return EXIT_DEPENDENCY
    app = create_app(settings)
    log.info("serving on http://%s:%d (docs at /docs)", settings.http_host, settings.http_port)
    started = serve(app, settings.http_host, settings.http_port, access_log=settings.sla_access_log)
    return 0 if started else EXIT_SERVER


if __name__ == "__main__":
    sys.exit(main())
