"""The learned normal's cost with and without the series' cycles, and its NAB accuracy.

``python -m bench detector-normal``:

- ``judge_us_per_window``: CPU microseconds of :meth:`anomaly_detection.judge.Rule.judge`
  per closed window (1-minute windows of one series, 20,000 of them), the plain learned
  normal (baseline: no cycle) against the cycles (a day and a week) and the default (the
  cycles and the recurring tail), median of ``repeats`` in the same run;
- ``checkpoint_bytes_per_series`` and ``checkpoint_ms_per_100_series``: the size of a
  series' state in a checkpoint after those windows and the time to serialise 100 of them;
- ``nab``: ``bench.nab_replay.measure`` (accuracy per category, every variant).
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from anomaly_detection.detector import Series
from anomaly_detection.judge import Rule
from anomaly_detection.rules import Baseline, Season, ew_alpha
from anomaly_detection.settings import DetectorSettings
from anomaly_detection.windows import Partial, SeriesWindows, partials
from bench import nab_replay

WINDOW_MS = 60_000
WINDOWS = 20_000
SEASONS = DetectorSettings.model_fields["anomaly_season_periods_s"].default
RECURRING = DetectorSettings.model_fields["anomaly_recurring_per_day"].default


def _windows() -> list[Partial]:
    rnd = random.Random(1)
    out = []
    for i in range(WINDOWS):
        ts = [i * WINDOW_MS + k * 15_000 for k in range(4)]
        out.extend(partials(ts, [rnd.gauss(50, 5) for _ in ts], WINDOW_MS))
    return out


def _one(
    periods: tuple[int, ...], ps: list[Partial], repeats: int, recurring: float = 0.0
) -> dict[str, Any]:
    rule = Rule(
        window_ms=WINDOW_MS,
        alpha=ew_alpha(WINDOW_MS, 6 * 3600),
        season_periods_s=periods,
        recurring_per_day=recurring,
    )
    runs = []
    b, seasons = Baseline(), dict[int, Season]()
    for _ in range(repeats):
        b, seasons = Baseline(), dict[int, Season]()
        t = time.process_time()
        for p in ps:
            rule.judge(b, p, seasons=seasons)
        runs.append(1e6 * (time.process_time() - t) / len(ps))
    series = Series("m", {"instance": "host:9100"}, SeriesWindows(WINDOW_MS, 0), b, seasons)
    doc = {f"k{i}": series.to_json() for i in range(100)}
    ser = []
    for _ in range(repeats):
        t = time.process_time()
        text = json.dumps(doc, separators=(",", ":"))
        ser.append(1000 * (time.process_time() - t))
    return {
        "judge_us_per_window": statistics.median(runs),
        "runs": runs,
        "checkpoint_bytes_per_series": len(text) / 100,
        "checkpoint_ms_per_100_series": statistics.median(ser),
    }


def measure(repeats: int, nab: bool = True) -> dict[str, Any]:
    ps = _windows()
    out: dict[str, Any] = {
        "plain": _one((), ps, repeats),
        "with_cycles": _one(SEASONS, ps, repeats),
        "with_cycles_and_tail": _one(SEASONS, ps, repeats, RECURRING),
        "periods_s": list(SEASONS),
    }
    out["tail_cost_ratio"] = (
        out["with_cycles_and_tail"]["judge_us_per_window"]
        / out["with_cycles"]["judge_us_per_window"]
    )
    out["cost_ratio"] = (
        out["with_cycles"]["judge_us_per_window"] / out["plain"]["judge_us_per_window"]
    )
    if nab:
        root = Path(__file__).resolve().parent.parent.parent / "shared" / "nab"
        out["nab"] = nab_replay.measure(root)
    return out


def summary(r: dict[str, Any]) -> str:
    p, c, t = r["plain"], r["with_cycles"], r["with_cycles_and_tail"]
    lines = [
        f"detector-normal: judge {p['judge_us_per_window']:.1f} µs/window plain, "
        f"{c['judge_us_per_window']:.1f} with the cycles {r['periods_s']} "
        f"(ratio {r['cost_ratio']:.2f}); checkpoint {p['checkpoint_bytes_per_series']:.0f} / "
        f"{c['checkpoint_bytes_per_series']:.0f} bytes a series, "
        f"{p['checkpoint_ms_per_100_series']:.1f} / {c['checkpoint_ms_per_100_series']:.1f} ms "
        "to serialise 100",
        f"  with the recurring tail too (the default): {t['judge_us_per_window']:.1f} µs/window "
        f"(ratio {r['tail_cost_ratio']:.2f} against the cycles alone), "
        f"{t['checkpoint_bytes_per_series']:.0f} bytes a series",
    ]
    for cat, kinds in r.get("nab", {}).get("categories", {}).items():
        for kind, sc in kinds.items():
            lines.append(
                f"  NAB {cat:22s} {kind:17s} detected {sc['detected']}/"
                f"{sc['labelled_windows']}, false alarms/day {sc['false_alarms_per_day']:.2f}"
            )
    return "\n".join(lines)
