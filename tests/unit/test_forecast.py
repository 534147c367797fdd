"""Forecasts that do not cry wolf (issue 12 item 4): domain bounds, robustness to past
incidents, breach probability, and the predictive distribution in the Kafka message."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from etl_data_pipeline.analyses import analyse, forecast, prepare
from etl_data_pipeline.forecast import ForecastOptions, ForecastResult, hampel
from etl_data_pipeline.pipeline import build_message
from sla_common.breach import breach_probability
from sla_common.messages import AnalysisMessage, Forecast, ForecastPoint, SeriesRef

T0 = 1_760_000_000
STEP = 15


def _prepared(values: np.ndarray, step: int = STEP):  # type: ignore[no-untyped-def]
    return prepare(T0 + step * np.arange(values.size, dtype=np.int64), values, step)


def _fd_like(seed: int = 3, spike_ago_h: float = 6.0) -> np.ndarray:
    """12 h at 15 s of an open-file-descriptor count around 4,400 (hourly cycle, noise)
    with a 20-minute connection storm at ~41,000 ``spike_ago_h`` hours before the end:
    the demo's ``node_filefd_allocated`` (max 20,000) whose band was -11,790..20,654."""
    n = 12 * 240
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    x = 4400 + 250 * np.sin(2 * np.pi * t / 240) + rng.normal(0, 60, n)
    start = n - int(spike_ago_h * 240)
    x[start : start + 80] = 41_000 + rng.normal(0, 500, 80)
    return np.round(x)


# ----------------------------------------------------------------- robustness


def test_a_spike_six_hours_ago_does_not_blow_up_the_band() -> None:
    x = _fd_like()
    r = forecast(_prepared(x))
    assert isinstance(r, ForecastResult)
    # the band stays near the current level: never negative, nowhere near the 20,000 limit
    assert np.all(r.lower95 > 3000) and np.all(r.upper95 < 6000), (r.lower95, r.upper95)
    assert r.breach_probability(upper=20_000) < 1e-3
    assert r.outliers_replaced >= 15  # the storm's 20 per-minute means, give or take edges


def test_the_legacy_forecast_is_what_cried_wolf() -> None:
    """The same case through the forecast as it was: the band the issue reported."""
    r = forecast(_prepared(_fd_like()), options=ForecastOptions.legacy())
    assert isinstance(r, ForecastResult)
    assert r.lower95.min() < 0 and r.upper95.max() > 10_000


def test_a_spike_happening_now_is_not_cleaned_away() -> None:
    x = _fd_like()
    x[-12:] = 41_000  # the storm started 3 minutes ago: the last 3 per-minute means
    r = forecast(_prepared(x))
    assert isinstance(r, ForecastResult)
    assert r.mean[0] > 20_000
    assert r.breach_probability(upper=20_000) > 0.5


def test_hampel_replaces_isolated_outliers_and_keeps_level_shifts_and_the_newest_points() -> None:
    x = np.r_[np.zeros(50), np.full(50, 10.0)] + np.tile([0.1, -0.1], 50)
    x[20] = 100.0  # an outlier
    x[-1] = 100.0  # the newest point: protected
    y, n = hampel(x, half_window=5, k=4.0, protect=3)
    assert n == 1 and y[20] == pytest.approx(0.0, abs=0.2)
    assert y[-1] == 100.0
    np.testing.assert_array_equal(y[60:99], x[60:99])  # the shift to 10 stays


# ----------------------------------------------------------------- domain


def test_a_nonnegative_series_near_zero_never_gets_a_negative_bound() -> None:
    rng = np.random.default_rng(5)
    x = np.abs(rng.normal(0, 3, 12 * 240))  # bytes/s of a mostly idle disk
    r = forecast(_prepared(x))
    assert isinstance(r, ForecastResult) and r.floor == 0.0
    for a in (r.mean, r.lower80, r.lower95, r.upper80, r.upper95):
        assert np.all(a >= 0)
    legacy = forecast(_prepared(x), options=ForecastOptions.legacy())
    assert isinstance(legacy, ForecastResult) and legacy.lower95.min() < 0


