"""The predicted-breach alert end to end, on the real stack: a forecast stored now (by
data_storage's writer) gives a threshold SLI a breach probability above its SLO's threshold
→ the SLA manager exports it as ``sla_sli_breach_probability`` on the /metrics the stack's
Prometheus scrapes → Prometheus evaluates the generated ``SliBreachPredicted`` (its ``for:``
is SLO_BREACH_FOR, 15 s here instead of 5 min) → Alertmanager → the webhook this test runs
gets it with the SLO's labels. A second SLO, on an SLI of the same series whose probability
is far under the threshold, must stay quiet. (tests/unit/test_slo_promtool.py checks the
rule's timing with ``promtool test rules``; this checks the whole way there.)

Both SLIs are inside their range now (the demo host's descriptors are 3-5.5k): the alert is
about the forecast, not about a breach that happened.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.alertutil import Webhook, webhook_server
from tests.integration.slautil import app_client, store_cauchy_forecast
from tests.integration.stackutil import Stack, prom_get, prom_query, wait_until

TOKEN = "integration-predicted-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SELECTOR = 'node_filefd_allocated{job="host"}'
# The forecast: 20 minutes of Cauchy points at 9000 (scale 100): a jump of the descriptors.
LOC, SCALE, POINTS = 9000.0, 100.0, 20
LIKELY = "fd-forecast-over-8k"  # max 8000: P = 1/2 + atan(10)/π = 0.968
UNLIKELY = "fd-forecast-over-20k"  # max 20000: P = 1/2 − atan(110)/π = 0.0029
P_LIKELY = 0.5 + math.atan((LOC - 8000.0) / SCALE) / math.pi
P_UNLIKELY = 0.5 - math.atan((20000.0 - LOC) / SCALE) / math.pi
BREACH_FOR = "15s"
ALERT_TIMEOUT_S = 180  # two scrapes, two evaluations (pending, firing), group_wait; loaded


@pytest.fixture(scope="module")
def webhook(stack_env: dict[str, str]) -> Iterator[Webhook]:
    with webhook_server(stack_env["STACK_ALERT_WEBHOOK_URL"]) as hook:
        yield hook


@pytest.fixture(scope="module")
def client(
    stack: Stack, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """The SLA manager on the port the stack's Prometheus scrapes (job sla-monitor)."""
    log = tmp_path_factory.mktemp("slo-predicted") / "sla.log"
    with app_client(
        stack,
        database,
        log,
        token=TOKEN,
        port=stack.sla_manager_http_port,
        ETL_INTERVAL_S="600",  # the forecast stays fresh for 20 minutes
        SLO_BREACH_REFRESH_S="1",
        SLO_BREACH_FOR=BREACH_FOR,
    ) as c:
        yield c
        # Leave Prometheus no rules of this module's SLOs (the file is the stack's).
        for name in (LIKELY, UNLIKELY):
            c.delete(f"/slos/{name}-budget", headers=AUTH)


def _prom_alerts(stack: Stack, slo: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = prom_get(stack.prometheus_url, "/api/v1/alerts")["alerts"]
    return [a for a in alerts if a["labels"].get("slo") == slo]


def _gauge(client: httpx.Client, sli: str) -> float | None:
    pattern = rf'^sla_sli_breach_probability{{sli="{re.escape(sli)}"}} (\S+)$'
    m = re.search(pattern, client.get("/metrics").text, re.M)
    return float(m.group(1)) if m else None


def test_a_predicted_breach_reaches_the_webhook(
    client: httpx.Client, stack: Stack, database: str, webhook: Webhook
) -> None:
    made_at = store_cauchy_forecast(stack.mysql_settings(database), [LOC] * POINTS, SCALE)
    for sli, bound in ((LIKELY, 8000), (UNLIKELY, 20000)):
        r = client.post(
            "/slis", json={"name": sli, "selector": SELECTOR, "max": bound}, headers=AUTH
        )
        assert r.status_code == 201, r.text
        slo = {"name": f"{sli}-budget", "sli": sli, "objective": 99.5, "labels": {"team": "sre"}}
        r = client.post("/slos", json=slo, headers=AUTH)
        assert r.status_code == 201, r.text
        assert r.headers["X-Rules-Status"] == "reloaded"

    # The rule Prometheus loaded waits SLO_BREACH_FOR, not the 5-minute default.
    def rule() -> dict[str, Any] | None:
        groups = prom_get(stack.prometheus_url, "/api/v1/rules")["groups"]
        for g in groups:
            for r in g["rules"]:
                if g["name"] == f"slo-{LIKELY}-budget" and r["name"] == "SliBreachPredicted":
                    return dict(r)
        return None

    loaded = wait_until(rule, timeout=30, what="Prometheus loading SliBreachPredicted")
    assert loaded["duration"] == 15

    # What the SLA manager exports, read from the stored forecast.
    assert wait_until(lambda: _gauge(client, LIKELY), timeout=60, what="the gauge") == (
        pytest.approx(P_LIKELY, abs=1e-9)
    )
    assert _gauge(client, UNLIKELY) == pytest.approx(P_UNLIKELY, abs=1e-9)

    alert = wait_until(
        lambda: webhook.find(alertname="SliBreachPredicted", slo=f"{LIKELY}-budget"),
        timeout=ALERT_TIMEOUT_S,
        what="SliBreachPredicted at the webhook",
    )
    assert time.time() - made_at < 1200, "the forecast went stale before the alert came"
    assert alert["labels"] == {
        "alertname": "SliBreachPredicted",
        "severity": "ticket",
        "slo": f"{LIKELY}-budget",
        "sli": LIKELY,
        "team": "sre",
    }
    assert "96.83%" in alert["annotations"]["summary"]  # humanizePercentage of the value
    assert f"GET /slis/{LIKELY}/forecast-violations" in alert["annotations"]["description"]
    (firing,) = [
        a
        for a in _prom_alerts(stack, f"{LIKELY}-budget")
        if a["labels"]["alertname"] == "SliBreachPredicted"
    ]
    assert firing["state"] == "firing"

    # The other SLI's probability reached Prometheus too, under its threshold: no alert of
    # its SLO, pending or firing; none of either SLO burns (both SLIs are inside now).
    query = f'sla_sli_breach_probability{{sli="{UNLIKELY}"}}'
    scraped = prom_query(stack.prometheus_url, query)
    assert [float(s["value"][1]) for s in scraped] == [pytest.approx(P_UNLIKELY, abs=1e-9)]
    assert _prom_alerts(stack, f"{UNLIKELY}-budget") == []
    assert webhook.find(slo=f"{UNLIKELY}-budget") is None
    assert webhook.find(alertname="SloErrorBudgetBurn", slo=f"{LIKELY}-budget") is None
