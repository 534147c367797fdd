"""The schema has one owner, ``python -m sla_common.migrate``; the services only check it.

Against the stack's real MariaDB: a schema one migration ahead of the code is served
normally by data_storage, sla_manager and data_retrieval (and left alone by migrate); an
older or empty one stops a service at once with an error naming the command; migrate is
idempotent and concurrent runs are serialised by its named lock. MySQL logins: a refused
one is a fatal error without the password, never a crash-loop; a server not up yet is
still waited for.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pymysql
import pytest

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from data_retrieval.settings import RetrievalSettings
from data_storage.samples import analysed, ref
from etl_data_pipeline.analyses import AnalysisConfig
from sla_common.kafka import ensure_topics, make_producer
from sla_common.mysql import (
    DEFAULT_MIGRATIONS_DIR,
    SCHEMA_VERSION,
    drop_database,
    load_migrations,
)
from tests.integration.retrievalutil import ServerThread
from tests.integration.slautil import AppProcess, ServiceProcess, app_env
from tests.integration.stackutil import (
    Stack,
    free_port,
    migrate,
    run_bounded,
    wait_until,
)

PY = sys.executable
TOKEN = "migrate-test-token-4b1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLI = {"name": "fd", "selector": 'node_filefd_allocated{job="host"}', "max": 20000}

# A later release's migration: it only adds (a column the code does not select, one with a
# default the code does not insert, a table it does not know).
AHEAD = SCHEMA_VERSION + 1
AHEAD_FILE = f"{AHEAD:04d}_from_a_newer_release.sql"
AHEAD_SQL = """-- from a newer release
ALTER TABLE series ADD COLUMN IF NOT EXISTS note VARCHAR(64) NULL;
ALTER TABLE forecast_points ADD COLUMN IF NOT EXISTS model_rev INT NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS future_things (
    id BIGINT NOT NULL,
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
"""


class StorageProcess(ServiceProcess):
    module = "data_storage"


def root(stack: Stack) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        host=stack.mysql_host,
        port=stack.mysql_port,
        user=stack.mysql_user,
        password=stack.mysql_password,
        autocommit=True,
        connect_timeout=5,
    )


def sql(stack: Stack, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = root(stack)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args or None)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def rows_in(stack: Stack, database: str, table: str) -> int:
    return int(sql(stack, f"SELECT COUNT(*) FROM `{database}`.{table}")[0][0])  # noqa: S608


@pytest.fixture
def database(stack: Stack) -> Iterator[str]:
    """A database name nothing created yet; dropped afterwards."""
    name = f"migrate_test_{uuid.uuid4().hex[:10]}"
    yield name
    drop_database(stack.mysql_settings(name))


def env_for(stack: Stack, database: str, **extra: str) -> dict[str, str]:
    return app_env(stack.service_env(), MYSQL_DATABASE=database, **extra)


def run_service(module: str, env: dict[str, str], timeout: float = 30) -> tuple[int, str, float]:
    """``python -m module`` expected to stop by itself: (exit code, output, seconds)."""
    t0 = time.monotonic()
    result = run_bounded([PY, "-m", module], timeout=timeout, env=env)
    return result.returncode, result.stdout, time.monotonic() - t0


# --------------------------------------------------------------------------- migrate


@pytest.mark.timeout(120)
def test_migrate_is_idempotent_and_concurrent_runs_wait_for_the_lock(
    stack: Stack, database: str, tmp_path: Path
) -> None:
    env = env_for(stack, database, MYSQL_MIGRATE_WAIT_S="60")
    # Hold the migrate lock of this database: both runs must queue behind it.
    holder = root(stack)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT GET_LOCK(%s, 5)", (f"sla_monitor.migrate.{database}",))
            assert cur.fetchone() == (1,)
        procs = [
            run_in_background([PY, "-m", "sla_common.migrate"], env, tmp_path / f"m{i}.log")
            for i in range(2)
        ]

        def both_waiting() -> bool:
            rows = sql(
                stack,
                "SELECT COUNT(*) FROM information_schema.processlist "
                "WHERE db = %s AND info LIKE 'SELECT GET_LOCK%%'",
                database,
            )
            return bool(rows[0][0] == 2)

        wait_until(both_waiting, timeout=60, what="both migrate runs waiting for the lock")
        assert all(p.poll() is None for p, _ in procs)
        # Nothing was created behind the lock's back (the database itself is, harmlessly).
        assert not sql(
            stack, "SELECT 1 FROM information_schema.tables WHERE table_schema = %s", database
        )
    finally:
        with holder.cursor() as cur:
            cur.execute("SELECT RELEASE_LOCK(%s)", (f"sla_monitor.migrate.{database}",))
        holder.close()
    outputs = []
    for proc, log in procs:
        assert proc.wait(timeout=60) == 0, log.read_text()
        outputs.append(log.read_text())
    every = [m.filename for m in load_migrations()]
    applied = [o for o in outputs if f"applied {every}" in o]
    assert len(applied) == 1, outputs  # one applied it, the other found it done
    assert sum("applied none" in o for o in outputs) == 1, outputs
    recorded = sql(stack, f"SELECT version FROM `{database}`.schema_migrations")  # noqa: S608
    assert recorded == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    again = run_bounded([PY, "-m", "sla_common.migrate"], timeout=60, env=env)
    assert again.returncode == 0 and "applied none" in again.stdout, again.stdout
    check = run_bounded([PY, "-m", "sla_common.migrate", "check"], timeout=60, env=env)
    assert check.returncode == 0, check.stdout


def run_in_background(
    argv: list[str], env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, log


# --------------------------------------------------------------------------- a newer schema


AHEAD = SCHEMA_VERSION + 1  # the version of a newer release's schema


def migrate_one_ahead(stack: Stack, database: str, tmp_path: Path) -> None:
    ahead = tmp_path / "migrations"
    ahead.mkdir()
    for f in DEFAULT_MIGRATIONS_DIR.glob("*.sql"):
        shutil.copy(f, ahead / f.name)
    (ahead / AHEAD_FILE).write_text(AHEAD_SQL)
    out = migrate(env_for(stack, database, MYSQL_MIGRATIONS_DIR=str(ahead)))
    assert AHEAD_FILE in out, out


@pytest.mark.timeout(180)
def test_services_serve_normally_on_a_schema_one_migration_ahead(
    stack: Stack, database: str, tmp_path: Path
) -> None:
    migrate_one_ahead(stack, database, tmp_path)
    env = env_for(stack, database)

    # This release's migrate leaves the newer schema as it is, and says so.
    same = run_bounded([PY, "-m", "sla_common.migrate"], timeout=60, env=env)
    assert same.returncode == 0, same.stdout
    assert (
        f"at version {AHEAD}, newer than these migrations ({SCHEMA_VERSION}): nothing to do"
        in same.stdout
    )

    # data_storage stores what it consumes.
    topic = f"migrate-ahead-{uuid.uuid4().hex[:8]}"
    ensure_topics(stack.kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=1)
    storage = StorageProcess(
        {**env, "KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": f"{topic}.dlq"},
        tmp_path / "storage.log",
    )
    app: AppProcess | None = None
    try:
        storage.wait_ready()
        end = int(time.time()) // 60 * 60
        small = AnalysisConfig(season_s=600)
        msgs = [
            analysed(ref("ahead_metric", i=str(i)), end, points=61, step_s=60, seed=i, config=small)
            for i in range(3)
        ]
        producer = make_producer(stack.kafka_bootstrap, "migrate-test")
        try:
            for m in msgs:
                producer.send(topic, key=m.kafka_key(), value=m.to_bytes()).get(timeout=30)
        finally:
            producer.close(timeout=5)
        wait_until(
            lambda: rows_in(stack, database, "analyses") == 3,
            timeout=60,
            what=f"3 analyses stored; log:\n{storage.output()[-3000:]}",
        )
        assert f"is at schema version {AHEAD} (needs {SCHEMA_VERSION} or newer)" in storage.output()

        # sla_manager serves reads and writes.
        app = AppProcess(env_for(stack, database, SLA_API_TOKEN=TOKEN), tmp_path / "sla.log")
        app.wait_ready()
        with httpx.Client(base_url=app.base_url, timeout=30) as c:
            assert c.post("/slis", json=SLI, headers=AUTH).status_code == 201
            assert [s["name"] for s in c.get("/slis").json()] == ["fd"]
            assert c.get("/slis/fd/status").status_code == 200
            assert c.get("/healthz").json()["mysql"]["ok"]
        assert f"is at schema version {AHEAD} (needs {SCHEMA_VERSION} or newer)" in app.output()

        # data_retrieval reads the series and their forecasts.
        fields = {
            k: v
            for k, v in stack.mysql_settings(database).model_dump().items()
            if k in RetrievalSettings.model_fields
        }
        fields.update(grpc_host="127.0.0.1", grpc_port=0, http_port=0)
        rs = RetrievalSettings(**fields)
        with ServerThread(rs) as srv, grpc.insecure_channel(srv.target) as ch:
            stub = pb_grpc.RetrievalServiceStub(ch)
            listed = [s for page in stub.ListSeries(pb.ListSeriesRequest()) for s in page.series]
            assert sorted(s.ref.labels["i"] for s in listed) == ["0", "1", "2"]
            sel = pb.SeriesSelector(metric="ahead_metric", labels={"i": "0"})
            pages = list(stub.ListForecast(pb.ListForecastRequest(selector=sel)))
            assert sum(len(p.points) for p in pages) == len(msgs[0].forecast.points)  # type: ignore[union-attr]
    finally:
        if app is not None:
            assert app.stop() == 0, app.output()
        assert storage.stop() == 0, storage.output()


# --------------------------------------------------------------------------- an older schema


@pytest.mark.timeout(120)
def test_services_stop_at_once_on_a_missing_empty_or_older_schema(
    stack: Stack, database: str
) -> None:
    hint = "run `python -m sla_common.migrate`"
    # No database at all.
    code, out, took = run_service("data_storage", env_for(stack, database, HTTP_PORT="0"))
    assert code == 1, out
    assert f"{database} does not exist" in out and hint in out, out
    assert "Traceback" not in out and took < 25
    check = run_bounded(
        [PY, "-m", "sla_common.migrate", "check"], timeout=30, env=env_for(stack, database)
    )
    assert check.returncode == 1 and hint in check.stdout, check.stdout

    # A database that was never migrated.
    sql(stack, f"CREATE DATABASE `{database}`")
    env = env_for(stack, database, HTTP_PORT=str(free_port()), SLA_API_TOKEN=TOKEN)
    code, out, took = run_service("sla_manager", env)
    assert code == 1, out
    needs = f"is at schema version 0; this version needs schema version {SCHEMA_VERSION}"
    assert needs in out and hint in out
    assert "Traceback" not in out and took < 25

    # Migrated, then its record of migration 1 gone (what an older schema looks like to
    # the check): refused too, and nothing was migrated by the services meanwhile.
    migrate(env_for(stack, database))
    sql(stack, f"DELETE FROM `{database}`.schema_migrations")  # noqa: S608
    for module in ("data_storage", "sla_manager"):
        code, out, _ = run_service(module, {**env, "HTTP_PORT": str(free_port())})
        assert code == 1 and "is at schema version 0" in out and hint in out, (module, out)
    assert rows_in(stack, database, "schema_migrations") == 0


# --------------------------------------------------------------------------- logins


@pytest.fixture
def mysql_user(stack: Stack, database: str) -> Iterator[tuple[str, str]]:
    """A user with a password and every right on ``database`` (migrated); dropped after."""
    user, password = f"sla_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    migrate(env_for(stack, database))
    sql(stack, "CREATE USER %s@'%%' IDENTIFIED BY %s", user, password)
    try:
        sql(stack, f"GRANT ALL ON `{database}`.* TO %s@'%%'", user)
        yield user, password
    finally:
        sql(stack, "DROP USER IF EXISTS %s@'%%'", user)


@pytest.mark.timeout(180)
def test_a_refused_login_is_a_clear_fatal_error_without_the_password(
    stack: Stack, database: str, mysql_user: tuple[str, str], tmp_path: Path
) -> None:
    user, password = mysql_user
    wrong = f"wrong-{uuid.uuid4().hex}"
    base = env_for(stack, database, MYSQL_USER=user, SLA_API_TOKEN=TOKEN, SLA_STARTUP_WAIT_S="60")

    # The right password works (so what follows is the password's doing).
    app = AppProcess({**base, "MYSQL_PASSWORD": password}, tmp_path / "ok.log")
    try:
        app.wait_ready()
    finally:
        assert app.stop() == 0, app.output()

    cases = [
        ("sla_manager", {"MYSQL_PASSWORD": wrong}),
        ("data_storage", {"MYSQL_PASSWORD": wrong}),
        ("sla_common.migrate", {"MYSQL_PASSWORD": wrong}),
        ("sla_manager", {"MYSQL_USER": f"nobody_{uuid.uuid4().hex[:8]}", "MYSQL_PASSWORD": wrong}),
    ]
    for module, extra in cases:
        env = {**base, "HTTP_PORT": str(free_port()), **extra}
        code, out, took = run_service(module, env)
        assert code == 1, (module, out)
        assert "refused the login of user" in out and "Access denied" in out, (module, out)
        assert "check MYSQL_USER and MYSQL_PASSWORD" in out, (module, out)
        assert wrong not in out and password not in out, (module, out)
        assert "retrying" not in out and "Traceback" not in out, (module, out)
        assert took < 20, (module, took)  # at once, not after SLA_STARTUP_WAIT_S


@pytest.mark.timeout(120)
def test_a_server_not_up_yet_is_still_waited_for_with_backoff(stack: Stack, database: str) -> None:
    env = env_for(stack, database, MYSQL_PORT=str(free_port()), MYSQL_MIGRATE_WAIT_S="3")
    code, out, took = run_service("sla_common.migrate", env)
    assert code == 1, out
    assert "retrying in" in out and "did not answer within MYSQL_MIGRATE_WAIT_S=3 s" in out
    assert "Traceback" not in out and took < 20
