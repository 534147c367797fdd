"""Score NAB results directories: every model under ``RESULTS_DIR``, every profile."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomaly_detection.models import FIXED_THRESHOLDS
from anomaly_detection.nab import io
from anomaly_detection.nab.scorer import (
    PROFILES,
    FileWeights,
    file_weights,
    normalise,
    optimise,
    score_at,
)

log = logging.getLogger(__name__)


@dataclass
class ModelScore:
    model: str
    profile: str
    files: int
    threshold: float
    score: float  # normalised, optimised threshold
    fixed_threshold: float
    fixed_score: float


def load(
    model_dir: Path,
    windows: dict[str, list[tuple[np.datetime64, np.datetime64]]],
    only: set[str] | None = None,
) -> list[FileWeights]:
    out = []
    for rel, path in io.result_files(model_dir):
        if rel not in windows:
            log.warning("%s: no windows for %s; not scored", model_dir.name, rel)
            continue
        if only is not None and rel not in only:
            continue
        times, scores = io.read_result(path)
        out.append(file_weights(rel, times, scores, windows[rel]))
    return out


def score_model(
    model_dir: Path,
    windows: dict[str, list[tuple[np.datetime64, np.datetime64]]],
    fixed: float | None = None,
    only: set[str] | None = None,
) -> list[ModelScore]:
    files = load(model_dir, windows, only)
    thr = fixed if fixed is not None else FIXED_THRESHOLDS.get(model_dir.name, 0.5)
    out = []
    for name, profile in PROFILES.items():
        t, raw = optimise(files, profile)
        fixed_raw = score_at(files, thr, profile).raw
        out.append(
            ModelScore(
                model_dir.name,
                name,
                len(files),
                t,
                normalise(raw, files, profile),
                thr,
                normalise(fixed_raw, files, profile),
            )
        )
    return out


def model_dirs(results_dir: Path) -> list[Path]:
    """The model directories of a results directory (or the directory itself if it is one)."""
    subs = sorted(p for p in results_dir.iterdir() if p.is_dir())
    if subs and all(any(c.name.startswith(p.name + "_") for c in p.glob("*/*.csv")) for p in subs):
        return subs
    return [results_dir]
