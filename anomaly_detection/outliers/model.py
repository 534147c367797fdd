"""The outlier model: a dense autoencoder over sliding windows, judged by the k-sigma rule.

Training (:func:`train`): the series' values are rescaled (:mod:`.windowing`), cut into
windows of ``window`` points, and an autoencoder ``window - layers... - mirrored - window``
(tanh hidden layers, linear output) learns to reconstruct them. Two trainers give the same
kind of network:

- ``keras`` (default): Keras 3 on the JAX CPU backend, Adam, loss ``mse`` or the
  reference's ``log_cosh``;
- ``mlp``: scikit-learn's ``MLPRegressor`` fitted on (window -> window), the baseline.

Scoring (:meth:`OutlierModel.reconstruct`) runs the stored weights through a numpy forward
pass: a few matrix products, so an executor answers without importing the framework (and
without its 20 s import on a loaded 2-core machine); ``test_outlier_model`` checks it equals
Keras' own ``predict``.

Error of a point: ``|x - x̂|`` in rescaled units, at the point's position in the window that
ends at it (:func:`.windowing.point_windows`).

The network's inputs are clipped to the training values' range widened by
:data:`CLIP_MARGIN` of its span on either side (errors are measured against the unclipped
values): a spike far outside what the model learned then distorts the reconstruction of
the other points of its windows only as much as a value at that bound would, and not for
the ``window - 1`` points after it.

The k-sigma rule: a point is an **outlier**
when its error exceeds ``error_mean + k · error_std`` of the training windows' errors; its
``score`` is ``(error - error_mean) / error_std``.

Serialisation (:meth:`OutlierModel.to_bytes`): one ``.npz`` (no pickle) holding the weights
and a JSON metadata record (:class:`ModelMeta`: version, series, training window, params,
error mean/std, validation loss).
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from anomaly_detection.outliers.windowing import (
    METHODS,
    Floats,
    Method,
    Scaler,
    fill_gaps,
    point_windows,
    windows,
)

log = logging.getLogger(__name__)

FORMAT = 1
Backend = Literal["keras", "mlp"]
BACKENDS: tuple[Backend, ...] = ("keras", "mlp")
Loss = Literal["mse", "log_cosh"]
# Training uses at most this many windows (the most recent): bounds the time per series.
MAX_TRAIN_WINDOWS = 6000
CLIP_MARGIN = 0.25


@dataclass(frozen=True)
class ModelParams:
    """Defaults: 32-point windows into 16 and 8 tanh units (the issue's measured 32-16-8-16-32
    network: 8 minutes of 15 s scrapes, 2h40m of NAB's 5-minute data), 20 epochs of batches of
    32 with Adam at 1e-3, the last 20 % of the windows held out for the validation loss, and
    k = 5 (see BENCHMARKS.md, "Autoencoder"). ``seed`` (0; ``OUTLIERS_SEED``) seeds the
    initial weights and the shuffling (``keras.utils.set_random_seed``, the MLP's
    ``random_state``): the same data and parameters train the same weights, bit for bit
    (``test_training_is_reproducible``)."""

    backend: Backend = "keras"
    window: int = 32
    layers: tuple[int, ...] = (16, 8)
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    loss: Loss = "mse"
    rescale: Method = "standard"
    k: float = 5.0
    validation_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
        if self.rescale not in METHODS:
            raise ValueError(f"rescale must be one of {', '.join(METHODS)}")
        if self.loss not in ("mse", "log_cosh"):
            raise ValueError("loss must be mse or log_cosh")
        if self.window < 2 or not self.layers or min(self.layers) < 1:
            raise ValueError("window must be at least 2 and every layer at least 1 unit")
        if self.epochs < 1 or self.batch_size < 1 or self.k <= 0:
            raise ValueError("epochs, batch_size and k must be positive")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError("validation_fraction must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelParams:
        d = dict(d)
        if "layers" in d:
            d["layers"] = tuple(int(u) for u in d["layers"])
        return cls(**d)


@dataclass(frozen=True)
class ModelMeta:
    version: int  # training time in epoch ms: a later training is a newer version
    series: str  # sla_common.series.series_key of the series
    train_start: float  # epoch s of the first and last training point
    train_end: float
    step: float  # seconds between points
    params: ModelParams
    scaler: Scaler
    error_mean: float
    error_std: float
    clip_low: float  # network inputs clipped to [clip_low, clip_high] (rescaled units)
    clip_high: float
    val_loss: float | None
    train_loss: float
    train_windows: int
    train_seconds: float
    labels: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["params"] = self.params.to_dict()
        d["scaler"] = self.scaler.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        d = dict(d)
        if d.get("format") != FORMAT:
            raise ValueError(f"model format {d.get('format')!r}, this code reads {FORMAT}")
        d["params"] = ModelParams.from_dict(d["params"])
        d["scaler"] = Scaler.from_dict(d["scaler"])
        return cls(**d)


@dataclass(frozen=True)
class Scored:
    """Per point: the reconstruction in the series' units, the error and its k-sigma score."""

    expected: Floats
    error: Floats
    score: Floats
    outlier: npt.NDArray[np.bool_]


def zscores(error: Floats, mean: float, std: float) -> Floats:
    """The error in training-error standard deviations above the training-error mean."""
    out: Floats = (error - mean) / max(std, 1e-12)
    return out


def ksigma(error: Floats, mean: float, std: float, k: float) -> npt.NDArray[np.bool_]:
    """The k-sigma rule: ``error > mean + k * std``."""
    out: npt.NDArray[np.bool_] = error > mean + k * max(std, 1e-12)
    return out


def forward(weights: list[Floats], x: Floats) -> Floats:
    """The dense network: tanh hidden layers, linear output (weights as ``[W0, b0, ...]``)."""
    h = x
    last = len(weights) // 2 - 1
    for i in range(0, len(weights), 2):
        h = h @ weights[i] + weights[i + 1]
        if i // 2 < last:
            h = np.tanh(h)
    return h


@dataclass(frozen=True)
class OutlierModel:
    meta: ModelMeta
    weights: list[Floats]

    def reconstruct_scaled(self, values: Floats) -> tuple[Floats, Floats]:
        """(rescaled values, their reconstruction), per point; needs ``window`` points."""
        w = self.meta.params.window
        x = self.meta.scaler.transform(fill_gaps(values))
        rows = windows(np.clip(x, self.meta.clip_low, self.meta.clip_high), w)
        if len(rows) == 0:
            raise ValueError(f"at least {w} points are needed, got {len(values)}")
        rec = forward(self.weights, rows)
        row, pos = point_windows(len(x), w)
        return x, rec[row, pos]

    def score(self, values: Floats) -> Scored:
        x, xr = self.reconstruct_scaled(values)
        err = np.abs(x - xr)
        m = self.meta
        return Scored(
            expected=m.scaler.inverse(xr),
            error=err,
            score=zscores(err, m.error_mean, m.error_std),
            outlier=ksigma(err, m.error_mean, m.error_std, m.params.k),
        )

    def with_k(self, k: float) -> OutlierModel:
        return replace(self, meta=replace(self.meta, params=replace(self.meta.params, k=k)))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {f"w{i}": w for i, w in enumerate(self.weights)}
        meta = np.frombuffer(json.dumps(self.meta.to_dict()).encode(), dtype=np.uint8)
        np.savez_compressed(buf, meta=meta, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, raw: bytes) -> OutlierModel:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            meta = ModelMeta.from_dict(json.loads(z["meta"].tobytes().decode()))
            n = sum(1 for k in z.files if k.startswith("w"))
            weights = [np.asarray(z[f"w{i}"], dtype=np.float64) for i in range(n)]
        return cls(meta, weights)


def _split(rows: Floats, fraction: float) -> tuple[Floats, Floats]:
    n_val = int(len(rows) * fraction)
    if n_val < 1 or len(rows) - n_val < 1:
        return rows, rows[:0]
    return rows[:-n_val], rows[-n_val:]


def _fit_keras(train: Floats, val: Floats, p: ModelParams) -> tuple[list[Floats], float | None]:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras  # noqa: PLC0415  (the framework only where a model is trained)

    keras.utils.set_random_seed(p.seed)
    w = train.shape[1]
    inp = keras.Input(shape=(w,))
    h = inp
    for units in (*p.layers, *reversed(p.layers[:-1])):
        h = keras.layers.Dense(units, activation="tanh")(h)
    out = keras.layers.Dense(w)(h)
    net = keras.Model(inp, out)
    loss: Any = keras.losses.LogCosh() if p.loss == "log_cosh" else "mse"
    net.compile(optimizer=keras.optimizers.Adam(learning_rate=p.learning_rate), loss=loss)
    hist = net.fit(
        train,
        train,
        epochs=p.epochs,
        batch_size=p.batch_size,
        validation_data=(val, val) if len(val) else None,
        shuffle=True,
        verbose=0,
    )
    vl = hist.history.get("val_loss")
    weights = [np.asarray(a, dtype=np.float64) for a in net.get_weights()]
    return weights, float(vl[-1]) if vl else None


def _fit_mlp(train: Floats, val: Floats, p: ModelParams) -> tuple[list[Floats], float | None]:
    import warnings  # noqa: PLC0415

    from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]  # noqa: PLC0415
    from sklearn.neural_network import MLPRegressor  # type: ignore[import-untyped]  # noqa: PLC0415

    net = MLPRegressor(
        hidden_layer_sizes=(*p.layers, *reversed(p.layers[:-1])),
        activation="tanh",
        solver="adam",
        learning_rate_init=p.learning_rate,
        batch_size=min(p.batch_size, len(train)),
        max_iter=p.epochs,
        random_state=p.seed,
        shuffle=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(train, train)
    weights: list[Floats] = []
    for c, b in zip(net.coefs_, net.intercepts_, strict=True):
        weights += [np.asarray(c, dtype=np.float64), np.asarray(b, dtype=np.float64)]
    if not len(val):
        return weights, None
    r = forward(weights, val) - val
    vl = float(np.mean(np.log(np.cosh(r)))) if p.loss == "log_cosh" else float(np.mean(r * r))
    return weights, vl


def train(
    times: Floats,
    values: Floats,
    params: ModelParams | None = None,
    series: str = "",
    labels: dict[str, str] | None = None,
) -> OutlierModel:
    """Fit a model on one series' history (``times`` in epoch seconds)."""
    p = params or ModelParams()
    t0 = time.perf_counter()
    v = fill_gaps(values)
    if len(v) < p.window + 1:
        raise ValueError(f"at least {p.window + 1} points are needed to train, got {len(v)}")
    scaler = Scaler.fit(p.rescale, v)
    rows = windows(scaler.transform(v), p.window)[-MAX_TRAIN_WINDOWS:]
    fit_rows, val_rows = _split(rows, p.validation_fraction)
    fit = _fit_keras if p.backend == "keras" else _fit_mlp
    weights, val_loss = fit(fit_rows, val_rows, p)
    rec = forward(weights, rows)
    train_loss = float(np.mean((rec - rows) ** 2))
    # Errors of every training point as it is scored (judged in the window ending at it).
    x = scaler.transform(v)
    lo, hi = float(x.min()), float(x.max())
    clip_low, clip_high = lo - CLIP_MARGIN * (hi - lo), hi + CLIP_MARGIN * (hi - lo)
    rec_all = forward(weights, windows(np.clip(x, clip_low, clip_high), p.window))
    row, pos = point_windows(len(x), p.window)
    err = np.abs(x - rec_all[row, pos])
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    meta = ModelMeta(
        version=time.time_ns() // 1_000_000,
        series=series,
        train_start=float(times[0]) if len(times) else 0.0,
        train_end=float(times[-1]) if len(times) else 0.0,
        step=step,
        params=p,
        scaler=scaler,
        error_mean=float(err.mean()),
        error_std=float(err.std()),
        clip_low=clip_low,
        clip_high=clip_high,
        val_loss=val_loss,
        train_loss=train_loss,
        train_windows=len(rows),
        train_seconds=round(time.perf_counter() - t0, 3),
        labels=dict(labels or {}),
    )
    return OutlierModel(meta, weights)
