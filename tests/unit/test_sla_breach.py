"""Breach probabilities of stored forecasts in the SLA manager (hand-computed), the fallback
for forecasts stored without a distribution, the per-SLI threshold and the modes."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from sla_manager import evaluation as ev
from sla_manager.evaluation import Z95, Bounds, FloatArray
from sla_manager.models import ForecastQuery, Sli, SliCreate
from sla_manager.routes.evaluations import _forecast_series
from sla_manager.settings import SlaSettings
from sla_manager.slo.breach import SliForecast, breach_probability
from sla_manager.store import StoredForecast

SELECTOR = 'node_filefd_allocated{job="host"}'
PHI_1 = 0.5 * math.erfc(1 / math.sqrt(2))  # P(Z > 1) = 0.158655...
PHI_15 = 0.5 * math.erfc(1.5 / math.sqrt(2))  # P(Z > 1.5) = 0.066807...


def _arr(*xs: float) -> FloatArray:
    return np.array(xs, dtype=np.float64)


def _sli(threshold: float = 0.5, lo: float | None = None, hi: float | None = 110.0) -> Sli:
    return Sli(
        name="fd",
        selector=SELECTOR,
        min=lo,
        max=hi,
        description="",
        labels={},
        breach_probability_threshold=threshold,
        created_at=0,
        updated_at=0,
    )


def _stored(
    value: FloatArray,
    loc: FloatArray | None = None,
    scale: FloatArray | None = None,
    **dist: Any,
) -> StoredForecast:
    """Points a minute apart after t=1000, 95 % intervals of ±1.96·10 around the value
    (so the fallback's σ is 10) unless the test says otherwise."""
    n = value.size
    nan = np.full(n, np.nan)
    return StoredForecast(
        series_key="k",
        transform="none",
        selector=SELECTOR,
        produced_at=1000,
        window_end=1000,
        model="test",
        ts=np.arange(1060, 1060 + 60 * n, 60, dtype=np.int64),
        value=value,
        lower80=value - 12.8,
        upper80=value + 12.8,
        lower95=value - Z95 * 10,
        upper95=value + Z95 * 10,
        loc=nan if loc is None else loc,
        scale=nan if scale is None else scale,
        **dist,
    )


def _settings() -> SlaSettings:
    return SlaSettings(environment="test", sla_api_token="unit-test-token-0123456789")


def _evaluate(sli: Sli, stored: StoredForecast, mode: ev.PredictionMode = "probability") -> Any:
    return _forecast_series(sli, None, {}, "k", stored, 1000.0, mode, _settings())


# --------------------------------------------------------------------------- the distribution


def test_the_stored_distribution_gives_the_probabilities() -> None:
    # loc 100 / 104, scale 10 / 4, max 110: 1σ and 1.5σ below the bound.
    stored = _stored(_arr(100.0, 104.0), _arr(100.0, 104.0), _arr(10.0, 4.0), distribution="normal")
    dist = stored.predictive()
    assert (dist.source, dist.distribution, dist.df, dist.floor) == (
        "forecast",
        "normal",
        None,
        None,
    )
    p = ev.point_probabilities(Bounds(None, 110.0), dist)
    assert p.tolist() == pytest.approx([PHI_1, PHI_15], abs=1e-9)

    out = _evaluate(_sli(), stored)
    assert out.breach_probability == pytest.approx(PHI_1, abs=1e-9)  # the largest point's
    assert (out.distribution, out.distribution_source) == ("normal", "forecast")


def test_student_t_and_the_floor_come_from_the_stored_forecast() -> None:
    # Cauchy (t, 1 df): P(T > 1) = 1/2 − atan(1)/π = 0.25 exactly.
    t = _stored(_arr(100.0), _arr(100.0), _arr(10.0), distribution="student_t", df=1.0)
    assert _evaluate(_sli(), t).breach_probability == pytest.approx(0.25, abs=1e-12)
    assert _evaluate(_sli(), t).distribution == "student_t"
    # A minimum at the domain's floor cannot be crossed: 0, where a normal around 0.1 with
    # σ 1 would say Φ(−0.1) = 0.46.
    floored = _stored(_arr(0.1), _arr(0.1), _arr(1.0), distribution="normal", floor=0.0)
    assert _evaluate(_sli(lo=0.0, hi=None), floored).breach_probability == 0.0
    unfloored = _stored(_arr(0.1), _arr(0.1), _arr(1.0), distribution="normal")
    assert _evaluate(_sli(lo=0.0, hi=None), unfloored).breach_probability == pytest.approx(
        0.5 * math.erfc(0.1 / math.sqrt(2)), abs=1e-9
    )


@pytest.mark.parametrize(
    "dist",
    [
        {},  # an older ETL: no distribution at all
        {"loc": _arr(100.0, math.nan), "scale": _arr(10.0, 4.0), "distribution": "normal"},
        {"loc": _arr(100.0, 104.0), "scale": _arr(10.0, 4.0), "distribution": "student_t"},
    ],
    ids=["none-stored", "a-point-without-loc", "student-t-without-df"],
)
def test_without_a_complete_distribution_the_95_interval_gives_a_normal(
    dist: dict[str, Any],
) -> None:
    # σ = (upper95 − lower95) / 3.92 = 10 around the point forecast (100, 104): 1σ and 0.6σ
    # below the bound, whatever loc/scale say.
    stored = _stored(_arr(100.0, 104.0), **dist)
    out = _evaluate(_sli(), stored)
    assert (out.distribution, out.distribution_source) == ("normal", "interval95_fallback")
    assert out.breach_probability == pytest.approx(0.5 * math.erfc(0.6 / math.sqrt(2)), abs=1e-9)
    assert [v.breach_probability for v in _evaluate(_sli(0.01), stored).violations] == (
        pytest.approx([PHI_1, 0.5 * math.erfc(0.6 / math.sqrt(2))], abs=1e-9)
    )


def test_the_fallback_of_a_degenerate_interval_is_its_point_forecast() -> None:
    value = _arr(120.0, 100.0, math.nan)
    dist = ev.interval95_normal(value, _arr(120.0, 100.0, 0.0), _arr(120.0, 100.0, 1.0))
    assert ev.point_probabilities(Bounds(None, 110.0), dist).tolist() == [1.0, 0.0, 0.0]


# --------------------------------------------------------------------------- threshold, modes


def test_the_slis_threshold_decides_what_is_a_predicted_violation() -> None:
    stored = _stored(_arr(100.0, 104.0), _arr(100.0, 104.0), _arr(10.0, 4.0), distribution="normal")
    default = _evaluate(_sli(), stored)  # 0.5: P 0.159 is no predicted violation
    assert (default.predicted_violation, default.violations) == (False, [])
    low = _evaluate(_sli(threshold=0.15), stored)  # only the first point reaches 0.15
    assert low.predicted_violation is True
    assert [(v.ts, v.breach_probability) for v in low.violations] == [
        (1060, pytest.approx(PHI_1, abs=1e-9))
    ]
    assert low.first_breach_at == 1060
    # At exactly the threshold it counts ("at least").
    exact = _evaluate(_sli(threshold=float(np.float64(PHI_1))), stored)
    assert exact.predicted_violation is True
    assert _evaluate(_sli(threshold=0.16), stored).predicted_violation is False


def test_point_and_interval_modes_stay_available() -> None:
    # max 110, σ 10 around: 120 (point outside), 105 (only the 80 % band: 105 + 12.8),
    # 95 (only the 95 % band: 95 + 19.6), 80 (inside).
    stored = _stored(_arr(80.0, 95.0, 105.0, 120.0))
    kinds = {m: [v.ts for v in _evaluate(_sli(), stored, m).violations] for m in ev.SEVERITY}
    assert kinds == {"point": [1240], "interval80": [1180, 1240], "interval95": [1120, 1180, 1240]}
    by_prob = _evaluate(_sli(), stored)  # P: 0.0013, 0.067, 0.31, 0.84
    assert [v.ts for v in by_prob.violations] == [1240]
    assert by_prob.leaves_by == "point" and by_prob.first_point_breach_at == 1240
    assert ev.predicted("interval80", 0.5, _arr(0.0, 0.0, 0.0), ["interval95", None, "point"]) == [
        False,
        False,
        True,
    ]


def test_an_incomparable_forecast_has_no_probability() -> None:
    stored = _stored(_arr(200.0))
    out = _forecast_series(_sli(), None, {}, "k", stored, 1000.0, "probability", _settings())
    assert out.comparable is True and out.breach_probability == 1.0
    rate = dataclasses.replace(stored, transform="rate")
    out = _evaluate(_sli(), rate)
    assert out.comparable is False
    assert (out.breach_probability, out.distribution_source, out.predicted_violation) == (
        None,
        None,
        False,
    )


def test_the_metrics_gauge_uses_the_stored_distribution() -> None:
    stored = _stored(_arr(100.0), _arr(100.0), _arr(1.0), distribution="normal")
    b = Bounds(None, 110.0)
    # Stored: 10 σ below the bound (≈ 0); the 95 % interval's normal (σ 10) would say 0.159.
    with_dist = SliForecast(stored.value, stored.lower95, stored.upper95, stored.predictive())
    assert breach_probability(b, [with_dist]) == pytest.approx(0.0, abs=1e-20)
    without = SliForecast(stored.value, stored.lower95, stored.upper95)
    assert breach_probability(b, [without]) == pytest.approx(PHI_1, abs=1e-9)


# --------------------------------------------------------------------------- the API's models


def test_the_threshold_is_a_probability_with_a_default_of_one_half() -> None:
    assert SliCreate(name="x", selector="up", max=1).breach_probability_threshold == 0.5
    assert SliCreate(name="x", selector="up", max=1, breach_probability_threshold=1)
    for bad in (0, -0.1, 1.01, "0.5", math.nan, True):
        with pytest.raises(ValidationError):
            SliCreate.model_validate(
                {"name": "x", "selector": "up", "max": 1, "breach_probability_threshold": bad}
            )


def test_the_default_mode_is_probability() -> None:
    assert ForecastQuery().mode == "probability"
    assert ForecastQuery(mode="interval80").mode == "interval80"
    with pytest.raises(ValidationError):
        ForecastQuery.model_validate({"mode": "interval99"})
