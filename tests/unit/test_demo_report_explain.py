"""The demo report's explanation lines (scripts/demo_report.py) from a canned answer of
``GET /slis/{name}/violations/explanation``; the real one: tests/integration/
test_demo_report_explain.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
T = 1_767_225_600  # 2026-01-01T00:00:00Z


def demo_report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_report", REPO / "scripts/demo_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def answer(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "series": 'node_filefd_allocated{instance="h:9100",job="host"}',
        "anomalous": [[T + 600, T + 1800], [T + 3600, T + 3660]],
        "explanation": ['tcp_inuse{instance="h:9100"} > 2400', 'rate(x_total{i="1"}[1m]) > 3/s'],
        "ranked": [
            {"series": 'tcp_inuse{instance="h:9100"}', "distance": 1.0},
            {"series": 'x_total{i="1"}', "distance": 0.987},
            {"series": 'y{i="2"}', "distance": 0.5},
            {"series": 'z{i="3"}', "distance": 0.4},
        ],
        "candidates": 210,
        "false_positives": 7,
        "excluded": ['node_filefd_allocated{instance="h:9100",job="host"}'],
    }
    doc.update(changes)
    return doc


def test_an_explanation_in_four_lines() -> None:
    lines = demo_report().explanation_lines("fd-allocated", answer())
    assert lines == [
        '  fd-allocated: node_filefd_allocated{instance="h:9100",job="host"} outside its range '
        "00:10-00:30, 01:00-01:01 UTC",
        '    tcp_inuse{instance="h:9100"} > 2400',
        '    AND rate(x_total{i="1"}[1m]) > 3/s',
        '    ranked first: tcp_inuse{instance="h:9100"} (1.00), x_total{i="1"} (0.99), '
        'y{i="2"} (0.50)',
        "    210 candidates, 7 dropped as false positives, 1 excluded as the SLI's own series or "
        "its copies",
    ]


def test_nothing_separating_is_said() -> None:
    lines = demo_report().explanation_lines("x", answer(explanation=[], ranked=[]))
    assert lines[1] == "    no series separates it from the reference"
    assert not any("ranked first" in ln for ln in lines)
