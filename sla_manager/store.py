"""MySQL access of the SLA manager: the ``slis`` table, and the stored forecasts it reads.

Every statement is parameterised; table and column names are constants of this module.
Connections come from a :class:`ConnectionPool` in autocommit mode: each statement is its
own transaction (SLI writes are single statements), so nothing holds locks between requests.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pymysql
from pymysql.constants import ER

from sla_common.mysql import errno_of, fetch_all, series_key_hash
from sla_common.mysql_pool import ConnectionPool
from sla_manager import evaluation as ev
from sla_manager.evaluation import FloatArray
from sla_manager.models import Sli, SliSpec

log = logging.getLogger(__name__)

SLI_COLUMNS = (
    "name, selector, min_value, max_value, description, labels, missing_data_is_violation, "
    "breach_probability_threshold, created_at, updated_at"
)
UPDATE_SLI = (
    "UPDATE slis SET selector = %s, min_value = %s, max_value = %s, description = %s, "
    "labels = %s, missing_data_is_violation = %s, breach_probability_threshold = %s, "
    "updated_at = %s WHERE name = %s"
)
# Parameters per IN (...) list: far below any packet or placeholder limit.
IN_CHUNK = 500

IntArray = npt.NDArray[np.int64]


class DuplicateSli(Exception):
    pass


def _record(row: Sequence[Any]) -> Sli:
    name, selector, lo, hi, description, labels, missing_is_violation, threshold = row[:8]
    created, updated = row[8:]
    parsed = json.loads(labels) if isinstance(labels, str | bytes) else labels
    return Sli(
        name=str(name),
        selector=str(selector),
        min=None if lo is None else float(lo),
        max=None if hi is None else float(hi),
        description=str(description),
        labels={str(k): str(v) for k, v in (parsed or {}).items()},
        missing_data_is_violation=bool(missing_is_violation),
        breach_probability_threshold=float(threshold),
        created_at=int(created),
        updated_at=int(updated),
    )


def _definition(spec: SliSpec) -> tuple[Any, ...]:
    """The values of the definition columns: selector, min_value, max_value, description,
    labels, missing_data_is_violation, breach_probability_threshold (in that order, as in
    SLI_COLUMNS)."""
    labels = json.dumps(spec.labels, sort_keys=True, ensure_ascii=False)
    return (
        spec.selector,
        spec.min,
        spec.max,
        spec.description,
        labels,
        spec.missing_data_is_violation,
        spec.breach_probability_threshold,
    )


class SliStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def list(self, limit: int, after: str | None = None) -> list[Sli]:
        with self.pool.connection() as conn:
            if after is None:
                rows = fetch_all(
                    conn,
                    f"SELECT {SLI_COLUMNS} FROM slis ORDER BY name LIMIT %s",  # noqa: S608
                    (limit,),
                )
            else:
                rows = fetch_all(
                    conn,
                    f"SELECT {SLI_COLUMNS} FROM slis WHERE name > %s "  # noqa: S608
                    "ORDER BY name LIMIT %s",
                    (after, limit),
                )
        return [_record(r) for r in rows]

    def get(self, name: str) -> Sli | None:
        with self.pool.connection() as conn:
            rows = fetch_all(
                conn,
                f"SELECT {SLI_COLUMNS} FROM slis WHERE name = %s",  # noqa: S608
                (name,),
            )
        return _record(rows[0]) if rows else None

    def create(self, name: str, spec: SliSpec, now: int) -> Sli:
        try:
            with self.pool.connection() as conn, conn.cursor() as cur:
                cur.execute(
                    f"INSERT INTO slis ({SLI_COLUMNS}) "  # noqa: S608
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (name, *_definition(spec), now, now),
                )
        except pymysql.err.IntegrityError as e:
            if errno_of(e) == ER.DUP_ENTRY:
                raise DuplicateSli(name) from e
            raise
        definition = spec.model_dump(include=set(SliSpec.model_fields))  # not a body's name
        return Sli(name=name, **definition, created_at=now, updated_at=now)

    def update(self, name: str, spec: SliSpec, now: int) -> Sli | None:
        """Replace the SLI's definition; None if there is no SLI of that name."""
        with self.pool.connection() as conn:
            with conn.cursor() as cur:
                cur.execute(UPDATE_SLI, (*_definition(spec), now, name))
            # MySQL counts only rows it changed, so 0 may mean "same values": look it up.
            rows = fetch_all(
                conn,
                f"SELECT {SLI_COLUMNS} FROM slis WHERE name = %s",  # noqa: S608
                (name,),
            )
        return _record(rows[0]) if rows else None

    def change(self, name: str, change: Callable[[Sli], SliSpec], now: int) -> Sli | None:
        """Replace the SLI's definition with ``change(current)``, the row locked in between
        (concurrent changes apply one after the other: none is lost); None if there is no
        SLI of that name. Whatever ``change`` raises rolls back and propagates."""
        with self.pool.connection() as conn:
            conn.begin()
            try:
                rows = fetch_all(
                    conn,
                    f"SELECT {SLI_COLUMNS} FROM slis WHERE name = %s FOR UPDATE",  # noqa: S608
                    (name,),
                )
                if not rows:
                    conn.rollback()
                    return None
                current = _record(rows[0])
                spec = change(current)
                with conn.cursor() as cur:
                    cur.execute(UPDATE_SLI, (*_definition(spec), now, name))
                conn.commit()
            except BaseException:
                with contextlib.suppress(pymysql.err.Error):
                    conn.rollback()
                raise
        definition = spec.model_dump(include=set(SliSpec.model_fields))
        return Sli(name=name, **definition, created_at=current.created_at, updated_at=now)

    def delete(self, name: str) -> bool:
        with self.pool.connection() as conn, conn.cursor() as cur:
            return cur.execute("DELETE FROM slis WHERE name = %s", (name,)) > 0

    def ping(self) -> None:
        with self.pool.connection() as conn:
            fetch_all(conn, "SELECT 1 FROM slis LIMIT 1")


