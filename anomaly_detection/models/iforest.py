"""Isolation-forest anomaly scores per series, streaming-honest.

Features of row ``i`` use rows ``<= i`` only (:func:`features`): the value, its first
difference, and for each window ``w`` of :data:`WINDOWS` rows the mean and standard deviation
of the ``w`` rows *before* ``i``, the deviation from that mean (raw and in those stds);
time of day (sin, cos) when the training history covers at least two days, day of week when
it covers two weeks; and a shingle (as Random Cut Forest's): the last :data:`SHINGLE` first
differences, each over a robust scale of the differences in the longest window before
(``max(median |d|, std(d) / 2)``), so that a shape of a few rows — a spike, a step, a
change of slope — is one point the forest can isolate, whatever the series' scale.

Training: an :class:`~sklearn.ensemble.IsolationForest` fitted on the probationary rows, then
re-fitted every :data:`RETRAIN_EVERY` rows on the (at most :data:`MAX_TRAIN`) rows before;
rows are scored by the latest forest fitted before them.

Score: ``s = -score_samples`` (the forest's ``2^(-E[h]/c(n))``, 0.5 = as isolable as an
average point) calibrated against the training rows' own scores: ``q`` = their 99.5 %
quantile, ``m`` their maximum, and ``score = clip(0.5 + (s - q) / (2 (m - q)), 0, 1)`` above
``q``, ``0.5 · s / q`` below; at least ``0.5 + 0.5 tanh(e / 2)`` when the row's deviation
features lie ``e`` training ranges outside the training rows' (:func:`beyond`). When every
training value is the same, only that second part scores (the forest could isolate rows on
the time of day alone).

Threshold rule (fixed in advance): a score above 0.5 is a row more isolable than 99.5 % of
what the model was trained on, or beyond its deviations, and more anomalous than the
:data:`SUPPRESS_ROWS` rows before it (:func:`suppress_repeats`).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.ensemble import IsolationForest  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

WINDOWS = (6, 36, 288)
RETRAIN_EVERY = 288
MAX_TRAIN = 4000
MIN_TRAIN = 32
N_TREES = 100
N_FORESTS = 1
TRAIN_QUANTILE = 0.995
DAY_S = 86_400.0
SUPPRESS_ROWS = 200
EXT_SCALE = 2.0
SHINGLE = 8


def deviation_columns(n_windows: int) -> list[int]:
    """Columns of :func:`features`: the difference, and per window the deviation in stds."""
    return [1] + [2 + 4 * k + 3 for k in range(n_windows)]


DEVIATION_COLUMNS = deviation_columns(len(WINDOWS))


def features(
    times: npt.NDArray[np.datetime64],
    values: npt.NDArray[np.float64],
    with_time: bool,
    with_week: bool = False,
    windows: tuple[int, ...] = WINDOWS,
    shingle: int = SHINGLE,
) -> npt.NDArray[np.float64]:
    """The feature matrix (rows x features), causal; missing values carried forward.

    Columns: value, difference, then per window (in rows) mean, std, deviation, deviation
    in stds (:func:`deviation_columns`), then day of week and time of day (sin, cos) when
    asked for, then the shingle: differences ``d[i - j]`` (``j < shingle``, default
    :data:`SHINGLE`) over the robust scale of the ``max(windows)`` differences before row ``i``."""
    v = pd.Series(values, dtype="float64").ffill().fillna(0.0)
    cols: list[pd.Series] = [v, v.diff().fillna(0.0)]
    past = v.shift(1)
    for w in windows:
        m = past.rolling(w, min_periods=1).mean()
        sd = past.rolling(w, min_periods=2).std(ddof=0)
        m = m.fillna(v)
        sd = sd.fillna(0.0)
        dev = v - m
        cols += [m, sd, dev, dev / (sd + 1e-9 * (1.0 + v.abs()))]
    t = pd.Series(times).astype("int64").to_numpy(dtype=np.float64) / 1e9
    bad = np.isnat(times)
    if with_week:
        dow = np.where(bad, 0.0, 2 * np.pi * (t % (7 * DAY_S)) / (7 * DAY_S))
        cols += [pd.Series(np.sin(dow)), pd.Series(np.cos(dow))]
    if with_time:
        tod = np.where(bad, 0.0, 2 * np.pi * (t % DAY_S) / DAY_S)
        cols += [pd.Series(np.sin(tod)), pd.Series(np.cos(tod))]
    d = cols[1]
    before = d.shift(1)
    w = max(windows)
    mad = before.abs().rolling(w, min_periods=2).median().fillna(0.0).to_numpy()
    sdd = before.rolling(w, min_periods=2).std(ddof=0).fillna(0.0).to_numpy()
    scale = np.maximum(mad, 0.5 * sdd) + 1e-9 * (1.0 + v.abs().to_numpy())
    cols += [pd.Series(d.shift(j).fillna(0.0).to_numpy() / scale) for j in range(shingle)]
    x = np.column_stack([c.to_numpy(dtype=np.float64) for c in cols])
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    clipped: npt.NDArray[np.float64] = np.clip(x, -1e12, 1e12)
    return clipped


def _span_s(times: npt.NDArray[np.datetime64]) -> float:
    ok = times[~np.isnat(times)]
    if len(ok) < 2:
        return 0.0
    return float((ok.max() - ok.min()) / np.timedelta64(1, "s"))


def beyond(x: npt.NDArray[np.float64], train: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """How far each row lies outside the training range, in training ranges (max over columns).

    A forest cannot tell a point just past its training extremes from one far past them
    (both end in the extreme leaves, and in-sample noise can isolate as fast): this measures
    the distance, on the deviation columns (:data:`DEVIATION_COLUMNS`) only — levels drift.
    """
    return beyond_range(x, train.min(axis=0), train.max(axis=0))


def beyond_range(
    x: npt.NDArray[np.float64], lo: npt.NDArray[np.float64], hi: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """:func:`beyond` against a stored training range (per column minimum and maximum)."""
    span = np.maximum(hi - lo, 1e-9 * (1.0 + np.abs(hi)))
    out = np.maximum(np.maximum(x - hi, lo - x), 0.0) / span
    dist: npt.NDArray[np.float64] = out.max(axis=1)
    return dist


def _calibrate_with(raw: npt.NDArray[np.float64], q: float, m: float) -> npt.NDArray[np.float64]:
    spread = max(m - q, 1e-6)
    hi = 0.5 + (raw - q) / (2 * spread)
    lo = 0.5 * raw / max(q, 1e-6)
    return np.clip(np.where(raw > q, hi, lo), 0.0, 1.0)


def iforest_scores(
    times: npt.NDArray[np.datetime64],
    values: npt.NDArray[np.float64],
    probation: int,
    name: str,
    *,
    n_trees: int = N_TREES,
    seed_offset: int = 0,
    shingle: int = SHINGLE,
) -> npt.NDArray[np.float64]:
    """Scores of one series; ``n_trees``, ``seed_offset`` (added to the file's CRC-32
    seed) and ``shingle`` exist for the benchmark's forest-size / seed / shingle-length
    comparisons (bench/bench_nab.py)."""
    n = len(values)
    out = np.zeros(n)
    first = max(probation, MIN_TRAIN)
    if n <= first or np.all(np.isnan(values)):
        return out
    with_time = _span_s(times[:first]) >= 2 * DAY_S
    x = features(times, values, with_time, _span_s(times[:first]) >= 14 * DAY_S, shingle=shingle)
    seed = zlib.crc32(name.encode()) + seed_offset
    start = first
    while start < n:
        lo = max(0, start - MAX_TRAIN)
        end = min(n, start + RETRAIN_EVERY)
        out[start:end] = fit(x[lo:start], seed, n_trees=n_trees).score(x[start:end])
        start = end
    return suppress_repeats(out, SUPPRESS_ROWS)


@dataclass
class Fitted:
    """Forests fitted on training rows, with what scoring needs of those rows: per forest
    the calibration points (``q``, ``m`` of the module doc) and the training range of the
    deviation columns (:func:`beyond`). Scores rows of the same feature layout."""

    forests: list[IsolationForest]
    calibration: list[tuple[float, float]]
    deviation_cols: list[int]
    deviation_lo: npt.NDArray[np.float64]
    deviation_hi: npt.NDArray[np.float64]
    # Every training value the same: the forests could only isolate on the time features,
    # which say nothing about the series; only :func:`beyond` scores then.
    constant: bool = False

    def score(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Calibrated scores in [0, 1] (no repeat suppression)."""
        cal = np.zeros(len(x))
        if not self.constant:  # (older artefacts: the class default)
            for forest, (q, m) in zip(self.forests, self.calibration, strict=True):
                cal += _calibrate_with(-forest.score_samples(x), q, m) / len(self.forests)
        ext = beyond_range(x[:, self.deviation_cols], self.deviation_lo, self.deviation_hi)
        out: npt.NDArray[np.float64] = np.maximum(
            cal, np.where(ext > 0, 0.5 + 0.5 * np.tanh(ext / EXT_SCALE), 0)
        )
        return out


