"""data_storage without services: validation, rows, SQL text, migrations files, retry, settings."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka import TopicPartition
from kafka.errors import (
    CommitFailedError,
    InvalidRecordError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    UnknownTopicOrPartitionError,
)
from pymysql.converters import escape_item

import sla_common.kafka as kafka_helpers
from data_storage import rows as tables
from data_storage.consumer import StorageConsumer
from data_storage.deadletter import letter_without_value, whole_letter
from data_storage.metrics import DLQ_REASONS, StorageMetrics
from data_storage.samples import analysed, moved, ref
from data_storage.settings import StorageSettings
from data_storage.validate import Rejected, check, future_problem
from data_storage.writer import Writer, WriteResult
from etl_data_pipeline.analyses import AnalysisConfig
from sla_common.messages import AnalysisMessage, SkippedAnalysis
from sla_common.mysql import (
    DEFAULT_DATABASE_SQL,
    DEFAULT_MIGRATIONS_DIR,
    MAX_STATEMENT_CHARS,
    Backoff,
    Connection,
    MigrationError,
    MysqlSettings,
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
from sla_common.series import series_key
from sla_common.settings import SettingsError, load_settings

END = 1_800_000_000  # a multiple of 15 and 60
LIMIT = 4 * 1024 * 1024
SKEW = 300
NOW = END + 60  # the validation's clock: the messages' window ends a minute ago


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


def _check(key: bytes | None, value: bytes | None) -> AnalysisMessage | Rejected:
    return check(key, value, LIMIT, not_after=NOW + SKEW)


# --------------------------------------------------------------------------- validation


def test_a_valid_message_passes(msg: AnalysisMessage) -> None:
    assert _check(msg.kafka_key(), msg.to_bytes()) == msg


def _bad_cases(msg: AnalysisMessage) -> list[tuple[str, bytes | None, bytes | None, str]]:
    key = msg.kafka_key()
    good = _raw(msg)
    v2 = {**good, "schema_version": 3}
    missing = {k: v for k, v in good.items() if k != "window"}
    wrong = {**good, "produced_at": "yesterday"}
    wrong_nested = {**good, "hp": {**good["hp"], "trend": "up"}}
    nan = re.sub(r'"statistic":[-0-9.eE+]+', '"statistic":NaN', msg.to_bytes().decode(), count=1)
    inf_json = json.dumps({**good, "durations_ms": {"adf": float("inf")}})  # -> Infinity
    long_model = {**good, "forecast": {**good["forecast"], "model": "m" * 200}}
    ahead = NOW + SKEW + 1 - msg.window.end  # one second past what the skew allows
    later = moved(msg, dt=ahead)
    forged = {**good, "series": {**good["series"], "key": 'victim{job="a"}'}}
    forged_key = forged["series"]["key"].encode()
    label_lie = {**good, "series": {**good["series"], "labels": {"job": "other"}}}
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
        ("future_timestamp", key, later.to_bytes(), "window.end"),
        ("future_timestamp", key, _bytes({**good, "produced_at": 32_503_679_999}), "produced_at"),
        ("key_mismatch", forged_key, _bytes(forged), "not the key of series.metric"),
        ("key_mismatch", key, _bytes(label_lie), "not the key of series.metric"),
    ]


def test_every_kind_of_bad_record_is_rejected_with_its_reason(msg: AnalysisMessage) -> None:
    for reason, key, value, needle in _bad_cases(msg):
        got = _check(key, value)
        assert isinstance(got, Rejected), (reason, value[:80] if value else value)
        assert got.reason == reason, (reason, got)
        assert needle in got.error, (reason, got.error)
        assert got.reason in DLQ_REASONS
        assert len(got.error) <= 1000


def test_times_up_to_the_allowed_skew_pass_and_each_later_one_is_refused(
    msg: AnalysisMessage,
) -> None:
    assert msg.forecast is not None
    at_limit = moved(msg, dt=NOW + SKEW - msg.window.end)  # forecast points: + the horizon
    assert _check(at_limit.kafka_key(), at_limit.to_bytes()) == at_limit
    assert future_problem(at_limit, NOW + SKEW) is None
    assert future_problem(at_limit, NOW + SKEW - 1) is not None
    good = _raw(msg)
    year_2999 = 32_503_680_000 - 86_400
    horizon = msg.forecast.horizon_s
    last_point = max(p.ts for p in msg.forecast.points)
    cases = {
        "window.end": {**good, "window": {**good["window"], "end": year_2999}},
        "produced_at": {**good, "produced_at": NOW + SKEW + 1},
        "the grid's last point": {**good, "grid": {**good["grid"], "start": NOW}},
        "aggregates[1].end": {
            **good,
            "aggregates": [
                a if i != 1 else {**a, "end": year_2999} for i, a in enumerate(good["aggregates"])
            ],
        },
        "the last forecast point": {
            **good,
            "forecast": {
                **good["forecast"],
                "points": [
                    *good["forecast"]["points"][:-1],
                    {**good["forecast"]["points"][-1], "ts": NOW + SKEW + horizon + 1},
                ],
            },
        },
    }
    assert last_point <= NOW + SKEW + horizon
    for what, doc in cases.items():
        got = _check(msg.kafka_key(), _bytes(doc))
        assert isinstance(got, Rejected) and got.reason == "future_timestamp", (what, got)
        assert got.error.startswith(what), got.error


def test_the_series_key_checked_is_the_etls_key_of_metric_and_labels() -> None:
    labels = {"job": "node", "path": 'a"b', "__name__": "m"}
    s = ref("m", **labels)
    assert s.key == series_key("m", labels) == s.derived_key() == 'm{job="node",path="a\\"b"}'


def test_a_version_error_wins_over_the_field_errors_it_causes(msg: AnalysisMessage) -> None:
    doc = {"schema_version": 7, "payload": {"whatever": 1}}
    got = _check(msg.kafka_key(), _bytes(doc))
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


def test_forecast_rows_carry_the_predictive_distribution(msg: AnalysisMessage) -> None:
    assert msg.forecast is not None and msg.forecast.points[0].scale is not None
    f = msg.forecast
    rows = tables.child_rows([msg], {msg.series.key: 7})
    cols = tables.FORECAST_POINTS.columns
    for p, r in zip(f.points, rows["forecast_points"], strict=True):
        assert (r[cols.index("loc")], r[cols.index("scale")]) == (p.loc, p.scale)
    (fs,) = rows["forecast_summary"]
    summary = dict(zip(tables.FORECAST_SUMMARY.columns, fs, strict=True))
    assert (summary["distribution"], summary["df"], summary["value_floor"]) == (
        f.distribution,
        f.df,
        f.floor,
    )
    # A forecast of an older ETL (no distribution): the columns are NULL.
    bare = f.model_copy(
        update={
            "points": [q.model_copy(update={"loc": None, "scale": None}) for q in f.points],
            "distribution": None,
            "df": None,
            "floor": None,
        }
    )
    rows = tables.child_rows([msg.model_copy(update={"forecast": bare})], {msg.series.key: 7})
    assert {r[-2:] for r in rows["forecast_points"]} == {(None, None)}
    assert rows["forecast_summary"][0][-3:] == (None, None, None)


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
    sql = "\n".join(p.read_text() for p in sorted(DEFAULT_MIGRATIONS_DIR.glob("*.sql")))
    added = set(re.findall(r"ADD COLUMN (\w+)", sql))  # by the later migrations
    for t in tables.TABLES:
        body = sql.split(f"CREATE TABLE IF NOT EXISTS {t.name} (", 1)[1].split(") ENGINE", 1)[0]
        declared = [ln.split()[0] for ln in body.splitlines() if ln.strip() and ln[4] != " "]
        columns = [c for c in declared if c not in {"PRIMARY", "UNIQUE", "KEY", "CONSTRAINT"}]
        assert set(t.columns) <= set(columns) | added, t.name
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


# A column added to an existing table, guarded so that a second run does nothing, in SQL
# that MySQL and MariaDB both define (MySQL has no ADD COLUMN IF NOT EXISTS): the ALTER is
# prepared only while information_schema does not list the column ('DO 0' otherwise).
GUARDED_DDL = ("SET @", "PREPARE ", "EXECUTE ", "DEALLOCATE PREPARE ")


def test_database_sql_is_idempotent_text() -> None:
    for statement in split_sql(DEFAULT_DATABASE_SQL.read_text()):
        head = statement.split("(", 1)[0]
        if head.startswith(GUARDED_DDL):
            if head.startswith("SET @"):
                assert "FROM information_schema.COLUMNS" in statement, statement
                assert re.search(r"IF\(COUNT\(\*\) = 0,\s+'ALTER TABLE", statement), statement
                assert "'DO 0'" in statement, statement
            continue
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


# --------------------------------------------------------------------------- the consumer, faked
# StorageConsumer's fault branches, deterministic: fake Kafka clients and writers, no network.

TOPIC, DLQ = "in", "in.dlq"
TP = TopicPartition(TOPIC, 0)
MIB = 1024 * 1024


@dataclass
class FakeRecord:
    offset: int
    key: bytes | None
    value: bytes | None
    topic: str = TOPIC
    partition: int = 0
    timestamp: int = 1
    headers: list[tuple[str, bytes]] = field(default_factory=list)


class FakeFuture:
    """Like kafka-python's FutureRecordMetadata; ``pending`` flushes before it completes."""

    def __init__(self, exception: BaseException | None, pending: int = 0) -> None:
        self.exception, self.pending = exception, pending

    @property
    def is_done(self) -> bool:
        return self.pending <= 0

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None


