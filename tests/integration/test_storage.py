"""data_storage against the real broker (tansu) and real MariaDB of the stack.

Each test has its own topic, consumer group and database. The service runs as
``python -m data_storage`` in a subprocess, exactly as deployed; what it stored is read back
with SQL and compared with an independent expectation built from the messages sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient

from data_storage.rows import RUNS, run_rows
from data_storage.samples import analysed, moved, ref
from data_storage.settings import StorageSettings
from data_storage.writer import Writer
from etl_data_pipeline.analyses import AnalysisConfig
from sla_common.kafka import ensure_topics, make_producer
from sla_common.messages import AnalysisMessage, SkippedAnalysis
from sla_common.mysql import (
    DEFAULT_DATABASE_SQL,
    close_quietly,
    connect,
    drop_database,
    load_migrations,
    split_sql,
)
from sla_common.mysql_startup import wait_and_migrate
from tests.integration.stackutil import (
    SCRIPTS,
    Runner,
    Stack,
    consume_records,
    delete_topic,
    dump_logs,
    free_port,
    metric_value,
    migrate,
    run_bounded,
    scripts_env,
    start_module,
    stop_process,
    wait_until,
)

PY = sys.executable
PARTITIONS = 3
SMALL = AnalysisConfig(season_s=600)


def now_end(step: int = 60) -> int:
    return int(time.time()) // step * step


# --------------------------------------------------------------------------- MySQL


def settings_for(stack: Stack, database: str, port: int | None = None) -> StorageSettings:
    return StorageSettings(
        mysql_host=stack.mysql_host,
        mysql_port=port or stack.mysql_port,
        mysql_user=stack.mysql_user,
        mysql_password=stack.mysql_password,
        mysql_database=database,
        mysql_connect_timeout_s=3,
    )


def sql(s: StorageSettings, query: str, args: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    conn = connect(s)
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        close_quietly(conn)


@pytest.fixture
def db(stack: Stack) -> Iterator[StorageSettings]:
    """A fresh database, migrated as `python -m sla_common.migrate` does (the service only
    checks the schema)."""
    s = settings_for(stack, f"storage_test_{uuid.uuid4().hex[:10]}")
    wait_and_migrate(s, deadline_s=30)
    yield s
    drop_database(s)


@pytest.fixture
def empty_db(stack: Stack) -> Iterator[StorageSettings]:
    """A database name nothing created yet."""
    s = settings_for(stack, f"storage_test_{uuid.uuid4().hex[:10]}")
    yield s
    drop_database(s)


def count(s: StorageSettings, table: str) -> int:
    return int(sql(s, f"SELECT COUNT(*) FROM {table}")[0][0])  # noqa: S608 (test's own names)


def stored_windows(s: StorageSettings) -> set[tuple[str, int]]:
    rows = sql(
        s, "SELECT s.series_key, a.window_end FROM analyses a JOIN series s ON s.id = a.series_id"
    )
    return {(str(k), int(w)) for k, w in rows}


# --------------------------------------------------------------------------- Kafka


def new_topic(bootstrap: str, prefix: str) -> str:
    topic = f"storage-{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic, f"{topic}.dlq"], partitions=PARTITIONS)
    return topic


def produce(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]
) -> dict[int, int]:
    """Send in order; return, per partition, the offset after the last record sent there."""
    producer = make_producer(bootstrap, "storage-test")
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush(timeout=30)
        ends: dict[int, int] = {}
        for f in futures:
            md = f.get(timeout=10)
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
        return ends
    finally:
        producer.close(timeout=5)


def produce_messages(bootstrap: str, topic: str, msgs: Sequence[AnalysisMessage]) -> dict[int, int]:
    return produce(bootstrap, topic, [(m.kafka_key(), m.to_bytes()) for m in msgs])


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        got = admin.list_group_offsets({group: tps}).get(group, {})
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in got.items() if om.offset >= 0}


def consume_all(bootstrap: str, topic: str, expect: int, timeout: float = 30.0) -> list[Any]:
    return consume_records(bootstrap, topic, expect, timeout, partitions=range(PARTITIONS))


# --------------------------------------------------------------------------- the service


@dataclass
class Storage:
    """``python -m data_storage`` as a subprocess with its own log and /metrics port."""

    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Storage:
        self.env["HTTP_PORT"] = str(self.port)
        self.proc = start_module("data_storage", self.env, self.log)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str, labels: str = "") -> float:
        return metric_value(self.port, name, labels)

    def stored(self) -> float:
        return self.metric("sla_storage_messages_stored_total")

    def wait_stored(self, n: int, timeout: float = 60) -> None:
        wait_until(
            lambda: self.stored() >= n or not self.alive(),
            timeout=timeout,
            what=f"{n} messages stored; log:\n{self.output()[-3000:]}",
        )
        assert self.alive(), self.output()[-3000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        return None if self.proc is None else stop_process(self.proc, timeout, sig)


@dataclass
class Service:
    stack: Stack
    tmp_path: Path
    started: list[Storage] = field(default_factory=list)

    def __call__(
        self, db: StorageSettings, topic: str, group: str | None = None, **extra: str
    ) -> Storage:
        env = self.stack.service_env(
            KAFKA_TOPIC=topic,
            KAFKA_DLQ_TOPIC=f"{topic}.dlq",
            KAFKA_GROUP_ID=group or f"group-{topic}",
            MYSQL_DATABASE=db.mysql_database,
            MYSQL_PORT=str(db.mysql_port),
            HTTP_HOST="127.0.0.1",
            STORAGE_BATCH_MAX_WAIT_MS="200",
            STORAGE_BACKOFF_BASE_S="0.2",
            STORAGE_MAX_BACKOFF_S="2",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        log = self.tmp_path / f"storage-{len(self.started)}.log"
        svc = Storage(env, log).start()
        self.started.append(svc)
        return svc


@pytest.fixture
def service(stack: Stack, tmp_path: Path) -> Iterator[Service]:
    svc = Service(stack, tmp_path)
    yield svc
    for s in svc.started:
        code = s.stop()
        if code not in (0, None):
            sys.stderr.write(f"---- {s.log} (exit {code})\n{s.output()[-5000:]}\n")


# --------------------------------------------------------------------------- expectations


def expected_rows(
    msgs: Sequence[AnalysisMessage],
) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    """What each table must hold after ``msgs``, by natural key, computed independently of
    data_storage: for one key, the row of the newest window wins; for one window, the most
    recently produced message."""
    order = sorted(msgs, key=lambda m: (m.window.end, m.produced_at))
    out: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {
        t: {}
        for t in (
            "series",
            "runs",
            "analyses",
            "adf",
            "hp_points",
            "acf",
            "decomposition_points",
            "aggregates",
            "forecast_points",
            "forecast_summary",
            "skipped_analyses",
        )
    }
    for m in order:
        k, we = m.series.key, m.window.end
        out["series"][(k,)] = (m.series.metric, m.series.labels, m.series.selector)
        out["runs"][(m.run_id,)] = (m.window.start, m.window.end, m.window.step_s)
        out["analyses"][(k, we)] = (m.run_id, m.produced_at, m.window.samples, m.grid.count)
        if m.adf is not None:
            cv = m.adf.critical_values
            out["adf"][(k, we)] = (
                m.adf.statistic,
                m.adf.pvalue,
                m.adf.used_lag,
                m.adf.nobs,
                cv.pct1,
                cv.pct5,
                cv.pct10,
                int(m.adf.stationary),
            )
        ts = m.grid.timestamps()
        if m.hp is not None:
            for t, tr, cy in zip(ts, m.hp.trend, m.hp.cycle, strict=True):
                out["hp_points"][(k, t)] = (tr, cy, we)
        if m.acf is not None:
            for lag in [lk for (kk, lk) in out["acf"] if kk == k and lk >= len(m.acf.values)]:
                del out["acf"][(k, lag)]
            for lag, v in enumerate(m.acf.values):
                out["acf"][(k, lag)] = (v, we)
        if m.decomposition is not None:
            d = m.decomposition
            for t, a, b, c in zip(ts, d.trend, d.seasonal, d.resid, strict=True):
                out["decomposition_points"][(k, t)] = (a, b, c, we)
        for g in m.aggregates:
            out["aggregates"][(k, g.window, g.end)] = (g.count, g.max, g.min, g.mean, g.std)
        if m.forecast is not None:
            f = m.forecast
            for p in f.points:
                out["forecast_points"][(k, p.ts)] = (
                    p.value,
                    p.lower80,
                    p.upper80,
                    p.lower95,
                    p.upper95,
                    m.produced_at,
                    we,
                )
            out["forecast_summary"][(k, we, f.horizon_s)] = (f.model, f.max, f.min, f.mean)
        for key in [x for x in out["skipped_analyses"] if x[:2] == (k, we)]:
            del out["skipped_analyses"][key]
        for sk in m.skipped:
            out["skipped_analyses"][(k, we, sk.analysis)] = (sk.reason, sk.detail)
    return out


Keyed = tuple[tuple[Any, ...], tuple[Any, ...]]
STORED_QUERIES: dict[str, tuple[str, Callable[[tuple[Any, ...]], Keyed]]] = {
    "series": (
        "SELECT series_key, metric, labels, selector FROM series",
        lambda r: ((r[0],), (r[1], json.loads(r[2]), r[3])),
    ),
    "runs": (
        "SELECT run_id, window_start, window_end, step_s FROM runs",
        lambda r: ((r[0],), tuple(r[1:])),
    ),
    "analyses": (
        "SELECT s.series_key, x.window_end, x.run_id, x.produced_at, x.samples, x.grid_count "
        "FROM analyses x JOIN series s ON s.id = x.series_id",
        lambda r: (tuple(r[:2]), tuple(r[2:])),
    ),
    "adf": (
        "SELECT s.series_key, x.window_end, x.statistic, x.pvalue, x.used_lag, x.nobs, "
        "x.crit_1pct, x.crit_5pct, x.crit_10pct, x.stationary "
        "FROM adf x JOIN series s ON s.id = x.series_id",
        lambda r: (tuple(r[:2]), tuple(r[2:])),
    ),
    "hp_points": (
        "SELECT s.series_key, x.ts, x.trend, x.cycle, x.window_end "
        "FROM hp_points x JOIN series s ON s.id = x.series_id",
        lambda r: (tuple(r[:2]), tuple(r[2:])),
    ),
    "acf": (
        "SELECT s.series_key, x.lag_k, x.value, x.window_end "
        "FROM acf x JOIN series s ON s.id = x.series_id",
        lambda r: (tuple(r[:2]), tuple(r[2:])),
    ),
    "decomposition_points": (
        "SELECT s.series_key, x.ts, x.trend, x.seasonal, x.resid, x.window_end "
        "FROM decomposition_points x JOIN series s ON s.id = x.series_id",
        lambda r: (tuple(r[:2]), tuple(r[2:])),
    ),
    "aggregates": (
        "SELECT s.series_key, x.window_name, x.window_end, x.sample_count, x.max_value, "
        "x.min_value, x.mean_value, x.std_value "
        "FROM aggregates x JOIN series s ON s.id = x.series_id",
        lambda r: (tuple(r[:3]), tuple(r[3:])),
    ),
    "forecast_points": (
        "SELECT s.series_key, x.ts, x.value, x.lower80, x.upper80, x.lower95, x.upper95, "
        "x.produced_at, x.window_end FROM forecast_points x JOIN series s ON s.id = x.series_id",
        lambda r: (tuple(r[:2]), tuple(r[2:])),
    ),
    "forecast_summary": (
        "SELECT s.series_key, x.window_end, x.horizon_s, x.model, x.max_value, x.min_value, "
        "x.mean_value FROM forecast_summary x JOIN series s ON s.id = x.series_id",
        lambda r: (tuple(r[:3]), tuple(r[3:])),
    ),
    "skipped_analyses": (
        "SELECT s.series_key, x.window_end, x.analysis, x.reason, x.detail "
        "FROM skipped_analyses x JOIN series s ON s.id = x.series_id",
        lambda r: (tuple(r[:3]), tuple(r[3:])),
    ),
}


def stored_rows(s: StorageSettings) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    out: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    for table, (query, split) in STORED_QUERIES.items():
        rows = sql(s, query)
        out[table] = dict(split(r) for r in rows)
    return out


def assert_stored_equals(s: StorageSettings, msgs: Sequence[AnalysisMessage]) -> None:
    want = expected_rows(msgs)
    got = stored_rows(s)
    for table, rows in want.items():
        assert len(got[table]) == len(rows), (table, len(got[table]), len(rows))
        assert got[table] == rows, f"{table}: stored values differ from the messages"


# --------------------------------------------------------------------------- message sets


def realistic(series: int, runs: int, end: int, prefix: str = "mem") -> list[AnalysisMessage]:
    """``series`` × ``runs`` real 12 h × 15 s ETL messages, runs 60 s apart, in run order."""
    bases = [analysed(ref("base", i=str(i)), end - 60 * runs, seed=i) for i in range(2)]
    out = []
    for run in range(runs):
        run_id = uuid.uuid4().hex
        for i in range(series):
            r = ref(f"node_{prefix}_bytes", instance=f"host-{i}:9100", job="node")
            out.append(moved(bases[i % 2], series=r, dt=60 * (run + 1), run_id=run_id))
    return out


def small(n: int, end: int, prefix: str = "small", series: int = 10) -> list[AnalysisMessage]:
    """``n`` small ETL messages (1 h × 60 s), ``series`` series with windows 60 s apart."""
    bases = [
        analysed(ref("b", i=str(i)), end, points=61, step_s=60, seed=i, config=SMALL)
        for i in range(2)
    ]
    return [
        moved(
            bases[i % 2],
            series=ref(f"node_{prefix}", instance=f"h{i % series}", job="node"),
            dt=60 * (i // series - n // series),
            run_id=f"run-{i // series}",
        )
        for i in range(n)
    ]


# =========================================================================== tests


@pytest.mark.timeout(60)
def test_migrate_twice_is_a_noop_and_database_sql_gives_the_same_schema(
    stack: Stack, empty_db: StorageSettings, run: Runner
) -> None:
    db = empty_db
    env = stack.service_env(MYSQL_DATABASE=db.mysql_database)
    first = run([PY, "-m", "sla_common.migrate"], timeout=60, env=env)
    assert first.returncode == 0, first.stdout
    assert f"applied {[m.filename for m in load_migrations()]}" in first.stdout
    before = schema_of(db)
    second = run([PY, "-m", "sla_common.migrate"], timeout=60, env=env)
    assert second.returncode == 0, second.stdout
    assert "applied none" in second.stdout
    assert schema_of(db) == before
    # 12 written here + slis + slos + schema_migrations + the batch job's anomaly_models and
    # anomaly_batch_runs + outlier_models
    assert len(before["tables"]) == 18

    # db/Database.sql, applied twice to another fresh database, gives the very same schema
    # and the same migration records, so `migrate` then has nothing to do there either.
    other = settings_for(stack, f"{db.mysql_database}_sql")
    try:
        conn = connect(other, database="", autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{other.mysql_database}`")
        close_quietly(conn)
        for _ in range(2):
            apply_file(other, DEFAULT_DATABASE_SQL)
        assert schema_of(other) == before
        env_other = stack.service_env(MYSQL_DATABASE=other.mysql_database)
        third = run([PY, "-m", "sla_common.migrate"], timeout=60, env=env_other)
        assert third.returncode == 0 and "applied none" in third.stdout, third.stdout
    finally:
        drop_database(other)

    # An applied migration edited afterwards is refused, loudly.
    sql_exec(db, "UPDATE schema_migrations SET checksum = REPEAT('0', 64) WHERE version = 1")
    refused = run([PY, "-m", "sla_common.migrate"], timeout=60, env=env)
    assert refused.returncode == 1
    assert "changed after it was applied" in refused.stdout


def apply_file(s: StorageSettings, path: Path) -> None:
    conn = connect(s, autocommit=True)
    try:
        with conn.cursor() as cur:
            for statement in split_sql(path.read_text()):
                cur.execute(statement)
    finally:
        close_quietly(conn)


def sql_exec(s: StorageSettings, statement: str) -> None:
    conn = connect(s, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        close_quietly(conn)


def schema_of(s: StorageSettings) -> dict[str, Any]:
    """Tables, columns (type, nullability, default), indexes and checks; migration records."""
    db = s.mysql_database
    return {
        "tables": sql(
            s,
            "SELECT table_name, engine, table_collation FROM information_schema.tables "
            "WHERE table_schema = %s ORDER BY table_name",
            (db,),
        ),
        "columns": sql(
            s,
            "SELECT table_name, column_name, ordinal_position, column_type, is_nullable, "
            "column_default, extra FROM information_schema.columns WHERE table_schema = %s "
            "ORDER BY table_name, ordinal_position",
            (db,),
        ),
        "indexes": sql(
            s,
            "SELECT table_name, index_name, non_unique, seq_in_index, column_name, sub_part "
            "FROM information_schema.statistics WHERE table_schema = %s "
            "ORDER BY table_name, index_name, seq_in_index",
            (db,),
        ),
        "checks": sql(
            s,
            "SELECT table_name, constraint_name, check_clause FROM "
            "information_schema.check_constraints WHERE constraint_schema = %s "
            "ORDER BY table_name, constraint_name",
            (db,),
        ),
        "migrations": sql(s, "SELECT version, name, checksum FROM schema_migrations"),
    }


@pytest.mark.timeout(120)
def test_stored_rows_equal_what_was_sent_and_metrics_count_them(
    stack: Stack, db: StorageSettings, service: Service
) -> None:
    topic = new_topic(stack.kafka_bootstrap, "values")
    # End to end first: the ETL service analyses two demo series in Prometheus ...
    selectors = 'node_filefd_allocated{job="host"};node_memory_MemFree_bytes{job="host"}'
    etl = run_bounded(
        [PY, "-m", "etl_data_pipeline", "--once", "--end", str(stack.demo_end)],
        timeout=120,
        env=stack.service_env(
            KAFKA_TOPIC=topic, KAFKA_DLQ_TOPIC=f"{topic}.dlq", ETL_SELECTORS=selectors
        ),
    )
    assert etl.returncode == 0, etl.stdout
    records = consume_all(stack.kafka_bootstrap, topic, 2)
    from_etl = [AnalysisMessage.from_bytes(r.value) for r in records]
    assert len(from_etl) == 2
    # ... then ETL-shaped messages of our own: 3 series × 2 runs 60 s apart, and a short
    # series (decomposition skipped) whose labels hold quotes, a backslash and non-ASCII.
    end = now_end()
    ours = realistic(series=3, runs=2, end=end)
    odd = ref("node_short_bytes", job="node", mountpoint='/mnt/it\'s "q" \\ ü;--')
    short = analysed(odd, end, points=200, seed=9)
    assert short.decomposition is None and short.skipped
    ours.append(short)
    produce_messages(stack.kafka_bootstrap, topic, ours)
    msgs = from_etl + ours

    svc = service(db, topic)
    svc.wait_stored(len(msgs))

    assert_stored_equals(db, msgs)
    want = expected_rows(msgs)
    assert len(want["hp_points"]) == 2 * 2881 + 3 * (2881 + 4) + 200  # run 2: 4 new ts
    assert len(want["skipped_analyses"]) >= 1
    assert count(db, "runs") == 4  # the ETL run, our two, the short series' own
    # /metrics: consumed, stored, rows per table (sent, so updates count too), commit time
    assert svc.metric("sla_storage_messages_consumed_total") == len(msgs)
    rows_hp = svc.metric("sla_storage_rows_written_total", '{table="hp_points"}')
    assert rows_hp == sum(len(m.hp.trend) for m in msgs if m.hp) == 8 * 2881 + 200
    assert svc.metric("sla_storage_rows_written_total", '{table="series"}') >= 6
    assert svc.metric("sla_storage_dlq_messages_total", '{reason="invalid_json"}') == 0
    assert svc.metric("sla_storage_batch_write_duration_seconds_count") >= 1
    assert svc.metric("sla_storage_mysql_up") == 1
    assert abs(svc.metric("sla_storage_last_commit_timestamp_seconds") - time.time()) < 60
    assert committed(stack.kafka_bootstrap, f"group-{topic}", topic) == _ends(
        stack.kafka_bootstrap, topic, len(msgs)
    )
    assert svc.alive()


def _ends(bootstrap: str, topic: str, n: int) -> dict[int, int]:
    """Per partition, one past the last offset: counted from the records (tansu's end_offsets
    is unreliable)."""
    ends: dict[int, int] = {}
    for r in consume_all(bootstrap, topic, n):
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends


@pytest.mark.timeout(120)
def test_redelivery_adds_no_rows_and_a_newer_analysis_of_a_window_updates_values(
    stack: Stack, db: StorageSettings, service: Service
) -> None:
    end = now_end()
    msgs = realistic(series=2, runs=2, end=end, prefix="redeliver")
    topic = new_topic(stack.kafka_bootstrap, "redeliver")
    produce_messages(stack.kafka_bootstrap, topic, msgs)
    first = service(db, topic, group=f"a-{topic}")
    first.wait_stored(len(msgs))
    assert first.stop() == 0

    # 1. Real redelivery: a second group consumes the same records again.
    again = service(db, topic, group=f"b-{topic}")
    again.wait_stored(len(msgs))
    assert_stored_equals(db, msgs)  # the same rows: as many, the same values

    # 2. The same window analysed again later (produced_at + 30 s) with other values, plus
    #    the first run's messages delivered once more, *after* it: the newer values win,
    #    the stale re-delivery changes nothing, and still no row is added.
    newer = [
        m.model_copy(
            update={
                "produced_at": m.produced_at + 30,
                "hp": m.hp.model_copy(update={"trend": [v + 1.5 for v in m.hp.trend]})
                if m.hp
                else None,
                "adf": m.adf.model_copy(update={"statistic": -42.0}) if m.adf else None,
            }
        )
        for m in msgs
    ]
    stale = msgs[:2]  # run 1 of both series: older windows than what is stored
    produce_messages(stack.kafka_bootstrap, topic, newer + stale)
    again.wait_stored(2 * len(msgs) + len(stale))
    assert_stored_equals(db, [*msgs, *newer, *stale])
    stats = sql(db, "SELECT DISTINCT statistic FROM adf")
    assert stats == [(-42.0,)]


def dlq_until(bootstrap: str, topic: str, timeout: float = 30) -> list[Any]:
    """The dead letters of ``topic``, complete: a marker record is sent to ``topic`` (after
    the caller saw the offsets committed) and the letters are read until its letter shows.
    Everything the consumer dead-lettered before, duplicates included, is there; the
    marker's own letter is not returned."""
    marker = f"marker {uuid.uuid4().hex}".encode()
    produce(bootstrap, topic, [(b"marker", marker)])
    out: list[Any] = []

    def seen() -> bool:
        out[:] = consume_all(bootstrap, f"{topic}.dlq", expect=10**6, timeout=1)
        return any(r.value == marker for r in out)

    wait_until(seen, timeout=timeout, what=f"the marker's dead letter in {topic}.dlq")
    return [r for r in out if r.value != marker]


