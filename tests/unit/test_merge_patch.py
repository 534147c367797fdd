"""RFC 7396 JSON merge patch: the RFC's own examples (Appendix A) and the SLA manager's use."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sla_manager.bodies import merge_patch

# RFC 7396, Appendix A: (original, patch, result).
RFC_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("original", "patch", "result"), RFC_EXAMPLES)
def test_rfc_7396_examples(original: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy(original)
    assert merge_patch(original, patch) == result
    assert original == before  # not modified


def test_an_sli_keeps_what_the_patch_leaves_out() -> None:
    sli = {
        "selector": "up",
        "min": None,
        "max": 2.0,
        "description": "kept",
        "labels": {"device": "/dev/sda2", "job": "host"},
        "missing_data_is_violation": False,
    }
    out = merge_patch(sli, {"max": 3, "labels": {"device": None, "mode": "idle"}})
    assert out == {**sli, "max": 3, "labels": {"job": "host", "mode": "idle"}}
