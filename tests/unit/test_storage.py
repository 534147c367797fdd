"""data_storage without services: validation, rows, SQL text, migrations files, retry, settings."""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymysql.converters import escape_item

from data_storage import rows as tables
from data_storage.metrics import DLQ_REASONS, StorageMetrics
from data_storage.samples import analysed, moved, ref
from data_storage.settings import StorageSettings
from data_storage.validate import Rejected, check
from etl_data_pipeline.analyses import AnalysisConfig
from sla_common.messages import AnalysisMessage, SkippedAnalysis
from sla_common.mysql import (
    DEFAULT_DATABASE_SQL,
    DEFAULT_MIGRATIONS_DIR,
    MAX_STATEMENT_CHARS,
    Backoff,
    MigrationError,
    Stopped,
    insert_rows,
    is_connection_error,
    is_data_error,
    load_migrations,
    render_database_sql,
    retry,
    series_key_hash,
    split_sql,
    sql_literal,
)
from sla_common.settings import SettingsError, load_settings

END = 1_800_000_000  # a multiple of 15 and 60
LIMIT = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def msg() -> AnalysisMessage:
    return analysed(ref("node_memory_MemFree_bytes", instance="h:9100", job="node"), END)


@pytest.fixture(scope="module")
def short_msg() -> AnalysisMessage:
    """A short history: decomposition skipped (needs two seasons), as the ETL reports it."""
    return analysed(ref("short", job="x"), END, points=100, seed=3)


def _raw(m: AnalysisMessage) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(m.to_bytes())
    return doc


def _bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


# --------------------------------------------------------------------------- validation


def test_a_valid_message_passes(msg: AnalysisMessage) -> None:
    assert check(msg.kafka_key(), msg.to_bytes(), LIMIT) == msg


def _bad_cases(msg: AnalysisMessage) -> list[tuple[str, bytes | None, bytes | None, str]]:
    key = msg.kafka_key()
    good = _raw(msg)
    v2 = {**good, "schema_version": 2}
    missing = {k: v for k, v in good.items() if k != "window"}
    wrong = {**good, "produced_at": "yesterday"}
    wrong_nested = {**good, "hp": {**good["hp"], "trend": "up"}}
    nan = re.sub(r'"statistic":[-0-9.eE+]+', '"statistic":NaN', msg.to_bytes().decode(), count=1)
    inf_json = json.dumps({**good, "durations_ms": {"adf": float("inf")}})  # -> Infinity
    long_model = {**good, "forecast": {**good["forecast"], "model": "m" * 200}}
    return [
        ("invalid_json", key, b"this is not json {", "Invalid JSON"),
        ("invalid_json", key, b"\xff\xfe\x00 binary", "Invalid JSON"),
        ("empty", key, None, "no value"),
        ("empty", key, b"", "no value"),
        ("unknown_schema_version", key, _bytes(v2), "schema_version"),
        ("missing_field", key, _bytes(missing), "window: Field required"),
        ("wrong_type", key, _bytes(wrong), "produced_at"),
        ("wrong_type", key, _bytes(wrong_nested), "hp.trend"),
        ("wrong_type", key, b"[1, 2, 3]", "(message)"),
        ("non_finite", key, nan.encode(), "finite"),
        ("non_finite", key, inf_json.encode(), "durations_ms.adf"),
        ("too_large", key, b" " * (LIMIT + 1), "STORAGE_MAX_MESSAGE_BYTES"),
        ("key_mismatch", b"another{}", msg.to_bytes(), "series.key"),
        ("key_mismatch", None, msg.to_bytes(), "series.key"),
        ("unstorable", key, _bytes(long_model), "forecast.model"),
    ]


def test_every_kind_of_bad_record_is_rejected_with_its_reason(msg: AnalysisMessage) -> None:
    for reason, key, value, needle in _bad_cases(msg):
        got = check(key, value, LIMIT)
        assert isinstance(got, Rejected), (reason, value[:80] if value else value)
        assert got.reason == reason, (reason, got)
        assert needle in got.error, (reason, got.error)
        assert got.reason in DLQ_REASONS
        assert len(got.error) <= 1000


