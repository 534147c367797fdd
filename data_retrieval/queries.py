"""The SQL of the retrieval service, and the functions that run it on one connection.

Table and column names live here, in code; every value is a ``%s`` parameter. The
functions run in a database worker thread (see :mod:`data_retrieval.db`) and return plain
rows; :mod:`data_retrieval.convert` turns rows into protobuf messages.

Paging is keyset paging on ``(series_id, position)``, which the primary keys serve:
``WHERE series_id = ? AND position > ? ORDER BY position LIMIT n`` reads only the rows it
returns, however deep into a series the page is.

Packed pages: PyMySQL decodes rows in pure Python (~7 µs a row of three numbers, most of a
stream's server time). For tables of numbers only, a page is fetched as ONE row packed by
the server (the page's row count, its last position, and ``GROUP_CONCAT`` of its rows) and
split here. A DOUBLE is not packed as the server's decimal text of it (MariaDB prints the
shortest form that reads back exactly, but how a server renders a double is its own choice:
MySQL 8 is not tested here), but as two integers ``m,e`` with ``value == m * 2**e`` exactly
(:func:`exact_double`): powers of two, a multiplication by them and integer text are exact
on every IEEE-754 server, so the page reads back bit for bit (the integration tests check it
on edge values). RETRIEVAL_PACKED_PAGES=false reads plain rows instead.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from data_retrieval.validation import Selector, TimeRange
from sla_common import schema
from sla_common.mysql import Connection, series_key_hash

Row = tuple[Any, ...]

# Large enough for a packed page of the largest page size (20,000 rows of 8 numbers of at
# most 24 characters is under 4 MB); a truncated page is detected by its row count anyway.
GROUP_CONCAT_MAX_LEN = 16 * 1024 * 1024
SESSION_SETUP = f"SET SESSION group_concat_max_len = {GROUP_CONCAT_MAX_LEN}"


class PackedPageError(Exception):
    """A packed page did not split into the row count the server reported."""


def exact_double(column: str) -> str:
    """SQL text of the DOUBLE ``column`` as ``'m,e'``, two integers with ``m * 2**e`` equal
    to the value bit for bit (``'0,0'`` for zero; NULL for NULL); :func:`read_double` reads it.

    ``e = FLOOR(LOG2(|x|))`` is the binary exponent give or take one (LOG2 rounds near
    powers of two); ``m = x * 2**(53 - e)`` is then an integer of at most 55 bits: a double
    has 53, and scaling by a power of two is exact. The scale is applied in two factors so
    that neither overflows (a subnormal needs up to 2**1127). Both servers compute these
    with the C library's IEEE-754 doubles and print integers exactly.
    """
    e = f"FLOOR(LOG2(ABS({column})))"
    return (
        f"IF({column} = 0, '0,0', CONCAT(CAST({column} * POW(2, LEAST(53 - {e}, 1000)) * "
        f"POW(2, GREATEST(-947 - {e}, 0)) AS SIGNED), ',', CAST({e} - 53 AS SIGNED)))"
    )


def read_double(m: str, e: str) -> float:
    """The double of :func:`exact_double`'s ``'m,e'`` (``int(m)`` has at most 55 bits, all
    but 53 of them trailing zeros, so ``ldexp`` is exact)."""
    return math.ldexp(int(m), int(e))


def _fields(conv: Callable[[str], Any]) -> int:
    """Text fields a packed value takes: two for a double (:func:`exact_double`), else one."""
    return 2 if conv is float else 1


@dataclass(frozen=True)
class PointTable:
    """A per-series table read in pages: which columns, in what order, filtered how."""

    table: str
    columns: tuple[str, ...]  # selected, in this order
    position: tuple[str, ...]  # the key within a series (a prefix of columns), ascending
    position_types: tuple[type, ...]
    time_column: str  # what a TimeRange selects on
    # One converter per column when every column is numeric (the page may be packed).
    packed_types: tuple[Callable[[str], Any], ...] | None

    def __post_init__(self) -> None:
        ok = (
            self.columns[: len(self.position)] == self.position
            and len(self.position) == len(self.position_types)
            and (self.packed_types is None or len(self.packed_types) == len(self.columns))
        )
        if not ok:
            raise ValueError(f"inconsistent PointTable for {self.table}")


HP = PointTable(
    "hp_points",
    ("ts", "trend", "cycle"),
    ("ts",),
    (int,),
    "ts",
    (int, float, float),
)
DECOMPOSITION = PointTable(
    "decomposition_points",
    ("ts", "trend", "seasonal", "resid"),
    ("ts",),
    (int,),
    "ts",
    (int, float, float, float),
)
ACF = PointTable(
    "acf",
    ("lag_k", "value"),
    ("lag_k",),
    (int,),
    "window_end",
    (int, float),
)
AGGREGATES = PointTable(
    "aggregates",
    ("window_end", "window_name", *schema.AGGREGATE_VALUE_COLUMNS),
    ("window_end", "window_name"),
    (int, str),
    "window_end",
    None,  # text columns: plain rows (a few per window, never the bulk of a stream)
)
FORECAST = PointTable(
    "forecast_points",
    ("ts", "value", "lower80", "upper80", "lower95", "upper95", "window_end", "produced_at"),
    ("ts",),
    (int,),
    "ts",
    (int, float, float, float, float, float, int, int),
)


def keyset_condition(position: Sequence[str]) -> str:
    """``(a > %s) OR (a = %s AND b > %s) ...``: strictly after a position, index-friendly."""
    terms = []
    for i, col in enumerate(position):
        eq = [f"{c} = %s" for c in position[:i]]
        terms.append("(" + " AND ".join([*eq, f"{col} > %s"]) + ")")
    return "(" + " OR ".join(terms) + ")"


def keyset_args(after: Sequence[Any]) -> list[Any]:
    args: list[Any] = []
    for i in range(len(after)):
        args.extend(after[: i + 1])
    return args


def points_query(
    spec: PointTable,
    series_id: int,
    time_range: TimeRange,
    after: Sequence[Any] | None,
    n: int,
    *,
    packed: bool,
) -> tuple[str, list[Any]]:
    """The SQL and parameters of one page: up to ``n`` rows of one series after ``after``.

    Packed: ``(row count, last position, the rows' values joined by commas)``, each double
    as the two integers of :func:`exact_double`. The page is
    still exactly the first ``n`` rows in key order (the inner ORDER BY ... LIMIT), and its
    last position is their maximum; only the order inside the packed text is left to the
    server (sorting there costs ~20 % of its time), so :func:`unpack` puts it right.
    """
    where = ["series_id = %s"]
    args: list[Any] = [series_id]
    if time_range.start is not None:
        where.append(f"{spec.time_column} >= %s")
        args.append(time_range.start)
    if time_range.end is not None:
        where.append(f"{spec.time_column} < %s")
        args.append(time_range.end)
    if after:
        where.append(keyset_condition(spec.position))
        args.extend(keyset_args(after))
    order = ", ".join(spec.position)
    inner = (
        f"SELECT {', '.join(spec.columns)} FROM {spec.table} "  # noqa: S608 (names from code)
        f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT %s"
    )
    args.append(n)
    if not packed:
        return inner, args
    if spec.packed_types is None or len(spec.position) != 1:
        raise ValueError(f"{spec.table}: only numeric tables keyed by one column are packed")
    values = [
        exact_double(col) if conv is float else col
        for col, conv in zip(spec.columns, spec.packed_types, strict=True)
    ]
    sql = (
        f"SELECT COUNT(*), MAX({order}), "  # noqa: S608 (names from code)
        f"GROUP_CONCAT(CONCAT_WS(',', {', '.join(values)}) SEPARATOR ',') "
        f"FROM ({inner}) AS page"
    )
    return sql, args


@dataclass(frozen=True)
class RawPage:
    """A page as read: its row count, the position of its last row, and the rows, still
    packed (text) or as decoded by PyMySQL."""

    count: int
    last: tuple[Any, ...]
    packed: str | None = None
    rows: list[Row] | None = None


def fetch_page(
    conn: Connection,
    spec: PointTable,
    series_id: int,
    time_range: TimeRange,
    after: Sequence[Any] | None,
    n: int,
    *,
    packed: bool,
) -> RawPage:
    """Read one page; decoding a packed page is left to :func:`rows` (another thread)."""
    packed = packed and spec.packed_types is not None
    sql, args = points_query(spec, series_id, time_range, after, n, packed=packed)
    with conn.cursor() as cur:
        cur.execute(sql, args)
        if not packed:
            plain = [tuple(r) for r in cur.fetchall()]
            last = tuple(plain[-1][: len(spec.position)]) if plain else ()
            return RawPage(len(plain), last, rows=plain)
        row = cur.fetchone()
    if row is None:  # an aggregate query always returns one row
        raise PackedPageError(f"a packed page of {spec.table} returned no row")
    count, last, text = int(row[0]), row[1], row[2]
    if isinstance(text, bytes):
        text = text.decode()
    return RawPage(count, (int(last),) if count else (), packed=text or "")


def latest_time(conn: Connection, spec: PointTable, series_id: int) -> int | None:
    """The newest value of the table's time column for a series (None: it has no rows)."""
    row = _one(
        conn,
        f"SELECT MAX({spec.time_column}) FROM {spec.table} WHERE series_id = %s",  # noqa: S608
        series_id,
        width=1,
    )
    return None if row[0] is None else int(row[0])


def rows(spec: PointTable, page: RawPage) -> Iterable[Row]:
    """The rows of a page, in key order."""
    if page.rows is not None:
        return page.rows
    if spec.packed_types is None or page.packed is None:
        raise PackedPageError(f"{spec.table}: a page with neither rows nor packed text")
    return unpack(page.count, page.packed, spec.packed_types)


def unpack(count: int, text: str, types: Sequence[Callable[[str], Any]]) -> Iterable[Row]:
    """``count`` rows of ``len(types)`` comma-separated values (a ``float`` one is the two
    integers of :func:`exact_double`), in the order of the first value (the position), which
    the server usually but not necessarily kept."""
    if not count:
        return ()
    values = text.split(",")
    width = sum(map(_fields, types))
    if len(values) != count * width:
        raise PackedPageError(
            f"a packed page split into {len(values)} values, expected {count} x {width} "
            "(truncated by group_concat_max_len?)"
        )
    columns = []
    offset = 0
    for conv in types:
        if conv is float:
            columns.append(
                list(map(read_double, values[offset::width], values[offset + 1 :: width]))
            )
        else:
            columns.append(list(map(conv, values[offset::width])))
        offset += _fields(conv)
    position = columns[0]
    if all(map(operator.lt, position, position[1:])):
        return zip(*columns, strict=True)  # consumed once, by a fill function
    return sorted(zip(*columns, strict=True), key=operator.itemgetter(0))


# --------------------------------------------------------------------------- series


@dataclass(frozen=True)
class SeriesRow:
    id: int
    key: str
    metric: str
    labels: dict[str, str]


@dataclass(frozen=True)
class SeriesInfo:
    row: SeriesRow
    selector: str
    transform: str
    first_seen: int
    last_seen: int
    window_start: int | None
    skipped: tuple[tuple[str, str, str], ...]  # (analysis, reason, detail)


def _labels(raw: str | bytes | dict[str, Any]) -> dict[str, str]:
    """A labels column: JSON text (or already a dict, when it came inside a JSON array)."""
    doc = raw if isinstance(raw, dict) else json.loads(raw)
    if isinstance(doc, str):  # a server that quoted the JSON column inside JSON_ARRAY
        doc = json.loads(doc)
    return {str(k): str(v) for k, v in doc.items()}


def series_condition(conn: Connection, sel: Selector) -> tuple[list[str], list[Any]]:
    """WHERE terms (on ``series s``) selecting what ``sel`` names.

    A metric with labels is an equality matcher on those labels (JSON containment), except
    when one series has exactly those labels: then it alone is meant.
    """
    if sel.key is not None:
        return ["s.key_hash = %s"], [series_key_hash(sel.key)]
    if sel.metric is None:
        return [], []
    exact = sel.exact_key
    if exact is not None:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM series WHERE key_hash = %s", (series_key_hash(exact),))
            if cur.fetchone() is not None:
                return ["s.key_hash = %s"], [series_key_hash(exact)]
    terms, args = ["s.metric = %s"], [sel.metric]
    if sel.labels:
        terms.append("JSON_CONTAINS(s.labels, %s)")
        args.append(json.dumps(dict(sel.labels)))
    return terms, args


def series_page_where(
    conn: Connection, sel: Selector, after_id: int | None
) -> tuple[str, list[Any]]:
    """The WHERE clause (empty, or ending in a space) and its arguments for one page of the
    series ``sel`` names: those of :func:`series_condition`, with ``id > after_id``."""
    terms, args = series_condition(conn, sel)
    if after_id is not None:
        terms.append("s.id > %s")
        args.append(after_id)
    return (f"WHERE {' AND '.join(terms)} " if terms else ""), args


def find_series(conn: Connection, sel: Selector, after_id: int | None, n: int) -> list[SeriesRow]:
    """Up to ``n`` series matching ``sel`` with ``id > after_id``, by id."""
    where, args = series_page_where(conn, sel, after_id)
    sql = (
        "SELECT s.id, s.series_key, s.metric, s.labels "  # noqa: S608 (terms from code)
        f"FROM series s {where}ORDER BY s.id LIMIT %s"
    )
    with conn.cursor() as cur:
        cur.execute(sql, [*args, n])
        return [SeriesRow(int(i), str(k), str(m), _labels(lb)) for i, k, m, lb in cur.fetchall()]


def list_series(conn: Connection, sel: Selector, after_id: int | None, n: int) -> list[SeriesInfo]:
    """Like :func:`find_series`, with what ListSeries shows of each series."""
    where, args = series_page_where(conn, sel, after_id)
    sql = (
        "SELECT s.id, s.series_key, s.metric, s.labels, s.selector, s.transform, "  # noqa: S608
        "s.first_seen, s.last_seen, a.window_start FROM series s "
        "LEFT JOIN analyses a ON a.series_id = s.id AND a.window_end = s.last_seen "
        f"{where}ORDER BY s.id LIMIT %s"
    )
    with conn.cursor() as cur:
        cur.execute(sql, [*args, n])
        rows = cur.fetchall()
        if not rows:
            return []
        ids = [int(r[0]) for r in rows]
        marks = ", ".join(["%s"] * len(ids))
        cur.execute(
            "SELECT k.series_id, k.analysis, k.reason, k.detail FROM skipped_analyses k "  # noqa: S608
            "JOIN series s ON s.id = k.series_id AND k.window_end = s.last_seen "
            f"WHERE k.series_id IN ({marks}) ORDER BY k.series_id, k.analysis",
            ids,
        )
        skipped: dict[int, list[tuple[str, str, str]]] = {}
        for sid, analysis, reason, detail in cur.fetchall():
            skipped.setdefault(int(sid), []).append((str(analysis), str(reason), str(detail)))
    return [
        SeriesInfo(
            row=SeriesRow(int(i), str(k), str(m), _labels(lb)),
            selector=str(selector),
            transform=str(transform),
            first_seen=int(first),
            last_seen=int(last),
            window_start=None if ws is None else int(ws),
            skipped=tuple(skipped.get(int(i), ())),
        )
        for i, k, m, lb, selector, transform, first, last, ws in rows
    ]


# --------------------------------------------------------------------------- per series


def _latest_analysis(conn: Connection, series_id: int, *columns: str) -> Row:
    """``columns`` of the series' latest analysis in which the first one is set."""
    return _one(
        conn,
        f"SELECT {', '.join(columns)} FROM analyses "  # noqa: S608 (names from code)
        f"WHERE series_id = %s AND {columns[0]} IS NOT NULL ORDER BY window_end DESC LIMIT 1",
        series_id,
        width=len(columns),
    )


def hp_header(conn: Connection, series_id: int) -> Row:
    """(hp_lambda,) of the series' latest analysis that ran the filter."""
    return _latest_analysis(conn, series_id, "hp_lambda")


def decomposition_header(conn: Connection, series_id: int) -> Row:
    """(period, seasonal_strength) of the series' latest decomposition."""
    return _latest_analysis(conn, series_id, "decomposition_period", "seasonal_strength")


def acf_header(conn: Connection, series_id: int) -> Row:
    """(window_end, conf_bound) of the series' stored autocorrelation."""
    return _one(
        conn,
        "SELECT c.window_end, a.acf_conf_bound "
        "FROM (SELECT MAX(window_end) AS window_end FROM acf WHERE series_id = %s) c "
        "LEFT JOIN analyses a ON a.series_id = %s AND a.window_end = c.window_end",
        series_id,
        series_id,
        width=2,
    )


FORECAST_SUMMARY_COLUMNS = schema.FORECAST_SUMMARY_COLUMNS[1:]  # all but series_id


def forecast_header(conn: Connection, series_id: int) -> Row:
    """The series' newest forecast summary (all None when there is none)."""
    return _one(
        conn,
        f"SELECT {', '.join(FORECAST_SUMMARY_COLUMNS)} FROM forecast_summary "  # noqa: S608
        "WHERE series_id = %s ORDER BY window_end DESC, horizon_s LIMIT 1",
        series_id,
        width=len(FORECAST_SUMMARY_COLUMNS),
    )


def no_header(conn: Connection, series_id: int) -> Row:
    return ()


def _one(conn: Connection, sql: str, *args: Any, width: int) -> Row:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return tuple(row) if row is not None else (None,) * width


# GetDickeyFuller reads two columns, not seventeen: PyMySQL spends ~35 µs decoding each
# column's description, per query (a third of the call's server time with one column per
# value). The numbers are packed as in a packed page, exact; the texts travel as a JSON
# array (escaped by the server, parsed by json.loads), the labels as the JSON they are.
ADF_NUMBERS = (
    "s.id",
    "a.window_end",
    "an.window_start",
    "a.statistic",
    "a.pvalue",
    "a.used_lag",
    "a.nobs",
    "a.crit_1pct",
    "a.crit_5pct",
    "a.crit_10pct",
    "a.stationary",
    "a.produced_at",
)
ADF_TEXTS = ("s.series_key", "s.metric", "s.labels", "a.autolag", "a.run_id")
_ADF_TYPES: tuple[Callable[[str], Any], ...] = (
    (int, int, int, float, float) + (int,) * 2 + (float,) * 3 + (int, int)
)


def _adf_numbers(packed: str) -> list[Any]:
    """The numbers of :data:`ADF_NUMBERS` (None for NULL) from their packed text."""
    fields = iter(packed.split(","))
    out: list[Any] = []
    for conv in _ADF_TYPES:
        text = next(fields)
        if conv is float:
            e = next(fields)
            out.append(read_double(text, e) if text else None)
        else:
            out.append(conv(text) if text else None)
    if next(fields, None) is not None:
        raise PackedPageError(f"a packed ADF row has more than {len(_ADF_TYPES)} numbers")
    return out


def _series_and_adf(packed: str | bytes, texts: str | bytes) -> tuple[SeriesRow, Row | None]:
    numbers = packed.decode() if isinstance(packed, bytes) else packed
    sid, end, start, stat, pvalue, lag, nobs, c1, c5, c10, stationary, made = _adf_numbers(numbers)
    key, metric, labels, autolag, run_id = json.loads(texts)
    series = SeriesRow(int(sid), str(key), str(metric), _labels(labels))
    if end is None:
        return series, None
    return series, (
        end,
        start,
        stat,
        pvalue,
        lag,
        nobs,
        c1,
        c5,
        c10,
        stationary,
        autolag,
        run_id,
        made,
    )


def _adf_sql(where: str, order: str, at_term: str) -> str:
    # COALESCE: CONCAT_WS skips NULLs, which would shift the numbers after one. Doubles as
    # the two integers of exact_double (a NULL one as two empty fields).
    numbers = ", ".join(
        f"COALESCE({exact_double(c)}, ',')" if conv is float else f"COALESCE({c}, '')"
        for c, conv in zip(ADF_NUMBERS, _ADF_TYPES, strict=True)
    )
    return (
        f"SELECT CONCAT_WS(',', {numbers}), JSON_ARRAY({', '.join(ADF_TEXTS)}) "  # noqa: S608
        "FROM series s LEFT JOIN adf a ON a.series_id = s.id AND a.window_end = "
        f"(SELECT MAX(x.window_end) FROM adf x WHERE x.series_id = s.id{at_term}) "
        "LEFT JOIN analyses an ON an.series_id = a.series_id AND an.window_end = a.window_end "
        f"WHERE {where} ORDER BY {order}"
    )


def adf_by_keys(conn: Connection, keys: Sequence[str]) -> dict[str, tuple[SeriesRow, Row | None]]:
    """The series of these keys that exist, each with its newest ADF row: one query."""
    if not keys:
        return {}
    marks = ", ".join(["%s"] * len(keys))
    with conn.cursor() as cur:
        cur.execute(
            _adf_sql(f"s.key_hash IN ({marks})", "s.id", ""), [series_key_hash(k) for k in keys]
        )
        found = [_series_and_adf(packed, texts) for packed, texts in cur.fetchall()]
    return {series.key: (series, row) for series, row in found}


def series_with_adf(
    conn: Connection, sel: Selector, at: int | None, n: int
) -> list[tuple[SeriesRow, Row | None]]:
    """Up to ``n`` series ``sel`` matches, each with its newest ADF row whose window ends at
    or before ``at`` (None if it has none): ONE query, as GetDickeyFuller is the latency-
    sensitive call. A series with exactly the selector's labels comes first."""
    args: list[Any] = []
    at_term = ""
    if at is not None:
        at_term = " AND x.window_end <= %s"
        args.append(at)
    if sel.key is not None:
        where, order = "s.key_hash = %s", "s.id"
        args.append(series_key_hash(sel.key))
    elif sel.metric is not None:
        where, order = "s.metric = %s", "s.id"
        args.append(sel.metric)
        exact = sel.exact_key
        if exact is not None:
            where += " AND JSON_CONTAINS(s.labels, %s)"
            order = "s.key_hash = %s DESC, s.id"
            args += [json.dumps(dict(sel.labels)), series_key_hash(exact)]
    else:
        raise ValueError("a Dickey-Fuller lookup needs a metric or a series key")
    with conn.cursor() as cur:
        cur.execute(_adf_sql(where, order, at_term) + " LIMIT %s", [*args, n])
        return [_series_and_adf(packed, texts) for packed, texts in cur.fetchall()]


def latest_skip(conn: Connection, series_id: int, analysis: str) -> tuple[str, str] | None:
    """(reason, detail) of the newest window that skipped ``analysis``, if any."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT reason, detail FROM skipped_analyses WHERE series_id = %s AND analysis = %s "
            "ORDER BY window_end DESC LIMIT 1",
            (series_id, analysis),
        )
        row = cur.fetchone()
    return (str(row[0]), str(row[1])) if row is not None else None