@dataclass
class FakeProducer:
    """A dead-letter producer: its own size check raises, the broker's answers are futures."""

    max_request_size: int = 4 * MIB
    broker: Callable[[bytes | None, bytes | None], BaseException | None] = lambda k, v: None
    sync_errors: list[BaseException] = field(default_factory=list)  # raised by send(), in order
    pending: int = 0  # flushes each send stays in flight
    on_send: Callable[[int], None] = lambda attempt: None
    acked: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = field(default_factory=list)
    attempts: int = 0
    futures: list[FakeFuture] = field(default_factory=list)
    closed: bool = False

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> FakeFuture:
        assert topic == DLQ
        self.attempts += 1
        self.on_send(self.attempts)
        if self.sync_errors:
            raise self.sync_errors.pop(0)
        size = len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)
        if size > self.max_request_size:
            raise MessageSizeTooLargeError(f"{size} bytes")
        error = self.broker(key, value)
        future = FakeFuture(error, self.pending)
        self.futures.append(future)
        if error is None:
            self.acked.append((key, value, dict(headers)))
        return future

    def flush(self, timeout: float | None = None) -> None:
        late = False
        for f in self.futures:
            f.pending -= 1
            late = late or f.pending > 0
        if late:
            raise KafkaTimeoutError("flush timed out")

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


