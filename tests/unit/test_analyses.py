"""Each analysis against a known truth, and properties that hold for any input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl_data_pipeline.analyses import (
    AcfResult,
    AdfResult,
    AnalysisConfig,
    DecompositionResult,
    ForecastResult,
    HpResult,
    Skipped,
    WindowAggregate,
    adf,
    aggregates,
    analyse,
    autocorrelation,
    decomposition,
    forecast,
    hodrick_prescott,
    hp_cutoff_for_lambda,
    hp_lambda_for_cutoff,
    prepare,
)

T0 = 1_760_000_000  # any epoch second aligned to the 15 s step
STEP = 15


def grid(n: int, step: int = STEP) -> np.ndarray:
    return T0 + step * np.arange(n, dtype=np.int64)


def prepared(values: np.ndarray, step: int = STEP):  # type: ignore[no-untyped-def]
    return prepare(grid(values.size, step), values, step)


# ----------------------------------------------------------------- prepare / counters


def test_prepare_sorts_dedups_drops_nonfinite_and_fills_gaps() -> None:
    ts = np.array([T0 + 30, T0, T0 + 15, T0 + 15, T0 + 75, T0 + 90], dtype=np.float64)
    vs = np.array([3.0, 1.0, 9.0, 2.0, np.nan, 6.0])
    p = prepare(ts, vs, STEP)
    # duplicate T0+15 keeps the last value (2.0); NaN at T0+75 dropped
    assert p.raw_timestamps.tolist() == [T0, T0 + 15, T0 + 30, T0 + 90]
    assert p.raw_values.tolist() == [1.0, 2.0, 3.0, 6.0]
    # grid T0..T0+90 every 15 s: 60 and 75 interpolated between 3.0 @30 and 6.0 @90
    assert p.timestamps.tolist() == [T0 + 15 * i for i in range(7)]
    assert p.values.tolist() == [1.0, 2.0, 3.0, 3.75, 4.5, 5.25, 6.0]
    assert p.interpolated == 3
    with pytest.raises(ValueError, match="read-only"):
        p.values[0] = 0.0


def test_adf_rejects_unit_root_on_white_noise() -> None:
    x = np.random.default_rng(1).normal(size=2000)
    r = adf(x)
    assert isinstance(r, AdfResult)
    assert r.stationary and r.pvalue < 0.01
    assert (
        r.statistic < r.critical_values["1%"] < r.critical_values["5%"] < r.critical_values["10%"]
    )
    assert r.nobs == 2000 - r.used_lag - 1


def test_adf_does_not_reject_unit_root_on_random_walk() -> None:
    x = np.cumsum(np.random.default_rng(2).normal(size=2000))
    r = adf(x)
    assert isinstance(r, AdfResult)
    assert not r.stationary and r.pvalue > 0.05


@pytest.mark.parametrize(
    ("x", "reason"),
    [
        (np.array([]), "empty"),
        (np.full(100, 7.0), "constant"),
        (np.array([1.0, 2.0, 1.5]), "too_short"),
        (np.array([1.0, np.nan] * 20), "not_finite"),
    ],
)
def test_adf_skips_with_a_typed_reason(x: np.ndarray, reason: str) -> None:
    r = adf(x)
    assert isinstance(r, Skipped) and r.reason == reason and r.analysis == "adf"


def _ar1(phi: float, n: int, seed: int) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def test_adf_with_a_trend_finds_a_trend_stationary_series_stationary() -> None:
    # A resource drifting steadily with stationary noise: not a random walk.
    x = _ar1(0.95, 2880, seed=11) + np.linspace(0.0, 30.0, 2880)
    c = adf(x, regression="c")
    ct = adf(x)  # the default
    assert isinstance(c, AdfResult) and isinstance(ct, AdfResult)
    assert ct.regression == "ct" and c.regression == "c"
    assert not c.stationary  # constant-only reads the drift as a unit root
    assert ct.stationary and ct.pvalue < 0.01
    # a random walk stays a unit root under "ct" too
    walk = adf(np.cumsum(np.random.default_rng(12).normal(size=2880)))
    assert isinstance(walk, AdfResult) and not walk.stationary


def test_analysis_config_carries_the_adf_regression_into_the_result() -> None:
    x = _ar1(0.5, 300, seed=13)
    r = analyse(prepared(x), int(grid(300)[-1]), AnalysisConfig(adf_regression="c"))
    assert isinstance(r.adf, AdfResult) and r.adf.regression == "c"


# ----------------------------------------------------------------- HP


def test_hp_lambda_1600_cuts_at_about_40_samples_ten_minutes_at_15_s() -> None:
    assert hp_cutoff_for_lambda(1600.0) == pytest.approx(39.7, abs=0.05)
    assert hp_cutoff_for_lambda(1600.0) * 15 == pytest.approx(596, abs=1)
    # the default: one hour at 15 s is 240 samples
    assert hp_lambda_for_cutoff(240) == pytest.approx(2.129e6, rel=1e-3)
    for period in (3.0, 40.0, 240.0, 5760.0):
        assert hp_cutoff_for_lambda(hp_lambda_for_cutoff(period)) == pytest.approx(period)
    with pytest.raises(ValueError):
        hp_lambda_for_cutoff(2.0)


@pytest.mark.parametrize(("ratio", "gain"), [(1.0, 0.5), (4.0, 0.996), (0.25, 0.0)])
def test_hp_lambda_for_a_cutoff_passes_half_a_cycle_of_that_period(
    ratio: float, gain: float
) -> None:
    """The formula, verified on the filter itself: a sinusoid of the cut-off period keeps
    half its amplitude in the trend, one 4x longer nearly all, one 4x shorter nearly none."""
    period = 60.0
    n = 6000
    x = np.sin(2 * np.pi * np.arange(n) / (period * ratio))
    r = hodrick_prescott(prepared(x), lamb=hp_lambda_for_cutoff(period))
    assert isinstance(r, HpResult)
    middle = slice(n // 4, 3 * n // 4)  # away from the filter's end effects
    measured = float(np.std(r.trend[middle]) / np.std(x[middle]))
    assert measured == pytest.approx(gain, abs=0.01)
    assert r.cutoff_period_s == pytest.approx(period * STEP)


def test_hp_trend_of_a_straight_line_is_the_line() -> None:
    line = 3.5 * np.arange(500) - 120.0
    r = hodrick_prescott(prepared(line), lamb=1600)
    assert isinstance(r, HpResult)
    np.testing.assert_allclose(r.trend, line, rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.cycle, 0.0, atol=1e-6)
    assert r.timestamps.tolist() == grid(500).tolist()


def test_hp_larger_lambda_gives_smoother_trend() -> None:
    rng = np.random.default_rng(3)
    x = np.sin(np.arange(600) / 20) + rng.normal(0, 0.3, 600)
    rough = hodrick_prescott(prepared(x), lamb=10)
    smooth = hodrick_prescott(prepared(x), lamb=1e6)
    assert isinstance(rough, HpResult) and isinstance(smooth, HpResult)
    assert np.abs(np.diff(smooth.trend, 2)).sum() < np.abs(np.diff(rough.trend, 2)).sum()
    np.testing.assert_allclose(rough.trend + rough.cycle, x)


# ----------------------------------------------------------------- ACF


def test_acf_of_ar1_matches_phi_to_the_k() -> None:
    phi, n = 0.7, 20_000
    rng = np.random.default_rng(4)
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0]
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    r = autocorrelation(prepared(x), nlags=10)
    assert isinstance(r, AcfResult)
    assert r.values.size == 11 and r.values[0] == pytest.approx(1.0)
    np.testing.assert_allclose(r.values, phi ** np.arange(11), atol=0.03)
    assert r.conf_bound == pytest.approx(1.96 / math.sqrt(n))


def test_acf_nlags_is_capped_by_length_and_constant_is_skipped() -> None:
    r = autocorrelation(prepared(np.arange(5.0)), nlags=40)
    assert isinstance(r, AcfResult) and r.values.size == 5
    s = autocorrelation(prepared(np.zeros(50)))
    assert isinstance(s, Skipped) and s.reason == "constant"


# ----------------------------------------------------------------- decomposition


def test_decomposition_recovers_a_known_seasonal_shape() -> None:
    period_pts = 240  # one hour at 15 s
    n = period_pts * 8
    shape = 50 * np.sin(2 * np.pi * np.arange(period_pts) / period_pts) + 20 * np.cos(
        6 * np.pi * np.arange(period_pts) / period_pts
    )
    shape -= shape.mean()
    trend = 1000 + 0.5 * np.arange(n)
    noise = np.random.default_rng(5).normal(0, 1, n)
    x = trend + np.tile(shape, n // period_pts) + noise
    r = decomposition(prepared(x), period_s=3600)
    assert isinstance(r, DecompositionResult)
    assert r.period == period_pts
    np.testing.assert_allclose(r.seasonal[:period_pts], shape, atol=1.0)
    np.testing.assert_allclose(r.trend + r.seasonal + r.resid, x, atol=1e-8)
    assert r.seasonal_strength > 0.95


def test_decomposition_skips_when_history_is_shorter_than_two_periods() -> None:
    r = decomposition(prepared(np.arange(479.0)), period_s=3600)
    assert isinstance(r, Skipped) and r.reason == "too_short"
    assert "two periods" in r.detail
    assert isinstance(
        decomposition(prepared(np.sin(np.arange(480.0))), period_s=3600), DecompositionResult
    )


# ----------------------------------------------------------------- aggregates


def test_aggregates_are_exact_on_a_hand_built_series() -> None:
    end = T0 + 12 * 3600
    # one sample every 15 min over the last 12 h: value = its index (0..47)
    ts = end - 900 * np.arange(48)[::-1]
    vs = np.arange(48, dtype=np.float64)
    out = aggregates(prepare(ts, vs, 900), end)
    by = {a.window: a for a in out if isinstance(a, WindowAggregate)}
    assert set(by) == {"1h", "3h", "12h"}
    # (end-1h, end] holds the samples at end-45m..end: values 44..47
    assert (by["1h"].count, by["1h"].min, by["1h"].max, by["1h"].mean) == (4, 44.0, 47.0, 45.5)
    assert by["1h"].std == pytest.approx(np.std([44, 45, 46, 47]))
    assert (by["3h"].count, by["3h"].min, by["3h"].max) == (12, 36.0, 47.0)
    assert (by["12h"].count, by["12h"].min, by["12h"].max, by["12h"].mean) == (48, 0.0, 47.0, 23.5)
    assert by["12h"].start == end - 43200 and by["12h"].end == end


def test_aggregates_skip_an_empty_window() -> None:
    end = T0 + 100_000
    out = aggregates(prepare([T0, T0 + 15], [1.0, 2.0], STEP), end)
    assert all(isinstance(a, Skipped) and a.reason == "empty" for a in out)


# ----------------------------------------------------------------- forecast


def _seasonal_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    n = 12 * 240  # 12 h at 15 s, hourly season, noise sd 2
    t = np.arange(n + 40)
    rng = np.random.default_rng(seed)
    full = 500 + 100 * np.sin(2 * np.pi * t / 240) + 0.01 * t + rng.normal(0, 2, t.size)
    # the truth to compare with: per-minute means of the held-back 10 minutes
    return full[:n], full[n:].reshape(10, 4).mean(axis=1)


def test_forecast_of_a_clean_seasonal_series_lands_inside_its_95_interval() -> None:
    history, actual = _seasonal_case(seed=10)
    p = prepared(history)
    r = forecast(p, horizon_s=600, step_s=60, season_s=3600)
    assert isinstance(r, ForecastResult)
    assert r.model.startswith("ets(A,Ad,A)")
    assert r.timestamps.size == 10 and r.step_s == 60
    assert r.timestamps[0] == int(p.timestamps[-1]) + 60
    assert np.all((actual >= r.lower95) & (actual <= r.upper95))
    assert np.all(r.lower95 <= r.lower80) and np.all(r.lower80 <= r.mean)
    assert np.all(r.mean <= r.upper80) and np.all(r.upper80 <= r.upper95)
    assert r.max == r.mean.max() and r.min == r.mean.min()
    assert r.avg == pytest.approx(r.mean.mean())


def test_forecast_intervals_are_calibrated() -> None:
    """Across seeds the 80 %/95 % intervals hold about 80 %/95 % of the held-back points.

    (One path's ten points are correlated, so "all ten inside" is itself a coin toss for
    a calibrated model: coverage over many paths is the property that can be asserted.)
    """
    in80, in95, errors = [], [], []
    for seed in range(20):
        history, actual = _seasonal_case(seed)
        r = forecast(prepared(history))
        assert isinstance(r, ForecastResult)
        in80.append(np.mean((actual >= r.lower80) & (actual <= r.upper80)))
        in95.append(np.mean((actual >= r.lower95) & (actual <= r.upper95)))
        errors.append(np.mean(np.abs(actual - r.mean)))
    assert 0.65 <= np.mean(in80) <= 0.95
    assert 0.88 <= np.mean(in95) <= 1.0
    # sd of a per-minute mean is 1: errors of that order, against a 200-wide swing
    assert np.median(errors) < 1.5


def test_forecast_falls_back_on_short_history_and_handles_zeros_and_negatives() -> None:
    x = np.array([0.0, -5.0, 3.0, 0.0, -2.0, 4.0, 0.0, -1.0] * 10)  # 80 pts = 20 min
    r = forecast(prepared(x), season_s=3600)
    assert isinstance(r, ForecastResult)
    assert "A,A)" not in r.model  # less than two seasons: no seasonal model
    assert np.all(np.isfinite(r.mean))


def test_forecast_of_a_constant_series_is_constant_with_zero_width() -> None:
    r = forecast(prepared(np.full(500, 42.0)))
    assert isinstance(r, ForecastResult) and r.model == "constant"
    assert np.all(r.mean == 42.0) and np.all(r.lower95 == r.upper95)


# ----------------------------------------------------------------- properties


finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
maybe_nan = st.one_of(finite, st.just(float("nan")))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(maybe_nan, min_size=0, max_size=400), step=st.sampled_from([1, 15, 60]))
def test_any_series_yields_results_or_typed_skips(values: list[float], step: int) -> None:
    x = np.array(values, dtype=np.float64)
    p = prepare(grid(x.size, step), x, step)
    r = analyse(p, int(T0 + step * max(0, x.size - 1)))
    for part, kind in (
        (r.adf, AdfResult),
        (r.hp, HpResult),
        (r.acf, AcfResult),
        (r.decomposition, DecompositionResult),
        (r.forecast, ForecastResult),
    ):
        assert isinstance(part, kind | Skipped)
    for a in r.aggregates:
        assert isinstance(a, WindowAggregate | Skipped)
    if isinstance(r.forecast, ForecastResult):
        assert np.all(np.isfinite(r.forecast.mean))
        assert np.all(np.isfinite(r.forecast.lower95)) and np.all(np.isfinite(r.forecast.upper95))
    if isinstance(r.hp, HpResult):
        assert np.all(np.isfinite(r.hp.trend))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=3000),
    holes=st.floats(min_value=0.0, max_value=0.9),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    scale=st.sampled_from([1e-9, 1.0, 1e10]),
)
def test_realistic_series_with_gaps_never_raise(
    n: int, holes: float, seed: int, scale: float
) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    x = scale * (10 + np.sin(2 * np.pi * t / 240) + rng.normal(0, 0.1, n))
    keep = rng.random(n) >= holes
    x[rng.random(n) < 0.05] = np.nan
    p = prepare(grid(n)[keep], x[keep], STEP)
    r = analyse(p, int(T0 + STEP * n))
    assert len(r.aggregates) == 3
    assert set(r.durations_s) == {"adf", "hp", "acf", "decomposition", "aggregates", "forecast"}
