"""Sixth pass of issue 15 (BENCHMARKS.md): the lead view, ``python -m bench.bench_explain_lead
[tuning|held-out|new-held-out]``.

A feature that had already left its reference range right before the anomaly (its *lead*
points, in the gap after the reference, where the SLI was still fine) gets the smaller of its
distance and its distance with those lead points counted as reference
(``ExplainConfig.lead_view="lead"``): the host's batch job, which started 7-25 min before
the anomaly and held its level, no longer ties with the injected cause at D = 1, while a change
that kept growing into the anomaly (a leak's ramp) still separates. Each case is explained
with the lead view and without it (``"none"``), the two baselines in the same run.

Cases: ``tuning`` = 2000-2159 (the only ones the variant was chosen on), ``held-out`` =
1000-1119 (the reported cases of the earlier passes), ``new-held-out`` = 3000-3119 (never used
before this pass).
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from bench.bench_explain import (
    CASE_OFFSET,
    CASES,
    NEW_CASE_OFFSET,
    TUNING_CASES,
    TUNING_OFFSET,
    _at3,
    baseline_correlation,
    baseline_shift,
    make_case,
    speed_inputs,
)
from sla_manager.explain.exstream import ExplainConfig, explain

CONFIGS = {
    "lead view": ExplainConfig(lead_view="lead"),
    "no lead view": ExplainConfig(lead_view="none"),
}
SETS = {
    "tuning": (TUNING_OFFSET, TUNING_CASES),
    "held-out": (CASE_OFFSET, CASES),
    "new-held-out": (NEW_CASE_OFFSET, CASES),
}


def one(i: int) -> dict[str, tuple[float, float, bool]]:
    c = make_case(i)
    injected = set(c.injected)
    out = {}
    for name, cfg in CONFIGS.items():
        e = explain(
            c.values,
            c.anomalous,
            c.reference,
            false_positive_intervals=c.fp_pairs or None,
            seasonal=c.seasonal,
            sli=c.sli,
            config=cfg,
        )
        out[name] = _at3(e.order, injected)
    out["mean shift"] = _at3(baseline_shift(c.values, c.anomalous, c.reference), injected)
    out["correlation with the SLI"] = _at3(
        baseline_correlation(c.values, c.sli, c.anomalous, c.reference), injected
    )
    return out


def measure(offset: int, cases: int) -> dict[str, Any]:
    with ProcessPoolExecutor(2) as pool:
        rows = list(pool.map(one, range(offset, offset + cases)))
    res: dict[str, Any] = {}
    for name in rows[0]:
        res[name] = {
            "precision_at_3": statistics.fmean(r[name][0] for r in rows),
            "recall_at_3": statistics.fmean(r[name][1] for r in rows),
            "rank1_injected": statistics.fmean(float(r[name][2]) for r in rows),
        }
    res["changed"] = [
        [offset + k, bool(r["no lead view"][2]), bool(r["lead view"][2])]
        for k, r in enumerate(rows)
        if r["no lead view"][2] != r["lead view"][2]
    ]
    return res


def speed(n: int = 1000, repeats: int = 3) -> dict[str, float]:
    """CPU-s of one explain of ``n`` series x 2,880 points (the speed bench's matrix, the
    SLI's values given: the host's first series), with and without the lead view, the two
    alternated call by call in one process; median of ``repeats``. Without and with the day
    before and a false-positive pair (the violation route's call with a day of history)."""
    x, a, r, sli, calls = speed_inputs(n)
    del calls["seasonal"]
    cpu: dict[str, list[float]] = {}
    for _ in range(repeats):
        for call, kw in calls.items():
            for name, cfg in CONFIGS.items():
                t0 = time.process_time()
                explain(x, a, r, sli=sli, config=cfg, **kw)
                cpu.setdefault(f"{call} {name}", []).append(time.process_time() - t0)
    return {k: statistics.median(v) for k, v in cpu.items()}


if __name__ == "__main__":
    if sys.argv[1:] == ["speed"]:
        for k, v in speed().items():
            print(f"speed 1,000 x 2,880 {k}: {v:.3f} CPU-s")
        sys.exit()
    for which in sys.argv[1:] or list(SETS):
        res = measure(*SETS[which])
        for name, m in res.items():
            if name == "changed":
                print(f"{which}: changed (case, without, with the lead view): {m}")
                continue
            print(
                f"{which} {name}: rank-1 {100 * m['rank1_injected']:.1f}% "
                f"P@3 {m['precision_at_3']:.3f} R@3 {m['recall_at_3']:.3f}"
            )