def fit(
    train: npt.NDArray[np.float64],
    seed: int,
    *,
    n_trees: int = N_TREES,
    n_forests: int = N_FORESTS,
    quantile: float = TRAIN_QUANTILE,
    deviation_cols: list[int] | None = None,
) -> Fitted:
    """Fit ``n_forests`` forests on ``train`` (rows of :func:`features`)."""
    cols = DEVIATION_COLUMNS if deviation_cols is None else deviation_cols
    forests, calibration = [], []
    for k in range(n_forests):
        forest = IsolationForest(
            n_estimators=n_trees, max_samples=min(256, len(train)), random_state=seed + k
        )
        forest.fit(train)
        train_raw = -forest.score_samples(train)
        forests.append(forest)
        calibration.append((float(np.quantile(train_raw, quantile)), float(train_raw.max())))
    dev = train[:, cols]
    constant = len(train) > 0 and float(np.ptp(train[:, 0])) == 0.0
    return Fitted(forests, calibration, list(cols), dev.min(axis=0), dev.max(axis=0), constant)


def suppress_repeats(scores: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.float64]:
    """Halve every score not above all of the ``k - 1`` scores before it (causal).

    An anomaly lasts: the rows after its first alarm score high too, and each would be a
    further alarm (NAB counts only a window's first detection and charges every alarm
    outside). Only a row more anomalous than everything in the recent past keeps its score.
    """
    if k <= 1 or len(scores) == 0:
        return scores
    pad = np.concatenate([np.zeros(k - 1), scores])
    recent = np.lib.stride_tricks.sliding_window_view(pad, k)[:, :-1].max(axis=1)
    out: npt.NDArray[np.float64] = np.where(scores > recent, scores, 0.5 * scores)
    return out
