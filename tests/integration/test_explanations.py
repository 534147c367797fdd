"""``POST /explanations`` against the stack's Prometheus and its deterministic demo history
(``sla_common.demo``: the demo host's 15 series with a memory leak, a disk fill and an fd
spike at known offsets from ``stack.demo_end``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sla_common import demo
from sla_manager.routes import explanations
from sla_manager.settings import SlaSettings
from tests.integration.slautil import ServerThread, app_env
from tests.integration.stackutil import Stack

MINUTE = 60
HOUR = 3600
HOST = '{job="host"}'


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    if stack.demo_end is None:
        pytest.skip("the stack has no demo history")
    env = app_env(stack.service_env(), MYSQL_DATABASE="sla_explain_unused", ENVIRONMENT="test")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        settings = SlaSettings()
    with ServerThread(settings) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
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
    top = body["ranked"][0]
    assert top["metric"] == demo.FILEFD
    assert top["distance"] == pytest.approx(1.0)
    assert top["direction"] == "above"
    assert top["anomalous"]["min"] > demo.FD_THRESHOLD > top["reference"]["max"]
    assert top["labels"] == {"instance": demo.INSTANCE, "job": demo.JOB}
    assert body["explanation"][0].startswith(
        'node_filefd_allocated{instance="demo-host:9100",job="host"} > '
    )
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


def test_the_candidate_cap_is_checked_before_fetching(
    client: httpx.Client, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.demo_end is not None
    monkeypatch.setattr(explanations, "MAX_CANDIDATE_SERIES", 5)
    end = stack.demo_end
    r = _explain(client, anomalous=[[end - 50 * MINUTE, end - 30 * MINUTE]])
    assert r.status_code == 422
    assert "more than the cap of 5" in r.text
    monkeypatch.setattr(explanations, "MAX_CANDIDATE_SERIES", 2000)
    monkeypatch.setattr(explanations, "MAX_CELLS", 1000)
    r = _explain(client, anomalous=[[end - 50 * MINUTE, end - 30 * MINUTE]])
    assert r.status_code == 422
    assert "is more than 1000" in r.text
