"""SLI request models: what a client may send, and the messages it gets otherwise."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sla_manager.models import ForecastQuery, SliCreate, SliSpec, ViolationsQuery

GOOD = {"name": "fd-allocated", "selector": 'node_filefd_allocated{job="host"}', "max": 20000}


def _error(model: type[Any], **data: Any) -> str:
    with pytest.raises(ValidationError) as e:
        model(**data)
    return str(e.value)


def test_a_valid_sli() -> None:
    sli = SliCreate(**GOOD, labels={"instance": "demo-host:9100"}, description="fds")
    assert sli.bounds().max == 20000 and sli.min is None


@pytest.mark.parametrize(
    "name", ["Upper", "-leading", "has_underscore", "a" * 64, "", "sp ace", "ünï", "ab\n"]
)
def test_names_must_be_slugs(name: str) -> None:
    assert "is not a valid name: lower-case letters" in _error(SliCreate, **{**GOOD, "name": name})


def test_range_rules() -> None:
    assert "give min, max or both" in _error(SliSpec, selector="up")
    assert "min (5.0) must not exceed max (3.0)" in _error(SliSpec, selector="up", min=5, max=3)
    SliSpec(selector="up", min=3, max=3)


@pytest.mark.parametrize("bad", ["1", True, float("inf"), float("nan")])
def test_bounds_are_finite_json_numbers(bad: Any) -> None:
    _error(SliSpec, selector="up", max=bad)


def test_unknown_fields_and_bad_labels_are_refused() -> None:
    assert "Extra inputs are not permitted" in _error(SliCreate, **GOOD, threshold=3)
    assert "labels" in _error(SliCreate, **GOOD, labels={"bad-name": "x"})
    assert "selector" in _error(SliCreate, **{**GOOD, "selector": "   "})


def test_violation_window_rules() -> None:
    assert "either window or start" in _error(ViolationsQuery, window="1h", start=1)
    assert "start (10.0) must be before end (5.0)" in _error(ViolationsQuery, start=10, end=5)
    assert "window must be at most 7 days" in _error(ViolationsQuery, window="8d")
    assert "window" in _error(ViolationsQuery, window="1x")
    assert "Extra inputs" in _error(ViolationsQuery, windows="1h")
    assert ViolationsQuery(window="12h").window == "12h"


def test_horizon_rules() -> None:
    assert ForecastQuery().horizon == "10m"
    assert "horizon must be at most 24 h" in _error(ForecastQuery, horizon="2d")
    assert "horizon" in _error(ForecastQuery, horizon="ten minutes")
