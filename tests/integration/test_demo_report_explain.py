"""The demo report's explanations (scripts/demo_report.py, run by ``make demo``): the SLIs
``make demo`` creates, explained by a real SLA manager over the stack's Prometheus and its
demo history (``sla_common.demo``: a memory leak, a disk fill and an fd spike at known offsets
from ``stack.demo_end``). Each incident gets a few lines naming the SLI's series, when it left
its range, the predicates, and the series ranked first."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from sla_common import demo
from tests.integration.slautil import ServerThread, scratch_settings
from tests.integration.stackutil import Stack
from tests.unit.test_demo_report_explain import demo_report

TOKEN = "demo-report-token-7a2c4e"


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[str]:
    if stack.demo_end is None:
        pytest.skip("the stack has no demo history")
    with scratch_settings(stack, TOKEN) as settings, ServerThread(settings) as srv:
        demo_report().put_slis(srv.base_url, TOKEN, stack.prometheus_url)
        yield srv.base_url


def test_each_demo_incident_is_explained_in_a_few_lines(api: str, stack: Stack) -> None:
    assert stack.demo_end is not None
    report = demo_report()
    text = report.explanation_section(api, float(stack.demo_end))
    # one block per SLI: its head line indented by two spaces, the rest by four
    blocks = re.split(r"\n(?=  \S)", text)[1:]
    assert [b.split(":")[0].strip() for b in blocks] == list(report.EXPLAINED_SLIS), text
    for block in blocks:
        lines = block.splitlines()
        assert "outside its range" in lines[0] and "not explained" not in block, text
        assert 3 <= len(lines) <= 6 and all(ln.startswith("    ") for ln in lines[1:]), text
        assert lines[-1].lstrip()[0].isdigit() and "candidates" in lines[-1], text
    by_name = dict(zip(report.EXPLAINED_SLIS, blocks, strict=True))
    assert demo.FILEFD in by_name["fd-allocated"].splitlines()[0]
    assert "node_memory_MemAvailable_bytes" in by_name["memory-available"].splitlines()[0]
    assert "node_filesystem_avail_bytes" in by_name["root-disk-free"].splitlines()[0]
    assert text.startswith("\nWhat else changed during each incident"), text
