"""No data, for real: series that stop reporting and selectors that match nothing, against
the stack's Prometheus with the demo history and a migrated MariaDB.

The demo host's counter ``node_cpu_seconds_total`` has backfilled history up to
``stack.demo_end`` and no live samples after it (the live demo exporter serves gauges only:
see ``sla_common.demo.live_exposition``), so evaluated after ``demo_end + 5 min`` it is a
host that stopped reporting: present earlier in the window, absent now. Times after the
demo's end are evaluated explicitly (``time=``/``end=``), so nothing waits for the clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pymysql
import pytest

from sla_common import demo
from sla_common.mysql import load_migrations, split_sql
from tests.integration.slautil import app_client
from tests.integration.stackutil import Stack

TOKEN = "integration-token-7d2e9b41"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GONE = 'node_cpu_seconds_total{job="host",cpu="0",mode="idle"}'
GONE_LABELS = {"cpu": "0", "instance": demo.INSTANCE, "job": demo.JOB, "mode": "idle"}
NOTHING = 'node_filefd_allocated{job="no-such-job"}'
LOOKBACK_S = 300  # Prometheus' default look-back: the last sample is seen this long


@pytest.fixture(scope="module")
def client(
    stack: Stack, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    log = tmp_path_factory.mktemp("sla-no-data") / "sla.log"
    with app_client(stack, database, log, token=TOKEN) as c:
        yield c


def _create(client: httpx.Client, selector: str, **extra: Any) -> str:
    name = f"nd-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "selector": selector, "max": 1e12, **extra}
    r = client.post("/slis", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    return name


def _end(stack: Stack) -> int:
    assert stack.demo_end is not None
    return stack.demo_end


def test_a_series_that_stopped_reporting_is_no_data(stack: Stack, client: httpx.Client) -> None:
    end = _end(stack)
    name = _create(client, GONE)
    assert client.get(f"/slis/{name}").json()["missing_data_is_violation"] is False

    alive = client.get(f"/slis/{name}/status", params={"time": end}).json()
    assert (alive["state"], alive["series_total"], alive["no_data"]) == ("ok", 1, 0)
    assert alive["series"][0]["state"] == "inside" and alive["series"][0]["last_seen"] is None

    at = end + 2 * LOOKBACK_S
    r = client.get(f"/slis/{name}/status", params={"time": at})
    assert r.status_code == 200, r.text
    body = r.json()
    # The selector matches nothing now: the SLI is no_data; its series is reported, not
    # dropped, and is not a violation by default.
    assert (body["state"], body["violated"], body["missing_data_is_violation"]) == (
        "no_data",
        False,
        False,
    )
    assert (body["series_total"], body["no_data"], body["undefined"], body["window"]) == (
        0,
        1,
        0,
        "1h",
    )
    (series,) = body["series"]
    assert (series["metric"], series["labels"]) == (demo.CPU_SECONDS, GONE_LABELS)
    assert (series["state"], series["value"], series["inside"]) == ("no_data", None, None)
    assert end <= series["last_seen"] <= end + LOOKBACK_S

    # A window that ends before the series was last seen does not report it.
    short = client.get(f"/slis/{name}/status", params={"time": at, "window": "4m"}).json()
    assert (short["no_data"], short["series"], short["state"]) == (0, [], "no_data")


def test_the_remaining_series_and_the_gone_one_side_by_side(
    stack: Stack, client: httpx.Client
) -> None:
    at = _end(stack) + 2 * LOOKBACK_S
    name = _create(client, f"{GONE} or vector(1)")
    body = client.get(f"/slis/{name}/status", params={"time": at}).json()
    assert (body["series_total"], body["inside"], body["no_data"]) == (1, 1, 1)
    assert [s["state"] for s in body["series"]] == ["inside", "no_data"]
    assert (body["state"], body["violated"]) == ("ok", False)

    counts = _create(client, f"{GONE} or vector(1)", missing_data_is_violation=True)
    body = client.get(f"/slis/{counts}/status", params={"time": at}).json()
    assert (body["state"], body["violated"], body["no_data"]) == ("violated", True, 1)


def test_violations_report_no_data_intervals_apart(stack: Stack, client: httpx.Client) -> None:
    end = _end(stack)
    params: dict[str, str | int] = {"start": end - 1800, "end": end + 1800, "step": "60s"}
    for counts in (False, True):
        name = _create(client, GONE, missing_data_is_violation=counts)
        r = client.get(f"/slis/{name}/violations", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        (series,) = body["series"]
        assert (series["violating"], series["intervals"]) == (0, [])
        (gap,) = series["no_data_intervals"]
        # The last sample (at the demo's end) is seen for the 5 min look-back.
        assert gap["start"] in (end + LOOKBACK_S, end + LOOKBACK_S + 60)
        assert (gap["end"], gap["open_end"]) == (end + 1800, True)
        assert gap["evaluations"] == (gap["end"] - gap["start"]) // 60 + 1
        assert gap["duration_s"] == series["time_no_data_s"] == gap["evaluations"] * 60
        assert series["evaluations"] + gap["evaluations"] == body["evaluations_per_series"]
        assert body["no_data_series"] == 1
        assert (series["violated"], body["violated"], body["violating_series"]) == (
            counts,
            counts,
            int(counts),
        )
        assert body["state"] == ("violated" if counts else "ok")


def test_a_selector_matching_nothing_is_no_data(stack: Stack, client: httpx.Client) -> None:
    end = _end(stack)
    for counts in (False, True):
        name = _create(client, NOTHING, missing_data_is_violation=counts)
        status = client.get(f"/slis/{name}/status", params={"time": end}).json()
        assert (status["state"], status["series"], status["series_total"]) == ("no_data", [], 0)
        assert status["violated"] is counts
        past = client.get(f"/slis/{name}/violations", params={"window": "1h", "end": end}).json()
        assert (past["state"], past["series"], past["violated"]) == ("no_data", [], counts)


def test_the_migration_can_run_again(stack: Stack, database: str) -> None:
    """Interrupted between its DDL and its record, a migration is re-run whole."""
    (mig,) = [m for m in load_migrations() if m.name == "sli_missing_data"]
    conn = pymysql.connect(**_connect_args(stack, database))
    try:
        with conn.cursor() as cur:
            for statement in split_sql(mig.sql):
                cur.execute(statement)
            cur.execute("SHOW COLUMNS FROM slis LIKE 'missing_data_is_violation'")
            assert len(cur.fetchall()) == 1
    finally:
        conn.close()


def _connect_args(stack: Stack, database: str) -> dict[str, Any]:
    return {
        "host": stack.mysql_host,
        "port": stack.mysql_port,
        "user": stack.mysql_user,
        "password": stack.mysql_password,
        "database": database,
        "autocommit": True,
    }