@dataclass
class FakeConsumer:
    """Hands out ``records`` in order; sets ``stop`` (a SIGTERM) once they are all out."""

    records: list[FakeRecord]
    stop: threading.Event
    commit_errors: list[BaseException] = field(default_factory=list)
    commits: list[dict[TopicPartition, int]] = field(default_factory=list)
    paused: bool = False
    closed: bool = False

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        if self.paused:
            return {}
        if not self.records:
            self.stop.set()
            return {}
        n = max_records or len(self.records)
        out, self.records = self.records[:n], self.records[n:]
        return {TP: out}

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *tps: TopicPartition) -> None:
        self.paused = True

    def resume(self, *tps: TopicPartition) -> None:
        self.paused = False

    def seek(self, tp: TopicPartition, offset: int) -> None:
        raise AssertionError("a paused consumer fetched records")

    def commit(self, offsets: dict[TopicPartition, Any], timeout_ms: int | None = None) -> None:
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.commits.append({tp: om.offset for tp, om in offsets.items()})

    def close(self, autocommit: bool = True, timeout_ms: int | None = None) -> None:
        assert not autocommit
        self.closed = True


class FakeWriter(Writer):
    """A sink in memory: ``fail`` raises for whole writes; ``refuse(msg)`` fails a write
    containing ``msg`` (atomically, like the transaction); ``during`` runs inside each write."""

    def __init__(self, settings: MysqlSettings) -> None:
        super().__init__(settings)
        self.stored: list[AnalysisMessage] = []
        self.fail: list[BaseException] = []
        self.refuse: Callable[[AnalysisMessage], BaseException | None] = lambda m: None
        self.during: Callable[[int], None] = lambda n: None
        self.writes = 0
        self.dropped = 0
        self.closed = False

    def write(self, messages: Sequence[AnalysisMessage]) -> WriteResult:
        self.writes += 1
        self.during(self.writes)
        if self.fail:
            raise self.fail.pop(0)
        for m in messages:
            error = self.refuse(m)
            if error is not None:
                raise error
        self.stored.extend(messages)
        return WriteResult({"series": len(messages)}, 0.001)

    def drop_connection(self) -> None:
        self.dropped += 1

    def close(self) -> None:
        self.closed = True


