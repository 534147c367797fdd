"""The statistical picture of one series: pure functions, frozen typed results, no I/O.

Every public analysis takes data that :func:`prepare` produced and returns either its
result or a :class:`Skipped` with a machine-readable reason. None of them raises on odd
data (zeros, negatives, constants, short series, gaps, NaN): a series one analysis cannot
handle must never stop the analyses of the others, nor the cycle.

Costs (one core, 2,880 points; see BENCHMARKS.md): ADF with a fixed lag count ≈ 8 ms
(``autolag="AIC"`` would be 10× that for no benefit to a stationarity verdict on series
this long), HP ≈ 4 ms, ACF < 1 ms, decomposition ≈ 9 ms, the exponential-smoothing
forecast ≈ 25 ms on the series resampled to one point a minute.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
from statsmodels.tsa.filters.hp_filter import hpfilter
from statsmodels.tsa.seasonal import seasonal_decompose
from statsmodels.tsa.stattools import acf, adfuller

# Re-exported: the forecast's result and options are part of this module's interface.
from etl_data_pipeline.forecast import ForecastOptions as ForecastOptions  # noqa: PLC0414
from etl_data_pipeline.forecast import ForecastResult as ForecastResult  # noqa: PLC0414
from etl_data_pipeline.forecast import fit_forecast
from etl_data_pipeline.forecast import read_only as _ro
from etl_data_pipeline.forecast import read_only_int as _ro_int

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SkipReason = Literal["empty", "too_short", "constant", "not_finite", "failed"]
# ADF deterministic terms (statsmodels' names): constant, constant + trend, + quadratic, none.
AdfRegression = Literal["c", "ct", "ctt", "n"]

# Names of the analyses, as they appear in messages, metrics and skip records.
ANALYSES = ("adf", "hp", "acf", "decomposition", "aggregates", "forecast")


@dataclass(frozen=True)
class Skipped:
    """An analysis that could not run on this series, and why (never an exception)."""

    analysis: str
    reason: SkipReason
    detail: str


# --------------------------------------------------------------------------- preparation


@dataclass(frozen=True)
class Prepared:
    """A series ready for analysis.

    ``raw_*`` are the finite samples as Prometheus returned them (for aggregates, which
    must see exactly what was measured). ``timestamps``/``values`` are the same data on a
    regular grid of ``step_s`` seconds with interior gaps filled by linear interpolation,
    which the model-based analyses need.
    """

    step_s: int
    raw_timestamps: IntArray
    raw_values: FloatArray
    timestamps: IntArray
    values: FloatArray
    interpolated: int

    @property
    def n(self) -> int:
        return int(self.values.size)


def prepare(timestamps: npt.ArrayLike, values: npt.ArrayLike, step_s: int) -> Prepared:
    """Clean and regularise samples: drop non-finite values, sort, de-duplicate, fill gaps.

    Timestamps are epoch seconds (floats are floored to whole seconds).
    """
    if step_s <= 0:
        raise ValueError(f"step_s must be positive, got {step_s}")
    ts = np.asarray(timestamps, dtype=np.float64)
    vs = np.asarray(values, dtype=np.float64)
    if ts.shape != vs.shape or ts.ndim != 1:
        raise ValueError(
            f"timestamps and values must be 1-d of equal length: {ts.shape} {vs.shape}"
        )
    ok = np.isfinite(ts) & np.isfinite(vs)
    ts_i = np.floor(ts[ok]).astype(np.int64)
    vs = vs[ok]
    order = np.argsort(ts_i, kind="stable")
    ts_i, vs = ts_i[order], vs[order]
    if ts_i.size:
        # keep the last sample of each duplicated timestamp
        last = np.r_[ts_i[1:] != ts_i[:-1], True]
        ts_i, vs = ts_i[last], vs[last]
    if ts_i.size == 0:
        empty_i = np.array([], dtype=np.int64)
        empty_f = np.array([], dtype=np.float64)
        return Prepared(step_s, empty_i, empty_f, empty_i, empty_f, 0)

    grid = np.arange(ts_i[0], ts_i[-1] + 1, step_s, dtype=np.int64)
    grid_vals = np.interp(grid, ts_i, vs)
    # Samples that sit exactly on the grid keep their value; the rest are interpolated.
    on_grid = np.isin(grid, ts_i, assume_unique=True)
    return Prepared(
        step_s=step_s,
        raw_timestamps=_ro_int(ts_i),
        raw_values=_ro(vs),
        timestamps=_ro_int(grid),
        values=_ro(grid_vals),
        interpolated=int(grid.size - int(on_grid.sum())),
    )


def _is_constant(x: FloatArray) -> bool:
    return bool(x.size == 0 or np.ptp(x) <= 1e-12 * max(1.0, float(np.max(np.abs(x)))))


R = TypeVar("R")


def _guard(analysis: str, fn: Callable[[], R | Skipped]) -> R | Skipped:
    """Run ``fn``; numerical failures become a typed skip instead of an exception."""
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # statsmodels warns on every near-singular fit
            return fn()
    except (ValueError, ArithmeticError, np.linalg.LinAlgError, IndexError, TypeError) as e:
        log.debug("%s failed: %s", analysis, e)
        return Skipped(analysis, "failed", f"{type(e).__name__}: {e}")


# --------------------------------------------------------------------------- ADF


@dataclass(frozen=True)
class AdfResult:
    statistic: float
    pvalue: float
    used_lag: int
    nobs: int
    critical_values: dict[str, float]  # keys "1%", "5%", "10%"
    stationary: bool  # unit root rejected at the 5 % level
    autolag: str | None
    regression: AdfRegression = "ct"


def adf(
    values: FloatArray,
    maxlag: int | None = None,
    autolag: str | None = None,
    regression: AdfRegression = "ct",
) -> AdfResult | Skipped:
    """Augmented Dickey-Fuller test; ``regression`` picks the deterministic terms.

    ``"ct"`` (constant and linear trend, the default) tests "unit root" against "stationary
    around a trend", so a resource that drifts steadily with stationary noise (a disk
    filling) is not read as a random walk, as it is with ``"c"`` (constant only). ``"ct"``
    nests ``"c"``: a series stationary around a constant is still found stationary; the
    price is some power. Measured on 12 h windows (2,880 points, Schwert's lag, 200 runs
    each, share found stationary at 5 %): trend + AR(1) φ=0.95: c 0 %, ct 100 %; AR(1)
    φ=0.95: both 100 %; φ=0.99: c 94.5 %, ct 82.5 %; random walk (with or without drift):
    c 4.5 %/1.5 %, ct 5 %/4 % (the test's nominal 5 %).

    ``maxlag=None`` uses Schwert's rule 12·(n/100)^¼; with ``autolag=None`` that many lags
    are used, which keeps the test ≈ 10× cheaper than an AIC search.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Skipped("adf", "empty", "no samples")
    if not np.all(np.isfinite(x)):
        return Skipped("adf", "not_finite", "series contains NaN or infinity")
    if _is_constant(x):
        return Skipped("adf", "constant", "a constant series has no unit-root test")
    lag = maxlag if maxlag is not None else math.ceil(12.0 * (x.size / 100.0) ** 0.25)
    # adfuller needs room for the lags plus the regression's own parameters.
    lag = min(lag, x.size // 2 - 2)
    if lag < 0 or x.size < 8:
        return Skipped("adf", "too_short", f"{x.size} samples; need at least 8")

    def run() -> AdfResult | Skipped:
        stat, pvalue, used_lag, nobs, crit, *_ = adfuller(
            x, maxlag=lag, regression=regression, autolag=autolag
        )
        if not (math.isfinite(stat) and math.isfinite(pvalue)):
            return Skipped("adf", "not_finite", "test statistic is not finite")
        return AdfResult(
            statistic=float(stat),
            pvalue=float(pvalue),
            used_lag=int(used_lag),
            nobs=int(nobs),
            critical_values={k: float(crit[k]) for k in ("1%", "5%", "10%")},
            stationary=bool(pvalue < 0.05),
            autolag=autolag,
            regression=regression,
        )

    return _guard("adf", run)


# --------------------------------------------------------------------------- HP filter


def hp_lambda_for_cutoff(period: float) -> float:
    """The HP lambda whose filter cuts at a period of ``period`` samples.

    The HP trend filter's gain at angular frequency w is 1 / (1 + 4 lambda (1 - cos w)^2)
    (the cycle's is the rest), so it passes half of a cycle where 4 lambda (1 - cos w)^2 = 1:
    lambda = 1 / (4 (1 - cos(2 pi / P))^2) for a cut-off period of P samples (as in Ravn &
    Uhlig 2002, whose quarterly lambda = 1600 cuts at P ≈ 40 quarters). Cycles much longer
    than P stay in the trend, much shorter ones go to the cycle. At a 15 s step, 1600 cuts at
    ≈ 10 minutes; one hour (P = 240) needs lambda ≈ 2.1e6.
    """
    if period <= 2:
        raise ValueError(f"a cut-off period must be longer than 2 samples, got {period}")
    return 1.0 / (4.0 * (1.0 - math.cos(2.0 * math.pi / period)) ** 2)


def hp_cutoff_for_lambda(lamb: float) -> float:
    """The cut-off period, in samples, of an HP filter with ``lamb`` (inverse of the above)."""
    if lamb <= 1.0 / 16.0:
        return 2.0  # the gain at the Nyquist period is already one half or more
    return 2.0 * math.pi / math.acos(1.0 - 1.0 / (2.0 * math.sqrt(lamb)))


@dataclass(frozen=True)
class HpResult:
    lamb: float
    timestamps: IntArray
    trend: FloatArray
    cycle: FloatArray

    @property
    def cutoff_period_s(self) -> float:
        """The period, in seconds, at which the trend passes half of a cycle's amplitude."""
        step = int(self.timestamps[1] - self.timestamps[0]) if self.timestamps.size > 1 else 1
        return hp_cutoff_for_lambda(self.lamb) * step


def hodrick_prescott(prepared: Prepared, lamb: float = 1600.0) -> HpResult | Skipped:
    x = prepared.values
    if x.size < 3:
        return Skipped("hp", "too_short", f"{x.size} samples; need at least 3")

    def run() -> HpResult | Skipped:
        _cycle, trend = hpfilter(x, lamb=lamb)
        trend = np.asarray(trend, dtype=np.float64)
        if not np.all(np.isfinite(trend)):
            return Skipped("hp", "not_finite", "filter produced non-finite values")
        return HpResult(
            lamb=lamb,
            timestamps=prepared.timestamps,
            trend=_ro(trend),
            cycle=_ro(x - trend),
        )

    return _guard("hp", run)


# --------------------------------------------------------------------------- ACF


@dataclass(frozen=True)
class AcfResult:
    values: FloatArray  # values[k] is the autocorrelation at lag k; values[0] == 1
    conf_bound: float  # ±1.96/√n: the 95 % band of white noise


def autocorrelation(prepared: Prepared, nlags: int = 40) -> AcfResult | Skipped:
    x = prepared.values
    if x.size < 3:
        return Skipped("acf", "too_short", f"{x.size} samples; need at least 3")
    if _is_constant(x):
        return Skipped("acf", "constant", "autocorrelation of a constant series is undefined")
    lags = min(nlags, x.size - 1)

    def run() -> AcfResult | Skipped:
        r = np.asarray(acf(x, nlags=lags, fft=True), dtype=np.float64)
        if not np.all(np.isfinite(r)):
            return Skipped("acf", "not_finite", "autocorrelation is not finite")
        return AcfResult(values=_ro(r), conf_bound=1.96 / math.sqrt(x.size))

    return _guard("acf", run)


# --------------------------------------------------------------------------- decomposition


@dataclass(frozen=True)
class DecompositionResult:
    period: int  # in samples
    timestamps: IntArray
    trend: FloatArray
    seasonal: FloatArray
    resid: FloatArray
    seasonal_strength: float  # max(0, 1 - var(resid)/var(seasonal+resid)); 0 = no seasonality


def decomposition(prepared: Prepared, period_s: int = 3600) -> DecompositionResult | Skipped:
    """Additive moving-average decomposition; the period is given in seconds."""
    period = max(2, round(period_s / prepared.step_s))
    x = prepared.values
    if x.size < 2 * period:
        return Skipped(
            "decomposition",
            "too_short",
            f"{x.size} samples cover less than two periods of {period} samples ({period_s} s)",
        )

    def run() -> DecompositionResult | Skipped:
        d = seasonal_decompose(x, model="additive", period=period, extrapolate_trend="freq")
        trend = np.asarray(d.trend, dtype=np.float64)
        seasonal = np.asarray(d.seasonal, dtype=np.float64)
        resid = np.asarray(d.resid, dtype=np.float64)
        if not (np.all(np.isfinite(trend)) and np.all(np.isfinite(resid))):
            return Skipped("decomposition", "not_finite", "decomposition is not finite")
        denom = float(np.var(seasonal + resid))
        strength = max(0.0, 1.0 - float(np.var(resid)) / denom) if denom > 0 else 0.0
        return DecompositionResult(
            period=period,
            timestamps=prepared.timestamps,
            trend=_ro(trend),
            seasonal=_ro(seasonal),
            resid=_ro(resid),
            seasonal_strength=strength,
        )

    return _guard("decomposition", run)


# --------------------------------------------------------------------------- aggregates


DEFAULT_WINDOWS: tuple[tuple[str, int], ...] = (("1h", 3600), ("3h", 10800), ("12h", 43200))


@dataclass(frozen=True)
class WindowAggregate:
    window: str
    start: int  # exclusive, epoch s (like a Prometheus range selector: (end - window, end])
    end: int  # inclusive
    count: int
    max: float
    min: float
    mean: float
    std: float  # population standard deviation, as Prometheus' stddev_over_time


def aggregates(
    prepared: Prepared, end: int, windows: Sequence[tuple[str, int]] = DEFAULT_WINDOWS
) -> tuple[WindowAggregate | Skipped, ...]:
    """max/min/mean/std of the measured samples in each window ending at ``end``.

    Computed on the raw samples (no interpolation), so the figures equal what Prometheus'
    ``max_over_time(...[1h])`` and friends return at ``end``.
    """
    out: list[WindowAggregate | Skipped] = []
    ts, vs = prepared.raw_timestamps, prepared.raw_values
    for name, seconds in windows:
        start = end - seconds
        sel = vs[(ts > start) & (ts <= end)]
        if sel.size == 0:
            out.append(Skipped("aggregates", "empty", f"no samples in the last {name}"))
            continue
        with np.errstate(all="ignore"):
            stats = (float(sel.max()), float(sel.min()), float(sel.mean()), float(sel.std()))
        if not all(math.isfinite(v) for v in stats):
            out.append(Skipped("aggregates", "not_finite", f"{name} statistics overflow"))
            continue
        out.append(WindowAggregate(name, start, end, int(sel.size), *stats))
    return tuple(out)


# --------------------------------------------------------------------------- forecast


def _resample_mean(prepared: Prepared, step_s: int) -> tuple[IntArray, FloatArray]:
    """Means over buckets of ``step_s`` seconds, stamped at the bucket's last grid point."""
    if step_s <= prepared.step_s:
        return prepared.timestamps, prepared.values
    ts, vs = prepared.timestamps, prepared.values
    # Buckets are anchored at the series' end so the last bucket is complete and current.
    bucket = (ts[-1] - ts) // step_s
    nb = int(bucket.max()) + 1
    sums = np.bincount(bucket, weights=vs, minlength=nb)
    counts = np.bincount(bucket, minlength=nb)
    means = (sums / counts)[::-1]
    stamps = (ts[-1] - np.arange(nb, dtype=np.int64) * step_s)[::-1]
    return stamps.astype(np.int64), means.astype(np.float64)


def forecast(
    prepared: Prepared,
    horizon_s: int = 600,
    step_s: int = 60,
    season_s: int = 3600,
    options: ForecastOptions | None = None,
) -> ForecastResult | Skipped:
    """Holt-Winters forecast of the next ``horizon_s`` seconds with its predictive
    distribution and 80 % and 95 % intervals (see :mod:`etl_data_pipeline.forecast`).

    The series is averaged to one point per ``step_s`` (the fit cost grows with the season
    length in points). A series whose measured samples are all ≥ 0 is non-negative: its
    bounds never go below 0.
    """
    if prepared.n == 0:
        return Skipped("forecast", "empty", "no samples")
    stamps, m = _resample_mean(prepared, step_s)
    step = max(step_s, prepared.step_s)
    horizon = max(1, math.ceil(horizon_s / step))
    if m.size < 3:
        return Skipped("forecast", "too_short", f"{m.size} points at {step} s; need at least 3")
    period = round(season_s / step) if season_s > 0 else 0
    nonnegative = bool(np.all(prepared.raw_values >= 0))
    return _guard(
        "forecast",
        lambda: fit_forecast(
            stamps, m, step, horizon, period, nonnegative=nonnegative, options=options
        ),
    )


# --------------------------------------------------------------------------- all together


@dataclass(frozen=True)
class AnalysisConfig:
    hp_lambda: float = 1600.0
    acf_nlags: int = 40
    adf_maxlag: int | None = None
    adf_autolag: str | None = None
    adf_regression: AdfRegression = "ct"
    season_s: int = 3600
    forecast_horizon_s: int = 600
    forecast_step_s: int = 60
    windows: tuple[tuple[str, int], ...] = DEFAULT_WINDOWS


@dataclass(frozen=True)
class SeriesAnalysis:
    prepared: Prepared
    end: int
    adf: AdfResult | Skipped
    hp: HpResult | Skipped
    acf: AcfResult | Skipped
    decomposition: DecompositionResult | Skipped
    aggregates: tuple[WindowAggregate | Skipped, ...]
    forecast: ForecastResult | Skipped
    durations_s: dict[str, float]

    @property
    def skipped(self) -> tuple[Skipped, ...]:
        parts: list[object] = [self.adf, self.hp, self.acf, self.decomposition, self.forecast]
        parts.extend(self.aggregates)
        return tuple(p for p in parts if isinstance(p, Skipped))


def analyse(
    prepared: Prepared, end: int, config: AnalysisConfig = AnalysisConfig()
) -> SeriesAnalysis:
    """Run every analysis on one prepared series, timing each."""
    durations: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], R]) -> R:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            durations[name] = time.perf_counter() - t0

    return SeriesAnalysis(
        prepared=prepared,
        end=end,
        adf=timed(
            "adf",
            lambda: adf(
                prepared.values, config.adf_maxlag, config.adf_autolag, config.adf_regression
            ),
        ),
        hp=timed("hp", lambda: hodrick_prescott(prepared, config.hp_lambda)),
        acf=timed("acf", lambda: autocorrelation(prepared, config.acf_nlags)),
        decomposition=timed("decomposition", lambda: decomposition(prepared, config.season_s)),
        aggregates=timed("aggregates", lambda: aggregates(prepared, end, config.windows)),
        forecast=timed(
            "forecast",
            lambda: forecast(
                prepared, config.forecast_horizon_s, config.forecast_step_s, config.season_s
            ),
        ),
        durations_s=durations,
    )