# --------------------------------------------------------------------------- forecasts


@dataclass(frozen=True)
class StoredForecast:
    """The stored forecast of one series: its freshest run and its points in a time range."""

    series_key: str
    transform: str
    selector: str  # the ETL's configured selector the series came from
    produced_at: int | None  # of the newest run (forecast_summary), None if unknown
    window_end: int | None
    model: str | None
    ts: IntArray
    value: FloatArray
    lower80: FloatArray
    upper80: FloatArray
    lower95: FloatArray
    upper95: FloatArray
    # The predictive distribution (migration 0004): loc/scale NaN where not stored, and
    # distribution None for a forecast of an ETL that did not send one.
    loc: FloatArray
    scale: FloatArray
    distribution: str | None = None
    df: float | None = None
    floor: float | None = None

    def predictive(self) -> ev.Predictive:
        """The points' distribution, or the fallback from their 95 % intervals."""
        return ev.predictive(
            self.value,
            self.lower95,
            self.upper95,
            self.loc,
            self.scale,
            self.distribution,
            self.df,
            self.floor,
        )


class ForecastStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def load(self, keys: Sequence[str], after: float, until: float) -> dict[str, StoredForecast]:
        """Forecasts of the series with these keys, points with ``after < ts <= until``.

        Series the ETL never stored are absent from the result.
        """
        if not keys:
            return {}
        with self.pool.connection() as conn:
            series: dict[int, tuple[str, str, str]] = {}
            for part in _chunks(list(dict.fromkeys(keys))):
                marks = ", ".join(["%s"] * len(part))
                rows = fetch_all(
                    conn,
                    "SELECT id, series_key, transform, selector FROM series "  # noqa: S608
                    f"WHERE key_hash IN ({marks})",
                    [series_key_hash(k) for k in part],
                )
                wanted = set(part)
                for sid, key, transform, selector in rows:
                    if str(key) in wanted:  # the hash matched; the key itself must too
                        series[int(sid)] = (str(key), str(transform), str(selector))
            if not series:
                return {}
            ids = sorted(series)
            latest: dict[int, tuple[int, int, str, Any, Any, Any]] = {}
            points: dict[int, list[tuple[Any, ...]]] = {sid: [] for sid in ids}
            for part_ids in _chunks(ids):
                marks = ", ".join(["%s"] * len(part_ids))
                # The newest run of each series: MAX(window_end) is an index lookup per series
                # on the primary key (series_id, window_end, horizon_s).
                for sid, window_end, produced_at, model, dist, df, floor in fetch_all(
                    conn,
                    "SELECT fs.series_id, fs.window_end, fs.produced_at, fs.model, "  # noqa: S608
                    "fs.distribution, fs.df, fs.value_floor "
                    "FROM forecast_summary fs JOIN (SELECT series_id, MAX(window_end) AS we "
                    f"FROM forecast_summary WHERE series_id IN ({marks}) GROUP BY series_id) m "
                    "ON fs.series_id = m.series_id AND fs.window_end = m.we",
                    part_ids,
                ):
                    prev = latest.get(int(sid))
                    if prev is None or int(produced_at) > prev[1]:
                        latest[int(sid)] = (
                            *(int(window_end), int(produced_at), str(model)),
                            *(dist, df, floor),
                        )
                for row in fetch_all(
                    conn,
                    "SELECT series_id, ts, value, lower80, upper80, lower95, upper95, "  # noqa: S608
                    "produced_at, window_end, loc, scale "
                    f"FROM forecast_points WHERE series_id IN ({marks}) "
                    "AND ts > %s AND ts <= %s ORDER BY series_id, ts",
                    [*part_ids, after, until],
                ):
                    points[int(row[0])].append(row[1:])
        out: dict[str, StoredForecast] = {}
        for sid in ids:
            key, transform, selector = series[sid]
            rows = points[sid]
            window_end, produced_at, model, dist, df, floor = latest.get(sid, (None,) * 6)
            if produced_at is None and rows:
                # No summary row (not written by data_storage): the points' own run.
                produced_at = max(int(r[6]) for r in rows)
                window_end = max(int(r[7]) for r in rows)
            if produced_at is None:
                continue  # a series without any forecast
            # Only the newest run's points: forecast_points keeps, per timestamp, the newest
            # forecast of it, so timestamps the newest run does not cover (runs whose windows
            # end at other offsets) may still hold points of older runs.
            rows = [r for r in rows if int(r[7]) == window_end]
            cols = list(zip(*rows, strict=True)) if rows else [()] * 10
            out[key] = StoredForecast(
                series_key=key,
                transform=transform,
                selector=selector,
                produced_at=produced_at,
                window_end=window_end,
                model=model,
                ts=np.array(cols[0], dtype=np.int64),
                value=np.array(cols[1], dtype=np.float64),
                lower80=np.array(cols[2], dtype=np.float64),
                upper80=np.array(cols[3], dtype=np.float64),
                lower95=np.array(cols[4], dtype=np.float64),
                upper95=np.array(cols[5], dtype=np.float64),
                loc=np.array([np.nan if v is None else v for v in cols[8]], dtype=np.float64),
                scale=np.array([np.nan if v is None else v for v in cols[9]], dtype=np.float64),
                distribution=None if dist is None else str(dist),
                df=None if df is None else float(df),
                floor=None if floor is None else float(floor),
            )
        return out


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + IN_CHUNK] for i in range(0, len(items), IN_CHUNK)]
