"""SLOs on the real stack: an SLO on a demo incident → the rules the SLA manager writes →
Prometheus evaluates them → Alertmanager → the webhook receiver this test runs gets the page
with the SLO's labels. Also: CRUD with auth, the 30-day status from the recorded series."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.alertutil import Webhook, webhook_server
from tests.integration.slautil import AppProcess, running_app
from tests.integration.stackutil import REPO, Stack, run_bounded, wait_until

TOKEN = "integration-slo-token-0123456789"
SLI = "fd-incident"
SLO = "fd-incident-budget"
# The demo host's descriptors, with a range its live values are all outside of: an incident
# that starts when the test does (recording rules only evaluate from now on).
SLI_BODY = {"name": SLI, "selector": 'node_filefd_allocated{job="host"}', "max": 1}
SLO_BODY = {"name": SLO, "sli": SLI, "objective": 99.5, "period": "30d", "labels": {"team": "sre"}}
ALERT_TIMEOUT_S = 150  # one evaluation (15 s) + Alertmanager's group_wait (5 s), loaded machine


@pytest.fixture(scope="module")
def webhook(stack_env: dict[str, str]) -> Iterator[Webhook]:
    with webhook_server(stack_env["STACK_ALERT_WEBHOOK_URL"]) as hook:
        yield hook


def _app(stack: Stack, database: str, log: Path) -> AbstractContextManager[AppProcess]:
    return running_app(stack, database, log, token=TOKEN, SLO_BREACH_REFRESH_S="1")


@pytest.fixture(scope="module")
def client(
    stack: Stack, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    with (
        _app(stack, database, tmp_path_factory.mktemp("slo") / "sla.log") as app,
        httpx.Client(base_url=app.base_url, timeout=30) as c,
    ):
        yield c


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_slo_on_an_incident_pages_through_alertmanager(
    client: httpx.Client, stack: Stack, webhook: Webhook
) -> None:
    assert client.post("/slis", json=SLI_BODY, headers=_auth()).status_code == 201
    assert client.post("/slos", json=SLO_BODY).status_code == 401
    created = client.post("/slos", json=SLO_BODY, headers=_auth())
    assert created.status_code == 201, created.text
    assert created.headers["X-Rules-Status"] == "reloaded"
    assert client.post("/slos", json=SLO_BODY, headers=_auth()).status_code == 409

    # The file Prometheus loads is the one GET /rules shows, and Prometheus has loaded it.
    rules_file = Path(stack.env["SLO_RULES_FILE"])
    text = client.get("/rules").text
    assert rules_file.read_text() == text
    assert f"name: slo-{SLO}" in text

    def loaded() -> bool:
        groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=5).json()
        return any(g["name"] == f"slo-{SLO}" for g in groups["data"]["groups"])

    wait_until(loaded, timeout=30, what="Prometheus loading the SLO rules")

    alert = wait_until(
        lambda: webhook.find(slo=SLO, severity="page"),
        timeout=ALERT_TIMEOUT_S,
        what="the page at the webhook",
    )
    assert alert["status"] == "firing"
    assert alert["labels"] == {
        "alertname": "SloErrorBudgetBurn",
        "severity": "page",
        "slo": SLO,
        "sli": SLI,
        "team": "sre",
    }
    assert f"GET /slos/{SLO}" in alert["annotations"]["description"]


def test_the_demo_report_shows_the_page(stack: Stack, webhook: Webhook) -> None:
    """`make demo-report`'s alert section (scripts/demo_report.py --alerts) on this stack: the
    page firing in Prometheus, active at Alertmanager and routed to the webhook, its labels;
    the ticket inhibited by it."""
    wait_until(
        lambda: webhook.find(slo=SLO, severity="page"),
        timeout=ALERT_TIMEOUT_S,
        what="the page at the webhook",
    )
    report = run_bounded(
        [sys.executable, REPO / "scripts" / "demo_report.py", "--alerts"],
        timeout=120,
        env=stack.service_env(),
    )
    assert report.returncode == 0, report.stdout
    rows = {
        tuple(line.split()[:3]): line
        for line in report.stdout.splitlines()
        if line.strip().startswith("SloErrorBudgetBurn")
    }
    page = rows[("SloErrorBudgetBurn", "page", "firing")]
    # Every evaluation since the SLO's creation was bad: 1 / 0.005 over the hour.
    assert "200.0x burn" in page and "active -> webhook" in page, report.stdout
    assert page.rstrip().endswith(f"sli={SLI},slo={SLO},team=sre"), report.stdout
    ticket = rows[("SloErrorBudgetBurn", "ticket", "firing")]
    assert "suppressed (inhibited by a page)" in ticket, report.stdout


def test_metrics_export_the_sli_state(client: httpx.Client) -> None:
    """The SLI is outside its range now: sla_sli_inside is 0 (no ETL ran here, so there is
    no forecast and no breach probability: tests/unit/test_slo_breach.py has those)."""

    def exported() -> bool:
        return f'sla_sli_inside{{sli="{SLI}"}} 0.0' in client.get("/metrics").text

    wait_until(exported, timeout=30, what="sla_sli_inside on /metrics")


def test_thirty_day_status_from_the_recorded_series(client: httpx.Client, webhook: Webhook) -> None:
    """After the page, the recorded series exist: every evaluation since was outside."""

    def recorded() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/slos/{SLO}").json()
        return body if body["compliance"] is not None else None

    wait_until(recorded, timeout=60, what="recorded SLO series")
    t0 = time.perf_counter()
    r = client.get(f"/slos/{SLO}")
    took = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    body = r.json()
    assert took < 1.0, f"GET /slos/{SLO} took {took:.2f} s"
    assert body["source"] == "recording_rules"
    assert body["period"] == "30d" and body["compliance"] == 0.0
    assert body["meets_objective"] is False
    assert body["budget"]["total"] == 0.005
    assert body["budget"]["total_s"] == pytest.approx(0.005 * 30 * 86_400)
    assert body["budget"]["consumed"] == pytest.approx(200.0)  # all bad: 1 / 0.005
    assert body["exhaustion_s"] == 0.0
    burn = {b["window"]: b["burn_rate"] for b in body["burn_rates"]}
    assert burn["5m"] == pytest.approx(200.0)
    assert body["definition"]["sli"] == SLI
    assert body["projection"] is None  # no ETL ran here: no stored forecast to project from
    raw_answer = client.get(f"/slos/{SLO}", params={"source": "raw_queries"})
    assert raw_answer.status_code == 200, raw_answer.text
    raw = raw_answer.json()
    assert raw["source"] == "raw_queries" and raw["compliance"] == 0.0


def test_rules_are_written_at_start(
    client: httpx.Client, stack: Stack, database: str, tmp_path: Path
) -> None:
    """A fresh rules volume (or a release generating other rules) gets the SLOs' rules
    when the service starts, without waiting for a write."""
    rules_file = Path(stack.env["SLO_RULES_FILE"])
    expected = client.get("/rules").text
    rules_file.write_text("")
    with _app(stack, database, tmp_path / "sla-again.log"):
        wait_until(
            lambda: rules_file.read_text() == expected, timeout=30, what="rules written at start"
        )


def test_replace_and_delete_regenerate_the_rules(client: httpx.Client, stack: Stack) -> None:
    rules_file = Path(stack.env["SLO_RULES_FILE"])
    spec = {k: v for k, v in SLO_BODY.items() if k != "name"}
    assert client.put(f"/slos/{SLO}", json=spec).status_code == 401
    replaced = client.put(f"/slos/{SLO}", json={**spec, "objective": 99.0}, headers=_auth())
    assert replaced.status_code == 200 and replaced.json()["objective"] == 99.0
    assert "vector(0.99)" in rules_file.read_text()
    # The rules copy the SLI's selector and bounds: changing the SLI regenerates them.
    assert ") <= bool 1)" in rules_file.read_text()
    changed = client.patch(
        f"/slis/{SLI}",
        json={"max": 250000},
        headers={**_auth(), "Content-Type": "application/merge-patch+json"},
    )
    assert changed.status_code == 200 and changed.headers["X-Rules-Status"] == "reloaded"
    assert ") <= bool 250000)" in rules_file.read_text()
    sli = {k: v for k, v in SLI_BODY.items() if k != "name"}
    put = client.put(f"/slis/{SLI}", json={**sli, "max": 1}, headers=_auth())
    assert put.status_code == 200 and put.headers["X-Rules-Status"] == "reloaded"
    assert ") <= bool 1)" in rules_file.read_text()
    ratio = {"errors": "sum(rate(x[{{.window}}])", "total": "1"}
    bad = {"name": "bad", "objective": 99.0}
    r = client.post("/slos", json={**bad, "ratio": ratio}, headers=_auth())
    assert r.status_code == 422  # total has no {{.window}}
    ratio["total"] = "sum(rate(x[{{.window}}]))"  # errors misses a parenthesis
    r = client.post("/slos", json={**bad, "ratio": ratio}, headers=_auth())
    assert r.status_code == 400 and "prometheus_error" in r.json()
    assert client.delete(f"/slos/{SLO}", headers=_auth()).status_code == 204
    assert f"slo-{SLO}" not in rules_file.read_text()
    assert client.get(f"/slos/{SLO}").status_code == 404
    deleted = client.delete(f"/slis/{SLI}", headers=_auth())
    assert deleted.status_code == 204 and deleted.headers["X-Rules-Status"] == "reloaded"
