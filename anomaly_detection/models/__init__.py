"""Anomaly models scored per series as a stream sees it (each point from what came before).

Every model maps ``(times, values, probation)`` to one score in [0, 1] per row; rows before
``probation`` score 0. ``MODELS`` names them for ``python -m anomaly_detection.nab``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from anomaly_detection.models.autoencoder import autoencoder_scores, mlp_scores
from anomaly_detection.models.baselines import null_scores, random_scores, sigma_scores
from anomaly_detection.models.iforest import iforest_scores

ScoreFn = Callable[
    [npt.NDArray[np.datetime64], npt.NDArray[np.float64], int, str], npt.NDArray[np.float64]
]

MODELS: dict[str, ScoreFn] = {
    "iforest": iforest_scores,
    "autoencoder": autoencoder_scores,
    "mlp": mlp_scores,
    "sigma": sigma_scores,
    "random": random_scores,
    "null": null_scores,
}

# Detection thresholds fixed in advance (not tuned on NAB), per model.
FIXED_THRESHOLDS: dict[str, float] = {
    "iforest": 0.5,  # see iforest.py: a score above 0.5 is a point beyond the training tail
    "autoencoder": 0.5,  # the k-sigma rule: error above mean + k std of the training errors
    "mlp": 0.5,
    "sigma": 0.5,  # the ERROR status: |window mean - normal mean| > 2 normal std
    "random": 0.5,
    "null": 0.5,
}
