"""Accuracy on NAB (../shared/nab): each series replayed in event time through the
detector's own window and status code (anomaly_detection.windows / judge), in process.

For each file: learned normals (the detector's default, with the series' cycles and the
recurring tail; without the tail, ``learned_no_tail``, the previous default; without
either, ``learned_no_season``) against the reference's static
constants set per series from the first 15 % of the file (NAB's probationary period), and
against the other source of normals the issue offered, the ETL's stored aggregates (mean
and std of the 12 h before each window). All are scored after that period only. Per
category:

- detection: the share of labelled anomaly windows (combined_windows.json) that overlap at
  least one ERROR window;
- false alarms: ERROR windows overlapping no labelled window, per day of scored data.

Also per split (:func:`split_of`): ``tuning`` (files at even positions in sorted order, on
which constants were chosen) and ``held_out`` (odd positions), each whole and per category.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anomaly_detection.judge import Rule
from anomaly_detection.rules import Baseline, Season, ew_alpha
from anomaly_detection.settings import DetectorSettings
from anomaly_detection.windows import SeriesWindows

PROBATION = 0.15
DAY_MS = 86_400_000
ETL_WINDOW_MS = 12 * 3_600_000  # the ETL's longest aggregate (ETL_WINDOW_S)
SEASONS = DetectorSettings.model_fields["anomaly_season_periods_s"].default
RECURRING = DetectorSettings.model_fields["anomaly_recurring_per_day"].default


def split_of(position: int) -> str:
    """The files in sorted order: even positions are the tuning set (constants were chosen
    on them), odd ones held out."""
    return "tuning" if position % 2 == 0 else "held_out"


def _ms(text: str) -> int:
    dt = datetime.strptime(text.split(".", maxsplit=1)[0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def read_series(path: Path) -> tuple[list[int], list[float]]:
    ts, xs = [], []
    with path.open() as f:
        for row in csv.DictReader(f):
            ts.append(_ms(row["timestamp"]))
            xs.append(float(row["value"]))
    return ts, xs


@dataclass
class Score:
    labelled: int = 0
    detected: int = 0
    false_alarms: int = 0
    days: float = 0.0

    def add(self, other: Score) -> None:
        self.labelled += other.labelled
        self.detected += other.detected
        self.false_alarms += other.false_alarms
        self.days += other.days

    def summary(self) -> dict[str, Any]:
        return {
            "labelled_windows": self.labelled,
            "detected": self.detected,
            "detection_share": self.detected / self.labelled if self.labelled else None,
            "false_alarms": self.false_alarms,
            "days": round(self.days, 2),
            "false_alarms_per_day": self.false_alarms / self.days if self.days else 0.0,
        }


def replay(
    ts: list[int], xs: list[float], rule: Rule, window_ms: int
) -> list[tuple[int, int, str]]:
    """(window start, end, status) of every closed window, the samples fed one by one."""
    w = SeriesWindows(window_ms, grace_ms=0)
    baseline = Baseline()
    seasons: dict[int, Season] = {}
    out: list[tuple[int, int, str]] = []
    for t, x in zip(ts, xs, strict=True):
        for p in w.add_batch([t], [x]):
            status = rule.judge(baseline, p, seasons=seasons)[0]
            out.append((p.start_ms, p.start_ms + window_ms, status))
    return out


def replay_trailing(
    ts: list[int], xs: list[float], rule: Rule, window_ms: int, trailing_ms: int
) -> list[tuple[int, int, str]]:
    """As :func:`replay`, but each window judged against the mean and population std of the
    samples in the ``trailing_ms`` before it: what a detector reading the ETL's stored
    aggregates (12 h, recomputed each minute) would use. LEARNING until that much history."""
    w = SeriesWindows(window_ms, grace_ms=0)
    out: list[tuple[int, int, str]] = []
    shift = xs[0]  # sums of shifted values: no cancellation on large levels
    lo = hi = 0
    n, s1, s2 = 0, 0.0, 0.0
    for t, x in zip(ts, xs, strict=True):
        for p in w.add_batch([t], [x]):
            while hi < len(ts) and ts[hi] < p.start_ms:
                d = xs[hi] - shift
                n, s1, s2 = n + 1, s1 + d, s2 + d * d
                hi += 1
            while lo < hi and ts[lo] < p.start_ms - trailing_ms:
                d = xs[lo] - shift
                n, s1, s2 = n - 1, s1 - d, s2 - d * d
                lo += 1
            if n < 2 or ts[0] > p.start_ms - trailing_ms:
                status = "LEARNING"
            else:
                mean = s1 / n
                std = max(s2 / n - mean * mean, 0.0) ** 0.5
                status = rule.judge(Baseline(), p, static=(mean + shift, std))[0]
            out.append((p.start_ms, p.start_ms + window_ms, status))
    return out


def score(
    results: Iterable[tuple[int, int, str]],
    labels: list[tuple[int, int]],
    scored_from: int,
    end_ms: int,
) -> Score:
    errors = [(s, e) for s, e, st in results if st == "ERROR" and s >= scored_from]
    labelled = [(a, b) for a, b in labels if b >= scored_from]
    detected = sum(1 for a, b in labelled if any(s <= b and e > a for s, e in errors))
    false = sum(1 for s, e in errors if not any(s <= b and e > a for a, b in labelled))
    return Score(len(labelled), detected, false, (end_ms - scored_from) / DAY_MS)


def measure(
    nab: Path, window_ms: int = 900_000, halflife_s: float = 6 * 3600, min_history: int = 30
) -> dict[str, Any]:
    windows = json.loads((nab / "combined_windows.json").read_text())
    per_cat: dict[str, dict[str, Score]] = {}
    for position, (name, spans) in enumerate(sorted(windows.items())):
        path = nab / "data" / name
        if not path.exists():
            continue
        ts, xs = read_series(path)
        cut = int(len(ts) * PROBATION)
        labels = [(_ms(a), _ms(b)) for a, b in spans]
        scored_from = ts[cut]
        static = (statistics.fmean(xs[:cut]), statistics.pstdev(xs[:cut]))
        plain = Rule(
            window_ms=window_ms, alpha=ew_alpha(window_ms, halflife_s), min_history=min_history
        )
        rules = {
            "learned": replace(plain, season_periods_s=SEASONS, recurring_per_day=RECURRING),
            "learned_no_tail": replace(plain, season_periods_s=SEASONS),
            "learned_no_season": plain,
            "learned_plain_ew": replace(plain, robust=False),
            "static": Rule(window_ms=window_ms, static=static),
        }
        cat = name.split("/")[0]
        results = {kind: replay(ts, xs, rule, window_ms) for kind, rule in rules.items()}
        results["etl_12h_aggregate"] = replay_trailing(
            ts, xs, Rule(window_ms=window_ms), window_ms, ETL_WINDOW_MS
        )
        for kind, res in results.items():
            s = score(res, labels, scored_from, ts[-1])
            per_cat.setdefault(cat, {}).setdefault(kind, Score()).add(s)
            per_cat.setdefault("all", {}).setdefault(kind, Score()).add(s)
            split = split_of(position)
            per_cat.setdefault(split, {}).setdefault(kind, Score()).add(s)
            per_cat.setdefault(f"{split}:{cat}", {}).setdefault(kind, Score()).add(s)
    return {
        "window_ms": window_ms,
        "halflife_s": halflife_s,
        "min_history_windows": min_history,
        "categories": {
            cat: {kind: sc.summary() for kind, sc in kinds.items()}
            for cat, kinds in per_cat.items()
        },
    }


def main(argv: list[str]) -> None:
    """``python -m bench.nab_replay [WINDOW_MS [HALFLIFE_S]]``: print the table."""
    window_ms = int(argv[0]) if argv else 900_000
    halflife_s = float(argv[1]) if len(argv) > 1 else 6 * 3600.0
    nab = Path(__file__).resolve().parent.parent.parent / "shared" / "nab"
    r = measure(nab, window_ms, halflife_s)
    for cat, kinds in r["categories"].items():
        for kind, sc in kinds.items():
            print(
                f"{cat:34s} {kind:17s} detected {sc['detected']}/{sc['labelled_windows']} "
                f"false alarms/day {sc['false_alarms_per_day']:.2f}"
            )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