class Started(StorageConsumer):
    """The consumer with its clients given: no database to migrate, no topics to create."""

    def prepare(self) -> None:
        pass


@dataclass
class Rig:
    consumer: Started
    kafka: FakeConsumer
    dlq: FakeProducer

    @property
    def writer(self) -> FakeWriter:
        assert isinstance(self.consumer.writer, FakeWriter)
        return self.consumer.writer

    def sample(self, name: str, **labels: str) -> float:
        value = self.consumer.metrics.registry.get_sample_value(name, labels)
        return value if value is not None else 0.0

    def letters(self) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
        return self.dlq.acked


def rig(
    records: list[FakeRecord],
    writer: Callable[[MysqlSettings], Writer] = FakeWriter,
    **settings: Any,
) -> Rig:
    stop = threading.Event()
    kafka, dlq = FakeConsumer(records, stop), FakeProducer()
    s = StorageSettings(
        kafka_topic=TOPIC,
        kafka_dlq_topic=DLQ,
        storage_batch_max_wait_ms=0,  # a batch is what one poll brings
        storage_backoff_base_s=0.001,
        storage_max_backoff_s=0.002,
        storage_retention_s=0,
        **settings,
    )
    c = Started(s, stop=stop, clock=lambda: NOW, make_writer=writer, consumer=kafka, producer=dlq)
    return Rig(c, kafka, dlq)


def records_of(*items: AnalysisMessage | tuple[bytes | None, bytes | None]) -> list[FakeRecord]:
    out = []
    for i, item in enumerate(items):
        key, value = item if isinstance(item, tuple) else (item.kafka_key(), item.to_bytes())
        out.append(FakeRecord(i, key, value))
    return out


@pytest.fixture(scope="module")
def few(short_msg: AnalysisMessage) -> list[AnalysisMessage]:
    return [moved(short_msg, series=ref("few", i=str(i))) for i in range(4)]


def test_a_record_too_large_for_the_dlq_goes_there_once_without_its_value(
    few: list[AnalysisMessage],
) -> None:
    huge = b'{"pad": "' + b"x" * (5 * MIB) + b'"}'
    key = few[0].kafka_key()
    r = rig(records_of(few[0], few[1], (key, huge), few[2], few[3]))
    r.consumer.run()

    assert r.writer.stored == few
    assert r.kafka.commits == [{TP: 5}]
    assert r.dlq.attempts == 2  # whole (refused by the producer's own check), then without value
    ((k, v, h),) = r.letters()
    assert (k, v) == (key, None)
    assert h["dlq.reason"] == b"too_large"
    assert h["dlq.source.offset"] == b"2" and h["dlq.source.partition"] == b"0"
    assert h["dlq.source.size"] == str(len(huge)).encode()
    assert h["dlq.source.sha256"] == hashlib.sha256(huge).hexdigest().encode()
    assert h["dlq.value.omitted"].startswith(b"MessageSizeTooLargeError")
    assert r.sample("sla_storage_dlq_messages_total", reason="too_large") == 1
    assert r.kafka.closed and r.dlq.closed and r.writer.closed


def test_a_letter_without_value_drops_a_large_key_and_large_headers_too() -> None:
    why = Rejected("too_large", "big")
    small_headers = [("trace", b"t-1")]
    r = FakeRecord(7, b"k" * 20_000, b"v" * 100, headers=[("h", b"x" * 20_000)])
    key, value, h = dict_letter(letter_without_value(r, why, "g", "refused"))
    assert (key, value) == (None, b"")  # a record needs a key or a value
    assert h["dlq.source.key.size"] == b"20000"
    assert h["dlq.source.key.sha256"] == hashlib.sha256(r.key or b"").hexdigest().encode()
    assert h["dlq.source.headers.dropped"] == b"1" and "h" not in h
    assert h["dlq.source.size"] == b"100" and h["dlq.value.omitted"] == b"refused"
    kept = FakeRecord(8, b"key", b"v", headers=small_headers)
    key, value, h = dict_letter(letter_without_value(kept, why, "g", "refused"))
    assert (key, value, h["trace"], h["dlq.consumer.group"]) == (b"key", None, b"t-1", b"g")
    assert whole_letter(kept, why, "g")[:2] == (b"key", b"v")


def dict_letter(
    letter: tuple[bytes | None, bytes | None, list[tuple[str, bytes]]],
) -> tuple[bytes | None, bytes | None, dict[str, bytes]]:
    return letter[0], letter[1], dict(letter[2])


