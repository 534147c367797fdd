"""The SLA manager when its dependencies are missing or go away, and come back.

Prometheus down: the app points at a port where nothing listens, then a real Prometheus
starts there. MySQL down: a private MariaDB (scripts/up with STACK_MYSQL_MODE=private) that
is not up yet when the app starts, then stopped with scripts/down and started again. The
app is never restarted: it must wait, answer 503 with Retry-After, and recover by itself.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sla_common.mysql import SCHEMA_VERSION
from tests.integration.slautil import AppProcess, app_env, stack_database
from tests.integration.stackutil import (
    SCRIPTS,
    Stack,
    dump_logs,
    free_port,
    port_open,
    run_bounded,
    scripts_env,
    wait_until,
)

TOKEN = "faults-token-8d2f0c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLI = {"name": "fd", "selector": 'node_filefd_allocated{job="host"}', "max": 20000}


def _up(env: dict[str, str]) -> None:
    result = run_bounded([SCRIPTS / "up"], timeout=90, env=env)
    assert result.returncode == 0, result.stdout + dump_logs(Path(env["STACK_DIR"]))


def _down(env: dict[str, str], *extra: str) -> None:
    result = run_bounded([SCRIPTS / "down", *extra], timeout=90, env=env)
    assert result.returncode == 0, result.stdout


def _assert_503(r: httpx.Response, dependency: str, retry_after: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == retry_after
    assert r.json()["detail"].startswith(f"{dependency} unavailable")


@pytest.fixture
def database(stack: Stack) -> Iterator[str]:
    with stack_database(stack) as name:
        yield name


# --------------------------------------------------------------------------- start-up


def test_invalid_settings_exit_2_naming_the_variable(stack: Stack) -> None:
    env = app_env(stack.service_env(), ENVIRONMENT="production", MYSQL_PASSWORD="x")
    env.pop("SLA_API_TOKEN", None)  # the local stack's environment sets one
    result = run_bounded([sys.executable, "-m", "sla_manager"], timeout=30, env=env)
    assert result.returncode == 2, result.stdout
    assert "SLA_API_TOKEN must be set when ENVIRONMENT=production" in result.stdout
    assert "Traceback" not in result.stdout


def test_mysql_never_answering_at_start_is_a_clear_exit_1(stack: Stack) -> None:
    port = free_port()
    env = app_env(
        stack.service_env(),
        MYSQL_PORT=str(free_port()),
        SLA_STARTUP_WAIT_S="2",
        HTTP_PORT=str(port),
    )
    t0 = time.monotonic()
    result = run_bounded([sys.executable, "-m", "sla_manager"], timeout=30, env=env)
    assert result.returncode == 1, result.stdout
    assert time.monotonic() - t0 < 15
    assert "did not answer within SLA_STARTUP_WAIT_S=2 s" in result.stdout
    assert "retrying in" in result.stdout  # it did wait, with backoff
    assert "Traceback" not in result.stdout
    assert not port_open(port)


# --------------------------------------------------------------------------- Prometheus


@pytest.mark.timeout(120)
def test_prometheus_down_is_503_then_recovers_by_itself(
    stack: Stack, database: str, tmp_path: Path
) -> None:
    prom_port = free_port()
    app = AppProcess(
        app_env(
            stack.service_env(),
            MYSQL_DATABASE=database,
            PROMETHEUS_URL=f"http://127.0.0.1:{prom_port}",
            PROMETHEUS_TIMEOUT_S="2",
            SLA_API_TOKEN=TOKEN,
            SLA_RETRY_AFTER_S="3",
        ),
        tmp_path / "sla.log",
    )
    side = scripts_env(
        tmp_path / "prom",
        STACK_COMPONENTS="prometheus",
        STACK_PROMETHEUS_PORT=str(prom_port),
        STACK_DEMO="0",
    )
    try:
        app.wait_ready()
        with httpx.Client(base_url=app.base_url, timeout=30) as c:
            assert c.get("/slis").status_code == 200  # MySQL alone is enough for that
            _assert_503(c.post("/slis", json=SLI, headers=AUTH), "Prometheus", "3")
            _assert_503(c.get("/etl/execution-time"), "Prometheus", "3")
            health = c.get("/healthz").json()
            assert health["status"] == "degraded"
            assert health["mysql"]["ok"] and not health["prometheus"]["ok"]
            assert c.get("/readyz").status_code == 503

            _up(side)  # a real Prometheus on that port; the app is not restarted

            def create() -> httpx.Response | None:
                r = c.post("/slis", json=SLI, headers=AUTH)
                return r if r.status_code == 201 else None

            created = wait_until(
                create, timeout=30, what="POST /slis to succeed once Prometheus is up"
            )
            assert created.json()["name"] == "fd"
            assert c.get("/slis/fd/status").status_code == 200
            assert c.get("/slis/fd/violations?window=1h").status_code == 200
            assert c.get("/healthz").json()["status"] == "ok"
            metrics = c.get("/metrics").text
            assert 'sla_manager_dependency_failures_total{dependency="prometheus"}' in metrics
    finally:
        assert app.stop() == 0, app.output()
        _down(side, "--purge")


# --------------------------------------------------------------------------- MySQL


@pytest.mark.timeout(180)
def test_mysql_down_is_503_then_recovers_by_itself(stack: Stack, tmp_path: Path) -> None:
    mysql_port = free_port()
    side = scripts_env(
        tmp_path / "mariadb",
        STACK_COMPONENTS="mariadb",
        STACK_MYSQL_MODE="private",
        STACK_MYSQL_PORT=str(mysql_port),
        MYSQL_DATABASE="sla_private",  # what `up` migrates
    )
    # The database is migrated (by `up`, as the migrate service does in compose), then its
    # server stopped: the app starts while nothing answers on its port.
    _up(side)
    _down(side)
    app = AppProcess(
        app_env(
            stack.service_env(),
            MYSQL_HOST="127.0.0.1",
            MYSQL_PORT=str(mysql_port),
            MYSQL_USER="root",
            MYSQL_PASSWORD="",
            MYSQL_DATABASE="sla_private",
            SLA_API_TOKEN=TOKEN,
            SLA_STARTUP_WAIT_S="90",
            SLA_RETRY_AFTER_S="2",
            MYSQL_CONNECT_TIMEOUT_S="2",
        ),
        tmp_path / "sla.log",
    )
    try:
        # Started before its database: it waits (with backoff), it does not serve or die.
        wait_until(
            lambda: "retrying in" in app.output(), timeout=20, what="the start-up wait to retry"
        )
        assert app.proc.poll() is None and not port_open(app.port)
        _up(side)
        app.wait_ready(timeout=60)
        assert f"sla_private is at schema version {SCHEMA_VERSION}" in app.output()

        with httpx.Client(base_url=app.base_url, timeout=30) as c:
            assert c.post("/slis", json=SLI, headers=AUTH).status_code == 201
            assert c.get("/slis/fd/status").status_code == 200

            _down(side)  # MariaDB stops; its data dir stays

            _assert_503(c.get("/slis"), "MySQL", "2")
            _assert_503(c.get("/slis/fd/status"), "MySQL", "2")
            _assert_503(c.delete("/slis/fd", headers=AUTH), "MySQL", "2")
            health = c.get("/healthz")
            assert health.status_code == 200
            assert not health.json()["mysql"]["ok"] and health.json()["prometheus"]["ok"]

            _up(side)

            # The first request after the restart may still meet a pooled connection that
            # died with the server (503); within a few requests everything answers again.
            wait_until(
                lambda: c.get("/slis").status_code == 200,
                timeout=30,
                what="GET /slis to succeed once MariaDB is back",
            )
            for _ in range(5):
                listed = c.get("/slis")
                assert listed.status_code == 200, listed.text
                assert [s["name"] for s in listed.json()] == ["fd"]
                assert c.get("/slis/fd/status").status_code == 200
            assert c.get("/healthz").json()["status"] == "ok"
    finally:
        assert app.stop() == 0, app.output()
        _down(side, "--purge")
