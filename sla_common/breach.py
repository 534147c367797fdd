"""Breach probability: the chance that a forecast series leaves a range within its horizon.

Pure (numpy/scipy only), shared by the ETL, which produces the per-point predictive
distributions (``loc``/``scale``/``df``/``floor`` in the Kafka message's forecast), and the
consumers that decide whether a forecast is a predicted violation.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.stats import norm
from scipy.stats import t as t_dist


def breach_probability(
    loc: npt.ArrayLike,
    scale: npt.ArrayLike,
    lower: float | None = None,
    upper: float | None = None,
    floor: float | None = None,
    df: float | None = None,
) -> float:
    """Probability that the series leaves ``[lower, upper]`` within the forecast horizon:
    the largest of :func:`point_breach_probabilities` (see there)."""
    return float(np.max(point_breach_probabilities(loc, scale, lower, upper, floor, df)))


def point_breach_probabilities(
    loc: npt.ArrayLike,
    scale: npt.ArrayLike,
    lower: float | None = None,
    upper: float | None = None,
    floor: float | None = None,
    df: float | None = None,
) -> npt.NDArray[np.float64]:
    """Per point, the probability that it is outside ``[lower, upper]``; their maximum is
    the probability that the series leaves ``[lower, upper]`` within the forecast horizon.

    Each point's predictive distribution is ``max(floor, loc_i + scale_i·T)`` with ``T``
    standard normal, or Student-t with ``df`` degrees of freedom (no floor: uncensored);
    a point breaches when it falls below ``lower`` or above ``upper``
    (either may be ``None``: no bound on that side). Per point,
    ``p_i = P(X_i < lower) + P(X_i > upper)``, where a ``lower`` at or below the floor
    cannot be crossed. The horizon's probability is approximated by ``max_i p_i``: exact
    when the points' forecast errors are perfectly correlated, which is close to the truth
    for exponential smoothing (every step ahead inherits the same level error), and always
    a lower bound of the true probability, whose upper bound is the union bound
    ``min(1, Σ p_i)``. A zero ``scale`` is a point mass at ``loc``.
    """
    mu = np.asarray(loc, dtype=np.float64)
    sd = np.asarray(scale, dtype=np.float64)
    if mu.shape != sd.shape or mu.ndim != 1 or mu.size == 0:
        raise ValueError("loc and scale must be 1-d arrays of equal, non-zero length")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sd)) and np.all(sd >= 0)):
        raise ValueError("loc must be finite and scale finite and non-negative")
    if df is not None and not (math.isfinite(df) and df > 0):
        raise ValueError("df must be positive and finite (None: normal)")
    cdf, sf = (norm.cdf, norm.sf) if df is None else (t_dist(df).cdf, t_dist(df).sf)
    p = np.zeros(mu.size)
    pos = sd > 0
    safe = np.where(pos, sd, 1.0)
    if lower is not None and (floor is None or lower > floor):
        p += np.where(pos, cdf((lower - mu) / safe), (mu < lower).astype(np.float64))
    if upper is not None and (floor is None or upper >= floor):
        p += np.where(pos, sf((upper - mu) / safe), (mu > upper).astype(np.float64))
    elif upper is not None:
        p += 1.0  # the whole distribution (at or above the floor) is above ``upper``
    return np.asarray(np.minimum(p, 1.0), dtype=np.float64)