def test_a_dead_letter_the_broker_refuses_as_too_large_is_sent_without_value_not_retried(
    few: list[AnalysisMessage],
) -> None:
    r = rig(records_of(few[0], (b"k", b"not json"), few[1]))
    r.dlq.broker = lambda k, v: MessageSizeTooLargeError("broker limit") if v else None
    r.consumer.run()

    assert r.dlq.attempts == 2
    ((k, v, h),) = r.letters()
    assert (k, v, h["dlq.reason"]) == (b"k", None, b"invalid_json")
    assert b"broker limit" in h["dlq.value.omitted"]
    assert r.kafka.commits == [{TP: 3}] and r.writer.stored == few[:2]
    assert r.sample("sla_storage_kafka_errors_total", operation="dlq") == 0  # nothing retried


def test_a_record_not_even_its_valueless_letter_fits_is_logged_counted_and_passed(
    few: list[AnalysisMessage], caplog: pytest.LogCaptureFixture
) -> None:
    r = rig(records_of(few[0], (b"k", b"{"), few[1]))
    r.dlq.broker = lambda k, v: InvalidRecordError("no")
    r.consumer.run()

    assert r.dlq.attempts == 2 and r.letters() == []
    assert r.sample("sla_storage_dlq_undeliverable_total") == 1
    assert r.kafka.commits == [{TP: 3}] and r.writer.stored == few[:2]
    assert "cannot be dead-lettered even without its value" in caplog.text
    assert hashlib.sha256(b"{").hexdigest() in caplog.text


def test_dead_letters_acknowledged_before_a_failure_are_not_sent_again(
    few: list[AnalysisMessage],
) -> None:
    bad = [(b"a", b"{1"), (b"b", b"{2"), (b"c", b"{3")]
    r = rig(records_of(few[0], *bad))
    calls = iter([None, KafkaTimeoutError("broker gone"), None])  # then all acknowledged
    r.dlq.broker = lambda k, v: next(calls, None)
    r.consumer.run()

    assert [k for k, _, _ in r.letters()] == [b"a", b"c", b"b"]  # b once more, a and c not
    assert r.dlq.attempts == 4
    assert r.sample("sla_storage_kafka_errors_total", operation="dlq") == 1
    assert r.sample("sla_storage_dlq_messages_total", reason="invalid_json") == 3
    assert r.kafka.commits == [{TP: 4}]


def test_a_dead_letter_still_in_flight_is_waited_for_not_sent_twice() -> None:
    r = rig(records_of((b"a", b"{")))
    r.dlq.pending = 2  # not acknowledged within the first flush
    r.consumer.run()

    assert r.dlq.attempts == 1 and len(r.letters()) == 1
    assert r.sample("sla_storage_kafka_errors_total", operation="dlq") == 1
    assert r.kafka.commits == [{TP: 1}]


def test_the_dlq_down_until_stop_leaves_the_batch_uncommitted(few: list[AnalysisMessage]) -> None:
    r = rig(records_of(few[0], (b"a", b"{")))
    r.dlq.sync_errors = [KafkaTimeoutError("no metadata")] * 100
    r.dlq.on_send = lambda n: r.consumer.stop.set() if n == 3 else None
    r.consumer.run()

    assert r.dlq.attempts == 3 and r.letters() == []
    assert r.kafka.commits == []  # the batch is consumed again after the restart
    assert r.writer.stored == [few[0]]  # written (idempotent), not committed
    assert r.kafka.closed and r.dlq.closed and r.writer.closed


def test_a_write_failure_rolls_back_commits_nothing_and_retries_the_same_batch(
    few: list[AnalysisMessage],
) -> None:
    conns: list[FakeConnection] = []
    lost = pymysql.err.OperationalError(2013, "Lost connection to MySQL server")
    failures: list[BaseException] = [lost, lost]

    def connect() -> Connection:
        conns.append(FakeConnection(r.kafka, failures))
        return conns[-1]  # type: ignore[return-value]

    r = rig(records_of(*few), writer=lambda s: Writer(s, connect_fn=connect))
    r.consumer.run()

    assert [c.log for c in conns] == [
        ["begin", "commit failed", "rollback", "close"],
        ["begin", "commit failed", "rollback", "close"],
        ["begin", "commit", "close"],
    ]
    assert [c.commits_seen for c in conns] == [0, 0, 0]  # no offset commit while failing
    same_batch = sorted(series_key_hash(m.series.key) for m in few)
    assert conns[0].keys == conns[1].keys == conns[2].keys == same_batch
    assert r.kafka.commits == [{TP: 4}]
    assert r.sample("sla_storage_write_errors_total", kind="transient") == 2
    assert r.letters() == []


