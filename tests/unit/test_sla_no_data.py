"""No data in the SLA manager: an SLI's state and the store's migration column (pure parts;
tests/integration/test_sla_no_data.py runs them against Prometheus and MariaDB)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sla_manager.models import Sli, SliCreate, StatusQuery
from sla_manager.routes.evaluations import _sli_state


def _sli(missing_is_violation: bool) -> Sli:
    return Sli(
        name="x",
        selector="up",
        min=None,
        max=1.0,
        description="",
        labels={},
        missing_data_is_violation=missing_is_violation,
        created_at=0,
        updated_at=0,
    )


@pytest.mark.parametrize(
    ("counts", "nothing", "outside", "no_data", "state"),
    [
        (False, True, False, False, "no_data"),
        (True, True, False, False, "no_data"),  # reported as no_data either way
        (False, False, False, True, "ok"),  # a gone series alone: not a violation by default
        (True, False, False, True, "violated"),
        (False, False, True, False, "violated"),
        (True, False, False, False, "ok"),
    ],
)
def test_sli_state(counts: bool, nothing: bool, outside: bool, no_data: bool, state: str) -> None:
    assert _sli_state(_sli(counts), nothing, outside, no_data) == state


def test_missing_data_is_violation_defaults_to_false_and_is_strict() -> None:
    assert SliCreate(name="x", selector="up", max=1).missing_data_is_violation is False
    with pytest.raises(ValidationError, match="valid boolean"):
        SliCreate.model_validate(
            {"name": "x", "selector": "up", "max": 1, "missing_data_is_violation": "yes"}
        )


def test_status_window_is_bounded() -> None:
    assert StatusQuery().window == "1h"
    with pytest.raises(ValidationError, match="at most 24 h"):
        StatusQuery(window="2d")