@pytest.mark.timeout(90)
def test_bad_messages_are_dead_lettered_with_their_reason_and_good_ones_all_stored(
    stack: Stack, db: StorageSettings, service: Service
) -> None:
    end = now_end()
    good = small(12, end, prefix="dlq")
    g = json.loads(good[0].to_bytes())
    key = good[0].kafka_key()
    # A message that passes validation but that this database refuses: its skip reason is
    # longer than the column made narrow below (strict SQL mode: an error, not truncation).
    refused = good[1].model_copy(
        update={
            "window": good[1].window.model_copy(update={"end": good[1].window.end + 7}),
            "skipped": [SkippedAnalysis(analysis="forecast", reason="r" * 40, detail="")],
        }
    )
    bad: list[tuple[str, bytes | None, bytes | None]] = [
        ("invalid_json", key, b"{not json"),
        ("invalid_json", key, b"\x00\xff\xfe binary"),
        ("empty", key, b""),
        ("unknown_schema_version", key, json.dumps({**g, "schema_version": 99}).encode()),
        ("missing_field", key, json.dumps({k: v for k, v in g.items() if k != "grid"}).encode()),
        ("wrong_type", key, json.dumps({**g, "run_id": 12345}).encode()),
        (
            "non_finite",
            key,
            re.sub(rb'"mean":[-0-9.eE+]+', b'"mean":NaN', good[0].to_bytes(), count=1),
        ),
        ("non_finite", key, json.dumps({**g, "durations_ms": {"hp": float("inf")}}).encode()),
        ("too_large", key, b"{" + b" " * 70_000 + b"}"),
        ("key_mismatch", b"some other key", good[2].to_bytes()),
        ("db_rejected", refused.kafka_key(), refused.to_bytes()),
    ]
    # interleave: good, bad, good, bad, ...
    records: list[tuple[bytes | None, bytes | None]] = []
    for i, m in enumerate(good):
        records.append((m.kafka_key(), m.to_bytes()))
        if i < len(bad):
            records.append(bad[i][1:])
    topic = new_topic(stack.kafka_bootstrap, "dlq")
    produce(stack.kafka_bootstrap, topic, records)
    sql_exec_migrated(stack, db)
    sql_exec(db, "ALTER TABLE skipped_analyses MODIFY reason VARCHAR(20) NOT NULL")

    svc = service(db, topic, STORAGE_MAX_MESSAGE_BYTES="65536")
    wait_until(
        lambda: (
            svc.metric("sla_storage_messages_consumed_total") >= len(records)
            and svc.metric("sla_storage_offset_commits_total") >= 1
            and committed(stack.kafka_bootstrap, f"group-{topic}", topic)
            == _ends(stack.kafka_bootstrap, topic, len(records))
        ),
        timeout=60,
        what=f"every record consumed and committed; log:\n{svc.output()[-3000:]}",
    )

    assert svc.alive(), svc.output()
    assert stored_windows(db) == {(m.series.key, m.window.end) for m in good}
    assert_stored_equals(db, good)
    letters = dlq_until(stack.kafka_bootstrap, topic)
    assert len(letters) == len(bad), [dict(r.headers) for r in letters]
    by_value = {r.value: r for r in letters}
    for reason, k, v in bad:
        r = by_value[v if v is not None else b""]
        headers = {h: val.decode() for h, val in r.headers}
        assert headers["dlq.reason"] == reason, headers
        assert headers["dlq.error"]
        assert headers["dlq.source.topic"] == topic
        assert int(headers["dlq.source.offset"]) >= 0
        assert r.key == k
    for reason in {b[0] for b in bad}:
        n = sum(1 for b in bad if b[0] == reason) + (reason == "invalid_json")  # + the marker
        assert svc.metric("sla_storage_dlq_messages_total", f'{{reason="{reason}"}}') == n
    assert svc.stored() == len(good)