class FakeConnection:
    """Enough of a PyMySQL connection for Writer.write; its commits raise ``failures``."""

    def __init__(self, kafka: FakeConsumer, failures: list[BaseException]) -> None:
        self.kafka, self.failures = kafka, failures
        self.log: list[str] = []
        self.keys: list[bytes] = []
        self.commits_seen = -1  # offset commits made when this transaction ended
        self._rows: list[tuple[bytes, int]] = []

    def begin(self) -> None:
        self.log.append("begin")

    def cursor(self) -> FakeConnection:
        return self

    def __enter__(self) -> FakeConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def mogrify(self, query: str, args: tuple[object, ...]) -> str:
        return repr(args[0])

    def execute(self, sql: str, args: Sequence[Any] | None = None) -> int:
        if sql.startswith("SELECT key_hash") and args:  # the series of the batch
            self.keys += args
            self._rows = [(h, i + 1) for i, h in enumerate(args)]
        return 1

    def fetchall(self) -> list[tuple[bytes, int]]:
        return self._rows

    def commit(self) -> None:
        self.commits_seen = len(self.kafka.commits)
        if self.failures:
            self.log.append("commit failed")
            raise self.failures.pop(0)
        self.log.append("commit")

    def rollback(self) -> None:
        self.log.append("rollback")

    def close(self) -> None:
        self.log.append("close")


def test_a_message_mysql_refuses_is_isolated_and_dead_lettered_alone(
    few: list[AnalysisMessage],
) -> None:
    r = rig(records_of(*few))
    too_long = pymysql.err.DataError(1406, "Data too long for column 'reason'")
    r.writer.refuse = lambda m: too_long if m == few[2] else None
    r.consumer.run()

    assert r.writer.stored == [few[0], few[1], few[3]]
    ((k, v, h),) = r.letters()
    assert (k, v, h["dlq.reason"]) == (few[2].kafka_key(), few[2].to_bytes(), b"db_rejected")
    assert r.kafka.commits == [{TP: 4}]


def test_an_unexpected_error_on_one_message_dead_letters_that_one_only(
    few: list[AnalysisMessage],
) -> None:
    r = rig(records_of(*few))
    r.writer.refuse = lambda m: ZeroDivisionError("a bug") if m == few[1] else None
    r.consumer.run()

    assert r.writer.stored == [few[0], few[2], few[3]]
    assert [h["dlq.reason"] for _, _, h in r.letters()] == [b"db_rejected"]
    assert r.kafka.commits == [{TP: 4}]


def test_an_unexpected_error_for_every_message_dead_letters_nothing_and_commits_nothing(
    few: list[AnalysisMessage],
) -> None:
    # The catch-all must not turn a broken writer into "every message to the DLQ, committed".
    r = rig(records_of(*few))
    r.writer.refuse = lambda m: TypeError("a bug in the writer")
    r.writer.during = lambda n: r.consumer.stop.set() if n > 10 else None
    r.consumer.run()

    assert r.writer.writes > 10  # retried, batch after batch of tries
    assert r.letters() == [] and r.dlq.attempts == 0
    assert r.kafka.commits == []
    assert r.sample("sla_storage_write_errors_total", kind="unexpected") >= 2
    assert r.kafka.closed and r.dlq.closed and r.writer.closed


def test_an_unexpected_error_at_the_end_of_a_batch_neither_dead_letters_nor_commits(
    few: list[AnalysisMessage],
) -> None:
    r = rig(records_of(few[0], (b"k", b"{"), few[1]))
    r.kafka.commit_errors = [RuntimeError("a bug in the commit")]
    with pytest.raises(RuntimeError, match="a bug in the commit"):
        r.consumer.run()

    assert [h["dlq.reason"] for _, _, h in r.letters()] == [b"invalid_json"]  # the bad one only
    assert r.kafka.commits == []  # redelivered after the restart, upserted again
    assert r.sample("sla_storage_messages_stored_total") == 0
    assert r.kafka.closed and r.dlq.closed and r.writer.closed


