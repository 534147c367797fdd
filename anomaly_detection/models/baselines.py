"""Reference detectors for NAB: never firing, uniformly random, and the streaming detector's
windowed σ rule replayed in batch."""

from __future__ import annotations

import math
import zlib

import numpy as np
import numpy.typing as npt

# The streaming detector's defaults (anomaly_detection settings): ERROR beyond 2 normal std;
# learned normal = robust EW mean/variance of closed windows, half-life 6 h, LEARNING for 30
# windows. Windows of 15 minutes on NAB's 5-minute data (3 points, the detector's NAB bench).
SIGMA_WINDOW_S = 900.0
SIGMA_ERROR = 2.0
SIGMA_HALFLIFE_S = 6 * 3600.0
SIGMA_MIN_HISTORY = 30
ROWS_PER_WINDOW_NO_TIME = 3


def null_scores(
    times: npt.NDArray[np.datetime64], values: npt.NDArray[np.float64], probation: int, name: str
) -> npt.NDArray[np.float64]:
    """Never fires: every score 0."""
    return np.zeros(len(values))


def random_scores(
    times: npt.NDArray[np.datetime64], values: npt.NDArray[np.float64], probation: int, name: str
) -> npt.NDArray[np.float64]:
    """Uniform in [0, 1), seeded by the file name (reproducible); 0 in probation."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    out = rng.random(len(values))
    out[:probation] = 0.0
    return out


def _window_ids(times: npt.NDArray[np.datetime64], window_s: float) -> npt.NDArray[np.int64]:
    """Tumbling window of each row by event time; by row count when times are unusable."""
    n = len(times)
    t = times.astype("datetime64[ns]").astype(np.int64).astype(np.float64) / 1e9
    bad = np.isnat(times)
    if n == 0 or bad.all() or np.any(np.diff(t[~bad]) < 0):
        return np.arange(n, dtype=np.int64) // ROWS_PER_WINDOW_NO_TIME
    ids = np.floor(t / window_s)
    # A row without a time stays in the window of the row before it.
    ids = np.where(bad, np.nan, ids)
    filled = np.maximum.accumulate(np.nan_to_num(ids, nan=-np.inf))
    filled[np.isinf(filled)] = np.nanmin(ids)
    return filled.astype(np.int64)


def sigma_scores(
    times: npt.NDArray[np.datetime64], values: npt.NDArray[np.float64], probation: int, name: str
) -> npt.NDArray[np.float64]:
    """The windowed σ rule: when a window closes (the first row of the next one), its mean's
    deviation ``d`` from the learned normal in normal std gives ``d / (d + 2)`` at that row,
    so ERROR (``d > 2``) is a score above 0.5. Other rows 0; LEARNING windows 0."""
    n = len(values)
    out = np.zeros(n)
    if n == 0:
        return out
    ids = _window_ids(times, SIGMA_WINDOW_S)
    alpha = 1.0 - 0.5 ** (SIGMA_WINDOW_S / SIGMA_HALFLIFE_S)
    count, mean, var = 0, 0.0, 0.0
    start = 0
    for i in range(1, n + 1):
        if i < n and ids[i] == ids[start]:
            continue
        seg = values[start:i]
        seg = seg[~np.isnan(seg)]
        if len(seg):
            w_mean, w_var = float(seg.mean()), float(seg.var())
            std = math.sqrt(max(var, 0.0))
            judged = count >= SIGMA_MIN_HISTORY
            if judged and i < n and i >= probation:
                diff = abs(w_mean - mean)
                d = diff / std if std > 0 else (0.0 if diff == 0 else math.inf)
                out[i] = 1.0 if math.isinf(d) else d / (d + SIGMA_ERROR)
            if count == 0:
                count, mean, var = 1, w_mean, w_var
            else:
                a = max(alpha, 1.0 / (count + 1))
                x, v = w_mean, w_var
                if judged and var > 0:  # robust: winsorized at the ERROR band
                    band = SIGMA_ERROR * std
                    x = min(max(x, mean - band), mean + band)
                    v = min(v, band * band)
                delta = x - mean
                mean += a * delta
                var = (1.0 - a) * (var + delta * a * delta) + a * v
                count += 1
        start = i
    return out
