"""Ranking refinements of EXstream tried on the tuning cases (issue 15, fourth pass):
``python -m bench.bench_explain_rerank``.

One :func:`explain` run per tuning case (``bench_explain.TUNING_OFFSET``, never the reported
cases), its per-feature figures (distance, the day-before pair's distance, the chance level
from windows of the reference, margin, standardised shift, lead, the filters' inputs) kept;
each variant then re-ranks those figures the way :func:`explain` would (false positives and
negligible moves last) and the rank-1 rate of an injected series and recall@3 are counted.
Only the ranking key and the tie-break change; the filters stay those of the default.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bench.bench_explain import TUNING_CASES, TUNING_OFFSET, Case, make_case
from sla_manager.explain.exstream import ExplainConfig, Explanation, explain

FloatArray = npt.NDArray[np.float64]
FLOOR = 1e-3


@dataclass(frozen=True)
class Table:
    injected: frozenset[int]
    distance: FloatArray  # min(plain, seasonal)
    pair: FloatArray  # distance between the day-before pair (the false-positive test)
    windows: FloatArray  # median distance between windows of the reference (chance level)
    margin: FloatArray
    shift: FloatArray
    lead: FloatArray
    escaped: npt.NDArray[np.bool_]
    demoted: npt.NDArray[np.bool_]


def explained(c: Case) -> Explanation:
    """The default :func:`explain` of a generated case, every feature's figures kept."""
    return explain(
        c.values,
        c.anomalous,
        c.reference,
        false_positive_intervals=c.fp_pairs or None,
        seasonal=c.seasonal,
        config=ExplainConfig(max_ranked=100_000),
    )


def table(i: int) -> Table:
    c = make_case(i)
    e = explained(c)
    n = c.values.shape[0]
    cols = {k: np.zeros(n) for k in ("pair", "windows", "margin", "shift", "lead", "escaped")}
    demoted = np.zeros(n, dtype=np.bool_)
    for group, dropped in ((e.ranked, False), (e.false_positives, True), (e.negligible, True)):
        for s in group:
            demoted[s.index] = dropped
            cols["pair"][s.index] = s.reference_distance
            cols["windows"][s.index] = s.chance_distance
            cols["margin"][s.index] = s.margin
            cols["shift"][s.index] = abs(s.standardised_shift)
            cols["lead"][s.index] = s.lead_points
            lo, hi = s.reference_range
            beyond = s.anomalous_median - hi if s.direction == "above" else lo - s.anomalous_median
            cols["escaped"][s.index] = float(beyond > 0 and beyond >= hi - lo)
    return Table(
        frozenset(c.injected),
        np.asarray(e.distances.distance),
        cols["pair"],
        cols["windows"],
        cols["margin"],
        cols["shift"],
        cols["lead"],
        cols["escaped"] > 0,
        demoted,
    )


Key = Callable[[Table], FloatArray]


def _ratio(chance: Callable[[Table], FloatArray], escape: bool = False) -> Key:
    def key(t: Table) -> FloatArray:
        level = np.maximum(chance(t), FLOOR)
        if escape and t.escaped.any():
            level = np.where(t.escaped, np.minimum(level, level.min()), level)
        return np.asarray(t.distance / level)

    return key


def _kappa(t: Table) -> FloatArray:
    c = t.windows
    return np.asarray(np.clip((t.distance - c) / np.maximum(1 - c, 1e-9), 0, 1))


VARIANTS: dict[str, tuple[Key, str]] = {
    "D, ties by margin (the previous default)": (lambda t: t.distance, "margin"),
    "D, ties by the standardised shift": (lambda t: t.distance, "shift"),
    "D, ties by the chance level (lower first)": (lambda t: t.distance, "chance"),
    "(D - c) / (1 - c), c from windows": (_kappa, "margin"),
    "D - c, c from windows": (lambda t: t.distance - t.windows, "margin"),
    "D - c, c from the day-before pair": (lambda t: t.distance - t.pair, "margin"),
    "D / c, c from the day-before pair": (_ratio(lambda t: t.pair), "margin"),
    "D / c, c = max(pair, windows)": (_ratio(lambda t: np.maximum(t.pair, t.windows)), "margin"),
    "D / sqrt(c), c from windows": (
        lambda t: t.distance / np.sqrt(np.maximum(t.windows, FLOOR)),
        "margin",
    ),
    "D / c, c from windows": (_ratio(lambda t: t.windows), "margin"),
    "D / c, c from windows, escaped at the lowest c (default)": (
        _ratio(lambda t: t.windows, escape=True),
        "margin",
    ),
}


def order(t: Table, key: Key, tie: str, decimals: int = 2) -> npt.NDArray[np.int64]:
    second = {"margin": t.margin, "shift": t.shift, "chance": -t.windows}[tie]
    full = np.lexsort((-t.lead, -second, -np.round(key(t), decimals)))
    return np.concatenate([full[~t.demoted[full]], full[t.demoted[full]]])


def measure(cases: int = TUNING_CASES, offset: int = TUNING_OFFSET) -> dict[str, dict[str, float]]:
    tables = [table(i) for i in range(offset, offset + cases)]
    out = {}
    for name, (key, tie) in VARIANTS.items():
        rank1, recall3 = [], []
        for t in tables:
            o = [int(i) for i in order(t, key, tie)]
            rank1.append(float(o[0] in t.injected))
            recall3.append(len(t.injected.intersection(o[:3])) / len(t.injected))
        out[name] = {
            "rank1_injected": statistics.fmean(rank1),
            "recall_at_3": statistics.fmean(recall3),
        }
    return out


if __name__ == "__main__":
    for name, m in measure().items():
        print(f"{name}: rank-1 {100 * m['rank1_injected']:.1f}%, R@3 {m['recall_at_3']:.3f}")
