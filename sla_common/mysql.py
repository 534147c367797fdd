"""MySQL helpers shared by the services that use the database (PyMySQL, pinned).

- :class:`MysqlSettings`: the ``MYSQL_*`` timeouts on top of :class:`CommonSettings`.
- :func:`connect`: a connection with timeouts, UTC session time zone, strict SQL mode.
- :func:`is_data_error`: tells an error caused by the rows being written (retrying cannot
  help) from one caused by the server or the network (retrying will, once it is back).
- :class:`Backoff` and :func:`retry`: bounded exponential backoff with jitter, interruptible
  by a stop event, for every call a dependency may fail.
- :func:`insert_rows`: multi-row ``INSERT ... VALUES (..),(..)`` in few statements (bulk
  upserts); :func:`fetch_all`: one query's rows.
- Versioned migrations: ``sla_common/migrations/NNNN_name.sql`` (package data, so they ship
  in the wheel and the image) applied in order and recorded in ``schema_migrations``
  (:func:`apply_migrations`), by one command only, ``python -m sla_common.migrate``; the
  services check :func:`schema_version` against :data:`SCHEMA_VERSION` and never migrate.
  ``db/Database.sql`` is the same schema in one idempotent file (:func:`render_database_sql`
  writes it, a test keeps the two equal).
- :func:`is_auth_error`: a login the server refused (wrong password, unknown user, an
  authentication method the client cannot do): fatal at start, never retried.

Times in the schema are BIGINT epoch seconds (UTC by definition); the session time zone is
UTC anyway so that any ``NOW()``/``FROM_UNIXTIME()`` a reader uses agrees with them.

SQL text here and in the services is built only from names defined in code (hence the
``noqa: S608`` marks); every value is a parameter or a literal rendered by the driver's
rules (:func:`sql_literal`), never text taken from input.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

import pymysql
import pymysql.cursors
from pydantic import Field, model_validator
from pymysql.constants import CR, ER

from sla_common.settings import CommonSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

if TYPE_CHECKING:
    Connection = pymysql.connections.Connection[pymysql.cursors.Cursor]
else:  # the class is generic only in the type stubs
    Connection = pymysql.connections.Connection

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Generated from the migrations for people (and `mariadb DB < db/Database.sql`); in the
# source tree only, not in the wheel: nothing at run time reads it.
DEFAULT_DATABASE_SQL = REPO / "db" / "Database.sql"

# The schema version this code reads and writes: every service needs at least this one
# (the newest migration when the code was written; a unit test keeps the two equal), and
# works on a newer schema, whose migrations only add. Bump it with each new migration.
SCHEMA_VERSION = 8
# How a person brings a database up to date (named in the services' fatal errors).
MIGRATE_COMMAND = "python -m sla_common.migrate"

MIGRATIONS_TABLE = "schema_migrations"
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# One statement ends at a ';' that ends a line (our SQL files keep to that; see split_sql).
_STATEMENT_END = re.compile(r";[ \t]*$", re.M)
_DB_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")

# Strict: a value that does not fit its column is an error, never silently truncated.
SQL_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"
# Upserts of disjoint key ranges from several consumers: no gap locks between them.
ISOLATION = "READ COMMITTED"

# MySQL 8 (3140 invalid JSON, 3819 CHECK violated) and MariaDB (4025 CHECK, also for JSON).
_DATA_ERRNOS = {ER.CONSTRAINT_FAILED, 3140, 3819}


class MysqlSettings(CommonSettings):
    """CommonSettings plus what every MySQL client needs; services subclass this."""

    mysql_database: str = Field(default="sla_monitor", pattern=_DB_NAME.pattern)
    mysql_connect_timeout_s: float = Field(default=5.0, gt=0)
    mysql_read_timeout_s: float = Field(default=60.0, gt=0)
    mysql_write_timeout_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _no_default_password_in_production(self) -> Self:
        if self.environment == "production" and not self.mysql_password.get_secret_value():
            raise ValueError("MYSQL_PASSWORD must be set when ENVIRONMENT=production")
        return self


def connect(
    s: MysqlSettings, *, database: str | None = None, autocommit: bool = False
) -> Connection:
    """A new connection to ``database`` (default ``MYSQL_DATABASE``; "" for none).

    Every network operation is bounded by the ``MYSQL_*_TIMEOUT_S`` settings. Raises
    ``pymysql.err.OperationalError`` when the server cannot be reached.
    """
    db = s.mysql_database if database is None else database
    conn = pymysql.connect(
        host=s.mysql_host,
        port=s.mysql_port,
        user=s.mysql_user,
        password=s.mysql_password.get_secret_value(),
        database=db or None,
        charset="utf8mb4",
        autocommit=autocommit,
        connect_timeout=max(1, round(s.mysql_connect_timeout_s)),
        read_timeout=max(1, round(s.mysql_read_timeout_s)),
        write_timeout=max(1, round(s.mysql_write_timeout_s)),
        init_command=f"SET time_zone = '+00:00', sql_mode = '{SQL_MODE}'",
    )
    try:
        with conn.cursor() as cur:
            # Its own statement: the variable's name differs between MariaDB and MySQL 8.
            cur.execute(f"SET SESSION TRANSACTION ISOLATION LEVEL {ISOLATION}")
    except BaseException:
        close_quietly(conn)
        raise
    return conn


def close_quietly(conn: Connection | None) -> None:
    """Close a connection that may already be broken (a dead server must not raise here)."""
    if conn is None:
        return
    with contextlib.suppress(pymysql.err.Error, OSError):  # closed, or the socket is gone
        conn.close()


def is_data_error(exc: BaseException) -> bool:
    """True when the server refused the *rows* (too long, out of range, invalid JSON, ...).

    Such a write fails the same way every time: the caller must isolate the offending
    record rather than retry. Everything else (server gone, lock wait timeout, deadlock,
    access denied, a missing table) depends on the environment and is worth retrying.
    """
    if isinstance(exc, pymysql.err.DataError | pymysql.err.IntegrityError):
        return True
    if isinstance(exc, pymysql.err.MySQLError) and exc.args:
        return exc.args[0] in _DATA_ERRNOS
    return False


def errno_of(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


# Refused logins: wrong password or unknown user (1045), no access to the database (1044),
# MariaDB's unix_socket/no-password refusals (1698), a method the client lacks (1251,
# 2059), an expired password (1862), a locked account (MySQL 3118, MariaDB 4151).
_AUTH_ERRNOS = {
    ER.ACCESS_DENIED_ERROR,
    ER.DBACCESS_DENIED_ERROR,
    1698,
    ER.NOT_SUPPORTED_AUTH_MODE,
    CR.CR_AUTH_PLUGIN_CANNOT_LOAD,
    1862,
    3118,
    4151,
}


def is_auth_error(exc: BaseException) -> bool:
    """The server refused the login: retrying with the same settings cannot help.

    Also PyMySQL's ``RuntimeError`` when an authentication method needs a package that is
    missing (``cryptography`` for MySQL 8's ``caching_sha2_password`` without TLS).
    """
    if isinstance(exc, RuntimeError) and "auth" in str(exc):
        return True
    return errno_of(exc) in _AUTH_ERRNOS


def is_connection_error(exc: BaseException) -> bool:
    """The connection is unusable: drop it and open a new one on the next attempt."""
    if isinstance(exc, pymysql.err.InterfaceError | OSError):
        return True
    return errno_of(exc) in {
        CR.CR_CONN_HOST_ERROR,
        CR.CR_SERVER_GONE_ERROR,
        CR.CR_SERVER_LOST,
        CR.CR_SERVER_LOST_EXTENDED,
        ER.SERVER_SHUTDOWN,
        ER.CON_COUNT_ERROR,
    }


# --------------------------------------------------------------------------- bulk rows

# Per statement; well under max_allowed_packet (16 MiB on MariaDB, 64 MiB on MySQL 8) even
# if every character of a string value took 4 bytes.
MAX_STATEMENT_CHARS = 1_000_000


def sql_literal(cur: pymysql.cursors.Cursor, value: object) -> str:
    """``value`` as an SQL literal: what the driver puts in place of a ``%s`` parameter.

    PyMySQL always renders parameters client-side; its generic per-value dispatch is half
    the cost of a bulk upsert, so the two types that make up nearly all the values, int
    and float, are rendered here the way PyMySQL's own converters do it (``escape_int``,
    ``escape_float``: a float gets an exponent so MySQL reads it as DOUBLE, not DECIMAL).
    Only exact ``int``/``float`` take this path (never a subclass, never a ``bool``);
    everything else, strings above all, goes through the driver's escaping (``mogrify``).
    """
    t = type(value)
    if t is float:
        s = repr(value)
        if s in ("inf", "-inf", "nan"):
            raise ValueError(f"{s} cannot be stored in MySQL")
        return s if "e" in s else s + "e0"
    if t is int:
        return str(value)
    return cur.mogrify("%s", (value,))


def insert_rows(
    cur: pymysql.cursors.Cursor, head: str, rows: Sequence[Sequence[object]], tail: str = ""
) -> int:
    """``head (..),(..) tail`` for all ``rows``, in as few statements as fit; rows affected.

    ``head`` is ``INSERT INTO table (columns) VALUES`` and ``tail`` e.g. an ``ON DUPLICATE
    KEY UPDATE`` clause, both built from names in code; every value is a literal rendered
    by :func:`sql_literal`. The same multi-row statements as ``executemany``, faster.
    """
    affected = 0
    parts: list[str] = []
    size = len(head) + len(tail)
    for row in rows:
        values = "(" + ",".join([sql_literal(cur, v) for v in row]) + ")"
        if parts and size + len(values) + 1 > MAX_STATEMENT_CHARS:
            affected += cur.execute(head + ",".join(parts) + tail)
            parts, size = [], len(head) + len(tail)
        parts.append(values)
        size += len(values) + 1
    if parts:
        affected += cur.execute(head + ",".join(parts) + tail)
    return affected


# --------------------------------------------------------------------------- retry


class Stopped(Exception):
    """Raised by :func:`retry` when its stop event is set before the call succeeded."""


@dataclass
class Backoff:
    """Exponential backoff with full jitter: ``base * 2**n`` capped at ``cap`` seconds."""

    base_s: float = 0.5
    cap_s: float = 30.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap_s, self.base_s * 2.0**self.attempt)
        self.attempt += 1
        # Jitter keeps several consumers from hammering a server that just came back in step.
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 (not cryptographic)

    def reset(self) -> None:
        self.attempt = 0


def retry(
    fn: Callable[[], T],
    *,
    what: str,
    retry_on: tuple[type[BaseException], ...],
    backoff: Backoff | None = None,
    stop: threading.Event | None = None,
    max_attempts: int | None = None,
    deadline_s: float | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    give_up: Callable[[BaseException], bool] | None = None,
) -> T:
    """Call ``fn`` until it succeeds; between failures wait with ``backoff``.

    Bounded by ``max_attempts`` and/or ``deadline_s`` (then the last error is raised) and by
    ``stop`` (then :class:`Stopped`); with none of them it waits for as long as it takes,
    which is what a service does for a dependency it cannot work without. Errors outside
    ``retry_on``, or for which ``give_up`` returns True, are raised at once.
    """
    backoff = backoff or Backoff()
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except retry_on as e:
            if give_up is not None and give_up(e):
                raise
            if on_error is not None:
                on_error(e)
            delay = backoff.next_delay()
            out_of_attempts = max_attempts is not None and attempt >= max_attempts
            out_of_time = deadline_s is not None and time.monotonic() - started + delay > deadline_s
            if out_of_attempts or out_of_time:
                log.error("%s failed %d time(s), giving up: %s", what, attempt, e)
                raise
            log.warning(
                "%s failed (attempt %d): %s: %s; retrying in %.1fs",
                what,
                attempt,
                type(e).__name__,
                e,
                delay,
            )
            if stop is not None:
                if stop.wait(delay):
                    raise Stopped(what) from e
            else:
                time.sleep(delay)
        if stop is not None and stop.is_set():
            raise Stopped(what)


# --------------------------------------------------------------------------- schema


def series_key_hash(key: str) -> bytes:
    """The 32-byte unique key of a series row: SHA-256 of the series key's UTF-8 bytes.

    Keys can be 4 KiB long, too long for a unique index; in SQL the same value is
    ``UNHEX(SHA2(series_key, 256))``.
    """
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


class MigrationError(Exception):
    """The migrations on disk and in the database disagree; a person must look."""


def load_migrations(directory: Path = DEFAULT_MIGRATIONS_DIR) -> list[Migration]:
    """Every ``NNNN_name.sql`` in ``directory``, by version; versions must be 1, 2, 3, ..."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _MIGRATION_FILE.match(path.name)
        if m is None:
            raise MigrationError(f"{path}: migration files are named NNNN_lowercase_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    if not found:
        raise MigrationError(f"no migrations in {directory}")
    expected = list(range(1, len(found) + 1))
    if [mig.version for mig in found] != expected:
        raise MigrationError(
            f"{directory}: versions must run 1..{len(found)} without gaps or repeats, got "
            f"{[mig.version for mig in found]}"
        )
    return found


def split_sql(text: str) -> list[str]:
    """Statements of an SQL file: ``--`` comment lines dropped, split at a ``;`` ending a line.

    Enough for schema files (no procedures, no ';' at the end of a line inside a string).
    """
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
    body = "\n".join(lines)
    return [s.strip() for s in _STATEMENT_END.split(body) if s.strip()]


def _migrations_table_sql() -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (\n"
        "    version INT NOT NULL,\n"
        "    name VARCHAR(128) NOT NULL,\n"
        "    checksum CHAR(64) NOT NULL,\n"
        "    applied_at BIGINT NOT NULL,\n"
        "    PRIMARY KEY (version)\n"
        ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;"
    )


def render_database_sql(migrations: list[Migration]) -> str:
    """``db/Database.sql``: the migrations table, every migration, and their records.

    Applying it to a fresh database gives the schema that :func:`apply_migrations` gives,
    and records the migrations as applied so ``migrate`` later adds only newer ones. It is
    idempotent as long as migrations are (they use ``IF NOT EXISTS``); a migration that
    cannot be (a column change) must be written so here too, or this file rewritten as the
    final schema by hand, which the equality test then checks.
    """
    parts = [
        "-- SLA Monitor: the whole MySQL schema in one idempotent file.",
        "-- GENERATED from sla_common/migrations/*.sql by `python -m sla_common.migrate schema",
        "-- --write`; edit the migrations, not this file. Apply to an existing database:",
        "--     mariadb DBNAME < db/Database.sql      (or: python -m sla_common.migrate)",
        "",
        _migrations_table_sql(),
    ]
    for mig in migrations:
        parts += ["", f"-- ---- {mig.filename}", "", mig.sql.strip()]
    parts += ["", "-- ---- record the migrations above as applied"]
    for mig in migrations:
        parts.append(
            f"INSERT IGNORE INTO {MIGRATIONS_TABLE} (version, name, checksum, applied_at) "  # noqa: S608
            f"VALUES ({mig.version}, '{mig.name}', '{mig.checksum}', UNIX_TIMESTAMP());"
        )
    return "\n".join(parts) + "\n"


def _exec_script(conn: Connection, sql: str) -> None:
    with conn.cursor() as cur:
        for statement in split_sql(sql):
            cur.execute(statement)


def ensure_database(s: MysqlSettings) -> bool:
    """Create ``MYSQL_DATABASE`` if it does not exist; True if it was created.

    Only tries CREATE when the server says the database is unknown, so a user without the
    CREATE privilege works with a database that was made for it.
    """
    try:
        close_quietly(connect(s, autocommit=True))
        return False
    except pymysql.err.OperationalError as e:
        if errno_of(e) != ER.BAD_DB_ERROR:
            raise
    conn = connect(s, database="", autocommit=True)
    try:
        with conn.cursor() as cur:
            # The name matched _DB_NAME when the settings were validated: safe to quote.
            cur.execute(
                f"CREATE DATABASE IF NOT EXISTS `{s.mysql_database}` "
                "DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
    finally:
        close_quietly(conn)
    log.info("created database %s", s.mysql_database)
    return True


def drop_database(s: MysqlSettings, name: str | None = None) -> None:
    """``DROP DATABASE IF EXISTS`` ``name`` (default ``MYSQL_DATABASE``): scratch databases of
    tests and benchmarks. The name must be a plain identifier (it cannot be a parameter)."""
    db = s.mysql_database if name is None else name
    if not _DB_NAME.match(db):
        raise ValueError(f"not a plain database name: {db!r}")
    conn = connect(s, database="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
    finally:
        close_quietly(conn)


@dataclass(frozen=True)
class MigrationReport:
    applied: tuple[str, ...]
    already: tuple[str, ...]


def applied_migrations(conn: Connection) -> dict[int, tuple[str, str]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE}")  # noqa: S608
        return {int(v): (str(n), str(c)) for v, n, c in cur.fetchall()}


@contextlib.contextmanager
def named_lock(conn: Connection, name: str, timeout_s: int) -> Iterator[None]:
    """Hold the server-wide advisory lock ``name`` (GET_LOCK) for the ``with`` body."""
    with conn.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, %s)", (name, timeout_s))
        row = cur.fetchone()
    if not row or row[0] != 1:
        raise MigrationError(f"another process holds the migration lock {name!r}")
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT RELEASE_LOCK(%s)", (name,))
            cur.fetchall()


def apply_migrations(
    conn: Connection, migrations: list[Migration], *, lock_timeout_s: int = 60
) -> MigrationReport:
    """Apply the migrations ``conn``'s database lacks, in order; record each one.

    Serialised with a named lock, so migrate commands run together do not race. A database
    already migrated further (by a newer release) is left as it is. A recorded
    migration whose file changed since is refused (:class:`MigrationError`): edit the
    schema with a new migration instead. DDL commits implicitly in MySQL, so a migration
    interrupted half-way is re-run whole the next time: they are written idempotently.
    """
    conn.autocommit(True)
    with conn.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        row = cur.fetchone()
    database = str(row[0]) if row and row[0] else ""
    if not database:
        raise MigrationError("the connection has no database selected")
    lock = f"sla_monitor.migrate.{database}"
    applied: list[str] = []
    already: list[str] = []
    with named_lock(conn, lock, lock_timeout_s):
        _exec_script(conn, _migrations_table_sql())
        done = applied_migrations(conn)
        known = {mig.version for mig in migrations}
        newer = sorted(v for v in set(done) - known if v > max(known))
        if set(done) - known - set(newer):
            raise MigrationError(
                f"database {database} has migrations {sorted(set(done) - known)} that the "
                f"files do not (they run 1..{max(known)})"
            )
        missing = sorted(known - set(done))
        if newer and missing:
            raise MigrationError(
                f"database {database} has the newer migrations {newer} but lacks {missing}: "
                "migrations apply in order only"
            )
        if newer:
            log.info(
                "database %s is at version %d, newer than these migrations (%d): nothing to do",
                database,
                max(newer),
                max(known),
            )
        for mig in migrations:
            if mig.version in done:
                _name, checksum = done[mig.version]
                if checksum != mig.checksum:
                    raise MigrationError(
                        f"migration {mig.filename} changed after it was applied to {database} "
                        f"(recorded {checksum[:12]}, file {mig.checksum[:12]}); add a new "
                        "migration instead of editing an applied one"
                    )
                already.append(mig.filename)
                continue
            log.info("applying migration %s to %s", mig.filename, database)
            _exec_script(conn, mig.sql)
            with conn.cursor() as cur:
                cur.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum, applied_at) "  # noqa: S608
                    "VALUES (%s, %s, %s, %s)",
                    (mig.version, mig.name, mig.checksum, int(time.time())),
                )
            applied.append(mig.filename)
    return MigrationReport(tuple(applied), tuple(already))


def schema_version(conn: Connection) -> int:
    """The highest version ``v`` such that migrations 1..v are all recorded (0: none, or no
    ``schema_migrations`` table at all: the database was never migrated)."""
    try:
        versions = set(applied_migrations(conn))
    except pymysql.err.ProgrammingError as e:
        if errno_of(e) == ER.NO_SUCH_TABLE:
            return 0
        raise
    version = 0
    while version + 1 in versions:
        version += 1
    return version


def fetch_all(conn: Connection, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    """Run a query and return all its rows (``sql`` built from code, ``args`` parameters)."""
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return [tuple(r) for r in cur.fetchall()]
