"""The schema's one owner (``python -m sla_common.migrate``) and the services' start-up check:
what can be decided without a server. The real runs are in tests/integration/test_migrate.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pymysql
import pytest
from pymysql.constants import CR, ER

import sla_common
from sla_common import mysql_startup
from sla_common.migrate import main as migrate_main
from sla_common.mysql import (
    DEFAULT_MIGRATIONS_DIR,
    SCHEMA_VERSION,
    MysqlSettings,
    is_auth_error,
    is_connection_error,
    load_migrations,
)
from sla_common.mysql_startup import wait_for_schema

REPO = Path(__file__).resolve().parents[2]


def test_the_code_needs_the_newest_migration_it_ships() -> None:
    # A new migration must come with a deliberate SCHEMA_VERSION bump (and the other way).
    assert load_migrations()[-1].version == SCHEMA_VERSION


def test_the_migrations_ship_inside_the_package() -> None:
    package = Path(sla_common.__file__).resolve().parent
    assert DEFAULT_MIGRATIONS_DIR.parent == package
    assert sorted(p.name for p in DEFAULT_MIGRATIONS_DIR.glob("*.sql"))
    wheel = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    assert "sla_common" in wheel["targets"]["wheel"]["packages"]
    assert not (REPO / "db" / "migrations").exists()  # one place only


@pytest.mark.parametrize(
    ("exc", "auth"),
    [
        (pymysql.err.OperationalError(ER.ACCESS_DENIED_ERROR, "Access denied for user"), True),
        (pymysql.err.OperationalError(ER.DBACCESS_DENIED_ERROR, "Access denied to db"), True),
        (pymysql.err.OperationalError(1698, "Access denied (unix_socket)"), True),
        (pymysql.err.OperationalError(CR.CR_AUTH_PLUGIN_CANNOT_LOAD, "plugin"), True),
        (
            RuntimeError(
                "'cryptography' package is required for sha256_password or "
                "caching_sha2_password auth methods"
            ),
            True,
        ),
        (pymysql.err.OperationalError(CR.CR_CONN_HOST_ERROR, "Can't connect"), False),
        (pymysql.err.OperationalError(ER.BAD_DB_ERROR, "Unknown database"), False),
        (pymysql.err.OperationalError(ER.CON_COUNT_ERROR, "Too many connections"), False),
        (ConnectionRefusedError(111, "refused"), False),
    ],
)
def test_a_refused_login_is_told_from_a_server_not_up_yet(exc: BaseException, auth: bool) -> None:
    assert is_auth_error(exc) is auth
    if auth:
        assert not is_connection_error(exc)


def test_a_refused_login_is_fatal_at_once_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deterministic twin of the real-server test: no retry, one clear error."""

    calls = []

    def refuse(*_a: object, **_k: object) -> None:
        calls.append(1)
        raise pymysql.err.OperationalError(
            ER.ACCESS_DENIED_ERROR, "Access denied for user 'sla'@'10.0.0.2' (using password: YES)"
        )

    monkeypatch.setattr(mysql_startup, "connect", refuse)
    s = MysqlSettings(mysql_user="sla", mysql_password="hunter2-secret")
    with pytest.raises(mysql_startup.LoginRefused) as info:
        wait_for_schema(s, deadline_s=60)
    assert calls == [1]
    text = str(info.value)
    assert "refused the login of user 'sla'" in text and "Access denied" in text
    assert "MYSQL_PASSWORD" in text and "hunter2-secret" not in text


def test_migrate_refuses_invalid_settings_with_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYSQL_MIGRATE_WAIT_S", "soon")
    assert migrate_main(["apply"]) == 2