def letters_by_offset(bootstrap: str, topic: str, n: int) -> dict[int, dict[str, str]]:
    """The headers of the ``n`` dead letters of ``topic``, by source offset (one partition)."""
    letters = dlq_until(bootstrap, topic)
    out = {}
    for r in letters:
        headers = {h: v.decode() for h, v in r.headers}
        out[int(headers["dlq.source.offset"])] = headers
    assert len(out) == len(letters) == n, out
    return out


@pytest.mark.timeout(90)
def test_messages_dated_in_the_future_are_dead_lettered_and_never_become_the_newest_run(
    stack: Stack, db: StorageSettings, service: Service
) -> None:
    end = now_end()
    good = small(3, end, prefix="future", series=1)  # one series, one partition, in order
    year_2999 = 32_503_680_000 - 86_400
    forged = moved(good[-1], dt=year_2999 - good[-1].window.end, run_id="forged")
    ahead_10_min = moved(good[-1], dt=660, run_id="skewed")  # a clock 10 min fast
    msgs = [good[0], forged, good[1], ahead_10_min, good[2]]
    topic = new_topic(stack.kafka_bootstrap, "future")
    produce_messages(stack.kafka_bootstrap, topic, msgs)
    sql_exec_migrated(stack, db)
    svc = service(db, topic)  # STORAGE_MAX_FUTURE_SKEW_S: its default, 300 s
    wait_until(
        lambda: (
            svc.metric("sla_storage_dlq_messages_total", '{reason="future_timestamp"}') == 2
            and stored_windows(db) == {(m.series.key, m.window.end) for m in good}
        ),
        timeout=60,
        what=f"2 future_timestamp letters and the good ones stored; log:\n{svc.output()[-3000:]}",
    )
    newest = max(m.window.end for m in good)
    assert sql(db, "SELECT MAX(window_end) FROM analyses") == [(newest,)]
    assert sql(db, "SELECT MAX(window_end) FROM runs") == [(newest,)]
    assert_stored_equals(db, good)
    letters = letters_by_offset(stack.kafka_bootstrap, topic, 2)
    assert {o: h["dlq.reason"] for o, h in letters.items()} == {
        1: "future_timestamp",
        3: "future_timestamp",
    }
    assert "window.end 32503593600" in letters[1]["dlq.error"]

    # The allowed skew is a setting: with 15 min, the message 10 min ahead is stored.
    assert svc.stop() == 0
    other = service(db, topic, group=f"again-{topic}", STORAGE_MAX_FUTURE_SKEW_S="900")
    other.wait_stored(4)
    assert other.metric("sla_storage_dlq_messages_total", '{reason="future_timestamp"}') == 1
    assert (ahead_10_min.series.key, ahead_10_min.window.end) in stored_windows(db)