def test_a_commit_lost_to_a_rebalance_is_not_retried_and_the_loop_goes_on(
    few: list[AnalysisMessage],
) -> None:
    r = rig(records_of(*few), storage_batch_max_messages=2)
    r.kafka.commit_errors = [CommitFailedError()]
    r.consumer.run()

    assert r.kafka.commits == [{TP: 4}]  # the first batch's commit lost, the second's made
    assert r.writer.stored == few


def test_stop_during_a_write_finishes_the_batch_commits_and_closes(
    few: list[AnalysisMessage],
) -> None:
    r = rig(records_of(*few), storage_batch_max_messages=2)
    r.writer.during = lambda n: r.consumer.stop.set()  # SIGTERM while the first batch writes
    r.consumer.run()

    assert r.writer.stored == few[:2]
    assert r.kafka.commits == [{TP: 2}]
    assert r.kafka.records == records_of(*few)[2:]  # never fetched: the next owner's
    assert r.kafka.closed and r.dlq.closed and r.writer.closed


def test_stop_while_mysql_is_down_leaves_the_batch_uncommitted_and_closes(
    few: list[AnalysisMessage],
) -> None:
    r = rig(records_of(*few))
    gone = pymysql.err.OperationalError(2003, "Can't connect to MySQL server")
    r.writer.fail = [gone] * 100
    r.writer.during = lambda n: r.consumer.stop.set() if n == 3 else None
    r.consumer.run()

    assert r.writer.writes == 3 and r.writer.stored == []
    assert r.kafka.commits == [] and r.letters() == []
    assert r.sample("sla_storage_mysql_up") == 0
    assert r.kafka.closed and r.dlq.closed and r.writer.closed


# --------------------------------------------------------------------------- re-created topic
# kafka-python 3.0 runs the group protocol on its IO thread: the assignment can change between
# the loop's assignment() and its seek/pause. These fakes make that happen on purpose.


@dataclass
class FakeWatch:
    """A TopicWatch that reports one re-creation at its first take()."""

    changes: list[tuple[str, str]] = field(default_factory=lambda: [("old-id", "new-id")])

    def take(self) -> tuple[str, str] | None:
        return self.changes.pop(0) if self.changes else None


@dataclass
class Rebalancing(FakeConsumer):
    """``assigned`` answers assignment(), call after call (the last one stays); the first
    ``lost_seeks`` rewinds find their partitions gone (kafka-python's ValueError), and
    ``lost_pauses`` keep-alive pauses too (its KeyError)."""

    assigned: list[set[TopicPartition]] = field(default_factory=lambda: [{TP}])
    lost_seeks: int = 0
    lost_pauses: int = 0
    rewound: list[tuple[TopicPartition, ...]] = field(default_factory=list)

    def assignment(self) -> set[TopicPartition]:
        return self.assigned.pop(0) if len(self.assigned) > 1 else self.assigned[0]

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        if self.lost_seeks:
            self.lost_seeks -= 1
            raise ValueError(f"Unassigned partition: {tps[0]}")
        self.rewound.append(tps)

    def pause(self, *tps: TopicPartition) -> None:
        if self.lost_pauses:
            self.lost_pauses -= 1
            raise KeyError(tps[0])
        super().pause(*tps)


def rebalancing(records: list[FakeRecord], **kw: Any) -> Rig:
    r = rig([])
    kafka = Rebalancing(records, r.consumer.stop, **kw)
    r.consumer.consumer = r.kafka = kafka
    r.consumer._watch = FakeWatch()  # type: ignore[assignment]
    return r


def test_a_rewind_whose_partitions_a_rebalance_took_meanwhile_is_done_on_the_next_try(
    few: list[AnalysisMessage],
) -> None:
    r = rebalancing(records_of(*few), lost_seeks=1)
    r.consumer.run()  # the ValueError of the lost seek does not end the loop

    assert isinstance(r.kafka, Rebalancing)
    assert r.kafka.rewound == [(TP,)]  # retried, once it succeeded never again
    assert r.writer.stored == few
    assert r.sample("sla_storage_topic_recreations_total") == 1
    assert r.kafka.closed


def test_a_rewind_while_no_partition_is_assigned_waits_for_the_assignment(
    few: list[AnalysisMessage],
) -> None:
    # A rejoin keeps the positions of partitions assigned again: the re-creation noticed
    # mid-rebalance must still rewind them once they are back.
    r = rebalancing(records_of(*few), assigned=[set(), set(), {TP}])
    r.consumer.run()

    assert isinstance(r.kafka, Rebalancing)
    assert r.kafka.rewound == [(TP,)]
    assert r.writer.stored == few


