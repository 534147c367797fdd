"""Integration tests run against the real stack that scripts/up starts (never mocks).

The session fixture `stack` starts Prometheus (with the demo history backfilled),
node-exporter, the tansu broker and MariaDB in a fresh temporary state dir on free ports,
yields where they are as a `Stack`, dumps the logs when `up` fails, and always runs
`scripts/down --purge`. MariaDB: the machine's server on 127.0.0.1:3306 when it answers as
root with an empty password (and is then left alone), else a private instance on a free port.
Either way `up` migrates a database of the session's own (``sla_it_<random>``, never the
default sla_monitor that `make demo` and other checkouts use on the shared server), dropped
at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sla_common.mysql import MysqlSettings, drop_database
from tests.integration.slautil import stack_database
from tests.integration.stackutil import (
    HOST,
    SCRIPTS,
    Runner,
    Stack,
    aligned_now,
    dump_logs,
    free_port,
    mysql_answers,
    run_bounded,
    scripts_env,
)

HERE = Path(__file__).resolve().parent
UP_TIMEOUT_S = 240.0
DOWN_TIMEOUT_S = 90.0
DEMO_SEED = 42
SYSTEM_MYSQL_PORT = 3306
SESSION_DATABASE_PREFIX = "sla_it_"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration is marked `integration` (select with -m)."""
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def run() -> Runner:
    """Run a process to completion with a bounded wait (kills its process group on timeout)."""
    return run_bounded


def _stack_overrides() -> dict[str, str]:
    mysql_port = SYSTEM_MYSQL_PORT if mysql_answers(SYSTEM_MYSQL_PORT) else free_port()
    return {
        "STACK_PROMETHEUS_PORT": str(free_port()),
        "STACK_NODE_EXPORTER_PORT": str(free_port()),
        "STACK_DEMO_EXPORTER_PORT": str(free_port()),
        "STACK_KAFKA_PORT": str(free_port()),
        "STACK_ALERTMANAGER_PORT": str(free_port()),
        # Alertmanager's receiver: tests that wait for an alert listen here (test_slo.py).
        "STACK_ALERT_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/alerts",
        "STACK_MYSQL_PORT": str(mysql_port),
        "STACK_MYSQL_MODE": "auto",
        "STACK_SLA_MANAGER_HTTP_PORT": str(free_port()),
        "STACK_ETL_HTTP_PORT": str(free_port()),
        "STACK_STORAGE_HTTP_PORT": str(free_port()),
        "STACK_RETRIEVAL_HTTP_PORT": str(free_port()),
        "STACK_RETRIEVAL_GRPC_PORT": str(free_port()),
        "STACK_RECEIVER_PORT": str(free_port()),
        "STACK_DETECTOR_PORT": str(free_port()),
        "STACK_ANOMALY_BATCH_PORT": str(free_port()),
        "STACK_DEMO_SEED": str(DEMO_SEED),
        "STACK_DEMO_END": str(aligned_now()),
        # What `up` migrates and writes to stack.env for the services.
        "MYSQL_DATABASE": f"{SESSION_DATABASE_PREFIX}{uuid.uuid4().hex[:12]}",
    }


def _drop_session_database(stack_env: dict[str, str]) -> None:
    """The session's database off a server that outlives the stack (a reused one; a private
    one went away with `down --purge` and no longer answers)."""
    port = int(stack_env["STACK_MYSQL_PORT"])
    if mysql_answers(port):
        settings = MysqlSettings(
            mysql_host=HOST,
            mysql_port=port,
            mysql_user="root",
            mysql_password="",
            mysql_database=stack_env["MYSQL_DATABASE"],
        )
        drop_database(settings)


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The exact environment `scripts/up` ran with: tests re-run up/status with it."""
    return scripts_env(tmp_path_factory.mktemp("stack"), **_stack_overrides())


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    state_dir = Path(stack_env["STACK_DIR"])
    try:
        up = run_bounded([SCRIPTS / "up"], timeout=UP_TIMEOUT_S, env=stack_env)
        if up.returncode != 0:
            pytest.fail(
                f"scripts/up failed (exit {up.returncode}):\n{up.stdout}\n{dump_logs(state_dir)}",
                pytrace=False,
            )
        yield Stack.load(state_dir)
    finally:
        down = run_bounded([SCRIPTS / "down", "--purge"], timeout=DOWN_TIMEOUT_S, env=stack_env)
        _drop_session_database(stack_env)
        if down.returncode != 0:
            pytest.fail(f"scripts/down failed (exit {down.returncode}):\n{down.stdout}")


@pytest.fixture(scope="module")
def database(stack: Stack) -> Iterator[str]:
    """A migrated database of the test module's own on the stack's MySQL, dropped after it
    (a module that needs another lifetime defines its own ``database``)."""
    with stack_database(stack) as name:
        yield name
