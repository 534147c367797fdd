"""NAB's scoring rules, our own implementation (numenta/NAB v1.1, ``nab/sweeper.py``).

Per data file, after its probationary period (``min(floor(0.15 n), 750)`` rows):

- every point inside a labelled anomaly window ``[start, end]`` (``width`` points, right
  edge at row ``r``) is worth ``tp · σ(-(r - i + 1) / width) / σ(-1)`` as a detection, with
  the scaled sigmoid ``σ(x) = 2 / (1 + e^{5x}) - 1`` (``-1`` from ``x >= 3``): the window's
  first point earns the full ``tp`` weight, its last one a little more than 0;
- a window's score is the best of its detections, ``-fn`` when nothing fired in it (only
  windows with a scorable point count);
- every detection outside windows costs ``fp · σ(|i - r_prev| / (width_prev - 1))`` relative
  to the previous window (close after a window costs less), the full ``-fp`` before any;
- a detection is a point whose anomaly score is ``>=`` the threshold. The optimised score
  uses the threshold that maximises the corpus total (one threshold for all files, every
  distinct score tried, as NAB's sweeper does); the fixed one is chosen in advance.

Normalised: ``100 · (raw - null) / (perfect - null)``, ``null`` the score of a detector that
never fires (``-fn`` per scorable window), ``perfect`` ``tp`` per labelled window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

PROBATION_PERCENT = 0.15

PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_FP_rate": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_FN_rate": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}


def probation_length(n: int) -> int:
    """NAB's probationary period: the first 15 % of a file's rows, at most 750."""
    return int(min(math.floor(PROBATION_PERCENT * n), PROBATION_PERCENT * 5000))


def scaled_sigmoid(x: float) -> float:
    """NAB's reward for relative position ``x`` (-1 window start, 0 its end, > 0 after)."""
    if x >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


@dataclass
class FileWeights:
    """One file's scorable points: anomaly score, NAB weight as a detection, window id (-1 none)."""

    name: str
    scores: npt.NDArray[np.float64]
    tp_part: npt.NDArray[np.float64]  # sigmoid part in a window (times tp / MAX_TP)
    fp_part: npt.NDArray[np.float64]  # sigmoid part outside (times fp), negative
    window: npt.NDArray[np.int64]
    windows_scorable: int  # windows with at least one point after probation
    windows_labelled: int


def file_weights(
    name: str,
    timestamps: Sequence[np.datetime64] | npt.NDArray[np.datetime64],
    scores: Sequence[float] | npt.NDArray[np.float64],
    windows: Iterable[tuple[np.datetime64, np.datetime64]],
) -> FileWeights:
    """Classify every row of one file against its windows (rows in file order)."""
    ts = np.asarray(timestamps, dtype="datetime64[ns]")
    sc = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0)
    if ts.shape != sc.shape:
        raise ValueError(f"{name}: {len(ts)} timestamps but {len(sc)} scores")
    n = len(ts)
    wins = sorted(windows)
    # Rows of each window, by timestamp (NAB matches the window's start and end rows).
    spans: list[tuple[int, int]] = []
    for start, end in wins:
        idx = np.flatnonzero((ts >= start) & (ts <= end))
        if len(idx):
            spans.append((int(idx[0]), int(idx[-1])))
    win_of = np.full(n, -1, dtype=np.int64)
    tp_part = np.zeros(n)
    fp_part = np.zeros(n)
    k = 0
    prev_right: int | None = None
    prev_width = 0
    for i in range(n):
        while k < len(spans) and spans[k][1] < i:
            prev_right, prev_width = spans[k][1], spans[k][1] - spans[k][0] + 1
            k += 1
        if k < len(spans) and spans[k][0] <= i <= spans[k][1]:
            left, right = spans[k]
            width = right - left + 1
            win_of[i] = k
            tp_part[i] = scaled_sigmoid(-(right - i + 1) / width) / MAX_TP
        elif prev_right is None:
            fp_part[i] = -1.0
        else:
            fp_part[i] = scaled_sigmoid(abs(i - prev_right) / max(prev_width - 1, 1))
    keep = slice(probation_length(n), n)
    scorable = {int(w) for w in win_of[keep] if w >= 0}
    return FileWeights(
        name,
        sc[keep],
        tp_part[keep],
        fp_part[keep],
        win_of[keep],
        len(scorable),
        len(wins),
    )


