"""Run a model over a NAB-like data directory and write NAB's results layout."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomaly_detection.models import MODELS, ScoreFn
from anomaly_detection.nab import io
from anomaly_detection.nab.scorer import probation_length

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    files: int = 0
    rows: int = 0
    failed: int = 0
    seconds: float = 0.0
    slowest_s: float = 0.0


def run(
    data_dir: Path,
    results_dir: Path,
    model: str,
    labels_path: Path | None = None,
    fn: ScoreFn | None = None,
) -> RunStats:
    """Score every ``<category>/<name>.csv`` of ``data_dir``; one result file per input.

    A file the model fails on is still written (scores 0) and counted in ``failed``: the
    results layout stays complete for the scorer. ``fn`` (default ``MODELS[model]``) lets a
    benchmark run a variant of a model under its own name.
    """
    fn = MODELS[model] if fn is None else fn
    labels = io.read_windows(labels_path) if labels_path else {}
    stats = RunStats()
    t0 = time.perf_counter()
    for rel, path in io.data_files(data_dir):
        t1 = time.perf_counter()
        s = io.read_series(path, rel)
        n = len(s.values)
        try:
            scores = np.clip(np.nan_to_num(fn(s.times, s.values, probation_length(n), rel)), 0, 1)
        except Exception:  # one bad file must not lose the others' results
            log.exception("model %s failed on %s; its scores are 0", model, rel)
            scores = np.zeros(n)
            stats.failed += 1
        lab = io.label_column(s.times, labels.get(rel, []))
        io.write_result(io.result_path(results_dir, model, rel), s, scores, lab)
        dt = time.perf_counter() - t1
        stats.files += 1
        stats.rows += n
        stats.slowest_s = max(stats.slowest_s, dt)
        log.info("%s %s: %d rows in %.2f s", model, rel, n, dt)
    stats.seconds = time.perf_counter() - t0
    return stats