def test_a_version_error_wins_over_the_field_errors_it_causes(msg: AnalysisMessage) -> None:
    doc = {"schema_version": 7, "payload": {"whatever": 1}}
    got = check(msg.kafka_key(), _bytes(doc), LIMIT)
    assert isinstance(got, Rejected) and got.reason == "unknown_schema_version"


# --------------------------------------------------------------------------- rows


def test_rows_of_a_message_follow_its_fields(msg: AnalysisMessage) -> None:
    assert msg.hp is not None and msg.decomposition is not None and msg.forecast is not None
    assert msg.acf is not None and msg.adf is not None
    rows = tables.child_rows([msg], {msg.series.key: 7})
    hp = rows["hp_points"]
    assert len(hp) == msg.grid.count == 2881
    assert hp[0] == (7, msg.grid.start, msg.hp.trend[0], msg.hp.cycle[0], msg.window.end)
    assert hp[-1][1] == msg.window.end  # grid timestamps end at the window end
    assert [r[1] for r in hp] == msg.grid.timestamps()
    dec = rows["decomposition_points"]
    assert dec[5] == (
        7,
        msg.grid.start + 5 * 15,
        msg.decomposition.trend[5],
        msg.decomposition.seasonal[5],
        msg.decomposition.resid[5],
        msg.window.end,
    )
    assert [r[1:3] for r in rows["acf"]] == list(enumerate(msg.acf.values))
    (adf,) = rows["adf"]
    assert adf[2:10] == (
        msg.adf.statistic,
        msg.adf.pvalue,
        msg.adf.used_lag,
        msg.adf.nobs,
        msg.adf.critical_values.pct1,
        msg.adf.critical_values.pct5,
        msg.adf.critical_values.pct10,
        msg.adf.stationary,
    )
    assert [r[1] for r in rows["aggregates"]] == ["1h", "3h", "12h"]
    fp = rows["forecast_points"]
    assert [r[1] for r in fp] == [p.ts for p in msg.forecast.points]
    (fs,) = rows["forecast_summary"]
    assert fs[6:12] == (
        msg.forecast.points[0].ts,
        msg.forecast.points[-1].ts,
        len(msg.forecast.points),
        msg.forecast.max,
        msg.forecast.min,
        msg.forecast.mean,
    )
    (header,) = rows["analyses"]
    assert json.loads(header[16]) == msg.durations_ms
    total = sum(len(v) for v in rows.values()) + 2  # + series + runs
    assert total == tables.row_count(msg)


def test_a_skipped_analysis_becomes_a_skip_row_and_no_points(short_msg: AnalysisMessage) -> None:
    assert short_msg.decomposition is None
    rows = tables.child_rows([short_msg], {short_msg.series.key: 1})
    assert rows["decomposition_points"] == []
    skipped = {r[2]: r[3] for r in rows["skipped_analyses"]}
    assert skipped.get("decomposition") == "too_short"
    assert rows["analyses"][0][15] == len(short_msg.skipped)


def test_series_row_and_key_hash(msg: AnalysisMessage) -> None:
    (row,) = tables.series_rows([msg])
    assert row[0] == series_key_hash(msg.series.key) and len(row[0]) == 32
    assert row[1] == msg.series.key and json.loads(row[3]) == msg.series.labels
    assert row[6] == row[7] == msg.window.end


def test_latest_per_window_keeps_the_newest_of_one_window(msg: AnalysisMessage) -> None:
    older = moved(msg, run_id="a", produced_at=msg.produced_at)
    newer = moved(msg, run_id="b", produced_at=msg.produced_at + 5)
    later_window = moved(msg, dt=60, run_id="c")
    kept = tables.latest_per_window([newer, older, later_window])
    assert sorted(m.run_id for m in kept) == ["b", "c"]
    same = moved(msg, run_id="d")
    assert [m.run_id for m in tables.latest_per_window([older, same])] == ["d"]  # ties: later wins


