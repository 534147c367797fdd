"""The autoencoder (issue 17) on NAB, streaming-honest: ``autoencoder`` (Keras on JAX) and
its baseline ``mlp`` (scikit-learn's MLPRegressor as an autoencoder), both with
:class:`anomaly_detection.outliers.model.ModelParams`' defaults.

A model is trained on the probationary rows, then re-trained every :data:`RETRAIN_EVERY`
rows on the (at most :data:`MAX_TRAIN`) rows before; each row is scored by the latest model
trained before it, in the window that ends at it (its past only). Score: with ``z`` the
row's reconstruction error in training-error standard deviations above their mean (the
k-sigma rule's quantity), ``z / (z + k)`` for ``z > 0``, else 0: above 0.5 exactly when the
k-sigma rule flags the row. Then the isolation forest's repeat suppression
(:func:`~anomaly_detection.models.iforest.suppress_repeats`): a row keeps its score only if
above the rows before it.
"""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

from anomaly_detection.models.iforest import SUPPRESS_ROWS, suppress_repeats
from anomaly_detection.outliers.model import Backend, ModelParams, train
from anomaly_detection.outliers.windowing import fill_gaps

RETRAIN_EVERY = 3000
MAX_TRAIN = 3000


def _seconds(times: npt.NDArray[np.datetime64]) -> npt.NDArray[np.float64]:
    t = times.astype("datetime64[ms]").astype(np.int64).astype(np.float64) / 1e3
    out: npt.NDArray[np.float64] = np.where(np.isnat(times), np.nan, t)
    return out


def stream_scores(
    times: npt.NDArray[np.datetime64],
    values: npt.NDArray[np.float64],
    probation: int,
    name: str,
    backend: Backend,
) -> npt.NDArray[np.float64]:
    n = len(values)
    out = np.zeros(n)
    params = ModelParams(backend=backend, seed=zlib.crc32(name.encode()) % (2**31))
    w = params.window
    first = max(probation, 2 * w)
    if n <= first or np.all(np.isnan(values)):
        return out
    v = fill_gaps(values)
    t = _seconds(times)
    t = np.where(np.isnan(t), np.arange(n, dtype=np.float64), t)
    start = first
    while start < n:
        lo = max(0, start - MAX_TRAIN)
        model = train(t[lo:start], v[lo:start], params, name)
        end = min(n, start + RETRAIN_EVERY)
        ctx = max(0, start - (w - 1))  # the windows ending at start..end-1
        z = model.score(v[ctx:end]).score[start - ctx :]
        k = params.k
        out[start:end] = np.where(z > 0, z / (z + k), 0.0)
        start = end
    return suppress_repeats(out, SUPPRESS_ROWS)


def autoencoder_scores(
    times: npt.NDArray[np.datetime64], values: npt.NDArray[np.float64], probation: int, name: str
) -> npt.NDArray[np.float64]:
    return stream_scores(times, values, probation, name, "keras")


def mlp_scores(
    times: npt.NDArray[np.datetime64], values: npt.NDArray[np.float64], probation: int, name: str
) -> npt.NDArray[np.float64]:
    return stream_scores(times, values, probation, name, "mlp")