@pytest.mark.timeout(90)
def test_a_series_key_that_is_not_its_metric_and_labels_cannot_overwrite_another_series(
    stack: Stack, db: StorageSettings, service: Service
) -> None:
    end = now_end()
    victim, other = small(2, end, prefix="victim", series=2)
    # other's metric and labels under victim's key (and record key): it would rewrite the
    # victim's series row, labels and selector included.
    impostor = other.model_copy(
        update={
            "series": other.series.model_copy(update={"key": victim.series.key}),
            "window": other.window.model_copy(update={"end": end - 60}),
        }
    )
    assert impostor.kafka_key() == victim.kafka_key()
    topic = new_topic(stack.kafka_bootstrap, "impostor")
    produce_messages(stack.kafka_bootstrap, topic, [victim, impostor, other])
    sql_exec_migrated(stack, db)
    svc = service(db, topic)
    wait_until(
        lambda: (
            svc.metric("sla_storage_dlq_messages_total", '{reason="key_mismatch"}') == 1
            and svc.stored() == 2
        ),
        timeout=60,
        what=f"one key_mismatch letter and two messages stored; log:\n{svc.output()[-3000:]}",
    )
    assert_stored_equals(db, [victim, other])
    (headers,) = letters_by_offset(stack.kafka_bootstrap, topic, 1).values()
    assert headers["dlq.reason"] == "key_mismatch"
    assert "is not the key of series.metric and series.labels" in headers["dlq.error"]


