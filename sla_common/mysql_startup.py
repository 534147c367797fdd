"""Start-up of a MySQL-backed process: wait for the server, then migrate or check the schema.

What ``backend_pre_start.py`` does in full-stack-fastapi-template, on top of the helpers of
:mod:`sla_common.mysql`: bounded retries with backoff while the server is not there yet
(a process starting next to its database must wait, not die), immediate failure when
retrying cannot help (a refused login, a migration conflict, a schema too old), and one log
line with the outcome.

- :func:`wait_and_migrate`: what ``python -m sla_common.migrate`` (the one owner of the
  schema) does, and the test fixtures and benchmarks that create databases.
- :func:`wait_for_schema`: what every service does: check that the schema is at least the
  version the code needs (:data:`sla_common.mysql.SCHEMA_VERSION`), never change it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pymysql
from pymysql.constants import ER

from sla_common.mysql import (
    DEFAULT_MIGRATIONS_DIR,
    MIGRATE_COMMAND,
    SCHEMA_VERSION,
    Backoff,
    MigrationReport,
    MysqlSettings,
    apply_migrations,
    close_quietly,
    connect,
    ensure_database,
    errno_of,
    is_auth_error,
    is_data_error,
    load_migrations,
    retry,
    schema_version,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Everything a server that is down, starting or restarting can raise.
MYSQL_ERRORS: tuple[type[BaseException], ...] = (pymysql.err.Error, OSError)
# ... and, at login, PyMySQL's RuntimeError for an authentication method it cannot do.
_LOGIN_ERRORS: tuple[type[BaseException], ...] = (*MYSQL_ERRORS, RuntimeError)


class LoginRefused(Exception):
    """MySQL refused the login (MYSQL_USER / MYSQL_PASSWORD): fatal, never retried.

    The message names the server and the user and quotes the server's error, which never
    holds the password."""


class SchemaTooOld(Exception):
    """The database's schema is older than the code needs (or absent): run the migrate
    command. The message says which versions and names the command."""


def where(settings: MysqlSettings) -> str:
    return f"MySQL {settings.mysql_host}:{settings.mysql_port}/{settings.mysql_database}"


def _fatal(exc: BaseException) -> bool:
    return is_auth_error(exc) or is_data_error(exc) or isinstance(exc, RuntimeError)


def _retry_login(settings: MysqlSettings, fn: Callable[[], T], what: str, **kw: Any) -> T:
    """``retry(fn)`` while the server cannot be reached; a refused login is LoginRefused."""
    try:
        return retry(
            fn, what=f"{where(settings)} ({what})", retry_on=_LOGIN_ERRORS, give_up=_fatal, **kw
        )
    except _LOGIN_ERRORS as e:
        if not is_auth_error(e):
            raise
        # The server's text ("Access denied for user 'x'@'h' (using password: YES)") or
        # PyMySQL's (a missing package): never the password.
        detail = e.args[1] if len(e.args) > 1 else str(e)
        raise LoginRefused(
            f"{where(settings)} refused the login of user {settings.mysql_user!r}: {detail} "
            "(check MYSQL_USER and MYSQL_PASSWORD)"
        ) from None


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
    error is raised. :class:`sla_common.mysql.MigrationError` and :class:`LoginRefused` are
    raised at once. Safe to run concurrently (a named lock serialises the migrations).
    """
    migrations = load_migrations(migrations_dir)

    def attempt() -> MigrationReport:
        ensure_database(settings)
        conn = connect(settings)
        try:
            return apply_migrations(conn, migrations)
        finally:
            close_quietly(conn)

    report = _retry_login(
        settings,
        attempt,
        "schema migration",
        backoff=backoff or Backoff(0.25, 5.0),
        deadline_s=deadline_s,
        stop=stop,
    )
    log.info(
        "%s migrated: applied %s, %d already there",
        where(settings),
        ", ".join(report.applied) or "no migration",
        len(report.already),
    )
    return report


def wait_for_schema(
    settings: MysqlSettings,
    *,
    deadline_s: float,
    required: int = SCHEMA_VERSION,
    stop: threading.Event | None = None,
    backoff: Backoff | None = None,
) -> int:
    """Wait for MySQL, then check that ``MYSQL_DATABASE`` is at schema version ``required``
    or newer; the version found.

    Retries while the server cannot be reached (at most ``deadline_s`` seconds, then the
    last error is raised, or :class:`sla_common.mysql.Stopped` when ``stop`` is set).
    Raises at once :class:`LoginRefused` for a refused login and :class:`SchemaTooOld`
    when the database is missing, never migrated or older than ``required``: a service
    never migrates, the migrate command does.
    """

    def attempt() -> int:
        try:
            conn = connect(settings)
        except pymysql.err.OperationalError as e:
            if errno_of(e) == ER.BAD_DB_ERROR:
                return -1  # no such database
            raise
        try:
            return schema_version(conn)
        finally:
            close_quietly(conn)

    found = _retry_login(
        settings,
        attempt,
        "start-up: schema check",
        backoff=backoff or Backoff(0.25, 5.0),
        deadline_s=deadline_s,
        stop=stop,
    )
    if found < required:
        state = "does not exist" if found < 0 else f"is at schema version {found}"
        raise SchemaTooOld(
            f"{where(settings)} {state}; this version needs schema version {required} or newer: "
            f"run `{MIGRATE_COMMAND}` (make migrate; in compose, the migrate service) first"
        )
    log.info("%s is at schema version %d (needs %d or newer)", where(settings), found, required)
    return found
