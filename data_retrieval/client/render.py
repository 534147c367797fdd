"""Pure: what the client prints. Aligned text tables for people, JSON for scripts.

Times are shown in UTC as ``YYYY-MM-DD HH:MM:SS``; numbers with 4-6 significant figures
(thousands separated when large), so a column of byte counts and a column of p-values are
both readable.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb

_WINDOW = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
SHOWN_LAGS = 10


def fmt_time(ts: Timestamp | int) -> str:
    seconds = ts if isinstance(ts, int) else ts.seconds
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_num(x: float) -> str:
    if math.isnan(x) or math.isinf(x):
        return str(x)
    ax = abs(x)
    if ax == 0:
        return "0"
    if ax >= 1e15 or ax < 1e-4:
        return f"{x:.4e}"
    if ax >= 1e4:
        return f"{x:,.0f}"
    if ax >= 1:
        return f"{x:,.4f}".rstrip("0").rstrip(".")
    return f"{x:.6f}".rstrip("0").rstrip(".")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, left: int = 1) -> str:
    """Columns padded to their widest cell; the first ``left`` columns left-aligned, the
    rest (numbers) right-aligned."""
    body = [list(map(str, r)) for r in rows]
    widths = [len(h) for h in headers]
    for r in body:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in body]
    return "\n".join(out) + "\n"


def pairs(rows: Sequence[tuple[str, str]]) -> str:
    """``name  value`` lines, names padded to one width, values right-aligned."""
    name_w = max(len(n) for n, _ in rows)
    value_w = max(len(v) for _, v in rows)
    return "".join(f"{n.ljust(name_w)}  {v.rjust(value_w)}\n" for n, v in rows)


def indent(text: str, by: str = "  ") -> str:
    return "".join(by + ln if ln.strip() else ln for ln in text.splitlines(keepends=True))


def partition(ref: pb.SeriesRef) -> str:
    """The labels that tell a metric's series apart (all of them), as ``k=v, k=v``."""
    return ", ".join(f"{k}={v}" for k, v in sorted(ref.labels.items())) or "(no labels)"


def window_seconds(name: str) -> int:
    m = _WINDOW.match(name)
    return int(m.group(1)) * _UNIT_S[m.group(2)] if m else 0


