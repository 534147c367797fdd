"""``python -m data_storage [run|migrate|schema]``: the storage consumer and its schema tools.

    run (default)  consume KAFKA_TOPIC into MySQL, serving /metrics on HTTP_HOST:HTTP_PORT;
                   applies missing migrations first (STORAGE_APPLY_MIGRATIONS=false: not)
    migrate        apply the migrations MYSQL_DATABASE lacks (creating it if needed), exit
    schema         print db/Database.sql as the migrations make it; --write rewrites the
                   file, --check exits 1 when the file differs

Exit codes: 0 done (SIGTERM/SIGINT included: the current batch is committed first),
1 failure (e.g. the schema cannot be migrated), 2 invalid settings.
"""

from __future__ import annotations

import argparse
import logging
import sys

from prometheus_client import start_http_server

from data_storage.consumer import StorageConsumer
from data_storage.metrics import StorageMetrics
from data_storage.settings import StorageSettings
from sla_common.cli import EXIT_BAD_SETTINGS, settings_and_logging, stop_on_signals
from sla_common.mysql import (
    DEFAULT_DATABASE_SQL,
    Backoff,
    MigrationError,
    Stopped,
    load_migrations,
    render_database_sql,
)
from sla_common.mysql_startup import MYSQL_ERRORS, wait_and_migrate

log = logging.getLogger("data_storage")


def cmd_run(settings: StorageSettings) -> int:
    metrics = StorageMetrics()
    server, _thread = start_http_server(
        settings.http_port, addr=settings.http_host, registry=metrics.registry
    )
    log.info("metrics on http://%s:%d/metrics", settings.http_host, server.server_address[1])
    consumer = StorageConsumer(
        settings,
        metrics,
        stop=stop_on_signals(log, "finishing and committing the current batch, then stopping"),
    )
    try:
        consumer.run()
    except MigrationError as e:
        log.error("cannot migrate the schema: %s", e)
        return 1
    finally:
        server.shutdown()
    log.info("data_storage stopped")
    return 0


def cmd_migrate(settings: StorageSettings, wait_s: float) -> int:
    try:
        report = wait_and_migrate(
            settings,
            deadline_s=wait_s,
            migrations_dir=settings.mysql_migrations_dir,
            stop=stop_on_signals(log, "finishing and committing the current batch, then stopping"),
            backoff=Backoff(settings.storage_backoff_base_s, settings.storage_max_backoff_s),
        )
    except MigrationError as e:
        log.error("%s", e)
        return 1
    except Stopped:
        return 1
    except MYSQL_ERRORS as e:
        log.error("MySQL unavailable: %s: %s", type(e).__name__, e)
        return 1
    log.info(
        "database %s is at version %d: applied %s, already there %d",
        settings.mysql_database,
        len(report.applied) + len(report.already),
        list(report.applied) or "none",
        len(report.already),
    )
    return 0


def cmd_schema(settings: StorageSettings, write: bool, check: bool) -> int:
    text = render_database_sql(load_migrations(settings.mysql_migrations_dir))
    if check:
        current = DEFAULT_DATABASE_SQL.read_text(encoding="utf-8")
        if current != text:
            log.error(
                "%s is out of date: run python -m data_storage schema --write", DEFAULT_DATABASE_SQL
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
        prog="python -m data_storage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="consume into MySQL (the default)")
    mig = sub.add_parser("migrate", help="apply missing migrations, then exit")
    mig.add_argument(
        "--wait", type=float, default=60.0, metavar="S", help="wait this long for MySQL"
    )
    sch = sub.add_parser("schema", help="db/Database.sql from the migrations")
    group = sch.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite db/Database.sql")
    group.add_argument("--check", action="store_true", help="exit 1 if it is out of date")
    args = parser.parse_args(argv)

    settings = settings_and_logging(StorageSettings, log)
    if settings is None:
        return EXIT_BAD_SETTINGS
    try:
        if args.command == "migrate":
            return cmd_migrate(settings, args.wait)
        if args.command == "schema":
            return cmd_schema(settings, args.write, args.check)
        return cmd_run(settings)
    except MigrationError as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
