"""Start-up of a MySQL-backed service: wait for the server, then bring the schema up to date.

What ``backend_pre_start.py`` does in full-stack-fastapi-template, on top of the helpers of
:mod:`sla_common.mysql`: bounded retries with backoff while the server is not there yet
(a service starting next to its database must wait, not die), immediate failure when
retrying cannot help (a migration conflict, a refused row), and one log line with the
outcome.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pymysql

from sla_common.mysql import (
    DEFAULT_MIGRATIONS_DIR,
    Backoff,
    MigrationReport,
    MysqlSettings,
    apply_migrations,
    close_quietly,
    connect,
    ensure_database,
    is_data_error,
    load_migrations,
    retry,
)

log = logging.getLogger(__name__)

# Everything a server that is down, starting or restarting can raise.
MYSQL_ERRORS: tuple[type[BaseException], ...] = (pymysql.err.Error, OSError)


def wait_and_migrate(
    settings: MysqlSettings,
    *,
    deadline_s: float,
    migrations_dir: Path = DEFAULT_MIGRATIONS_DIR,
    stop: threading.Event | None = None,
    backoff: Backoff | None = None,
) -> MigrationReport:
    """Create ``MYSQL_DATABASE`` if needed and apply the migrations it lacks.

    Retries while MySQL cannot be reached, for at most ``deadline_s`` seconds; then the last
    error is raised. :class:`sla_common.mysql.MigrationError` is raised at once.
    """
    migrations = load_migrations(migrations_dir)
    where = f"MySQL {settings.mysql_host}:{settings.mysql_port}/{settings.mysql_database}"

    def attempt() -> MigrationReport:
        ensure_database(settings)
        conn = connect(settings)
        try:
            return apply_migrations(conn, migrations)
        finally:
            close_quietly(conn)

    report = retry(
        attempt,
        what=f"{where} (start-up: schema migration)",
        retry_on=MYSQL_ERRORS,
        give_up=is_data_error,
        backoff=backoff or Backoff(0.25, 5.0),
        deadline_s=deadline_s,
        stop=stop,
    )
    log.info(
        "%s ready: applied %s, %d already there",
        where,
        ", ".join(report.applied) or "no migration",
        len(report.already),
    )
    return report
