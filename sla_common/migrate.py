"""``python -m sla_common.migrate [apply|check|schema]``: the one owner of the MySQL schema.

    apply (default)  create MYSQL_DATABASE if needed, apply the migrations it lacks, exit;
                     waits MYSQL_MIGRATE_WAIT_S for the server; idempotent, and safe to run
                     concurrently (a named lock); a database migrated further by a newer
                     release is left as it is
    check            exit 0 if the schema is at least the version this code needs, 1 if not
    schema           print db/Database.sql as the migrations make it; --write rewrites the
                     file, --check exits 1 when the file differs (source tree only)

The services never migrate: at start they check the schema version and stop with an error
naming this command when it is older than they need. Run it before them: ``make migrate``
locally (``scripts/up`` does it too), the one-shot ``migrate`` service in compose.

Exit codes: 0 done, 1 failure (server unreachable within the wait, login refused, a
migration conflict, schema too old for ``check``), 2 invalid settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import Field

from sla_common.cli import EXIT_BAD_SETTINGS, settings_and_logging, stop_on_signals
from sla_common.mysql import (
    DEFAULT_DATABASE_SQL,
    DEFAULT_MIGRATIONS_DIR,
    SCHEMA_VERSION,
    MigrationError,
    MysqlSettings,
    Stopped,
    load_migrations,
    render_database_sql,
)
from sla_common.mysql_startup import (
    MYSQL_ERRORS,
    LoginRefused,
    SchemaTooOld,
    wait_and_migrate,
    wait_for_schema,
)

log = logging.getLogger("sla_common.migrate")


class MigrateSettings(MysqlSettings):
    mysql_migrate_wait_s: float = Field(
        default=60.0, gt=0, description="how long to wait for the server before giving up"
    )
    # Another set of migrations (tests: a schema one migration ahead of the code).
    mysql_migrations_dir: Path = DEFAULT_MIGRATIONS_DIR


def cmd_apply(settings: MigrateSettings) -> int:
    report = wait_and_migrate(
        settings,
        deadline_s=settings.mysql_migrate_wait_s,
        migrations_dir=settings.mysql_migrations_dir,
        stop=stop_on_signals(log, "stopping before the next attempt"),
    )
    log.info(
        "database %s: applied %s, already there %d",
        settings.mysql_database,
        list(report.applied) or "none",
        len(report.already),
    )
    return 0


def cmd_check(settings: MigrateSettings) -> int:
    wait_for_schema(settings, deadline_s=settings.mysql_migrate_wait_s, required=SCHEMA_VERSION)
    return 0


def cmd_schema(settings: MigrateSettings, write: bool, check: bool) -> int:
    text = render_database_sql(load_migrations(settings.mysql_migrations_dir))
    if check:
        if DEFAULT_DATABASE_SQL.read_text(encoding="utf-8") != text:
            log.error(
                "%s is out of date: run python -m sla_common.migrate schema --write",
                DEFAULT_DATABASE_SQL,
            )
            return 1
        return 0
    if write:
        DEFAULT_DATABASE_SQL.write_text(text, encoding="utf-8")
        log.info("wrote %s", DEFAULT_DATABASE_SQL)
        return 0
    sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sla_common.migrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("apply", help="apply the missing migrations (the default)")
    sub.add_parser("check", help="exit 1 unless the schema is recent enough for this code")
    sch = sub.add_parser("schema", help="db/Database.sql from the migrations")
    group = sch.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite db/Database.sql")
    group.add_argument("--check", action="store_true", help="exit 1 if it is out of date")
    args = parser.parse_args(argv)

    settings = settings_and_logging(MigrateSettings, log)
    if settings is None:
        return EXIT_BAD_SETTINGS
    try:
        if args.command == "schema":
            return cmd_schema(settings, args.write, args.check)
        if args.command == "check":
            return cmd_check(settings)
        return cmd_apply(settings)
    except (MigrationError, LoginRefused, SchemaTooOld) as e:
        log.error("%s", e)
    except Stopped:
        log.error("stopped before the schema was migrated")
    except MYSQL_ERRORS as e:
        log.error(
            "MySQL %s:%d did not answer within MYSQL_MIGRATE_WAIT_S=%.0f s (%s: %s)",
            settings.mysql_host,
            settings.mysql_port,
            settings.mysql_migrate_wait_s,
            type(e).__name__,
            e,
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
