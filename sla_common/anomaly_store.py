"""Reading the ``anomalies`` table (data_storage writes it from the topic ``anomaly``).

Shared by sla_manager (``GET /anomalies``, an SLI's status) and data_retrieval
(``ListAnomalies``), so both filter and page the same way:

- filters: one series (its key) or a metric with equality label matchers (JSON
  containment, as for ``series``; when one series has exactly those labels, it alone is
  meant, as in data_retrieval's selectors, and its key is used: an index lookup instead of
  a scan), detectors, statuses, and a time range on the window start
  (``start <= window.start < end``);
- order: newest window first, then the higher row id; a page continues after the last
  row of the previous one (:class:`Position`, keyset paging: no OFFSET).

SQL is built from names in this module; every value is a ``%s`` parameter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sla_common.mysql import Connection, fetch_all, series_key_hash
from sla_common.series import series_key

CHUNK = 500  # series keys per IN (...) list

_COLUMNS = (
    "id, series_key, metric, labels, detector, detector_version, window_start_ms, "
    "window_end_ms, sample_count, mean, std, normal_mean, normal_std, normal_source, "
    "deviation, status, stored_at, score, normal_period_s"
)
_POSITION = re.compile(r"^(-?\d{1,16}):(\d{1,20})$")


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last row's window start (ms) and id."""

    start_ms: int
    id: int

    def token(self) -> str:
        return f"{self.start_ms}:{self.id}"

    @classmethod
    def parse(cls, token: str) -> Position:
        """ValueError when ``token`` is not one :meth:`token` made."""
        m = _POSITION.match(token)
        if m is None:
            raise ValueError("not a page position: use the `cursor` of the last item")
        return cls(int(m.group(1)), int(m.group(2)))


@dataclass(frozen=True)
class AnomalyFilter:
    series_key: str | None = None
    metric: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    detectors: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    start_ms: int | None = None  # window start at or after
    end_ms: int | None = None  # window start before


@dataclass(frozen=True)
class StoredAnomaly:
    id: int
    series_key: str
    metric: str
    labels: dict[str, str]
    detector: str
    detector_version: str
    window_start: float  # epoch seconds
    window_end: float
    count: int
    mean: float
    std: float
    normal_mean: float
    normal_std: float
    normal_source: str
    deviation: float
    status: str
    stored_at: int
    score: float | None = None  # a batch model's score in [0, 1]; None for a window
    normal_period_s: int | None = None  # which streaming normal judged; None: not said

    @property
    def position(self) -> Position:
        return Position(round(self.window_start * 1000), self.id)


def _labels(raw: str | bytes | dict[str, Any]) -> dict[str, str]:
    doc = raw if isinstance(raw, dict) else json.loads(raw)
    return {str(k): str(v) for k, v in doc.items()}


def _anomaly(r: Sequence[Any]) -> StoredAnomaly:
    return StoredAnomaly(
        id=int(r[0]),
        series_key=str(r[1]),
        metric=str(r[2]),
        labels=_labels(r[3]),
        detector=str(r[4]),
        detector_version=str(r[5]),
        window_start=int(r[6]) / 1000,
        window_end=int(r[7]) / 1000,
        count=int(r[8]),
        mean=float(r[9]),
        std=float(r[10]),
        normal_mean=float(r[11]),
        normal_std=float(r[12]),
        normal_source=str(r[13]),
        deviation=float(r[14]),
        status=str(r[15]),
        stored_at=int(r[16]),
        score=None if r[17] is None else float(r[17]),
        normal_period_s=None if r[18] is None else int(r[18]),
    )


def _in(column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def where(f: AnomalyFilter, after: Position | None) -> tuple[str, list[Any]]:
    """The WHERE clause (empty, or starting with a space) and its arguments."""
    terms: list[str] = []
    args: list[Any] = []
    if f.series_key is not None:
        terms.append("key_hash = %s")
        args.append(series_key_hash(f.series_key))
    if f.metric is not None:
        terms.append("metric = %s")
        args.append(f.metric)
    if f.labels:
        terms.append("JSON_CONTAINS(labels, %s)")
        args.append(json.dumps(dict(f.labels)))
    for column, values in (("detector", f.detectors), ("status", f.statuses)):
        if values:
            term, more = _in(column, values)
            terms.append(term)
            args += more
    if f.start_ms is not None:
        terms.append("window_start_ms >= %s")
        args.append(f.start_ms)
    if f.end_ms is not None:
        terms.append("window_start_ms < %s")
        args.append(f.end_ms)
    if after is not None:
        terms.append("(window_start_ms < %s OR (window_start_ms = %s AND id < %s))")
        args += [after.start_ms, after.start_ms, after.id]
    return (f" WHERE {' AND '.join(terms)}" if terms else ""), args


def exact(conn: Connection, f: AnomalyFilter) -> AnomalyFilter:
    """``f`` by series key when its metric and labels are exactly those of a stored series."""
    if f.series_key is not None or f.metric is None or not f.labels:
        return f
    key = series_key(f.metric, dict(f.labels))
    found = fetch_all(
        conn, "SELECT 1 FROM anomalies WHERE key_hash = %s LIMIT 1", [series_key_hash(key)]
    )
    if not found:
        return f
    return AnomalyFilter(key, None, (), f.detectors, f.statuses, f.start_ms, f.end_ms)


def list_anomalies(
    conn: Connection, f: AnomalyFilter, after: Position | None, limit: int
) -> list[StoredAnomaly]:
    """Up to ``limit`` rows matching ``f``, newest window first, after ``after``."""
    clause, args = where(exact(conn, f), after)
    sql = (
        f"SELECT {_COLUMNS} FROM anomalies{clause} "  # noqa: S608 (names from code)
        "ORDER BY window_start_ms DESC, id DESC LIMIT %s"
    )
    return [_anomaly(r) for r in fetch_all(conn, sql, [*args, limit])]


def latest_by_detector(
    conn: Connection, keys: Sequence[str]
) -> dict[str, dict[str, StoredAnomaly]]:
    """Per series key, per detector, the row of its newest window (keys without any row
    are left out). One query per CHUNK keys, served by the unique key's index."""
    out: dict[str, dict[str, StoredAnomaly]] = {}
    unique = list(dict.fromkeys(keys))
    for i in range(0, len(unique), CHUNK):
        hashes = [series_key_hash(k) for k in unique[i : i + CHUNK]]
        term, args = _in("key_hash", hashes)
        cols = ", ".join(f"a.{c.strip()}" for c in _COLUMNS.split(","))
        sql = (
            f"SELECT {cols} FROM anomalies a JOIN ("  # noqa: S608 (names from code)
            "SELECT key_hash, detector, MAX(window_start_ms) AS newest FROM anomalies "
            f"WHERE {term} GROUP BY key_hash, detector) n ON a.key_hash = n.key_hash "
            "AND a.detector = n.detector AND a.window_start_ms = n.newest"
        )
        for r in fetch_all(conn, sql, args):
            a = _anomaly(r)
            out.setdefault(a.series_key, {})[a.detector] = a
    return out
