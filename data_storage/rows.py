"""Pure: the tables data_storage writes, their upsert SQL, and messages turned into rows.

Table and column names live here, in code; SQL built from them takes every value as a
``%s`` parameter. See ``db/migrations/0001_initial.sql`` for what each table means.

Idempotence and order: every upsert is ``INSERT ... ON DUPLICATE KEY UPDATE`` on the
table's natural key, and where a table has a *version* column (the analysis window's end,
or the time the message was produced) an existing row is only overwritten by a row whose
version is greater or equal. Redelivering a message rewrites the same values; delivering an
old message after a newer one changes nothing. The stored state is therefore the same
whatever the order and number of deliveries: exactly once in effect.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sla_common.messages import AnalysisMessage
from sla_common.mysql import series_key_hash
from sla_common.schema import (
    AGGREGATE_VALUE_COLUMNS,
    FORECAST_DISTRIBUTION_COLUMNS,
    FORECAST_POINT_DISTRIBUTION_COLUMNS,
    FORECAST_SUMMARY_COLUMNS,
)

Row = tuple[Any, ...]

INT_MAX = 2**31 - 1
TEXT_BYTES = 65_535


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]
    # Newer-or-equal wins on conflict; None: the last write wins.
    version: str | None
    # Purged when this column is older than the retention cut-off.
    time_column: str
    # Columns merged with LEAST(existing, new) instead of being replaced.
    least: tuple[str, ...] = ()

    def insert_head(self) -> str:
        return f"INSERT INTO {self.name} ({', '.join(self.columns)}) VALUES "  # noqa: S608

    def upsert_sql(self) -> str:
        """The single-row statement, with ``%s`` parameters."""
        marks = ", ".join(["%s"] * len(self.columns))
        return f"{self.insert_head()}({marks}){self.upsert_tail()}"

    def upsert_tail(self) -> str:
        v = self.version
        updates = []
        for c in self.columns:
            if c in self.key or c == v:
                continue
            if c in self.least:
                updates.append(f"{c} = LEAST({c}, VALUES({c}))")
            elif v is None:
                updates.append(f"{c} = VALUES({c})")
            else:
                updates.append(f"{c} = IF(VALUES({v}) >= {v}, VALUES({c}), {c})")
        if v is not None:
            # Last: MySQL evaluates the assignments left to right, and the IF()s above must
            # compare with the version the row had before this statement.
            updates.append(f"{v} = GREATEST({v}, VALUES({v}))")
        # VALUES() in ON DUPLICATE KEY UPDATE: the form both MariaDB and MySQL 8 accept.
        return f" ON DUPLICATE KEY UPDATE {', '.join(updates)}"


SERIES = Table(
    "series",
    (
        "key_hash",
        "series_key",
        "metric",
        "labels",
        "selector",
        "transform",
        "first_seen",
        "last_seen",
    ),
    key=("key_hash",),
    version="last_seen",
    time_column="last_seen",
    least=("first_seen",),
)
RUNS = Table(
    "runs",
    (
        "run_id",
        "window_start",
        "window_end",
        "step_s",
        "first_produced_at",
        "last_produced_at",
    ),
    key=("run_id",),
    version="last_produced_at",
    time_column="window_end",
    least=("first_produced_at",),
)
ANALYSES = Table(
    "analyses",
    (
        "series_id",
        "window_end",
        "window_start",
        "step_s",
        "run_id",
        "schema_version",
        "samples",
        "interpolated",
        "grid_start",
        "grid_step_s",
        "grid_count",
        "hp_lambda",
        "acf_conf_bound",
        "decomposition_period",
        "seasonal_strength",
        "skipped_count",
        "durations_ms",
        "produced_at",
    ),
    key=("series_id", "window_end"),
    version="produced_at",
    time_column="window_end",
)
ADF = Table(
    "adf",
    (
        "series_id",
        "window_end",
        "statistic",
        "pvalue",
        "used_lag",
        "nobs",
        "crit_1pct",
        "crit_5pct",
        "crit_10pct",
        "stationary",
        "autolag",
        "run_id",
        "produced_at",
    ),
    key=("series_id", "window_end"),
    version="produced_at",
    time_column="window_end",
)
HP_POINTS = Table(
    "hp_points",
    ("series_id", "ts", "trend", "cycle", "window_end"),
    key=("series_id", "ts"),
    version="window_end",
    time_column="ts",
)
ACF = Table(
    "acf",
    ("series_id", "lag_k", "value", "window_end"),
    key=("series_id", "lag_k"),
    version="window_end",
    time_column="window_end",
)
DECOMPOSITION_POINTS = Table(
    "decomposition_points",
    ("series_id", "ts", "trend", "seasonal", "resid", "window_end"),
    key=("series_id", "ts"),
    version="window_end",
    time_column="ts",
)
AGGREGATES = Table(
    "aggregates",
    ("series_id", "window_name", "window_end", *AGGREGATE_VALUE_COLUMNS),
    key=("series_id", "window_name", "window_end"),
    version="produced_at",
    time_column="window_end",
)
FORECAST_POINTS = Table(
    "forecast_points",
    (
        "series_id",
        "ts",
        "value",
        "lower80",
        "upper80",
        "lower95",
        "upper95",
        "produced_at",
        "run_id",
        "window_end",
        *FORECAST_POINT_DISTRIBUTION_COLUMNS,
    ),
    key=("series_id", "ts"),
    version="window_end",
    time_column="ts",
)
FORECAST_SUMMARY = Table(
    "forecast_summary",
    (*FORECAST_SUMMARY_COLUMNS, *FORECAST_DISTRIBUTION_COLUMNS),
    key=("series_id", "window_end", "horizon_s"),
    version="produced_at",
    time_column="window_end",
)
SKIPPED = Table(
    "skipped_analyses",
    ("series_id", "window_end", "analysis", "reason", "detail", "run_id", "produced_at"),
    key=("series_id", "window_end", "analysis"),
    version="produced_at",
    time_column="window_end",
)

# Write order: series first (the others need its ids), then the rest.
TABLES: tuple[Table, ...] = (
    SERIES,
    RUNS,
    ANALYSES,
    ADF,
    HP_POINTS,
    ACF,
    DECOMPOSITION_POINTS,
    AGGREGATES,
    FORECAST_POINTS,
    FORECAST_SUMMARY,
    SKIPPED,
)
CHILD_TABLES: tuple[Table, ...] = TABLES[2:]

# Column limits of the schema that the message model does not already guarantee.
_MAX_CHARS = {
    "adf.autolag": 16,
    "aggregates.window": 16,
    "forecast.model": 128,
    "skipped.analysis": 64,
    "skipped.reason": 255,
}


def _compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def unstorable_reason(msg: AnalysisMessage) -> str | None:
    """Why a valid message would not fit the schema's columns, or None when it fits.

    Checked before writing so that such a message is dead-lettered with a clear reason
    instead of failing its whole batch in MySQL.
    """
    problems: list[str] = []

    def chars(what: str, value: str | None) -> None:
        if value is not None and len(value) > _MAX_CHARS[what]:
            problems.append(f"{what} longer than {_MAX_CHARS[what]} characters")

    def text(what: str, value: str) -> None:
        if len(value.encode()) > TEXT_BYTES:
            problems.append(f"{what} longer than {TEXT_BYTES} bytes")

    def integer(what: str, value: int | None) -> None:
        if value is not None and value > INT_MAX:
            problems.append(f"{what}={value} does not fit a 32-bit INT")

    text("series.key", msg.series.key)
    text("series.selector", msg.series.selector)
    integer("window.step_s", msg.window.step_s)
    integer("window.samples", msg.window.samples)
    integer("window.interpolated", msg.window.interpolated)
    integer("grid.step_s", msg.grid.step_s)
    if msg.adf is not None:
        chars("adf.autolag", msg.adf.autolag)
        integer("adf.used_lag", msg.adf.used_lag)
        integer("adf.nobs", msg.adf.nobs)
    if msg.decomposition is not None:
        integer("decomposition.period", msg.decomposition.period)
    for agg in msg.aggregates:
        chars("aggregates.window", agg.window)
        integer("aggregates.count", agg.count)
    if msg.forecast is not None:
        f = msg.forecast
        chars("forecast.model", f.model)
        integer("forecast.horizon_s", f.horizon_s)
        integer("forecast.step_s", f.step_s)
        integer("forecast.history_points", f.history_points)
    for sk in msg.skipped:
        chars("skipped.analysis", sk.analysis)
        chars("skipped.reason", sk.reason)
        text("skipped.detail", sk.detail)
    return "; ".join(dict.fromkeys(problems)) or None


def row_count(msg: AnalysisMessage) -> int:
    """Rows one message becomes, over every table (for batch sizing and throughput)."""
    n = 3  # series, runs, analyses
    n += msg.adf is not None
    n += len(msg.hp.trend) if msg.hp is not None else 0
    n += len(msg.acf.values) if msg.acf is not None else 0
    n += len(msg.decomposition.trend) if msg.decomposition is not None else 0
    n += len(msg.aggregates)
    if msg.forecast is not None:
        n += len(msg.forecast.points) + 1
    n += len(msg.skipped)
    return n


def latest_per_window(msgs: Iterable[AnalysisMessage]) -> list[AnalysisMessage]:
    """One message per (series, window end): the most recently produced (later wins ties).

    Two messages of one batch for the same window carry the same analysis (a redelivery or
    a re-run); writing only the newest keeps the batch's statements free of self-conflicts.
    """
    best: dict[tuple[str, int], AnalysisMessage] = {}
    for msg in msgs:
        k = (msg.series.key, msg.window.end)
        old = best.get(k)
        if old is None or msg.produced_at >= old.produced_at:
            best[k] = msg
    return list(best.values())


def series_rows(msgs: Sequence[AnalysisMessage]) -> list[Row]:
    out = []
    for m in msgs:
        s = m.series
        out.append(
            (
                series_key_hash(s.key),
                s.key,
                s.metric,
                _compact_json(s.labels),
                s.selector,
                s.transform,
                m.window.end,
                m.window.end,
            )
        )
    return out


def run_rows(msgs: Sequence[AnalysisMessage]) -> list[Row]:
    return [
        (
            m.run_id,
            m.window.start,
            m.window.end,
            m.window.step_s,
            m.produced_at,
            m.produced_at,
        )
        for m in msgs
    ]


def child_rows(
    msgs: Sequence[AnalysisMessage], series_ids: Mapping[str, int]
) -> dict[str, list[Row]]:
    """Rows of every table below ``series`` and ``runs``, keyed by table name."""
    out: dict[str, list[Row]] = {t.name: [] for t in CHILD_TABLES}
    for m in msgs:
        sid = series_ids[m.series.key]
        we = m.window.end
        run, produced = m.run_id, m.produced_at
        out[ANALYSES.name].append(
            (
                sid,
                we,
                m.window.start,
                m.window.step_s,
                run,
                m.schema_version,
                m.window.samples,
                m.window.interpolated,
                m.grid.start,
                m.grid.step_s,
                m.grid.count,
                m.hp.lamb if m.hp is not None else None,
                m.acf.conf_bound if m.acf is not None else None,
                m.decomposition.period if m.decomposition is not None else None,
                m.decomposition.seasonal_strength if m.decomposition is not None else None,
                len(m.skipped),
                _compact_json(m.durations_ms),
                produced,
            )
        )
        if m.adf is not None:
            a = m.adf
            cv = a.critical_values
            out[ADF.name].append(
                (
                    sid,
                    we,
                    a.statistic,
                    a.pvalue,
                    a.used_lag,
                    a.nobs,
                    cv.pct1,
                    cv.pct5,
                    cv.pct10,
                    a.stationary,
                    a.autolag,
                    run,
                    produced,
                )
            )
        start, step = m.grid.start, m.grid.step_s
        if m.hp is not None:
            out[HP_POINTS.name].extend(
                (sid, start + i * step, t, c, we)
                for i, (t, c) in enumerate(zip(m.hp.trend, m.hp.cycle, strict=True))
            )
        if m.acf is not None:
            out[ACF.name].extend((sid, k, v, we) for k, v in enumerate(m.acf.values))
        if m.decomposition is not None:
            d = m.decomposition
            out[DECOMPOSITION_POINTS.name].extend(
                (sid, start + i * step, t, s, r, we)
                for i, (t, s, r) in enumerate(zip(d.trend, d.seasonal, d.resid, strict=True))
            )
        out[AGGREGATES.name].extend(
            (
                sid,
                g.window,
                g.end,
                g.start,
                g.count,
                g.max,
                g.min,
                g.mean,
                g.std,
                run,
                produced,
            )
            for g in m.aggregates
        )
        if m.forecast is not None:
            f = m.forecast
            out[FORECAST_POINTS.name].extend(
                (
                    *(sid, p.ts, p.value, p.lower80, p.upper80, p.lower95, p.upper95),
                    *(produced, run, we, p.loc, p.scale),
                )
                for p in f.points
            )
            out[FORECAST_SUMMARY.name].append(
                (
                    sid,
                    we,
                    f.horizon_s,
                    f.model,
                    f.step_s,
                    f.history_points,
                    min(p.ts for p in f.points),
                    max(p.ts for p in f.points),
                    len(f.points),
                    f.max,
                    f.min,
                    f.mean,
                    run,
                    produced,
                    f.distribution,
                    f.df,
                    f.floor,
                )
            )
        out[SKIPPED.name].extend(
            (sid, we, s.analysis, s.reason, s.detail, run, produced) for s in m.skipped
        )
    return out


def or_of_conditions(condition: str, n: int) -> str:
    """``(cond) OR (cond) ...`` n times: a WHERE clause for n parameter tuples."""
    return " OR ".join([f"({condition})"] * n)


# Stale rows a newer window leaves behind, deleted in the same transaction as the upserts:
# ACF lags beyond the new nlags, and skip records of a window re-analysed without them.
ACF_STALE = ("series_id = %s AND lag_k >= %s AND window_end <= %s", ACF.name)
SKIPPED_STALE = ("series_id = %s AND window_end = %s AND produced_at <= %s", SKIPPED.name)


def stale_acf_args(msgs: Sequence[AnalysisMessage], series_ids: Mapping[str, int]) -> list[Row]:
    return [
        (series_ids[m.series.key], len(m.acf.values), m.window.end)
        for m in msgs
        if m.acf is not None
    ]


def stale_skipped_args(msgs: Sequence[AnalysisMessage], series_ids: Mapping[str, int]) -> list[Row]:
    return [(series_ids[m.series.key], m.window.end, m.produced_at) for m in msgs]
