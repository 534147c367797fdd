"""The per-series work of the batch job, without Spark: checks, features, fit, score.

A series is trained on its points of the training window and scored with the newest
model of it; both reuse :mod:`anomaly_detection.models.iforest` (the NAB model): the same
causal features (value, difference, rolling mean and std over several windows, the
deviation from them raw and in stds, time of day / day of week when the training history
covers two days / two weeks, a shingle of the last differences over their robust scale)
and the same calibrated forest score.

Why one forest per series, not per group of similar series: the series differ in level
and scale by orders of magnitude (bytes free, file descriptors), so a shared forest would
need a per-series normalisation first, and what one series calls normal another's forest
must not learn; per series, training is a few tenths of a second on a day at 1 min
(BENCHMARKS.md), well within one task's budget.

Score and threshold rule (stated): the forest's ``2^(-E[h]/c(n))`` calibrated against the
training points' own, so that 0.5 is the ``1 - BATCH_CONTAMINATION`` quantile of the
training points (0.995 by default) and 1 their maximum and beyond; a point whose deviation
features lie outside every training point's scores at least ``0.5 + 0.5 tanh(e / 2)`` for
``e`` training ranges out; then the NAB model's repeat suppression (a point keeps its score
only if above the ``suppress_rows - 1`` scores before it, else half of it), so that the job
and the NAB runner score alike. A point is an anomaly when its score is above 0.5
(:data:`THRESHOLD`).
"""

from __future__ import annotations

import hashlib
import math
import pickle
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from anomaly_detection.models import iforest

MODEL_NAME = "iforest"
THRESHOLD = 0.5
FEATURES_VERSION = 2  # 2: the shingle of differences (NAB follow-up 2, issue 16)
DAY_S = 86_400.0

SkipReason = Literal[
    "no_match",  # a selector matching no series
    "too_short",  # fewer finite points than BATCH_MIN_POINTS
    "constant",  # every finite point has the same value: nothing to isolate
    "no_model",  # score: the series has no trained model yet
    "stale_model",  # score: its model was trained on another features version: train again
    "fetch_failed",  # Prometheus did not answer after the retries (the run then fails)
    "not_a_selector",  # an expression, where a series selector is needed
]
SKIP_REASONS: tuple[SkipReason, ...] = (
    "no_match",
    "too_short",
    "constant",
    "no_model",
    "stale_model",
    "fetch_failed",
    "not_a_selector",
)


@dataclass(frozen=True)
class Skip:
    reason: SkipReason
    detail: str


@dataclass(frozen=True)
class Params:
    """What training depends on (stored with the model)."""

    step_s: int
    windows_s: tuple[int, ...]
    min_points: int
    contamination: float
    trees: int
    # Repeat suppression (:func:`iforest.suppress_repeats`), in rows: as on NAB.
    suppress_rows: int = iforest.SUPPRESS_ROWS

    def windows_rows(self) -> tuple[int, ...]:
        return tuple(max(2, round(w / self.step_s)) for w in self.windows_s)


@dataclass
class Model:
    """One trained series: the fitted forest and its metadata."""

    series_key: str
    params: Params
    with_time: bool
    with_week: bool
    train_start: float
    train_end: float
    points: int
    normal_mean: float
    normal_std: float
    fitted: iforest.Fitted = field(repr=False)
    threshold: float = THRESHOLD

    def feature_names(self) -> list[str]:
        names = ["value", "diff"]
        for w in self.params.windows_s:
            names += [f"mean_{w}s", f"std_{w}s", f"dev_{w}s", f"dev_std_{w}s"]
        if self.with_week:
            names += ["dow_sin", "dow_cos"]
        if self.with_time:
            names += ["tod_sin", "tod_cos"]
        names += [f"shingle_d{j}" for j in range(iforest.SHINGLE)]
        return names

    def metadata(self) -> dict[str, Any]:
        """The JSON-able description stored beside the artefact."""
        p = self.params
        return {
            "params": {
                "step_s": p.step_s,
                "windows_s": list(p.windows_s),
                "min_points": p.min_points,
                "contamination": p.contamination,
                "trees": p.trees,
                "suppress_rows": p.suppress_rows,
                "forests": len(self.fitted.forests),
                "max_samples": int(self.fitted.forests[0].max_samples_),
                "threshold": self.threshold,
                "normal_mean": self.normal_mean,
                "normal_std": self.normal_std,
            },
            "features": {"version": FEATURES_VERSION, "names": self.feature_names()},
        }


