"""Rescaling and sliding windows for the autoencoder (issue 17).

Rescaling (:class:`Scaler`), fitted on the training values and applied to every window:

- ``standard`` (default): ``(x - mean) / std`` of the training values;
- ``minmax``: ``(x - min) / (max - min)`` of the training values, into [0, 1];
- ``tanhlog``: the reference's fixed ``tanh(sign(x) log1p(|x|) / 32)`` (nothing fitted; the
  sign keeps negative values invertible).

Every method is invertible (:meth:`Scaler.inverse`), so reconstructions are reported in the
series' own units.

Windows: :func:`windows` cuts ``w`` consecutive points into each row (stride 1). A point is
judged in the window that *ends* at it (:func:`point_windows`): only its past, as a stream
sees it; the first ``w - 1`` points of a range, which have no such window, are judged in the
first window at their own position.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Method = Literal["standard", "minmax", "tanhlog"]
METHODS: tuple[Method, ...] = ("standard", "minmax", "tanhlog")
TANHLOG_DIVISOR = 32.0
# tanh saturates: inverse() clips to this so atanh stays finite.
TANH_LIMIT = 1.0 - 1e-12


@dataclass(frozen=True)
class Scaler:
    method: Method
    a: float = 0.0  # standard: mean; minmax: min
    b: float = 1.0  # standard: std; minmax: max - min

    @classmethod
    def fit(cls, method: Method, values: Floats) -> Scaler:
        v = values[np.isfinite(values)]
        if method == "tanhlog" or len(v) == 0:
            return cls(method)
        if method == "standard":
            std = float(v.std())
            return cls(method, float(v.mean()), std if std > 0 else 1.0)
        if method == "minmax":
            lo, span = float(v.min()), float(v.max() - v.min())
            return cls(method, lo, span if span > 0 else 1.0)
        raise ValueError(f"unknown rescaling {method!r}; one of {', '.join(METHODS)}")

    def transform(self, x: Floats) -> Floats:
        if self.method == "tanhlog":
            out: Floats = np.tanh(np.sign(x) * np.log1p(np.abs(x)) / TANHLOG_DIVISOR)
            return out
        return (x - self.a) / self.b

    def inverse(self, y: Floats) -> Floats:
        if self.method == "tanhlog":
            z = np.arctanh(np.clip(y, -TANH_LIMIT, TANH_LIMIT)) * TANHLOG_DIVISOR
            out: Floats = np.sign(z) * np.expm1(np.abs(z))
            return out
        return y * self.b + self.a

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaler:
        method = d["method"]
        if method not in METHODS:
            raise ValueError(f"unknown rescaling {method!r}")
        return cls(method, float(d["a"]), float(d["b"]))


def fill_gaps(values: Floats) -> Floats:
    """Missing values carried forward (backward at the start); all missing gives zeros."""
    v = np.asarray(values, dtype=np.float64).copy()
    ok = np.isfinite(v)
    if not ok.any():
        return np.zeros(len(v))
    idx = np.where(ok, np.arange(len(v)), 0)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(ok))
    idx[:first] = first
    filled: Floats = v[idx]
    return filled


def windows(x: Floats, w: int) -> Floats:
    """Rows of ``w`` consecutive points, stride 1: shape ``(len(x) - w + 1, w)``."""
    if w < 1:
        raise ValueError("window length must be at least 1")
    if len(x) < w:
        return np.empty((0, w))
    out: Floats = np.lib.stride_tricks.sliding_window_view(x, w).copy()
    return out


def point_windows(n: int, w: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """For each of ``n`` points: (index of the window it is judged in, its position there)."""
    i = np.arange(n, dtype=np.int64)
    row = np.maximum(i - (w - 1), 0)
    return row, i - row


def unwindow(rows: Floats, n: int) -> Floats:
    """Per-point values from windowed rows, each point read where :func:`point_windows`
    judges it (the inverse of :func:`windows` for unchanged rows)."""
    if n == 0:
        return np.empty(0)
    row, pos = point_windows(n, rows.shape[1])
    out: Floats = rows[row, pos]
    return out
