"""``POST /explanations`` and ``GET /slis/{name}/violations/explanation`` against the
stack's Prometheus and its deterministic demo history (``sla_common.demo``: the demo host's
15 series with a memory leak, a disk fill and an fd spike at known offsets from
``stack.demo_end``; 24 h of it, so no day before)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sla_common import demo
from sla_manager.settings import SlaSettings
from tests.integration.slautil import ServerThread, scratch_settings
from tests.integration.stackutil import Stack

MINUTE = 60
HOUR = 3600
HOST = '{job="host"}'
TOKEN = "explain-token-5c1f0a9e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLIS = {
    "fd": {"selector": f'{demo.FILEFD}{{job="host"}}', "max": demo.FD_THRESHOLD},
    "fd-sum": {"selector": f'sum({demo.FILEFD}{{job="host"}})', "max": demo.FD_THRESHOLD},
    "var-avail": {
        "selector": 'node_filesystem_avail_bytes{job="host",mountpoint="/"}',
        "min": demo.DISK_THRESHOLD_BYTES,
    },
}


@pytest.fixture(scope="module")
def settings(stack: Stack) -> Iterator[SlaSettings]:
    if stack.demo_end is None:
        pytest.skip("the stack has no demo history")
    with scratch_settings(stack, TOKEN) as settings:
        yield settings


@pytest.fixture(scope="module")
def client(settings: SlaSettings) -> Iterator[httpx.Client]:
    with ServerThread(settings) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        for name, spec in SLIS.items():
            r = c.post("/slis", json={"name": name, **spec}, headers=AUTH)
            assert r.status_code == 201, r.text
        yield c


def _explain(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/explanations", json={"selector": HOST, **body})


def test_the_fd_spike_is_explained_by_the_fd_series(client: httpx.Client, stack: Stack) -> None:
    assert stack.demo_end is not None
    end = stack.demo_end
    r = _explain(client, anomalous=[[end - 50 * MINUTE, end - 30 * MINUTE]])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["step"] == 15
    assert body["candidates"] == len(demo.generate(end=end, hours=1))
    assert body["reference"] == [end - 50 * MINUTE - 7 * HOUR, end - 50 * MINUTE - HOUR]
    # at some times of day user CPU (its daily rise, its hourly wiggle) separates as well as
    # the fd series (distance 1 for both) and
    # the tie-break (how far out each moved) may go either way on the stack's rates
    fd_rank, top = next((i, s) for i, s in enumerate(body["ranked"]) if s["metric"] == demo.FILEFD)
    assert fd_rank <= 1, body["ranked"][:3]
    assert top["distance"] == pytest.approx(1.0)
    assert top["direction"] == "above"
    assert top["anomalous"]["min"] > demo.FD_THRESHOLD > top["reference"]["max"]
    assert top["labels"] == {"instance": demo.INSTANCE, "job": demo.JOB}
    assert any(
        t.startswith('node_filefd_allocated{instance="demo-host:9100",job="host"} > ')
        for t in body["explanation"]
    ) or any(top["series"] in c["moves_with"] for c in body["clusters"][:3])
    assert len(body["explanation"]) <= 3
    assert {"fetch", "align", "rank", "false_positives", "clusters", "predicates"} <= set(
        body["timings_ms"]
    )


def test_the_memory_leak_is_explained_by_memory(client: httpx.Client, stack: Stack) -> None:
    assert stack.demo_end is not None
    end = stack.demo_end
    r = _explain(
        client,
        anomalous=[[end - 5 * HOUR - 20 * MINUTE, end - 4 * HOUR - 30 * MINUTE]],
        max_ranked=5,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["ranked"]) <= 5
    assert body["ranked"][0]["metric"] in {demo.MEM_AVAIL, demo.MEM_FREE}
    assert body["ranked"][0]["direction"] == "below"
    assert "GiB" in body["explanation"][0]
    assert body["explanation"][0].split(" < ")[0] in {
        f'{demo.MEM_AVAIL}{{instance="demo-host:9100",job="host"}}',
        f'{demo.MEM_FREE}{{instance="demo-host:9100",job="host"}}',
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"anomalous": []}, "at least 1"),
        ({"anomalous": [[200.0, 100.0]]}, "start must be before end"),
        ({"anomalous": [[100.0, 200.0]], "reference": [150.0, 300.0]}, "overlaps"),
        ({"anomalous": [[100.0, 200.0]], "extra": 1}, "Extra inputs"),
        ({"anomalous": [[100.0, 200.0]], "step": 0}, "greater than or equal to 1"),
        ({"anomalous": [[0.0, 30 * 86400.0]], "step": 1}, "points per series"),
    ],
)
def test_bad_requests_are_422_with_a_reason(
    client: httpx.Client, body: dict[str, Any], reason: str
) -> None:
    r = _explain(client, **body)
    assert r.status_code == 422, r.text
    assert reason in r.text


def test_data_problems_are_4xx_with_a_reason(client: httpx.Client, stack: Stack) -> None:
    assert stack.demo_end is not None
    end = stack.demo_end
    fd = [[end - 50 * MINUTE, end - 30 * MINUTE]]
    r = client.post("/explanations", json={"selector": '{job="nope"}', "anomalous": fd})
    assert r.status_code == 422 and "matches no series" in r.text
    r = client.post("/explanations", json={"selector": '{job="host"', "anomalous": fd})
    assert r.status_code == 400 and "Prometheus rejected" in r.text
    # long before the demo history: the selector matches nothing then
    r = _explain(client, anomalous=[[1_000_000_000, 1_000_000_600]])
    assert r.status_code == 422 and "matches no series" in r.text
    # the series exist at the end, but the reference lies before the history
    r = _explain(client, anomalous=fd, reference=[end - 60 * HOUR, end - 50 * HOUR])
    assert r.status_code == 422 and "no series has data" in r.text


def test_the_candidate_cap_is_checked_before_fetching(settings: SlaSettings, stack: Stack) -> None:
    assert stack.demo_end is not None
    end = stack.demo_end
    fd = {"selector": HOST, "anomalous": [[end - 50 * MINUTE, end - 30 * MINUTE]]}
    for update, reason in (
        ({"sla_explain_max_series": 5}, "more than the cap of 5 (SLA_EXPLAIN_MAX_SERIES)"),
        ({"sla_explain_max_cells": 1000}, "is more than 1000 (SLA_EXPLAIN_MAX_CELLS)"),
    ):
        capped = settings.model_copy(update=update)
        with ServerThread(capped) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
            r = c.post("/explanations", json=fd)
        assert r.status_code == 422, r.text
        assert reason in r.text


def _violation(client: httpx.Client, name: str, **params: Any) -> httpx.Response:
    return client.get(f"/slis/{name}/violations/explanation", params=params)


def test_a_violation_is_explained_without_choosing_intervals(
    client: httpx.Client, stack: Stack
) -> None:
    assert stack.demo_end is not None
    end = stack.demo_end
    r = _violation(client, "fd", start=end - 2 * HOUR, end=end)
    assert r.status_code == 200, r.text
    body = r.json()
    own = f'{demo.FILEFD}{{instance="demo-host:9100",job="host"}}'
    assert body["sli"] == "fd"
    assert body["series"] == own
    assert body["selector"] == '{instance="demo-host:9100"}'
    assert body["anomalous"] == [[end - 50 * MINUTE, end - 30 * MINUTE]]
    assert body["reference"] == [end - 50 * MINUTE - 7 * HOUR, end - 50 * MINUTE - HOUR]
    assert own in body["excluded"]
    assert own not in {s["series"] for s in body["ranked"]}
    assert body["candidates"] == len(demo.generate(end=end, hours=1))
    assert body["day_before"] is False and body["seasonal"] == 0  # 24 h of history
    # nothing else on the demo host moves with its fd spike: what separates it besides the
    # fd series depends on the time of day (CPU's hourly wiggle), and may be nothing
    assert len(body["explanation"]) <= 3

    # the disk fill: free bytes are avail bytes plus the reserve, an affine copy left out
    r = _violation(client, "var-avail", start=end - 4 * HOUR, end=end, values=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["anomalous"] == [[end - 2 * HOUR - 40 * MINUTE, end - 2 * HOUR]]
    assert set(body["excluded"]) == {
        'node_filesystem_avail_bytes{device="/dev/sda2",fstype="ext4",'
        'instance="demo-host:9100",job="host",mountpoint="/"}',
        'node_filesystem_free_bytes{device="/dev/sda2",fstype="ext4",'
        'instance="demo-host:9100",job="host",mountpoint="/"}',
    }
    # the demo adds I/O wait while the disk fills: that is what else changed
    assert body["ranked"][0]["labels"]["mode"] == "iowait", body["ranked"][:3]
    assert 1 <= len(body["explanation"]) <= 3
    # values=60: each ranked series' values in at most 60 buckets from the reference's start
    # to the violation's end, where the I/O wait is higher than in the reference
    (a0, a1), (r0, r1) = body["anomalous"][0], body["reference"]
    points = body["ranked"][0]["values"]
    assert 0 < len(points) <= 60 and body["values_step"] >= body["step"]
    assert r0 - body["step"] < points[0][0] <= r0 and points[-1][0] <= a1
    during = [v for t, v in points if a0 <= t and t + body["values_step"] <= a1 and v is not None]
    before = [v for t, v in points if r0 <= t and t + body["values_step"] <= r1 and v is not None]
    assert during and before and min(during) > max(before)


def test_violation_explanation_bad_input_is_4xx(client: httpx.Client, stack: Stack) -> None:
    assert stack.demo_end is not None
    end = stack.demo_end
    r = _violation(client, "nope", start=end - HOUR, end=end)
    assert r.status_code == 404, r.text
    r = _violation(client, "fd", start=end, end=end - HOUR)
    assert r.status_code == 422 and "must be before end" in r.text
    r = _violation(client, "fd", start=end - 20 * MINUTE, end=end)
    assert r.status_code == 422 and "no violation" in r.text
    r = _violation(client, "fd", start=1_000_000_000, end=1_000_003_600)
    assert r.status_code == 422 and "no data" in r.text
    r = _violation(client, "fd", start=end - HOUR, end=end, bogus=1)
    assert r.status_code == 422, r.text
    r = _violation(client, "fd", start=end - HOUR, end=end, values=501)
    assert r.status_code == 422 and "values" in r.text


def test_a_series_without_instance_needs_a_selector(client: httpx.Client, stack: Stack) -> None:
    assert stack.demo_end is not None
    end = stack.demo_end
    r = _violation(client, "fd-sum", start=end - 2 * HOUR, end=end)
    assert r.status_code == 422 and "no instance label" in r.text
    r = _violation(client, "fd-sum", start=end - 2 * HOUR, end=end, selector=HOST)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["series"] == "{}" and body["selector"] == HOST
    assert body["anomalous"] == [[end - 50 * MINUTE, end - 30 * MINUTE]]
    assert body["excluded"] == []  # the sum is not among the candidates
    assert len(body["ranked"]) >= 1