@dataclass
class Result:
    threshold: float
    raw: float
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    per_file: dict[str, float] = field(default_factory=dict)


def score_at(files: Sequence[FileWeights], threshold: float, profile: dict[str, float]) -> Result:
    """The raw NAB score of ``files`` when every score ``>= threshold`` is a detection."""
    res = Result(threshold, 0.0)
    for f in files:
        det = f.scores >= threshold
        in_win = f.window >= 0
        fp_cost = float(np.sum(f.fp_part[det & ~in_win])) * profile["fp"]
        total = fp_cost
        hit = 0
        for w in {int(x) for x in f.window[in_win]}:
            sel = det & (f.window == w)
            if sel.any():
                total += float(np.max(f.tp_part[sel])) * profile["tp"]
                hit += 1
            else:
                total -= profile["fn"]
        res.per_file[f.name] = total
        res.raw += total
        res.tp += int(np.sum(det & in_win))
        res.fp += int(np.sum(det & ~in_win))
        res.fn += int(np.sum(~det & in_win))
        res.tn += int(np.sum(~det & ~in_win))
    return res


def optimise(files: Sequence[FileWeights], profile: dict[str, float]) -> tuple[float, float]:
    """(threshold, raw score) maximising the corpus total over every distinct score.

    Sweeps thresholds from the highest score down (as NAB's sweeper): each point becomes a
    detection in turn; a window's value is the best detection in it so far, or ``-fn``.
    The returned threshold is the lowest score of the best group (``>=`` detects it); 1.1
    (nothing fires) when firing never helps.
    """
    parts_s: list[npt.NDArray[np.float64]] = []
    parts_v: list[npt.NDArray[np.float64]] = []
    parts_w: list[npt.NDArray[np.int64]] = []
    base = 0.0
    offset = 0
    for f in files:
        in_win = f.window >= 0
        parts_s.append(f.scores)
        parts_v.append(
            np.where(in_win, f.tp_part * profile["tp"], f.fp_part * profile["fp"]).astype(
                np.float64
            )
        )
        parts_w.append(np.where(in_win, f.window + offset, -1))
        offset += int(f.window.max()) + 1 if len(f.window) and f.window.max() >= 0 else 0
        base -= profile["fn"] * f.windows_scorable
    if not parts_s:
        return 1.1, 0.0
    s = np.concatenate(parts_s)
    v = np.concatenate(parts_v)
    w = np.concatenate(parts_w)
    order = np.argsort(-s, kind="stable")
    s, v, w = s[order], v[order], w[order]
    best_t, best = 1.1, base
    cur = base
    win_best: dict[int, float] = {}
    fn = profile["fn"]
    n = len(s)
    i = 0
    while i < n:
        j = i
        while j < n and s[j] == s[i]:
            wi = int(w[j])
            if wi < 0:
                cur += float(v[j])
            else:
                old = win_best.get(wi, -fn)
                if v[j] > old:
                    cur += float(v[j]) - old
                    win_best[wi] = float(v[j])
            j += 1
        if cur > best + 1e-12:
            best, best_t = cur, float(s[i])
        i = j
    return best_t, best


def normalise(raw: float, files: Sequence[FileWeights], profile: dict[str, float]) -> float:
    """NAB's 0-100 scale: 0 the null detector, 100 a detection at every window's start."""
    null = -profile["fn"] * sum(f.windows_scorable for f in files)
    perfect = profile["tp"] * sum(f.windows_labelled for f in files)
    if perfect == null:
        return 0.0 if raw <= null else 100.0
    return 100.0 * (raw - null) / (perfect - null)
