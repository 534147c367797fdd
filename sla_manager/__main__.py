"""``python -m sla_manager``: the SLA manager's REST API (uvicorn on HTTP_HOST:HTTP_PORT).

Before serving, waits for MySQL (bounded by SLA_STARTUP_WAIT_S, with backoff) and applies
the schema migrations it lacks (SLA_APPLY_MIGRATIONS=false: only checks that it can
connect). SIGTERM/SIGINT: uvicorn stops accepting, finishes the requests in flight, exits 0.

Exit codes: 0 stopped, 1 MySQL unreachable or schema not migratable (said in one log line),
2 invalid settings (naming the variable), 3 the HTTP server could not start (port taken).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

import uvicorn

from sla_common.cli import settings_and_logging
from sla_common.mysql import MigrationError, close_quietly, connect, retry
from sla_common.mysql_startup import MYSQL_ERRORS, wait_and_migrate
from sla_manager.app import create_app
from sla_manager.settings import SlaSettings

log = logging.getLogger("sla_manager")

EXIT_DEPENDENCY = 1
EXIT_SETTINGS = 2
EXIT_SERVER = 3


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down gracefully, so the process
    would end "killed by SIGTERM"; like the other services, this one exits 0 after draining.
    A second SIGINT still forces the exit, as in uvicorn."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def prepare_database(settings: SlaSettings) -> None:
    """Wait for MySQL, then migrate (or just connect); raises when it gives up."""
    if settings.sla_apply_migrations:
        wait_and_migrate(
            settings,
            deadline_s=settings.sla_startup_wait_s,
            migrations_dir=settings.mysql_migrations_dir,
        )
        return
    retry(
        lambda: close_quietly(connect(settings)),
        what=f"MySQL {settings.mysql_host}:{settings.mysql_port} (start-up)",
        retry_on=MYSQL_ERRORS,
        deadline_s=settings.sla_startup_wait_s,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sla_manager",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    settings = settings_and_logging(SlaSettings, log)
    if settings is None:
        return EXIT_SETTINGS
    try:
        prepare_database(settings)
    except MigrationError as e:
        log.error("cannot migrate the schema of %s: %s", settings.mysql_database, e)
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
    server = _Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,  # keep sla_common's logging set-up
            access_log=settings.sla_access_log,
            timeout_graceful_shutdown=30,
            server_header=False,
        )
    )
    log.info("serving on http://%s:%d (docs at /docs)", settings.http_host, settings.http_port)
    server.run()
    return 0 if server.started else EXIT_SERVER


if __name__ == "__main__":
    sys.exit(main())
