"""The read side of ``anomalies``: selectors to filters, page positions, the WHERE clause."""

from __future__ import annotations

import json

import pytest

from sla_common.anomaly_store import AnomalyFilter, Position, where
from sla_common.mysql import series_key_hash
from sla_common.promql import equality_selector


@pytest.mark.parametrize(
    ("text", "metric", "labels"),
    [
        ("up", "up", {}),
        ("up{job=\"node\", instance='h:9100',}", "up", {"job": "node", "instance": "h:9100"}),
        ('{__name__="up",job="a\\"b"}', "up", {"job": 'a"b'}),
        ('{job="x, y}"}', None, {"job": "x, y}"}),
    ],
)
def test_equality_selectors(text: str, metric: str | None, labels: dict[str, str]) -> None:
    assert equality_selector(text) == (metric, labels)


@pytest.mark.parametrize(
    "text",
    [
        'up{job=~"n.*"}',
        'up{job!="a"}',
        "rate(up[5m])",
        'up{a="1",a="2"}',
        'up{__name__="x"}',
        "up{a}",
    ],
)
def test_other_selectors_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        equality_selector(text)


def test_positions_round_trip_and_refuse_anything_else() -> None:
    p = Position(1_700_000_000_500, 42)
    assert Position.parse(p.token()) == p
    for bad in ("", "1", "a:b", "1:2:3", "1:-2", "9" * 30 + ":1"):
        with pytest.raises(ValueError):
            Position.parse(bad)


def test_where_has_one_parameter_per_value() -> None:
    f = AnomalyFilter(
        series_key=None,
        metric="cpu",
        labels=(("host", "a"),),
        detectors=("sigma", "iforest"),
        statuses=("ERROR",),
        start_ms=1,
        end_ms=2,
    )
    clause, args = where(f, Position(5, 9))
    assert clause.count("%s") == len(args)
    assert args == ["cpu", json.dumps({"host": "a"}), "sigma", "iforest", "ERROR", 1, 2, 5, 5, 9]
    clause, args = where(AnomalyFilter(series_key="k"), None)
    assert (clause, args) == (" WHERE key_hash = %s", [series_key_hash("k")])
    assert where(AnomalyFilter(), None) == ("", [])