def test_a_series_with_negative_values_has_no_floor() -> None:
    x = np.sin(np.arange(600) / 10.0) * 5
    r = forecast(_prepared(x))
    assert isinstance(r, ForecastResult) and r.floor is None
    assert r.lower95.min() < 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.floats(0, 1e12, allow_nan=False, allow_infinity=False), min_size=3, max_size=200)
)
def test_any_nonnegative_series_gets_nonnegative_bounds(values: list[float]) -> None:
    r = forecast(_prepared(np.array(values)), horizon_s=600, step_s=60)
    if isinstance(r, ForecastResult):
        assert np.all(r.lower95 >= 0) and np.all(r.lower80 >= 0) and np.all(r.mean >= 0)
        assert np.all(r.lower95 <= r.lower80) and np.all(r.upper80 <= r.upper95)


# ----------------------------------------------------------------- breach probability


def test_breach_probability_hand_computed_normal_cases() -> None:
    # one point N(0, 1): P(X > 1.959964) = 0.025; two-sided ±1.281552 = 0.2
    assert breach_probability([0.0], [1.0], upper=1.959964) == pytest.approx(0.025, abs=1e-6)
    assert breach_probability([0.0], [1.0], -1.281552, 1.281552) == pytest.approx(0.2, abs=1e-6)
    # N(10, 2²) below 7: P(Z < -1.5) = 0.0668072
    assert breach_probability([10.0], [2.0], lower=7.0) == pytest.approx(0.0668072, abs=1e-6)
    # the horizon's probability is the largest point's: max(P(Z>1)=0.158655, P(Z>0)=0.5)
    assert breach_probability([0.0, 1.0], [1.0, 1.0], upper=1.0) == pytest.approx(0.5)
    # no bound on either side: nothing to leave
    assert breach_probability([0.0], [1.0]) == 0.0


def test_breach_probability_respects_the_floor_and_point_masses() -> None:
    # censored at 0: a lower bound at the floor cannot be crossed; one above it can
    assert breach_probability([0.5], [1.0], lower=0.0, floor=0.0) == 0.0
    assert breach_probability([0.5], [1.0], lower=0.5, floor=0.0) == pytest.approx(0.5)
    # an upper bound below the floor is always exceeded
    assert breach_probability([5.0], [1.0], upper=-1.0, floor=0.0) == 1.0
    # zero scale: a point mass
    assert breach_probability([5.0, 5.0], [0.0, 0.0], upper=4.0) == 1.0
    assert breach_probability([5.0], [0.0], 4.0, 6.0) == 0.0


def test_breach_probability_student_t() -> None:
    # Student-t with 1 df is Cauchy: P(T > 1) = 1/4 exactly
    assert breach_probability([0.0], [1.0], upper=1.0, df=1.0) == pytest.approx(0.25)
    # heavier tails than the normal at the same scale
    assert breach_probability([0.0], [1.0], upper=3.0, df=3.0) > breach_probability(
        [0.0], [1.0], upper=3.0
    )


@pytest.mark.parametrize(
    ("loc", "scale", "df"),
    [([], [], None), ([0.0], [-1.0], None), ([np.nan], [1.0], None), ([0.0], [1.0], 0.0)],
)
def test_breach_probability_refuses_bad_input(
    loc: list[float], scale: list[float], df: float | None
) -> None:
    with pytest.raises(ValueError):
        breach_probability(loc, scale, upper=1.0, df=df)


# ----------------------------------------------------------------- the message


def test_the_message_carries_each_points_predictive_distribution() -> None:
    p = _prepared(_fd_like())
    end = int(p.timestamps[-1])
    ref = SeriesRef(key="k", metric="node_filefd_allocated", labels={}, selector="x")
    msg = build_message("run-1", end, ref, T0, end, analyse(p, end), horizon_s=600)
    fc = AnalysisMessage.from_bytes(msg.to_bytes()).forecast
    assert fc is not None and fc.floor == 0.0
    assert fc.distribution in ("normal", "student_t")
    assert (fc.df is not None) == (fc.distribution == "student_t")
    locs = [pt.loc for pt in fc.points]
    scales = [pt.scale for pt in fc.points]
    assert all(v is not None for v in locs) and all(s is not None and s > 0 for s in scales)


def test_forecasts_without_a_distribution_still_validate() -> None:
    """Messages of older ETLs (no loc/scale/distribution) stay readable."""
    pt = ForecastPoint(ts=T0, value=1.0, lower80=0.5, upper80=1.5, lower95=0.0, upper95=2.0)
    fc = Forecast(
        model="m", step_s=60, horizon_s=60, history_points=3, points=[pt], max=1, min=1, mean=1
    )
    assert fc.distribution is None and pt.loc is None and pt.scale is None
    with pytest.raises(ValidationError):
        Forecast.model_validate({**fc.model_dump(), "distribution": "student_t"})