MIB = 1024 * 1024


@pytest.mark.timeout(150)
def test_an_oversized_record_is_dead_lettered_without_its_value_and_the_rest_stored(
    stack: Stack, db: StorageSettings, service: Service
) -> None:
    # One series (one key, one partition): the 5 MiB record sits between its good records.
    good = small(8, now_end(), prefix="oversized", series=1)
    key = good[0].kafka_key()
    huge = b'{"pad": "' + b"x" * (5 * MIB) + b'"}'
    topic = new_topic(stack.kafka_bootstrap, "oversized")
    big = make_producer(stack.kafka_bootstrap, "storage-test-big", max_request_size=8 * MIB)
    try:
        futures = [big.send(topic, key=m.kafka_key(), value=m.to_bytes()) for m in good[:3]]
        futures.append(big.send(topic, key=key, value=huge))
        futures += [big.send(topic, key=m.kafka_key(), value=m.to_bytes()) for m in good[3:]]
        big.flush(timeout=30)
        sent = [f.get(timeout=10) for f in futures]
    finally:
        big.close(timeout=5)
    assert len({md.partition for md in sent}) == 1
    partition, huge_offset = sent[3].partition, sent[3].offset

    sql_exec_migrated(stack, db)
    svc = service(db, topic)
    t0 = time.monotonic()
    wait_until(
        lambda: stored_windows(db) == {(m.series.key, m.window.end) for m in good},
        timeout=30,
        what=f"the good records around the big one stored; log:\n{svc.output()[-3000:]}",
    )
    stored_after_s = time.monotonic() - t0
    # Records that arrive afterwards are stored too: the consumer is not stuck on the big one.
    later = small(4, now_end() - 3600, prefix="oversized", series=1)
    ends = produce_messages(stack.kafka_bootstrap, topic, later)
    wait_until(
        lambda: stored_windows(db) == {(m.series.key, m.window.end) for m in good + later},
        timeout=30,
        what=f"the records produced later stored; log:\n{svc.output()[-3000:]}",
    )
    wait_until(
        lambda: (
            committed(stack.kafka_bootstrap, f"group-{topic}", topic).get(partition)
            == ends[partition]
        ),
        timeout=30,
        what=f"offsets committed past the big record; log:\n{svc.output()[-3000:]}",
    )
    letters = dlq_until(stack.kafka_bootstrap, topic)
    of_big = [
        r for r in letters if dict(r.headers)["dlq.source.offset"] == str(huge_offset).encode()
    ]
    assert len(of_big) == 1, [dict(r.headers) for r in letters]
    letter = of_big[0]
    headers = {h: v.decode() for h, v in letter.headers}
    assert letter.value is None
    assert letter.key == key
    assert headers["dlq.reason"] == "too_large"
    assert headers["dlq.source.partition"] == str(partition)
    assert headers["dlq.source.size"] == str(len(huge))
    assert headers["dlq.source.sha256"] == hashlib.sha256(huge).hexdigest()
    assert headers["dlq.value.omitted"]
    assert svc.metric("sla_storage_dlq_messages_total", '{reason="too_large"}') == 1
    assert svc.alive()
    assert stored_after_s < 20, stored_after_s


