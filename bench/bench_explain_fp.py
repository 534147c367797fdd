"""Fifth pass of issue 15 (BENCHMARKS.md): three ideas against the misses of the ranking
over the chance level, ``python -m bench.bench_explain_fp`` (tuning cases) and
``python -m bench.bench_explain_fp held-out`` (the reported cases: the default and the
chosen variant only).

1. the false-positive filter compares distances only, which do not see how far a series
   moved: keep a feature it would drop when its anomalous median departs from the
   reference median ``k`` times further than the day-before pair's anomaly-like side
   departs from its reference-like side (both in the reference's robust scale);
2. when the best feature both filters keep scores under its chance level (D / c < 1), set
   the filters' verdicts aside and rank every feature by D / c;
3. D / c times the absolute correlation with the SLI.

One default :func:`explain` per case (its per-feature figures kept, as in
``bench_explain_rerank``), the medians of the pair's two sides and the correlation with the
SLI computed here; each variant re-orders the features from those figures.
"""

from __future__ import annotations

import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bench.bench_explain import CASE_OFFSET, CASES, TUNING_CASES, TUNING_OFFSET, make_case
from bench.bench_explain_rerank import explained

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
KS = (1.5, 2.0, 3.0, 5.0, 10.0)
BELOW = (0.75, 1.0, 1.25)
CHOSEN = "2: filters set aside when the best kept scores < 1"


@dataclass(frozen=True)
class Table:
    injected: frozenset[int]
    score: FloatArray  # the default's ranking key (distance over its chance level)
    margin: FloatArray
    lead: FloatArray
    false_pos: BoolArray
    negligible: BoolArray
    effect: FloatArray  # |median A - median R| / robust sd of R
    pair_effect: FloatArray  # |median anomaly-like - median reference-like| / robust sd of R
    sli_corr: FloatArray  # |Pearson r| with the SLI over the anomalous and reference points


def _scale(v: FloatArray) -> FloatArray:
    q75, q25 = np.percentile(v, [75, 25], axis=1)
    sd = (q75 - q25) / 1.349
    floor = 1e-9 * np.maximum(np.abs(np.median(v, axis=1)), 1.0)
    return np.asarray(np.maximum(sd, floor))


def _abs_corr(x: FloatArray, y: FloatArray) -> FloatArray:
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean()
    den = np.sqrt((xc**2).sum(axis=1) * (yc**2).sum())
    r = np.divide(xc @ yc, den, out=np.zeros(x.shape[0]), where=den > 0)
    return np.asarray(np.abs(r))


def table(i: int) -> Table:
    c = make_case(i)
    e = explained(c)
    n = c.values.shape[0]
    score, margin, lead = np.zeros(n), np.zeros(n), np.zeros(n)
    fp, neg = np.zeros(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_)
    for group, mask in ((e.ranked, None), (e.false_positives, fp), (e.negligible, neg)):
        for s in group:
            score[s.index] = s.score
            margin[s.index] = s.margin
            lead[s.index] = s.lead_points
            if mask is not None:
                mask[s.index] = True
    x = c.values
    r_vals = x[:, c.reference]
    sd = _scale(r_vals)
    effect = np.abs(np.median(x[:, c.anomalous], axis=1) - np.median(r_vals, axis=1)) / sd
    pair_effect = np.full(n, np.inf)  # no day-before pair: nothing to compare with
    if c.fp_pairs:
        pe = [
            np.abs(np.median(x[:, pa], axis=1) - np.median(x[:, pr], axis=1)) / sd
            for pr, pa in c.fp_pairs
        ]
        pair_effect = np.median(np.vstack(pe), axis=0)
    used = c.anomalous | c.reference
    return Table(
        frozenset(c.injected), score, margin, lead, fp, neg, effect, pair_effect,
        _abs_corr(x[:, used], c.sli[used]),
    )  # fmt: skip


def order(
    t: Table, demoted: BoolArray, key: FloatArray | None = None, decimals: int = 2
) -> npt.NDArray[np.int64]:
    """The default's order (ties by margin, then lead) with ``demoted`` features last."""
    k = t.score if key is None else key
    full = np.lexsort((-t.lead, -t.margin, -np.round(k, decimals)))
    return np.concatenate([full[~demoted[full]], full[demoted[full]]])


def _overruled(t: Table, below: float, only_fp: bool = False) -> BoolArray:
    """Idea 2: when no feature both filters keep scores ``below`` (its distance under its
    chance level at 1), the filters' verdicts are set aside (all, or the false positives')."""
    demoted = t.false_pos | t.negligible
    kept = np.flatnonzero(~demoted)
    if len(kept) and t.score[kept].max() >= below:
        return demoted
    return t.negligible if only_fp else np.zeros_like(demoted)


def variants(t: Table) -> dict[str, tuple[BoolArray, FloatArray | None]]:
    demoted = t.false_pos | t.negligible
    out: dict[str, tuple[BoolArray, FloatArray | None]] = {"the default": (demoted, None)}
    for k in KS:
        rescued = t.false_pos & (t.effect >= k * t.pair_effect)
        out[f"1: a false positive kept when its effect >= {k:g} x the pair's"] = (
            demoted & ~rescued,
            None,
        )
    for below in BELOW:
        out[f"2: filters set aside when the best kept scores < {below:g}"] = (
            _overruled(t, below),
            None,
        )
        out[f"2: false-positive filter set aside when < {below:g}"] = (
            _overruled(t, below, only_fp=True),
            None,
        )
    out["3: score x |r with the SLI|"] = (demoted, t.score * t.sli_corr)
    return out


def tables(cases: int, offset: int) -> list[Table]:
    with ProcessPoolExecutor(2) as pool:
        return list(pool.map(table, range(offset, offset + cases)))


def measure(
    cases: int = TUNING_CASES, offset: int = TUNING_OFFSET, only: tuple[str, ...] | None = None
) -> dict[str, dict[str, float]]:
    return evaluate(tables(cases, offset), only)


def evaluate(
    tables: list[Table], only: tuple[str, ...] | None = None
) -> dict[str, dict[str, float]]:
    rank1: dict[str, list[float]] = {}
    recall3: dict[str, list[float]] = {}
    for t in tables:
        for name, (demoted, key) in variants(t).items():
            if only is not None and name not in only:
                continue
            o = [int(i) for i in order(t, demoted, key)]
            rank1.setdefault(name, []).append(float(o[0] in t.injected))
            recall3.setdefault(name, []).append(
                len(t.injected.intersection(o[:3])) / len(t.injected)
            )
    return {
        name: {"rank1_injected": statistics.fmean(rank1[name]),
               "recall_at_3": statistics.fmean(recall3[name])}
        for name in rank1
    }  # fmt: skip


if __name__ == "__main__":
    if sys.argv[1:] == ["held-out"]:  # the reported cases: the default and the chosen only
        res = measure(CASES, CASE_OFFSET, ("the default", CHOSEN))
    else:
        res = measure()
    for name, m in res.items():
        print(f"{name}: rank-1 {100 * m['rank1_injected']:.1f}%, R@3 {m['recall_at_3']:.3f}")
