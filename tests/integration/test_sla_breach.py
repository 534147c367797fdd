"""Breach probabilities for real: a forecast with its predictive distribution written by
data_storage's own writer into a migrated MariaDB, read back by ``python -m sla_manager``
(forecast-violations and the ``sla_sli_breach_probability`` gauge on /metrics), and the
per-SLI threshold that decides what is a predicted violation.

The forecast is of the demo host's live ``node_filefd_allocated`` (the demo exporter serves
it now), made "now", so the gauge (which looks from the present) sees it too. Its points
are Cauchy (Student-t, 1 degree of freedom), where every probability is exact by hand:
P(T > z) = 1/2 − atan(z)/π.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sla_common.mysql import connect
from tests.integration.slautil import app_client, store_cauchy_forecast
from tests.integration.stackutil import Stack, wait_until

TOKEN = "integration-token-5b0e8c27"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SELECTOR = 'node_filefd_allocated{job="host"}'
MAX = 1600.0
# Ten points a minute apart: loc 1000 (6 scales under the bound) then 1500 (1 scale under).
LOCS = [1000.0] * 9 + [1500.0]
SCALE = 100.0


def cauchy_sf(z: float) -> float:
    return 0.5 - math.atan(z) / math.pi


P_FAR = cauchy_sf((MAX - 1000.0) / SCALE)  # 0.052568...
P_NEAR = cauchy_sf((MAX - 1500.0) / SCALE)  # 0.25


@pytest.fixture(scope="module")
def client(
    stack: Stack, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    log = tmp_path_factory.mktemp("sla-breach") / "sla.log"
    with app_client(
        stack,
        database,
        log,
        token=TOKEN,
        ETL_INTERVAL_S="60",  # a forecast is stale after 120 s
        SLO_BREACH_REFRESH_S="1",
    ) as c:
        yield c


@pytest.fixture(scope="module")
def made_at(stack: Stack, database: str) -> int:
    """The forecast, written by data_storage's writer; the time it was made."""
    return store_cauchy_forecast(stack.mysql_settings(database), LOCS, SCALE)


def _create(client: httpx.Client, **extra: Any) -> str:
    name = f"fdp-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "selector": SELECTOR, "max": MAX, **extra}
    r = client.post("/slis", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    return name


def _forecast(client: httpx.Client, name: str, at: int, **params: Any) -> Any:
    r = client.get(f"/slis/{name}/forecast-violations", params={"at": at, **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_distribution_is_stored_as_sent(stack: Stack, database: str, made_at: int) -> None:
    conn = connect(stack.mysql_settings(database))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT loc, scale FROM forecast_points ORDER BY ts")
            assert cur.fetchall() == tuple((loc, SCALE) for loc in LOCS)
            cur.execute("SELECT distribution, df, value_floor FROM forecast_summary")
            assert cur.fetchall() == (("student_t", 1.0, 0.0),)
    finally:
        conn.close()


def test_the_api_gives_the_breach_probability_and_flags_at_the_slis_threshold(
    client: httpx.Client, made_at: int
) -> None:
    at = made_at
    default = _create(client)
    body = _forecast(client, default, at)
    assert (body["mode"], body["breach_probability_threshold"]) == ("probability", 0.5)
    (series,) = body["series"]
    assert series["comparable"] is True and series["points"] == 10
    assert series["breach_probability"] == pytest.approx(P_NEAR, abs=1e-12)  # 0.25
    assert (series["distribution"], series["distribution_source"]) == ("student_t", "forecast")
    assert (series["predicted_violation"], body["violating_series"]) == (False, 0)

    # The same forecast under an SLI that pages from 0.2: the last point (0.25) counts.
    low = _create(client, breach_probability_threshold=0.2)
    body = _forecast(client, low, at)
    (series,) = body["series"]
    assert body["breach_probability_threshold"] == 0.2 and body["violating_series"] == 1
    assert [(v["ts"] - at, v["breach_probability"]) for v in series["violations"]] == [
        (600, pytest.approx(P_NEAR, abs=1e-12))
    ]
    assert series["first_breach_at"] == at + 600

    # From 0.05 on, the points 6 scales under the bound count too (Cauchy tails: 0.0526).
    r = client.patch(
        f"/slis/{low}",
        json={"breach_probability_threshold": 0.05},
        headers={**AUTH, "Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200 and r.json()["breach_probability_threshold"] == 0.05
    (series,) = _forecast(client, low, at)["series"]
    assert [v["breach_probability"] for v in series["violations"]] == pytest.approx(
        [P_FAR] * 9 + [P_NEAR], abs=1e-12
    )

    # The interval modes judge by the stored bands: 1500 + 1.28·100 > 1600, 1500 < 1600.
    for mode, flagged in (("point", []), ("interval80", [600]), ("interval95", [600])):
        (series,) = _forecast(client, default, at, mode=mode)["series"]
        assert [v["ts"] - at for v in series["violations"]] == flagged, mode
        assert series["breach_probability"] == pytest.approx(P_NEAR, abs=1e-12)

    # A full replacement without the field puts the default back.
    spec = {"selector": SELECTOR, "max": MAX}
    r = client.put(f"/slis/{low}", json=spec, headers=AUTH)
    assert r.status_code == 200 and r.json()["breach_probability_threshold"] == 0.5


def test_a_threshold_outside_0_1_is_refused(client: httpx.Client) -> None:
    for bad in (0, 1.5, "0.5"):
        body = {"name": "bad", "selector": SELECTOR, "max": MAX}
        r = client.post("/slis", json={**body, "breach_probability_threshold": bad}, headers=AUTH)
        assert r.status_code == 422, (bad, r.text)
        assert "breach_probability_threshold" in r.text


def test_the_metrics_gauge_gives_the_same_probability(client: httpx.Client, made_at: int) -> None:
    name = _create(client)
    pattern = re.compile(rf'^sla_sli_breach_probability{{sli="{name}"}} (\S+)$', re.M)

    def gauge() -> float | None:
        m = pattern.search(client.get("/metrics").text)
        return float(m.group(1)) if m else None

    # Refreshed off the scrape every second (SLO_BREACH_REFRESH_S=1); the forecast stays
    # fresh for 120 s after it was made.
    value = wait_until(gauge, timeout=60, what=f"sla_sli_breach_probability of {name}")
    assert time.time() - made_at < 120, "the test ran too late to check a fresh forecast"
    assert value == pytest.approx(P_NEAR, abs=1e-9)