def to_json(message: Message) -> dict[str, Any]:
    """The proto3 JSON mapping (times as RFC 3339 strings), field names as in the .proto."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


# --------------------------------------------------------------------------- series list


def metrics_table(counts: Sequence[tuple[str, int]]) -> str:
    rows = [(str(i), name, str(n)) for i, (name, n) in enumerate(counts, start=1)]
    return table(["#", "metric", "series"], rows, left=2)


def series_table(items: Sequence[pb.Series]) -> str:
    rows = [
        (
            str(i),
            s.ref.metric,
            partition(s.ref),
            fmt_time(s.last_seen),
            ", ".join(k.analysis for k in s.skipped) or "-",
        )
        for i, s in enumerate(items, start=1)
    ]
    return table(["#", "metric", "partition", "latest window end", "skipped"], rows, left=5)


# --------------------------------------------------------------------------- per analysis


def anomalies_table(items: Sequence[pb.Anomaly]) -> str:
    """One line per window: when, its status and deviation, the detector, the series."""
    rows = [
        (
            fmt_time(a.window_start),
            pb.AnomalyStatus.Name(a.status).removeprefix("ANOMALY_STATUS_"),
            fmt_num(a.deviation),
            a.detector,
            a.series.key,
        )
        for a in items
    ]
    return table(("window start (UTC)", "status", "deviation", "detector", "series"), rows, left=2)


def adf_block(adf: pb.DickeyFuller) -> str:
    cv = adf.critical_values
    verdict = "stationary" if adf.stationary else "NOT stationary"
    compare = "<" if adf.statistic < cv.pct5 else ">="
    window = fmt_time(adf.window_end)
    if adf.HasField("window_start"):
        window = f"{fmt_time(adf.window_start)} .. {window}"
    rows = [
        ("statistic", fmt_num(adf.statistic)),
        ("p-value", fmt_num(adf.p_value)),
        ("lags used", str(adf.used_lag) + (f" ({adf.autolag})" if adf.autolag else "")),
        ("observations", str(adf.nobs)),
        ("critical 1%", fmt_num(cv.pct1)),
        ("critical 5%", fmt_num(cv.pct5)),
        ("critical 10%", fmt_num(cv.pct10)),
    ]
    return (
        f"Augmented Dickey-Fuller, window {window}\n"
        + indent(pairs(rows))
        + f"  verdict: {verdict} at 5% (statistic {fmt_num(adf.statistic)} {compare} "
        f"critical {fmt_num(cv.pct5)})\n"
    )


def latest_per_window(aggregates: Iterable[pb.Aggregate]) -> list[pb.Aggregate]:
    """The newest aggregate of each window name, shortest window first."""
    best: dict[str, pb.Aggregate] = {}
    for a in aggregates:
        if a.window not in best or a.end.seconds >= best[a.window].end.seconds:
            best[a.window] = a
    return sorted(best.values(), key=lambda a: (window_seconds(a.window), a.window))


def aggregates_table(aggregates: Sequence[pb.Aggregate]) -> str:
    rows = [
        (
            a.window,
            fmt_time(a.start),
            fmt_time(a.end),
            str(a.sample_count),
            fmt_num(a.max),
            fmt_num(a.min),
            fmt_num(a.mean),
            fmt_num(a.std),
        )
        for a in aggregates
    ]
    return table(["window", "start", "end", "samples", "max", "min", "mean", "std"], rows, left=3)


def aggregates_block(aggregates: Sequence[pb.Aggregate]) -> str:
    latest = latest_per_window(aggregates)
    if not latest:
        return "Aggregates: none stored\n"
    return "Aggregates (latest window)\n" + indent(aggregates_table(latest))


def forecast_table(points: Sequence[pb.ForecastPoint]) -> str:
    rows = [
        (
            fmt_time(p.time),
            fmt_num(p.value),
            f"[{fmt_num(p.lower80)}, {fmt_num(p.upper80)}]",
            f"[{fmt_num(p.lower95)}, {fmt_num(p.upper95)}]",
        )
        for p in points
    ]
    return table(["time", "forecast", "80% interval", "95% interval"], rows)


def forecast_block(summary: pb.ForecastSummary | None, points: Sequence[pb.ForecastPoint]) -> str:
    if not points:
        return "Forecast: none stored\n"
    head = "Forecast"
    if summary is not None and summary.model:
        head += (
            f" ({summary.model}, next {summary.horizon_seconds // 60} min from "
            f"{fmt_time(summary.window_end)}): max {fmt_num(summary.max)}, "
            f"min {fmt_num(summary.min)}, mean {fmt_num(summary.mean)}"
        )
    return head + "\n" + indent(forecast_table(points))


def _stats_row(name: str, values: Sequence[float]) -> tuple[str, ...]:
    return (
        name,
        fmt_num(values[0]),
        fmt_num(values[-1]),
        fmt_num(min(values)),
        fmt_num(max(values)),
        fmt_num(statistics.fmean(values)),
        fmt_num(statistics.pstdev(values)),
    )


_STATS = ["", "first", "last", "min", "max", "mean", "std"]


def _span(times: Sequence[Timestamp]) -> str:
    return f"{len(times)} points, {fmt_time(times[0])} .. {fmt_time(times[-1])}"


def hp_block(hp_lambda: float, points: Sequence[pb.HodrickPrescottPoint]) -> str:
    if not points:
        return "Hodrick-Prescott: none stored\n"
    trend = [p.trend for p in points]
    cycle = [p.cycle for p in points]
    change = (trend[-1] - trend[0]) / abs(trend[0]) * 100 if trend[0] else math.nan
    rows = [_stats_row("trend", trend), _stats_row("cycle", cycle)]
    return (
        f"Hodrick-Prescott (lambda {fmt_num(hp_lambda)}): {_span([p.time for p in points])}; "
        f"trend {change:+.2f}% over the window\n" + indent(table(_STATS, rows))
    )


def hp_table(points: Sequence[pb.HodrickPrescottPoint]) -> str:
    rows = [(fmt_time(p.time), fmt_num(p.trend), fmt_num(p.cycle)) for p in points]
    return table(["time", "trend", "cycle"], rows)


def decomposition_block(
    period: int, strength: float, points: Sequence[pb.DecompositionPoint]
) -> str:
    if not points:
        return "Seasonal decomposition: none stored\n"
    rows = [
        _stats_row("trend", [p.trend for p in points]),
        _stats_row("seasonal", [p.seasonal for p in points]),
        _stats_row("resid", [p.resid for p in points]),
    ]
    return (
        f"Seasonal decomposition (period {period} points, seasonal strength "
        f"{fmt_num(strength)}): {_span([p.time for p in points])}\n" + indent(table(_STATS, rows))
    )


def decomposition_table(points: Sequence[pb.DecompositionPoint]) -> str:
    rows = [
        (fmt_time(p.time), fmt_num(p.trend), fmt_num(p.seasonal), fmt_num(p.resid)) for p in points
    ]
    return table(["time", "trend", "seasonal", "resid"], rows)


def acf_block(
    window_end: Timestamp | None, conf_bound: float, lags: Sequence[pb.AutocorrelationLag]
) -> str:
    if not lags:
        return "Autocorrelation: none stored\n"
    significant = [x.lag for x in lags if x.lag > 0 and abs(x.value) > conf_bound]
    when = f", window ending {fmt_time(window_end)}" if window_end is not None else ""
    shown = [x for x in lags if 1 <= x.lag <= SHOWN_LAGS]
    sig = ", ".join(map(str, significant[:12])) + (", ..." if len(significant) > 12 else "")
    return (
        f"Autocorrelation ({len(lags) - 1} lags{when}; significant beyond "
        f"+/-{fmt_num(conf_bound)}: {len(significant)} lags{': ' + sig if sig else ''})\n"
        + indent(table(["lag", "acf"], [(str(x.lag), fmt_num(x.value)) for x in shown]))
    )


def acf_table(lags: Sequence[pb.AutocorrelationLag], conf_bound: float) -> str:
    rows = [
        (str(x.lag), fmt_num(x.value), "*" if x.lag and abs(x.value) > conf_bound else "")
        for x in lags
    ]
    return table(["lag", "acf", "significant"], rows)


def skipped_block(series: pb.Series) -> str:
    if not series.skipped:
        return ""
    rows = [(k.analysis, k.reason, k.detail) for k in series.skipped]
    return "Skipped on the latest window\n" + indent(
        table(["analysis", "reason", "detail"], rows, left=3)
    )


# --------------------------------------------------------------------------- explanations

SHOWN_RANKED = 5


def _ts_seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def explanation_block(e: pb.ExplainResponse, shown: int = SHOWN_RANKED) -> str:
    """An Explain answer in a few lines: the intervals, the predicates (joined by AND), the
    best ranked series with their distance and what moves with them."""
    spans = ", ".join(
        f"{fmt_time(int(_ts_seconds(i.start)))}..{fmt_time(int(_ts_seconds(i.end)))[11:]}"
        for i in e.anomalous
    )
    ref = e.reference
    lines = [
        f"Explanation of {spans} UTC (reference {fmt_time(int(_ts_seconds(ref.start)))}.."
        f"{fmt_time(int(_ts_seconds(ref.end)))[11:]}, step {fmt_num(e.step_seconds)} s)",
        f"{e.candidates} candidate series, {e.sparse} sparse, {e.false_positives} dropped as "
        "false positives" + ("" if e.day_before else " (no day before: windows of the reference)"),
    ]
    if e.explanation:
        lines.append("  " + "\n  AND ".join(e.explanation))
    else:
        lines.append("  no series separates the anomalous interval from the reference")
    moves = {c.representative: list(c.moves_with) for c in e.clusters}
    rows = []
    for rank, s in enumerate(e.ranked[:shown], start=1):
        also = moves.get(s.series.key, [])
        rows.append(
            (
                str(rank),
                s.series.key,
                f"{s.distance:.3f}",
                s.direction,
                f"{len(also)} more" if also else "",
            )
        )
    if rows:
        lines.append("")
        lines.append(
            indent(
                table(["#", "series", "distance", "direction", "moves with"], rows, left=2)
            ).rstrip("\n")
        )
    return "\n".join(lines) + "\n"
