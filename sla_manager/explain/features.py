"""From Prometheus range results to the features x points matrix :func:`explain` takes.

Pure: arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def counter_rates(values: FloatArray, step_s: float, window: int) -> FloatArray:
    """Per-second rate over a trailing window of ``window`` steps, reset-aware (a drop counts
    as a restart from 0, as Prometheus' ``rate`` does); the first ``window`` points reuse
    the first full window's rate."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return v.copy()
    d = np.diff(v, prepend=v[0])
    d = np.where(d < 0, v, d)  # after a reset the counter restarted from 0
    c = np.cumsum(d)
    out = np.empty_like(v)
    if len(v) > window:
        out[window:] = (c[window:] - c[:-window]) / (window * step_s)
        out[:window] = out[window]
    else:
        out[:] = (c[-1] - c[0]) / (max(1, len(v) - 1) * step_s)
    return out


def to_matrix(
    series: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]], grid: npt.ArrayLike
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Place each ``(timestamps, values)`` on ``grid`` (timestamps equal to grid points up to
    a millisecond, as a range query's are). Returns the matrix, gaps filled with the previous
    value (the next one before the first), and the mask of the points that had a sample;
    a series without any sample is all NaN."""
    g = np.asarray(grid, dtype=np.float64)
    out = np.full((len(series), len(g)), np.nan)
    for i, (ts, vs) in enumerate(series):
        t = np.asarray(ts, dtype=np.float64)
        v = np.asarray(vs, dtype=np.float64)
        pos = np.searchsorted(g, t - 1e-3)
        ok = (pos < len(g)) & np.isfinite(v)
        ok[ok] = np.abs(g[pos[ok]] - t[ok]) <= 1e-3
        out[i, pos[ok]] = v[ok]
    present = np.isfinite(out)
    # forward fill along each row, then back fill what precedes the first sample
    idx = np.where(present, np.arange(len(g))[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = np.take_along_axis(out, idx, axis=1)
    first = np.where(present.any(axis=1), present.argmax(axis=1), 0)
    head = np.arange(len(g))[None, :] < first[:, None]
    filled = np.where(head, out[np.arange(len(series)), first][:, None], filled)
    return filled, present


def bucket_means(
    grid: npt.ArrayLike, row: npt.ArrayLike, present: npt.ArrayLike, buckets: int
) -> tuple[float, list[tuple[float, float | None]]]:
    """``row`` on ``grid`` in at most ``buckets`` runs of equal length: the bucket's first
    grid time and the mean of the points that had a sample (None: none had). Returns the
    buckets' length in seconds (grid steps per bucket x step) and the pairs. For a small
    plot of a feature beside its explanation: bounded in size whatever the range."""
    g = np.asarray(grid, dtype=np.float64)
    v = np.asarray(row, dtype=np.float64)
    p = np.asarray(present, dtype=np.bool_)
    n = len(g)
    if n == 0 or buckets < 1:
        return 0.0, []
    per = -(-n // buckets)  # ceiling: at most ``buckets`` buckets
    step = float(g[1] - g[0]) if n > 1 else 0.0
    out: list[tuple[float, float | None]] = []
    for i in range(0, n, per):
        seen = p[i : i + per] & np.isfinite(v[i : i + per])
        out.append((float(g[i]), float(v[i : i + per][seen].mean()) if seen.any() else None))
    return per * step, out