def finite(
    times: npt.NDArray[np.float64], values: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The points with a finite value (Prometheus sends NaN and ±Inf as they are)."""
    ok = np.isfinite(values) & np.isfinite(times)
    return times[ok], values[ok]


def check(values: npt.NDArray[np.float64], min_points: int) -> Skip | None:
    """Why a series cannot be trained on (its finite values), or None."""
    if len(values) < min_points:
        return Skip("too_short", f"{len(values)} points, fewer than {min_points}")
    if float(np.ptp(values)) == 0.0:
        return Skip("constant", f"every one of {len(values)} points is {values[0]!r}")
    return None


def as_datetimes(times: npt.NDArray[np.float64]) -> npt.NDArray[np.datetime64]:
    out: npt.NDArray[np.datetime64] = (np.round(times * 1000).astype(np.int64)).astype(
        "datetime64[ms]"
    )
    return out


def feature_matrix(
    times: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64],
    params: Params,
    with_time: bool,
    with_week: bool,
) -> npt.NDArray[np.float64]:
    return iforest.features(
        as_datetimes(times), values, with_time, with_week, windows=params.windows_rows()
    )


def seed_of(series_key: str) -> int:
    return zlib.crc32(series_key.encode())


def train(
    series_key: str, times: npt.NDArray[np.float64], values: npt.NDArray[np.float64], p: Params
) -> Model | Skip:
    """A model of one series from its training points (non-finite ones dropped)."""
    times, values = finite(times, values)
    skip = check(values, p.min_points)
    if skip is not None:
        return skip
    span = float(times[-1] - times[0])
    with_time, with_week = span >= 2 * DAY_S, span >= 14 * DAY_S
    x = feature_matrix(times, values, p, with_time, with_week)
    fitted = iforest.fit(
        x,
        seed_of(series_key),
        n_trees=p.trees,
        quantile=1.0 - p.contamination,
        deviation_cols=iforest.deviation_columns(len(p.windows_s)),
    )
    return Model(
        series_key=series_key,
        params=p,
        with_time=with_time,
        with_week=with_week,
        train_start=float(times[0]),
        train_end=float(times[-1]),
        points=len(values),
        normal_mean=float(values.mean()),
        normal_std=float(values.std()),
        fitted=fitted,
    )


@dataclass(frozen=True)
class Scored:
    """The scored points of one series (times in epoch seconds)."""

    times: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]
    scores: npt.NDArray[np.float64]

    @property
    def flags(self) -> npt.NDArray[np.bool_]:
        return is_anomaly(self.scores)


def is_anomaly(
    scores: npt.NDArray[np.float64], threshold: float = THRESHOLD
) -> npt.NDArray[np.bool_]:
    """The threshold rule: strictly above the threshold."""
    out: npt.NDArray[np.bool_] = scores > threshold
    return out


def score(
    model: Model, times: npt.NDArray[np.float64], values: npt.NDArray[np.float64], start: float
) -> Scored:
    """Scores of the points at or after ``start``; the points before are history for the
    rolling features and the repeat suppression (:func:`iforest.suppress_repeats` over
    ``suppress_rows``: the NAB model's post-processing, so job and NAB agree)."""
    times, values = finite(times, values)
    if len(values) == 0:
        return Scored(times, values, np.zeros(0))
    x = feature_matrix(times, values, model.params, model.with_time, model.with_week)
    keep = times >= start
    raw = np.clip(np.nan_to_num(model.fitted.score(x)), 0.0, 1.0)
    s = iforest.suppress_repeats(raw, model.params.suppress_rows)
    return Scored(times[keep], values[keep], s[keep])


def stale(features: Mapping[str, Any]) -> Skip | None:
    """A ``stale_model`` skip when a stored model's features (its metadata's ``features``)
    are not the ones this code computes: its forest would get other columns (an upgrade
    changed the features; the next training replaces the model)."""
    version = features.get("version")
    if version == FEATURES_VERSION:
        return None
    return Skip(
        "stale_model",
        f"model trained on features version {version}, scoring computes version "
        f"{FEATURES_VERSION}: run train",
    )


def lookback_s(params: Params) -> int:
    """History a score run fetches before its range, on the step grid: the longest rolling
    window and the repeat suppression's rows."""
    step = params.step_s
    return (math.ceil(max(params.windows_s) / step) + params.suppress_rows + 1) * step


def dump(model: Model) -> tuple[bytes, str]:
    """The artefact (pickle) and its SHA-256 (hex)."""
    blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    return blob, hashlib.sha256(blob).hexdigest()


class ArtefactError(Exception):
    """A stored artefact whose checksum does not match: not unpickled."""


def load(blob: bytes, sha256: str) -> Model:
    """The model of an artefact :func:`dump` made. Pickle runs code: only artefacts from
    this project's own table are read, and only when their checksum matches (a torn or
    altered write is refused, not unpickled)."""
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ArtefactError("artefact checksum mismatch")
    model = pickle.loads(blob)  # noqa: S301 (our own artefact, checksum verified)
    if not isinstance(model, Model):
        raise ArtefactError(f"artefact holds a {type(model).__name__}, not a Model")
    return model