def test_moved_messages_stay_valid(msg: AnalysisMessage) -> None:
    other = moved(msg, series=ref("other", job="y"), dt=3600, run_id="r2")
    again = AnalysisMessage.from_bytes(other.to_bytes())
    assert again.window.end == msg.window.end + 3600
    assert again.series.key == 'other{job="y"}'
    assert again.forecast is not None and msg.forecast is not None
    assert again.forecast.points[0].ts == msg.forecast.points[0].ts + 3600


def test_unstorable_limits() -> None:
    m = analysed(ref("u", job="x"), END, points=100, seed=1)
    assert tables.unstorable_reason(m) is None
    long_reason = m.model_copy(
        update={"skipped": [SkippedAnalysis(analysis="a" * 65, reason="r" * 256, detail="")]}
    )
    why = tables.unstorable_reason(long_reason)
    assert why is not None and "skipped.analysis" in why and "skipped.reason" in why
    huge_selector = m.model_copy(
        update={"series": m.series.model_copy(update={"selector": "x" * 70_000})}
    )
    assert "series.selector" in (tables.unstorable_reason(huge_selector) or "")


# --------------------------------------------------------------------------- SQL text


def test_upsert_guards_every_column_with_the_version_which_comes_last() -> None:
    sql = tables.HP_POINTS.upsert_sql()
    assert sql.startswith("INSERT INTO hp_points (series_id, ts, trend, cycle, window_end) ")
    tail = tables.HP_POINTS.upsert_tail()
    assert tail == (
        " ON DUPLICATE KEY UPDATE "
        "trend = IF(VALUES(window_end) >= window_end, VALUES(trend), trend), "
        "cycle = IF(VALUES(window_end) >= window_end, VALUES(cycle), cycle), "
        "window_end = GREATEST(window_end, VALUES(window_end))"
    )
    series_tail = tables.SERIES.upsert_tail()
    assert "first_seen = LEAST(first_seen, VALUES(first_seen))" in series_tail
    assert series_tail.endswith("last_seen = GREATEST(last_seen, VALUES(last_seen))")
    assert "key_hash =" not in series_tail  # the key itself is never updated


def test_tables_match_the_migration() -> None:
    sql = (DEFAULT_MIGRATIONS_DIR / "0001_initial.sql").read_text()
    for t in tables.TABLES:
        body = sql.split(f"CREATE TABLE IF NOT EXISTS {t.name} (", 1)[1].split(") ENGINE", 1)[0]
        declared = [ln.split()[0] for ln in body.splitlines() if ln.strip() and ln[4] != " "]
        columns = [c for c in declared if c not in {"PRIMARY", "UNIQUE", "KEY", "CONSTRAINT"}]
        assert set(t.columns) <= set(columns), t.name
        assert t.time_column in columns
        key = ", ".join(t.key)
        assert f"PRIMARY KEY ({key})" in body or f"UNIQUE KEY uq_{t.name}_key_hash ({key})" in body


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**63 - 1))
def test_numeric_literals_equal_the_drivers(value: float) -> None:
    cur = _FakeCursor()
    assert sql_literal(cur, value) == escape_item(value, "utf8mb4")  # type: ignore[arg-type]


def test_literals_refuse_non_finite_and_leave_the_rest_to_the_driver() -> None:
    cur = _FakeCursor()
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match="cannot be stored"):
            sql_literal(cur, bad)  # type: ignore[arg-type]
    assert sql_literal(cur, True) == "driver:True"  # type: ignore[arg-type]
    assert sql_literal(cur, "it's") == "driver:it's"  # type: ignore[arg-type]
    assert sql_literal(cur, None) == "driver:None"  # type: ignore[arg-type]