def test_a_keepalive_whose_partitions_a_rebalance_took_does_not_end_the_loop(
    few: list[AnalysisMessage],
) -> None:
    r = rebalancing(records_of(*few), lost_pauses=1)
    r.consumer._watch = None
    r.writer.fail = [pymysql.err.OperationalError(2003, "Can't connect to MySQL server")]
    r.consumer.run()  # MySQL down once: the wait keeps the membership alive with pauses

    assert isinstance(r.kafka, Rebalancing)
    assert r.kafka.lost_pauses == 0  # it raised
    assert r.writer.stored == few
    assert r.kafka.commits == [{TP: 4}]


@dataclass
class LosingMembership(FakeConsumer):
    """Loses its group membership right after its first fetch, like kafka-python after a
    heartbeat the restarted broker no longer knows: the IO thread calls the listener's
    ``on_partitions_lost`` while the loop holds the fetched records. Nothing was committed,
    so the rejoined member (this one) is handed the same records again, on a later poll."""

    listener: Any = None  # the consumer's rebalance listener
    polls: int = 0
    polls_after_loss: int = 0
    lost: bool = False

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        self.polls += 1
        if self.lost:
            self.polls_after_loss += 1
            return super().poll(timeout_ms, max_records)
        fetched = super().poll(timeout_ms, max_records)
        if fetched:
            self.lost = True
            self.listener.on_partitions_lost([TP])
            self.records = [r for rs in fetched.values() for r in rs] + self.records
        return fetched


def test_a_batch_emptied_by_a_lost_membership_does_not_stop_the_polls(
    few: list[AnalysisMessage],
) -> None:
    # The flaky broker-restart tests (test_storage, test_e2e): records fetched just before
    # the group was lost were all dropped from the batch, which kept its start time; the
    # empty batch then looked due before every poll, so fill_batch returned without polling,
    # the consumer never rejoined and stored nothing more, spinning until stopped.
    r = rig([])
    kafka = LosingMembership(records_of(*few), r.consumer.stop)
    kafka.listener = r.consumer._revocations
    r.consumer.consumer = r.kafka = kafka
    loop = threading.Thread(target=r.consumer.run, daemon=True)
    loop.start()
    loop.join(timeout=10)  # returns as soon as the records run out (the fake's stop)
    hung = loop.is_alive()
    r.consumer.stop.set()
    loop.join(timeout=10)

    assert not hung, f"no poll after the loss ({kafka.polls_after_loss}); nothing re-read"
    assert kafka.lost and kafka.polls_after_loss >= 1
    assert r.writer.stored == few  # the dropped records were written once, after the rejoin
    assert r.kafka.commits == [{TP: 4}]


@dataclass
class FakeAdmin:
    """describe_topics answers from ``answers`` in turn (an exception is raised); the last stays."""

    answers: list[Any]
    closed: bool = False

    def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return [{"error_code": 0, "topic_id": answer, "name": topics[0]}]

    def close(self) -> None:
        self.closed = True


def test_the_topic_watch_measures_from_its_first_look_and_survives_a_client_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admins = [FakeAdmin(["old-id"])]  # first_look's own client
    # The loop's first client dies of a non-Kafka error (kafka-python 3.0's "NetworkSelector
    # closed!"); the broker restarted meanwhile, and the next client sees the new topic.
    admins += [FakeAdmin([RuntimeError("NetworkSelector closed!")]), FakeAdmin(["new-id"])]
    monkeypatch.setattr(kafka_helpers, "make_admin", lambda *a: admins.pop(0))
    stop = threading.Event()
    watch = kafka_helpers.TopicWatch("b:9092", "t", 0.001, 1000, stop)

    assert watch.first_look() == "old-id"
    watch.start()
    try:
        deadline = time.monotonic() + 30
        while watch.current_id() != "new-id" and time.monotonic() < deadline:
            stop.wait(0.01)
        assert watch.take() == ("old-id", "new-id")
    finally:
        stop.set()


def test_a_first_look_at_a_missing_topic_is_an_error_to_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = FakeAdmin([None])
    monkeypatch.setattr(kafka_helpers, "make_admin", lambda *a: admin)
    watch = kafka_helpers.TopicWatch("b:9092", "t", 1.0, 1000, threading.Event())
    with pytest.raises(UnknownTopicOrPartitionError):
        watch.first_look()
    assert admin.closed and watch.current_id() is None
