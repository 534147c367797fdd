"""MySQL access for the ETL's cycles as data_storage stored them: ``runs`` (one row per ETL
cycle), ``analyses`` (one row per series analysed in a window, with its run and how many of
its analyses were skipped) and ``skipped_analyses`` (which analysis, and why).

Read-only; every statement is parameterised; table and column names are constants here.
A window re-analysed by a later cycle keeps the later cycle's rows (data_storage's rule:
the newest run of a window wins), so an older cycle of the same window counts only the
series the later one did not analyse again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sla_common.mysql import fetch_all
from sla_common.mysql_pool import ConnectionPool


@dataclass(frozen=True)
class SkipCount:
    analysis: str
    reason: str
    series: int


@dataclass
class CycleRow:
    run_id: str
    window_start: int
    window_end: int
    step_s: int
    first_produced_at: int
    last_produced_at: int
    series_analysed: int = 0
    series_with_skips: int = 0
    skipped: list[SkipCount] = field(default_factory=list)


@dataclass(frozen=True)
class SeriesSkip:
    analysis: str
    reason: str
    detail: str


@dataclass(frozen=True)
class CycleSeries:
    series: str
    samples: int
    skipped: list[SeriesSkip]


RUN_COLUMNS = "run_id, window_start, window_end, step_s, first_produced_at, last_produced_at"


def _cycle(row: Sequence[Any]) -> CycleRow:
    run_id, ws, we, step, first, last = row
    return CycleRow(str(run_id), int(ws), int(we), int(step), int(first), int(last))


class EtlRunStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def cycles(self, after: float, until: float, limit: int) -> list[CycleRow]:
        """The newest ``limit`` cycles whose window ended in ``(after, until]``, newest first,
        with their series counts and skip reasons."""
        with self.pool.connection() as conn:
            rows = fetch_all(
                conn,
                f"SELECT {RUN_COLUMNS} FROM runs "  # noqa: S608 (constant columns)
                "WHERE window_end > %s AND window_end <= %s "
                "ORDER BY window_end DESC, first_produced_at DESC LIMIT %s",
                (int(after), int(until), limit),
            )
            cycles = [_cycle(r) for r in rows]
            if not cycles:
                return []
            by_run = {c.run_id: c for c in cycles}
            marks = ", ".join(["%s"] * len(by_run))
            for run_id, analysed, with_skips in fetch_all(
                conn,
                "SELECT run_id, COUNT(*), SUM(skipped_count > 0) FROM analyses "  # noqa: S608
                f"WHERE run_id IN ({marks}) GROUP BY run_id",
                list(by_run),
            ):
                c = by_run[str(run_id)]
                c.series_analysed, c.series_with_skips = int(analysed), int(with_skips or 0)
            low = min(c.window_end for c in cycles)
            high = max(c.window_end for c in cycles)
            for run_id, analysis, reason, n in fetch_all(
                conn,
                # the window_end index narrows; the run ids pick the cycles
                "SELECT run_id, analysis, reason, COUNT(*) FROM skipped_analyses "  # noqa: S608
                f"WHERE window_end >= %s AND window_end <= %s AND run_id IN ({marks}) "
                "GROUP BY run_id, analysis, reason ORDER BY run_id, analysis, reason",
                [low, high, *by_run],
            ):
                by_run[str(run_id)].skipped.append(SkipCount(str(analysis), str(reason), int(n)))
        return cycles

    def cycle(self, run_id: str, limit: int) -> tuple[CycleRow, list[CycleSeries]] | None:
        """One cycle and the first ``limit`` of its series (by key) with their skips."""
        with self.pool.connection() as conn:
            rows = fetch_all(
                conn,
                f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = %s",  # noqa: S608
                (run_id,),
            )
            if not rows:
                return None
            c = _cycle(rows[0])
            counted = fetch_all(
                conn,
                "SELECT COUNT(*), SUM(skipped_count > 0) FROM analyses WHERE run_id = %s",
                (run_id,),
            )
            c.series_analysed, c.series_with_skips = int(counted[0][0]), int(counted[0][1] or 0)
            series = fetch_all(
                conn,
                "SELECT a.series_id, s.series_key, a.samples FROM analyses a "
                "JOIN series s ON s.id = a.series_id WHERE a.run_id = %s "
                "ORDER BY s.series_key LIMIT %s",
                (run_id, limit),
            )
            skips: dict[int, list[SeriesSkip]] = {}
            for sid, analysis, reason, detail in fetch_all(
                conn,
                "SELECT series_id, analysis, reason, detail FROM skipped_analyses "
                "WHERE window_end = %s AND run_id = %s ORDER BY series_id, analysis",
                (c.window_end, run_id),
            ):
                skips.setdefault(int(sid), []).append(
                    SeriesSkip(str(analysis), str(reason), str(detail))
                )
            totals: dict[tuple[str, str], int] = {}
            for lst in skips.values():
                for sk in lst:
                    totals[(sk.analysis, sk.reason)] = totals.get((sk.analysis, sk.reason), 0) + 1
            c.skipped = [SkipCount(a, r, n) for (a, r), n in sorted(totals.items())]
        return c, [CycleSeries(str(key), int(n), skips.get(int(sid), [])) for sid, key, n in series]