class _FakeCursor:
    """Records statements; renders non-numeric parameters visibly, as "driver:<value>"."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def mogrify(self, query: str, args: tuple[object, ...]) -> str:
        assert query == "%s"
        return f"driver:{args[0]}"

    def execute(self, sql: str) -> int:
        self.statements.append(sql)
        return sql.count("),(") + 1


def test_insert_rows_splits_statements_below_the_limit() -> None:
    cur = _FakeCursor()
    rows = [(i, float(i) + 0.5, "x" * 100) for i in range(30_000)]
    n = insert_rows(cur, "INSERT INTO t (a, b, c) VALUES ", rows, " ON DUPLICATE KEY UPDATE b=1")  # type: ignore[arg-type]
    assert n == len(rows)
    assert len(cur.statements) > 1
    assert all(len(s) <= MAX_STATEMENT_CHARS for s in cur.statements)
    assert all(s.endswith(" ON DUPLICATE KEY UPDATE b=1") for s in cur.statements)
    assert cur.statements[0].startswith("INSERT INTO t (a, b, c) VALUES (0,0.5e0,driver:xxx")
    assert insert_rows(cur, "INSERT INTO t VALUES ", []) == 0  # type: ignore[arg-type]


# --------------------------------------------------------------------------- migrations


def test_database_sql_is_generated_from_the_migrations() -> None:
    assert DEFAULT_DATABASE_SQL.read_text() == render_database_sql(load_migrations())


def test_database_sql_is_idempotent_text() -> None:
    for statement in split_sql(DEFAULT_DATABASE_SQL.read_text()):
        head = statement.split("(", 1)[0]
        assert head.startswith(("CREATE TABLE IF NOT EXISTS", "INSERT IGNORE INTO")), head


def test_split_sql() -> None:
    text = "-- a comment; not a statement\nCREATE TABLE a (x INT);\n\n  -- x\nSELECT 'a;b';\n"
    assert split_sql(text) == ["CREATE TABLE a (x INT)", "SELECT 'a;b'"]


def test_migration_files_are_checked(tmp_path: Any) -> None:
    (tmp_path / "0001_first.sql").write_text("SELECT 1;\n")
    (tmp_path / "0003_third.sql").write_text("SELECT 3;\n")
    with pytest.raises(MigrationError, match="without gaps"):
        load_migrations(tmp_path)
    (tmp_path / "0003_third.sql").unlink()
    (tmp_path / "2_bad-name.sql").write_text("SELECT 2;\n")
    with pytest.raises(MigrationError, match="NNNN_lowercase_name"):
        load_migrations(tmp_path)
    with pytest.raises(MigrationError, match="no migrations"):
        load_migrations(tmp_path / "nowhere")


# --------------------------------------------------------------------------- errors, retry


def test_error_classification() -> None:
    too_long = pymysql.err.DataError(1406, "Data too long for column 'reason'")
    check_failed = pymysql.err.OperationalError(4025, "CONSTRAINT `labels` failed")
    gone = pymysql.err.OperationalError(2013, "Lost connection to MySQL server")
    deadlock = pymysql.err.OperationalError(1213, "Deadlock found")
    missing_table = pymysql.err.ProgrammingError(1146, "Table 'x.series' doesn't exist")
    assert is_data_error(too_long) and is_data_error(check_failed)
    assert not any(is_data_error(e) for e in (gone, deadlock, missing_table, OSError()))
    assert is_connection_error(gone) and is_connection_error(BrokenPipeError())
    assert not is_connection_error(deadlock)


def test_backoff_grows_jittered_and_capped() -> None:
    b = Backoff(base_s=0.5, cap_s=4.0)
    delays = [b.next_delay() for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 4, 4, 4, 4]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    b.reset()
    assert b.next_delay() <= 0.5


def test_retry_until_success_then_bounded_then_stopped() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("down")
        return "ok"

    fast = Backoff(base_s=0.001, cap_s=0.002)
    assert retry(flaky, what="t", retry_on=(OSError,), backoff=fast) == "ok"
    assert len(calls) == 3

    def always() -> None:
        raise OSError("still down")

    with pytest.raises(OSError, match="still down"):
        retry(always, what="t", retry_on=(OSError,), backoff=Backoff(0.001, 0.002), max_attempts=4)
    with pytest.raises(ValueError, match="not retried"):
        retry(_raise_value_error, what="t", retry_on=(OSError,))
    with pytest.raises(OSError, match="still down"):
        retry(always, what="t", retry_on=(OSError,), give_up=lambda _e: True)

    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(Stopped):
        retry(always, what="t", retry_on=(OSError,), backoff=Backoff(0.05, 0.05), stop=stop)
    assert time.monotonic() - t0 < 2


def _raise_value_error() -> None:
    raise ValueError("not retried")


# --------------------------------------------------------------------------- settings, metrics


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "MYSQL_", "STORAGE_", "HTTP_", "ENVIRONMENT")):
            monkeypatch.delenv(name)
    yield monkeypatch


def test_settings_defaults(clean_env: pytest.MonkeyPatch) -> None:
    s = load_settings(StorageSettings)
    assert (s.kafka_topic, s.kafka_dlq_topic, s.kafka_group_id) == (
        "prometheusdata",
        "prometheusdata.dlq",
        "data_storage",
    )
    assert (s.kafka_session_timeout_ms, s.kafka_heartbeat_interval_ms) == (6000, 1000)
    assert s.http_port == 8002 and s.mysql_database == "sla_monitor"
    assert s.storage_batch_max_messages == 500 and s.storage_retention_s == 7 * 86400
    assert s.mysql_migrations_dir == DEFAULT_MIGRATIONS_DIR


def test_settings_errors_name_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("STORAGE_BATCH_MAX_MESSAGES", "lots")
    with pytest.raises(SettingsError, match="STORAGE_BATCH_MAX_MESSAGES='lots'"):
        load_settings(StorageSettings)
    clean_env.delenv("STORAGE_BATCH_MAX_MESSAGES")
    clean_env.setenv("KAFKA_HEARTBEAT_INTERVAL_MS", "3000")
    with pytest.raises(SettingsError, match="at most a third"):
        load_settings(StorageSettings)
    clean_env.delenv("KAFKA_HEARTBEAT_INTERVAL_MS")
    clean_env.setenv("MYSQL_DATABASE", "x`; DROP DATABASE y")
    with pytest.raises(SettingsError, match="MYSQL_DATABASE"):
        load_settings(StorageSettings)
    clean_env.delenv("MYSQL_DATABASE")
    clean_env.setenv("ENVIRONMENT", "production")
    with pytest.raises(SettingsError, match="MYSQL_PASSWORD must be set"):
        load_settings(StorageSettings)
    clean_env.setenv("MYSQL_PASSWORD", "s3cret")
    assert load_settings(StorageSettings).mysql_password.get_secret_value() == "s3cret"


def test_each_metrics_instance_has_its_own_registry() -> None:
    a, b = StorageMetrics(), StorageMetrics()
    a.rows_written.labels("hp_points").inc(5)
    assert (
        a.registry.get_sample_value("sla_storage_rows_written_total", {"table": "hp_points"}) == 5
    )
    assert (
        b.registry.get_sample_value("sla_storage_rows_written_total", {"table": "hp_points"}) == 0
    )
    names = {m.name for m in a.registry.collect()}
    assert {
        "sla_storage_messages_consumed",
        "sla_storage_rows_written",
        "sla_storage_batch_write_duration_seconds",
        "sla_storage_dlq_messages",
        "sla_storage_last_commit_timestamp_seconds",
    } <= names


def test_small_config_messages_have_every_analysis() -> None:
    m = analysed(
        ref("small", job="x"), END, points=61, step_s=60, config=AnalysisConfig(season_s=600)
    )
    assert m.hp and m.acf and m.decomposition and m.forecast and m.adf
    assert 150 < tables.row_count(m) < 250