def sql_exec_migrated(stack: Stack, db: StorageSettings) -> None:
    migrate(stack.service_env(MYSQL_DATABASE=db.mysql_database, MYSQL_PORT=str(db.mysql_port)))


@contextlib.contextmanager
def runs_locked(
    db: StorageSettings, msgs: Sequence[AnalysisMessage]
) -> Iterator[Callable[[], int]]:
    """Row locks on the ``runs`` rows of ``msgs``, held by an open transaction of the test.

    The consumer writes a batch's ``runs`` rows last, in the batch's one transaction: a batch
    that reaches a locked row waits there, everything else written and uncommitted, until the
    test rolls its own transaction back (InnoDB's lock wait timeout bounds that wait). So a
    signal sent meanwhile arrives mid-write for certain, instead of when a race is won. Yields
    a probe: the rows written by a transaction of the consumer that waits for a lock, else 0.
    The rows are locked in key order, as the consumer takes them, so the two cannot deadlock.
    """
    rows = sorted({r[0]: r for r in run_rows(msgs)}.values())
    holder = connect(db, database="", autocommit=False)  # not "on" db: the probe skips it
    watcher = connect(db, database="", autocommit=True)

    def blocked_mid_write() -> int:
        with watcher.cursor() as cur:
            cur.execute(
                "SELECT COALESCE(MAX(t.trx_rows_modified), 0) FROM information_schema.innodb_trx t "
                "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                "WHERE p.db = %s AND t.trx_state = 'LOCK WAIT'",
                (db.mysql_database,),
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0

    try:
        holder.begin()
        with holder.cursor() as cur:
            marks = ", ".join(["(" + ", ".join(["%s"] * len(RUNS.columns)) + ")"] * len(rows))
            cur.execute(
                f"INSERT INTO `{db.mysql_database}`.{RUNS.name} ({', '.join(RUNS.columns)}) "  # noqa: S608
                f"VALUES {marks} ON DUPLICATE KEY UPDATE run_id = run_id",
                [v for r in rows for v in r],
            )
        yield blocked_mid_write
    finally:
        close_quietly(watcher)
        with contextlib.suppress(pymysql.MySQLError, OSError):
            holder.rollback()
        close_quietly(holder)


@pytest.mark.timeout(120)
def test_sigkill_in_the_middle_of_a_batch_then_restart_stores_everything_once(
    stack: Stack, db: StorageSettings, service: Service
) -> None:
    msgs = realistic(series=6, runs=5, end=now_end(), prefix="kill")  # 30 × ≈ 5,800 rows
    topic = new_topic(stack.kafka_bootstrap, "kill")
    produce_messages(stack.kafka_bootstrap, topic, msgs[:18])
    group = f"group-{topic}"
    batch = {"STORAGE_BATCH_MAX_ROWS": "25000"}  # ≈ 4 messages a transaction
    first = service(db, topic, group=group, **batch)
    first.wait_stored(4)
    with runs_locked(db, msgs) as blocked_mid_write:
        produce_messages(stack.kafka_bootstrap, topic, msgs[18:])  # a batch is still to come
        wait_until(blocked_mid_write, timeout=60, interval=0.1, what="a batch mid-write")
        os.kill(first.pid, signal.SIGKILL)
        assert first.stop() == -signal.SIGKILL

    partial = stored_windows(db)
    done = committed(stack.kafka_bootstrap, group, topic)
    assert 4 <= len(partial) < len(msgs), "the kill was not in the middle of the stream"
    assert sum(done.values()) <= len(partial), "offsets committed beyond what was stored"

    second = service(db, topic, group=group, **batch)
    wait_until(
        lambda: (
            stored_windows(db) == {(m.series.key, m.window.end) for m in msgs}
            and committed(stack.kafka_bootstrap, group, topic)
            == _ends(stack.kafka_bootstrap, topic, len(msgs))
        ),
        timeout=60,
        what=f"every message stored and committed; log:\n{second.output()[-3000:]}",
    )
    assert_stored_equals(db, msgs)
    assert second.alive()


@pytest.mark.timeout(120)
def test_sigterm_finishes_and_commits_the_current_batch_then_exits_0(
    stack: Stack, db: StorageSettings, service: Service
) -> None:
    msgs = realistic(series=6, runs=12, end=now_end(), prefix="term")
    topic = new_topic(stack.kafka_bootstrap, "term")
    produce_messages(stack.kafka_bootstrap, topic, msgs[:36])
    group = f"group-{topic}"
    svc = service(db, topic, group=group, STORAGE_BATCH_MAX_ROWS="12000")  # ≈ 2 a batch
    svc.wait_stored(4)
    with runs_locked(db, msgs) as blocked_mid_write:
        produce_messages(stack.kafka_bootstrap, topic, msgs[36:])  # a batch is still to come
        wait_until(blocked_mid_write, timeout=60, interval=0.1, what="a batch mid-write")
        svc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        wait_until(
            lambda: "finishing and committing the current batch" in svc.output(),
            timeout=30,
            what="SIGTERM received",
        )
        assert svc.alive()
        before = stored_windows(db)  # committed only: not the batch that waits
    # The lock is gone: the batch goes on from where it waited.
    assert svc.stop(timeout=30) == 0, svc.output()[-3000:]

    # Everything stored is committed and everything committed is stored: the batch that was
    # being written when SIGTERM came was finished and its offsets committed.
    stored = stored_windows(db)
    done = committed(stack.kafka_bootstrap, group, topic)
    by_partition = partition_of_records(stack.kafka_bootstrap, topic, len(msgs))
    committed_windows = {w for (p, off), w in by_partition.items() if off < done.get(p, 0)}
    assert stored == committed_windows
    assert before < stored, "the batch mid-write when SIGTERM came was not finished"
    assert 4 < len(stored) < len(msgs)
    assert "leaving" in svc.output() or "stopped" in svc.output()
    assert_stored_equals(db, [m for m in msgs if (m.series.key, m.window.end) in stored])


def partition_of_records(
    bootstrap: str, topic: str, n: int
) -> dict[tuple[int, int], tuple[str, int]]:
    out = {}
    for r in consume_all(bootstrap, topic, n):
        m = AnalysisMessage.from_bytes(r.value)
        out[(r.partition, r.offset)] = (m.series.key, m.window.end)
    return out


@pytest.mark.timeout(180)
def test_mariadb_down_for_20_s_under_a_steady_feed_loses_and_duplicates_nothing(
    stack: Stack, tmp_path: Path, service: Service
) -> None:
    port = free_port()
    env = scripts_env(
        tmp_path / "mariadb",
        STACK_COMPONENTS="mariadb",
        STACK_MYSQL_MODE="private",
        STACK_MYSQL_PORT=str(port),
    )
    db = settings_for(stack, f"storage_down_{uuid.uuid4().hex[:8]}", port=port)
    topic = new_topic(stack.kafka_bootstrap, "dbdown")
    group = f"group-{topic}"
    feed = Feeder(stack.kafka_bootstrap, topic, small(600, now_end(), prefix="feed", series=20))
    try:
        up = run_bounded([SCRIPTS / "up"], timeout=120, env=env)
        assert up.returncode == 0, up.stdout + dump_logs(tmp_path / "mariadb")
        sql_exec_migrated(stack, db)
        svc = service(db, topic, group=group, MYSQL_READ_TIMEOUT_S="5", MYSQL_WRITE_TIMEOUT_S="5")
        feed.start()
        svc.wait_stored(20)

        down = run_bounded([SCRIPTS / "down"], timeout=60, env=env)
        assert down.returncode == 0, down.stdout
        t_down = time.monotonic()
        wait_until(lambda: svc.metric("sla_storage_mysql_up") == 0, timeout=15, what="mysql_up 0")
        frozen = committed(stack.kafka_bootstrap, group, topic)
        transient = 'sla_storage_write_errors_total{kind="transient"}'
        failed_before = svc.metric(transient)

        def down_and_retried() -> bool:
            # Checked all along: nothing is committed while the database is down.
            assert committed(stack.kafka_bootstrap, group, topic) == frozen, "committed while down"
            assert svc.alive(), svc.output()[-3000:]
            return time.monotonic() - t_down >= 20 and svc.metric(transient) >= failed_before + 5

        wait_until(down_and_retried, timeout=90, interval=1, what="20 s down and 5 retried writes")

        up = run_bounded([SCRIPTS / "up"], timeout=120, env=env)
        assert up.returncode == 0, up.stdout + dump_logs(tmp_path / "mariadb")
        fed = len(feed.sent)  # the feed goes on a little after the database is back
        wait_until(lambda: len(feed.sent) >= fed + 20, timeout=30, what="20 more messages fed")
        sent = feed.stop()
        assert len(sent) > 150, "the feed was not steady"
        wait_until(
            lambda: stored_windows(db) == {(m.series.key, m.window.end) for m in sent},
            timeout=60,
            what=f"all {len(sent)} messages stored; log:\n{svc.output()[-3000:]}",
        )
        assert svc.metric("sla_storage_mysql_up") == 1
        assert_stored_equals(db, sent)
        assert "MySQL write of" in svc.output() and "retrying the same batch" in svc.output()
        assert svc.alive()
    finally:
        feed.stop()
        run_bounded([SCRIPTS / "down", "--purge"], timeout=60, env=env)


class Feeder:
    """Produces one message every ``interval`` seconds on a thread, until stopped."""

    def __init__(
        self, bootstrap: str, topic: str, msgs: list[AnalysisMessage], interval: float = 0.1
    ) -> None:
        self.bootstrap, self.topic, self.msgs, self.interval = bootstrap, topic, msgs, interval
        self.sent: list[AnalysisMessage] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        producer = make_producer(self.bootstrap, "storage-feeder", linger_ms=0)
        try:
            for m in self.msgs:
                if self._stop.is_set():
                    break
                producer.send(self.topic, key=m.kafka_key(), value=m.to_bytes()).get(timeout=10)
                self.sent.append(m)
                self._stop.wait(self.interval)
        finally:
            producer.close(timeout=5)

    def stop(self) -> list[AnalysisMessage]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        return list(self.sent)


BROKER_GONE = re.compile(r"ECONNREFUSED|Connection refused|coordinator dead")


@pytest.mark.timeout(150)
def test_broker_down_then_back_the_consumer_waits_and_goes_on(
    stack: Stack, db: StorageSettings, tmp_path: Path, service: Service
) -> None:
    kafka_port = free_port()
    env = scripts_env(
        tmp_path / "kafka", STACK_COMPONENTS="kafka", STACK_KAFKA_PORT=str(kafka_port)
    )
    bootstrap = f"127.0.0.1:{kafka_port}"
    try:
        up = run_bounded([SCRIPTS / "up"], timeout=60, env=env)
        assert up.returncode == 0, up.stdout
        topic = new_topic(bootstrap, "brokerdown")
        before = small(5, now_end(), prefix="before")
        produce_messages(bootstrap, topic, before)
        # Both streams, as deployed: the anomaly consumer loses its topic too.
        svc = service(db, topic, KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_REQUEST_TIMEOUT_MS="3000")
        svc.wait_stored(5)

        assert run_bounded([SCRIPTS / "down"], timeout=60, env=env).returncode == 0
        wait_until(
            lambda: BROKER_GONE.search(svc.output()) or not svc.alive(),
            timeout=30,
            what="the consumer's client noticing the broker gone",
        )
        assert svc.alive(), svc.output()[-3000:]

        # tansu keeps everything in memory: it comes back empty, and the ETL re-creates its
        # topics when it reconnects (as new_topic does here).
        up = run_bounded([SCRIPTS / "up"], timeout=60, env=env)
        assert up.returncode == 0, up.stdout
        ensure_topics(bootstrap, [topic, f"{topic}.dlq"], partitions=PARTITIONS)
        after = small(5, now_end(), prefix="after")
        produce_messages(bootstrap, topic, after)
        # What is stored, not how many were: records read at the old offsets before the
        # rewind are read (and counted) again after it.
        expected = {(m.series.key, m.window.end) for m in before + after}
        wait_until(
            lambda: stored_windows(db) >= expected or not svc.alive(),
            timeout=90,
            what="the 5 messages of the re-created topic stored",
        )
        assert svc.alive(), svc.output()[-5000:]
        assert stored_windows(db) == expected, svc.output()[-5000:]
        wait_until(
            lambda: svc.metric("sla_storage_topic_recreations_total") >= 1,
            timeout=30,
            what="the re-creation noticed by the topic watch",
        )
    finally:
        run_bounded([SCRIPTS / "down", "--purge"], timeout=60, env=env)


@pytest.mark.timeout(60)
def test_retention_purges_old_rows_in_small_batches(stack: Stack, db: StorageSettings) -> None:
    sql_exec_migrated(stack, db)
    end = now_end()
    old = small(4, end - 10 * 86_400, prefix="old", series=2)  # 2 series, 2 runs, 10 days ago
    new = small(4, end, prefix="new", series=2)
    writer = Writer(db)
    try:
        writer.write(old + new)
        hp_before = count(db, "hp_points")
        purged = writer.purge(end - 7 * 86_400, batch_rows=50, budget_s=30)
    finally:
        writer.close()
    assert purged["hp_points"] == len(expected_rows(old)["hp_points"])
    assert purged["series"] == 2  # the old series, nothing refers to them any more
    assert count(db, "hp_points") == hp_before - purged["hp_points"]
    assert_stored_equals(db, new)  # the recent data untouched


@pytest.mark.timeout(60)
def test_the_service_purges_expired_rows_on_its_interval(
    stack: Stack, db: StorageSettings, service: Service
) -> None:
    end = now_end()
    old = small(4, end - 10 * 86_400, prefix="old", series=2)
    new = small(4, end, prefix="new", series=2)
    topic = new_topic(stack.kafka_bootstrap, "purge")
    produce_messages(stack.kafka_bootstrap, topic, old + new)
    svc = service(
        db,
        topic,
        STORAGE_RETENTION_S=str(7 * 86_400),
        STORAGE_PURGE_INTERVAL_S="1",
        STORAGE_PURGE_BATCH_ROWS="50",
    )
    svc.wait_stored(len(old + new))
    purged = 'sla_storage_purged_rows_total{table="series"}'
    wait_until(lambda: svc.metric(purged) == 2, timeout=30, what=f"{purged} == 2")
    assert_stored_equals(db, new)
    hp = svc.metric("sla_storage_purged_rows_total", '{table="hp_points"}')
    assert hp == len(expected_rows(old)["hp_points"])


@pytest.mark.timeout(30)
def test_invalid_settings_fail_at_start_naming_the_variable(stack: Stack, run: Runner) -> None:
    env = stack.service_env(STORAGE_BATCH_MAX_ROWS="many", HTTP_PORT=str(free_port()))
    proc = run([PY, "-m", "data_storage"], timeout=30, env=env)
    assert proc.returncode == 2
    assert "STORAGE_BATCH_MAX_ROWS" in proc.stdout and "Traceback" not in proc.stdout


@pytest.mark.timeout(120)
def test_a_deleted_and_recreated_topic_is_read_again_from_its_beginning(
    stack: Stack, db: StorageSettings, service: Service
) -> None:
    # tansu answers a fetch past the end of a (new, shorter) log with an empty batch, not
    # OFFSET_OUT_OF_RANGE: a consumer keeping its old positions would wait there and skip
    # every record before them. A restarted tansu re-creates topics the same way (it
    # forgets them); here the broker stays up, so the group and its positions survive and
    # only the topic watch (STORAGE_TOPIC_CHECK_S) can notice.
    bootstrap = stack.kafka_bootstrap
    topic = new_topic(bootstrap, "recreated")
    before = small(30, now_end(), prefix="before", series=15)  # ~10 per partition
    produce_messages(bootstrap, topic, before)
    svc = service(
        db,
        topic,
        STORAGE_TOPIC_CHECK_S="1",
    )
    svc.wait_stored(30)

    delete_topic(bootstrap, topic)
    ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
    after = small(6, now_end(), prefix="after", series=6)  # ~2 per partition
    produce_messages(bootstrap, topic, after)
    wait_until(
        lambda: {(m.series.key, m.window.end) for m in after} <= stored_windows(db),
        timeout=45,
        what=f"the 6 messages of the new topic stored; log:\n{svc.output()[-3000:]}",
    )
    assert stored_windows(db) == {(m.series.key, m.window.end) for m in before + after}
    assert svc.metric("sla_storage_topic_recreations_total") >= 1
    assert svc.alive()


def assignment(svc: Storage, group: str) -> set[int] | None:
    """The partitions of the service's latest assignment in ``group`` (its log), None before
    the first. The process logs the assignments of each stream's consumer (group)."""
    found = re.findall(rf"group {re.escape(group)}: assigned partitions \[(.*)\]", svc.output())
    if not found:
        return None
    return {int(p) for p in re.findall(r"'[^']+', (\d+)\)", found[-1])}


@pytest.mark.timeout(180)
def test_two_consumers_in_one_group_split_the_partitions_and_one_takes_over_from_the_other(
    stack: Stack, db: StorageSettings, service: Service
) -> None:
    bootstrap = stack.kafka_bootstrap
    topic = new_topic(bootstrap, "pair")
    group = f"group-{topic}"
    a = service(db, topic, group=group)
    b = service(db, topic, group=group)

    def split() -> bool:
        pa, pb = assignment(a, group), assignment(b, group)
        return bool(pa and pb and not pa & pb and pa | pb == set(range(PARTITIONS)))

    try:
        wait_until(split, timeout=60, what="a stable split")
    except AssertionError as e:
        raise AssertionError(f"{e}; logs:\n{a.output()[-3000:]}\n{b.output()[-3000:]}") from e
    first = small(60, now_end(), prefix="pair", series=30)
    produce_messages(bootstrap, topic, first)
    wait_until(
        lambda: stored_windows(db) == {(m.series.key, m.window.end) for m in first},
        timeout=60,
        what="the first 60 stored",
    )
    assert split()  # no rebalance meanwhile, so each message was handled by one of them once
    wait_until(lambda: a.stored() + b.stored() == 60, timeout=10, what="both counters")
    assert a.stored() > 0 and b.stored() > 0

    os.kill(a.pid, signal.SIGKILL)  # no LeaveGroup: b takes over after a session timeout
    second = small(30, now_end(), prefix="pair2", series=15)
    produce_messages(bootstrap, topic, second)
    wait_until(
        lambda: assignment(b, group) == set(range(PARTITIONS)),
        timeout=60,
        what=f"b owning every partition; log:\n{b.output()[-3000:]}",
    )
    wait_until(
        lambda: stored_windows(db) == {(m.series.key, m.window.end) for m in first + second},
        timeout=60,
        what="every message stored after the take-over",
    )
    assert b.alive()
    a.stop()
