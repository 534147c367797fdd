"""The SLA manager for real: ``python -m sla_manager`` against the stack's Prometheus (with the
deterministic demo history) and MariaDB, driven over HTTP.

Expectations come from the demo generator itself (``sla_common.demo.generate``), sampled
the way Prometheus evaluates a range query: at ``start + k·step`` for every k with both ends
included, each evaluation taking the latest sample at or before it. The demo's samples sit
on a 15 s grid ending at ``stack.demo_end`` and the windows end there too, so every
evaluation lands on a sample and the expected values are exact.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import httpx
import numpy as np
import pytest

from data_storage.writer import Writer
from sla_common import demo
from sla_common.messages import AnalysisMessage, Forecast, ForecastPoint
from sla_common.mysql import MysqlSettings, connect
from sla_common.prometheus import InstantSample, PrometheusClient
from sla_common.series import series_key
from tests.integration.slautil import AppProcess, EtlProcess, forecast_only_message, running_app
from tests.integration.stackutil import Stack, wait_until

TOKEN = "integration-token-3f6c1a9e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STEP = 60
WINDOWS = {"1h": 3600, "3h": 10800, "12h": 43200}
HOST_LABELS = {"instance": demo.INSTANCE, "job": demo.JOB}
ETL_MATCHERS = 'job="sla-monitor",service="etl_data_pipeline"'


@dataclass(frozen=True)
class SliCase:
    name: str
    selector: str
    labels: dict[str, str]
    min: float | None
    max: float | None
    metric: str
    series_labels: dict[str, str]


FD = SliCase(
    "fd-allocated",
    'node_filefd_allocated{job="host"}',
    {},
    None,
    demo.FD_THRESHOLD,
    demo.FILEFD,
    HOST_LABELS,
)
MEMORY = SliCase(
    "memory-available",
    'node_memory_MemAvailable_bytes{job="host"}',
    {},
    float(demo.MEMORY_THRESHOLD_BYTES),
    None,
    demo.MEM_AVAIL,
    HOST_LABELS,
)
# The device is narrowed by the SLI's labels (filtered on the result), not in the selector.
DISK = SliCase(
    "root-disk-available",
    'node_filesystem_avail_bytes{job="host"}',
    {"device": "/dev/sda2"},
    float(demo.DISK_THRESHOLD_BYTES),
    None,
    demo.FS_AVAIL,
    {**HOST_LABELS, **demo.ROOT_FS},
)
CASES = (FD, MEMORY, DISK)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def etl(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtlProcess]:
    """The real ETL on the port Prometheus scrapes, started first: by the time the
    execution-time test runs, Prometheus has scraped several of its cycles."""
    topic = f"sla-etl-{uuid.uuid4().hex[:8]}"
    env = stack.service_env(
        KAFKA_TOPIC=topic,
        KAFKA_DLQ_TOPIC=f"{topic}.dlq",
        ETL_SELECTORS='node_filefd_allocated{job="host"}',
        ETL_INTERVAL_S="3",
    )
    proc = EtlProcess(env, tmp_path_factory.mktemp("etl") / "etl.log", stack.etl_http_port)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def app(
    stack: Stack,
    database: str,
    etl: EtlProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AppProcess]:
    """``python -m sla_manager`` on the port the stack's Prometheus scrapes."""
    log = tmp_path_factory.mktemp("sla") / "sla.log"
    port = stack.sla_manager_http_port
    with running_app(stack, database, log, token=TOKEN, port=port, ETL_INTERVAL_S="60") as app:
        yield app


@pytest.fixture(scope="module")
def client(app: AppProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app.base_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def slis(client: httpx.Client) -> dict[str, SliCase]:
    """The demo-incident SLIs, created through the API."""
    for case in CASES:
        body: dict[str, Any] = {
            "name": case.name,
            "selector": case.selector,
            "labels": case.labels,
            "description": f"on the demo's {case.metric} incident",
        }
        for bound in ("min", "max"):
            if getattr(case, bound) is not None:
                body[bound] = getattr(case, bound)
        r = client.post("/slis", json=body, headers=AUTH)
        assert r.status_code == 201, r.text
    return {c.name: c for c in CASES}


def _demo_end(stack: Stack) -> int:
    assert stack.demo_end is not None
    return stack.demo_end


@cache
def _demo_series(seed: int, end: int, hours: int) -> dict[str, demo.DemoSeries]:
    return {s.key(): s for s in demo.generate(seed, end, hours, 15)}


def demo_values(stack: Stack, case: SliCase, timestamps: list[int]) -> list[float]:
    """The generator's value Prometheus returns at each evaluation time: the sample at t."""
    facts = json.loads((stack.state_dir / "stack.json").read_text())["demo"]
    series = _demo_series(int(facts["seed"]), int(facts["end"]), int(facts["hours"]))
    s = series[series_key(case.metric, case.series_labels)]
    index = {int(t): i for i, t in enumerate(s.timestamps.tolist())}
    return [float(s.values[index[t]]) for t in timestamps]


def expected_violations(
    stack: Stack, case: SliCase, start: int, end: int, step: int
) -> dict[str, Any]:
    """Count, samples and intervals computed straight from the generator (no app code)."""
    grid = list(range(start, end + 1, step))
    values = demo_values(stack, case, grid)
    bad = [
        (t, v)
        for t, v in zip(grid, values, strict=True)
        if (case.min is not None and v < case.min) or (case.max is not None and v > case.max)
    ]
    runs: list[list[tuple[int, float]]] = []
    for t, v in bad:
        if runs and t - runs[-1][-1][0] == step:
            runs[-1].append((t, v))
        else:
            runs.append([(t, v)])

    def worst(run: list[tuple[int, float]]) -> tuple[int, float]:
        if case.max is not None:
            return max(run, key=lambda p: p[1])  # max() keeps the first of equal ones
        return min(run, key=lambda p: p[1])

    return {
        "violating": len(bad),
        "samples": [{"timestamp": float(t), "value": v, "state": _state(case)} for t, v in bad],
        "intervals": [
            {
                "start": float(run[0][0]),
                "end": float(run[-1][0]),
                "samples": len(run),
                "duration_s": float(run[-1][0] - run[0][0] + step),
                "worst_value": worst(run)[1],
                "worst_at": float(worst(run)[0]),
                "open_start": run[0][0] == start,
                "open_end": run[-1][0] == grid[-1],
            }
            for run in runs
        ],
    }


def _state(case: SliCase) -> str:
    return "above" if case.max is not None else "below"


# --------------------------------------------------------------------------- CRUD


def test_crud_round_trip_with_auth(client: httpx.Client) -> None:
    body = {
        "name": "crud-check",
        "selector": 'node_filefd_allocated{job="host"}',
        "max": 30000,
        "description": "round trip",
        "labels": {"instance": demo.INSTANCE},
    }
    assert client.post("/slis", json=body).status_code == 401
    assert (
        client.post("/slis", json=body, headers={"Authorization": "Bearer no"}).status_code == 403
    )

    created = client.post("/slis", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == "/slis/crud-check"
    sli = created.json()
    assert {k: sli[k] for k in body} == body
    assert sli["min"] is None and sli["created_at"] == sli["updated_at"]
    assert abs(sli["created_at"] - time.time()) < 60

    assert client.get("/slis/crud-check").json() == sli
    assert "crud-check" in [s["name"] for s in client.get("/slis").json()]
    assert client.post("/slis", json=body, headers=AUTH).status_code == 409

    new = {"selector": "node_filefd_allocated", "min": 1, "max": 2, "description": "replaced"}
    assert client.put("/slis/crud-check", json=new).status_code == 401
    replaced = client.put("/slis/crud-check", json=new, headers=AUTH)
    assert replaced.status_code == 200, replaced.text
    got = client.get("/slis/crud-check").json()
    assert got == replaced.json()
    assert (got["selector"], got["min"], got["max"], got["labels"]) == (
        "node_filefd_allocated",
        1.0,
        2.0,
        {},
    )
    assert got["created_at"] == sli["created_at"]

    assert client.delete("/slis/crud-check").status_code == 401
    assert (
        client.delete("/slis/crud-check", headers={"Authorization": "Bearer x"}).status_code == 403
    )
    assert client.delete("/slis/crud-check", headers=AUTH).status_code == 204
    assert client.get("/slis/crud-check").status_code == 404
    assert client.delete("/slis/crud-check", headers=AUTH).status_code == 404
    assert client.put("/slis/crud-check", json=new, headers=AUTH).status_code == 404
    assert client.get("/slis/crud-check/status").status_code == 404


MERGE_PATCH = {**AUTH, "Content-Type": "application/merge-patch+json"}


def _patch(client: httpx.Client, name: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return client.patch(f"/slis/{name}", content=json.dumps(body), headers=headers)


def test_patch_is_a_json_merge_patch(client: httpx.Client) -> None:
    body = {
        "name": "patch-check",
        "selector": 'node_filefd_allocated{job="host"}',
        "min": 1,
        "max": 30000,
        "description": "kept across patches",
        "labels": {"instance": demo.INSTANCE, "job": "host"},
    }
    created = client.post("/slis", json=body, headers=AUTH)
    assert created.status_code == 201, created.text
    try:
        assert _patch(client, "patch-check", {"max": 25000}, {}).status_code == 401
        r = _patch(client, "patch-check", {"max": 25000}, MERGE_PATCH)
        assert r.status_code == 200, r.text
        got = client.get("/slis/patch-check").json()
        assert got == r.json()
        # Left out: kept (PUT would have reset description and labels).
        assert (got["max"], got["description"], got["labels"], got["min"]) == (
            25000.0,
            "kept across patches",
            body["labels"],
            1.0,
        )
        assert got["created_at"] == created.json()["created_at"]

        # null removes an optional field (back to its default); labels merge one by one;
        # application/json is accepted too.
        r = client.patch(
            "/slis/patch-check",
            json={"min": None, "description": None, "labels": {"job": None, "x": "y"}},
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
        got = client.get("/slis/patch-check").json()
        assert (got["min"], got["description"], got["labels"]) == (
            None,
            "",
            {"instance": demo.INSTANCE, "x": "y"},
        )

        # An invalid result is a 422 and changes nothing: no bound left, min > max, a
        # removed selector, an unknown field, a rename.
        before = client.get("/slis/patch-check").json()
        for bad, message in (
            ({"max": None}, "give min, max or both"),
            ({"min": 30000}, "must not exceed max"),
            ({"selector": None}, "Field required"),
            ({"maximum": 3}, "Extra inputs"),
            ({"name": "renamed"}, "Extra inputs"),
            ({"max": "1"}, "valid number"),
        ):
            r = _patch(client, "patch-check", bad, MERGE_PATCH)
            assert r.status_code == 422, (bad, r.text)
            assert message in r.text, (bad, r.text)
            assert r.json()["detail"][0]["loc"][0] == "body"
        assert client.get("/slis/patch-check").json() == before

        # A changed selector is checked by Prometheus, as with PUT.
        r = _patch(client, "patch-check", {"selector": "rate(up"}, MERGE_PATCH)
        assert r.status_code == 400, r.text
        assert client.get("/slis/patch-check").json() == before

        assert _patch(client, "no-such-sli", {"max": 1}, MERGE_PATCH).status_code == 404
    finally:
        client.delete("/slis/patch-check", headers=AUTH)


def test_concurrent_patches_are_not_lost(stack: Stack, database: str, client: httpx.Client) -> None:
    """Each PATCH reads and writes its SLI's row under a lock: none undoes another.

    The race is made to happen: the test holds the row's lock while three patches start, and
    lets go only once all three wait for it. Without the lock each would have read the same
    labels before waiting, and the last write would drop the others' label.
    """
    body = {"name": "patch-race", "selector": "vector(1)", "max": 2, "labels": {}}
    assert client.post("/slis", json=body, headers=AUTH).status_code == 201
    holder = connect(stack.mysql_settings(database), autocommit=False)
    try:
        keys = ["a", "b", "c"]
        with holder.cursor() as cur:
            cur.execute("SELECT id FROM slis WHERE name = 'patch-race' FOR UPDATE")
        with ThreadPoolExecutor(max_workers=len(keys)) as pool:
            futures = [
                pool.submit(_patch, client, "patch-race", {"labels": {k: "v"}}, MERGE_PATCH)
                for k in keys
            ]

            def waiting() -> bool:
                with holder.cursor() as cur:
                    cur.execute(
                        "SELECT COUNT(*) FROM information_schema.INNODB_TRX "
                        "WHERE trx_state = 'LOCK WAIT'"
                    )
                    row = cur.fetchone()
                return row is not None and int(row[0]) >= len(keys)

            wait_until(waiting, timeout=8, what="three PATCHes waiting for the row lock")
            holder.commit()
            codes = [f.result(timeout=30).status_code for f in futures]
        assert codes == [200] * len(keys)
        assert client.get("/slis/patch-race").json()["labels"] == {k: "v" for k in keys}
    finally:
        holder.close()
        client.delete("/slis/patch-race", headers=AUTH)


def test_list_pages_by_name(client: httpx.Client) -> None:
    names = [f"page-{i:02d}" for i in range(5)]
    for n in names:
        r = client.post("/slis", json={"name": n, "selector": "vector(1)", "max": 2}, headers=AUTH)
        assert r.status_code == 201, r.text
    try:
        first = client.get("/slis", params={"limit": 2, "after": "page-"}).json()
        assert [s["name"] for s in first] == names[:2]
        rest = client.get("/slis", params={"limit": 10, "after": names[1]}).json()
        assert [s["name"] for s in rest if s["name"].startswith("page-")] == names[2:]
    finally:
        for n in names:
            client.delete(f"/slis/{n}", headers=AUTH)


# --------------------------------------------------------------------------- bad input


def test_promql_prometheus_rejects_is_a_400_with_its_own_text(
    stack: Stack, client: httpx.Client
) -> None:
    bad = 'rate(node_filefd_allocated{job="host"}'
    direct = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": bad}).json()
    assert direct["status"] == "error"

    r = client.post("/slis", json={"name": "bad-promql", "selector": bad, "max": 1}, headers=AUTH)

    assert r.status_code == 400
    assert r.json()["prometheus_error"] == direct["error"]
    assert r.json()["error_type"] == direct["errorType"] == "bad_data"
    assert direct["error"] in r.json()["detail"]
    matrix = client.post(
        "/slis", json={"name": "bad-promql", "selector": "up[5m]", "max": 1}, headers=AUTH
    )
    assert matrix.status_code == 400
    assert "instant vector or a scalar" in matrix.json()["detail"]
    put = client.put("/slis/fd-allocated", json={"selector": bad, "max": 1}, headers=AUTH)
    assert put.status_code in (400, 404)  # 404 only if the module's SLIs are not there yet
    assert client.get("/slis/bad-promql").status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "Not_A_Slug", "selector": "up", "max": 1}, "is not a valid name: lower-case"),
        ({"name": "x", "selector": "up", "min": 5, "max": 1}, "min (5.0) must not exceed max"),
        ({"name": "x", "selector": "up"}, "give min, max or both"),
        ({"name": "x", "selector": "up", "max": 1, "maximum": 2}, "Extra inputs"),
        ({"name": "x", "selector": "up", "max": "1"}, "valid number"),
    ],
)
def test_bad_bodies_are_422_with_a_clear_message(
    client: httpx.Client, body: dict[str, Any], message: str
) -> None:
    r = client.post("/slis", json=body, headers=AUTH)
    assert r.status_code == 422
    assert message in r.text


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/slis/fd-allocated/violations?window=1x", "'1x' is not a duration"),
        ("/slis/fd-allocated/violations?window=1h&start=1", "either window or start"),
        ("/slis/fd-allocated/violations?window=12h&step=2", "at most 11000"),
        ("/slis/fd-allocated/violations?start=2000000000&end=1000", "must be before end"),
        ("/slis/fd-allocated/forecast-violations?horizon=2d", "horizon must be at most"),
        ("/slis/fd-allocated/forecast-violations?horizon=soon", "'soon' is not a duration"),
        ("/slis/fd-allocated/status?time=-1", "greater than or equal to 0"),
        ("/etl/execution-time?window=0h", "'0h' is not a duration"),
        ("/slis/fd-allocated/violations?window=1h&unknown=1", "Extra inputs"),
    ],
)
def test_bad_parameters_are_422_with_a_clear_message(
    client: httpx.Client, slis: dict[str, SliCase], path: str, message: str
) -> None:
    r = client.get(path)
    assert r.status_code == 422, r.text
    assert message in r.text


# --------------------------------------------------------------------------- status


def test_status_now_at_the_demo_end_and_during_the_fd_spike(
    stack: Stack, client: httpx.Client, slis: dict[str, SliCase]
) -> None:
    end = _demo_end(stack)
    during = end - 40 * 60
    for at, state in ((end, "inside"), (during, "above")):
        r = client.get("/slis/fd-allocated/status", params={"time": at})
        assert r.status_code == 200, r.text
        body = r.json()
        (value,) = demo_values(stack, FD, [at])
        assert body["series"] == [
            {
                "metric": demo.FILEFD,
                "labels": HOST_LABELS,
                "timestamp": float(at),
                "value": value,
                "state": state,
                "inside": state == "inside",
                "last_seen": None,
                "anomalies": {},  # no anomaly record stored for it in this database
            }
        ]
        assert (body["inside"], body["outside"], body["undefined"], body["no_data"]) == (
            (1, 0, 0, 0) if state == "inside" else (0, 1, 0, 0)
        )
        assert body["state"] == ("ok" if state == "inside" else "violated")
        assert body["evaluated_at"] == at and body["max"] == demo.FD_THRESHOLD


def test_labels_narrow_the_series(
    stack: Stack, client: httpx.Client, slis: dict[str, SliCase]
) -> None:
    end = _demo_end(stack)
    everything = httpx.get(
        f"{stack.prometheus_url}/api/v1/query",
        params={"query": DISK.selector, "time": end},
    ).json()["data"]["result"]
    assert len(everything) == 2  # / and /run

    body = client.get("/slis/root-disk-available/status", params={"time": end}).json()

    assert body["series_total"] == 1 and not body["truncated"]
    assert body["series"][0]["labels"] == DISK.series_labels
    assert body["series"][0]["value"] == demo_values(stack, DISK, [end])[0]


def test_status_default_time_is_now(client: httpx.Client, slis: dict[str, SliCase]) -> None:
    before = time.time()
    body = client.get("/slis/fd-allocated/status").json()
    assert before - 1 <= body["evaluated_at"] <= time.time() + 1


# --------------------------------------------------------------------------- violations


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_violations_equal_what_the_generator_put_there(
    stack: Stack, client: httpx.Client, slis: dict[str, SliCase], case: SliCase, window: str
) -> None:
    end = _demo_end(stack)
    start = end - WINDOWS[window]

    r = client.get(f"/slis/{case.name}/violations", params={"window": window, "end": end})

    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["start"], body["end"], body["step_s"], body["window"]) == (
        start,
        end,
        STEP,
        window,
    )
    assert body["evaluations_per_series"] == WINDOWS[window] // STEP + 1
    (series,) = body["series"]
    assert series["labels"] == case.series_labels and series["metric"] == case.metric
    assert series["evaluations"] == WINDOWS[window] // STEP + 1
    expected = expected_violations(stack, case, start, end, STEP)
    assert series["violating"] == expected["violating"]
    assert series["samples"] == expected["samples"]
    assert series["intervals"] == expected["intervals"]
    assert series["time_outside_s"] == expected["violating"] * STEP
    assert body["violating_series"] == (1 if expected["violating"] else 0)
    # The demo's gauges have a sample at every step: no data is missing.
    assert (series["no_data_intervals"], body["no_data_series"]) == ([], 0)


def test_violations_sit_where_the_incidents_were_designed(
    stack: Stack, client: httpx.Client, slis: dict[str, SliCase]
) -> None:
    """The same, against the incident table of sla_common.demo (literal offsets)."""
    end = _demo_end(stack)

    def intervals(name: str, window: str) -> list[tuple[float, float, int]]:
        body = client.get(
            f"/slis/{name}/violations", params={"window": window, "end": end, "samples": "false"}
        ).json()
        assert body["series"][0]["samples"] is None
        return [(i["start"], i["end"], i["samples"]) for i in body["series"][0]["intervals"]]

    fd = [(end - 50 * 60, end - 30 * 60, 21)]
    disk = [(end - 160 * 60, end - 120 * 60, 41)]
    memory = [(end - 320 * 60, end - 270 * 60, 51)]
    assert [intervals("fd-allocated", w) for w in WINDOWS] == [fd, fd, fd]
    assert [intervals("root-disk-available", w) for w in WINDOWS] == [[], disk, disk]
    assert [intervals("memory-available", w) for w in WINDOWS] == [[], [], memory]


def test_violations_at_the_raw_step_with_explicit_start_and_end(
    stack: Stack, client: httpx.Client, slis: dict[str, SliCase]
) -> None:
    end = _demo_end(stack)
    start = end - 45 * 60  # the fd spike (end-50m..end-30m) is already on at start
    r = client.get(
        "/slis/fd-allocated/violations", params={"start": start, "end": end, "step": "15s"}
    )
    assert r.status_code == 200, r.text
    (series,) = r.json()["series"]
    expected = expected_violations(stack, FD, start, end, 15)
    assert series["intervals"] == expected["intervals"]
    (interval,) = series["intervals"]
    assert interval["open_start"] and not interval["open_end"]
    assert (interval["start"], interval["end"]) == (start, end - 30 * 60)
    assert series["violating"] == 15 * 4 + 1
    assert r.json()["window"] is None


def test_a_window_without_data_has_no_series(
    client: httpx.Client, slis: dict[str, SliCase]
) -> None:
    r = client.get("/slis/fd-allocated/violations", params={"window": "1h", "end": 1_000_000})
    assert r.status_code == 200
    assert r.json()["series"] == [] and r.json()["series_total"] == 0


# --------------------------------------------------------------------------- forecasts


def _forecast_message(
    key_metric: str,
    labels: dict[str, str],
    produced_at: int,
    points: list[tuple[int, float, float, float, float, float]],
    transform: Literal["none", "rate"] = "none",
) -> AnalysisMessage:
    values = [p[1] for p in points]
    forecast = Forecast(
        model="ETS(A,Ad,A) test",
        step_s=60,
        horizon_s=600,
        history_points=720,
        points=[
            ForecastPoint(ts=t, value=v, lower80=l8, upper80=u8, lower95=l9, upper95=u9)
            for t, v, l8, u8, l9, u9 in points
        ],
        max=max(values),
        min=min(values),
        mean=float(np.mean(values)),
    )
    return forecast_only_message(key_metric, labels, produced_at, forecast, transform)


@pytest.fixture(scope="module")
def stored_forecasts(stack: Stack, database: str, app: AppProcess) -> int:
    """Forecast rows written by data_storage's own writer (the fixture migrated the schema)."""
    at = _demo_end(stack)
    fd_points = [
        (at, 99999.0, 0.0, 99999.0, 0.0, 99999.0),  # ts == at: not in (at, at + horizon]
        (at + 60, 15000.0, 14000.0, 16000.0, 13000.0, 17000.0),  # inside
        (at + 120, 18000.0, 17000.0, 19500.0, 16000.0, 20500.0),  # only the 95 % band
        (at + 180, 19000.0, 18000.0, 20100.0, 17000.0, 21000.0),  # the 80 % band
        (at + 240, 20001.0, 19000.0, 21000.0, 18000.0, 22000.0),  # the point itself
        *[(at + 60 * k, 10000.0, 9000.0, 11000.0, 8000.0, 12000.0) for k in range(5, 11)],
        (at + 660, 99999.0, 0.0, 99999.0, 0.0, 99999.0),  # beyond a 10 min horizon
    ]
    # MemAvailable falling 200 MiB a minute from 3 GiB, bands ±100 MiB (80 %), ±300 MiB (95 %):
    # whole numbers of bytes, so every comparison with 2 GiB is exact.
    mib = demo.MIB
    memory_points = []
    for k in range(1, 11):
        v = float(3072 * mib - k * 200 * mib)
        memory_points.append(
            (at + 60 * k, v, v - 100 * mib, v + 100 * mib, v - 300 * mib, v + 300 * mib)
        )
    writer = Writer(
        MysqlSettings(
            mysql_host=stack.mysql_host,
            mysql_port=stack.mysql_port,
            mysql_user=stack.mysql_user,
            mysql_password=stack.mysql_password,
            mysql_database=database,
        )
    )
    try:
        writer.write(
            [
                # An older run whose window ended 60 s earlier, its points 30 s off the newer
                # run's: they stay stored (other timestamps) but must not be reported.
                _forecast_message(
                    demo.FILEFD,
                    HOST_LABELS,
                    at - 90,
                    [(at + 30 + 60 * k, 99999.0, 0.0, 99999.0, 0.0, 99999.0) for k in range(10)],
                ),
                _forecast_message(demo.FILEFD, HOST_LABELS, at - 30, fd_points),
                # stale: ten ETL cycles old
                _forecast_message(demo.MEM_AVAIL, HOST_LABELS, at - 600, memory_points),
            ]
        )
    finally:
        writer.close()
    return at


def test_forecast_crossing_the_range_is_reported_exactly(
    client: httpx.Client, slis: dict[str, SliCase], stored_forecasts: int
) -> None:
    at = stored_forecasts
    r = client.get(
        "/slis/fd-allocated/forecast-violations", params={"at": at, "mode": "interval95"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["horizon"], body["horizon_s"], body["stale_after_s"]) == ("10m", 600, 120.0)
    assert (body["mode"], body["breach_probability_threshold"]) == ("interval95", 0.5)
    assert (body["series_without_forecast"], body["stale_series"], body["violating_series"]) == (
        0,
        0,
        1,
    )
    (series,) = body["series"]
    assert series["series_key"] == series_key(demo.FILEFD, HOST_LABELS)
    assert series["transform"] == "none"
    assert series["forecast"] == {
        "produced_at": at - 30,
        "window_end": at - 30,
        "age_s": 30.0,
        "stale": False,
        "model": "ETS(A,Ad,A) test",
    }
    assert (series["points"], series["covered_until"]) == (10, at + 600)
    # Stored without a distribution: a normal with σ = (upper95 − lower95) / 3.92.
    assert series["distribution_source"] == "interval95_fallback"
    probabilities = [v.pop("breach_probability") for v in series["violations"]]
    assert probabilities == pytest.approx(
        [_upper_tail(18000, 16000, 20500), _upper_tail(19000, 17000, 21000), 0.500391],
        abs=1e-6,
    )
    assert series["breach_probability"] == pytest.approx(0.500391, abs=1e-6)
    assert series["violations"] == [
        {
            "ts": at + 120,
            "value": 18000.0,
            "lower80": 17000.0,
            "upper80": 19500.0,
            "lower95": 16000.0,
            "upper95": 20500.0,
            "leaves_by": "interval95",
        },
        {
            "ts": at + 180,
            "value": 19000.0,
            "lower80": 18000.0,
            "upper80": 20100.0,
            "lower95": 17000.0,
            "upper95": 21000.0,
            "leaves_by": "interval80",
        },
        {
            "ts": at + 240,
            "value": 20001.0,
            "lower80": 19000.0,
            "upper80": 21000.0,
            "lower95": 18000.0,
            "upper95": 22000.0,
            "leaves_by": "point",
        },
    ]
    assert (series["first_breach_at"], series["first_point_breach_at"]) == (at + 120, at + 240)
    assert series["leaves_by"] == "point"

    # Two minutes ahead only the 95 % band leaves the range: no point breach predicted.
    short = client.get(
        "/slis/fd-allocated/forecast-violations",
        params={"at": at, "horizon": "2m", "mode": "interval95"},
    ).json()["series"][0]
    assert [v["ts"] for v in short["violations"]] == [at + 120]
    assert (short["leaves_by"], short["first_point_breach_at"], short["points"]) == (
        "interval95",
        None,
        2,
    )


def _upper_tail(value: float, lower95: float, upper95: float, bound: float = 20000) -> float:
    """P(X > bound) for the normal the 95 % interval gives (σ = width / 3.92)."""
    sigma = (upper95 - lower95) / (2 * 1.959963984540054)
    return 0.5 * math.erfc((bound - value) / (sigma * math.sqrt(2)))


def test_the_default_mode_counts_a_breach_probability_of_at_least_one_half(
    client: httpx.Client, slis: dict[str, SliCase], stored_forecasts: int
) -> None:
    """Only the point forecast on the bound (20001 > 20000: P 0.500391) reaches 0.5; the
    points whose 80 % / 95 % bands leave the range (P 0.163 / 0.041) do not count."""
    at = stored_forecasts
    body = client.get("/slis/fd-allocated/forecast-violations", params={"at": at}).json()
    assert (body["mode"], body["breach_probability_threshold"]) == ("probability", 0.5)
    assert body["probability_method"] == "max_over_points"
    (series,) = body["series"]
    assert [(v["ts"] - at, v["leaves_by"]) for v in series["violations"]] == [(240, "point")]
    assert series["predicted_violation"] is True and body["violating_series"] == 1
    # Everything a violation is reported by stays, whatever the mode.
    assert (series["leaves_by"], series["first_point_breach_at"]) == ("point", at + 240)
    for mode, first in (("point", 240), ("interval80", 180), ("interval95", 120)):
        got = client.get(
            "/slis/fd-allocated/forecast-violations", params={"at": at, "mode": mode}
        ).json()["series"][0]
        assert (got["first_breach_at"] - at, got["predicted_violation"]) == (first, True)


def test_forecast_inside_a_wider_range_reports_nothing(
    client: httpx.Client, stored_forecasts: int
) -> None:
    at = stored_forecasts
    body = {"name": "fd-wide", "selector": FD.selector, "max": 50000}
    assert client.post("/slis", json=body, headers=AUTH).status_code == 201
    series = client.get("/slis/fd-wide/forecast-violations", params={"at": at}).json()["series"]
    (only,) = series
    assert only["points"] == 10 and only["violations"] == []
    assert (only["leaves_by"], only["first_breach_at"]) == (None, None)
    assert only["forecast"]["stale"] is False


def test_a_stale_forecast_is_flagged_and_a_missing_one_said(
    stack: Stack, client: httpx.Client, slis: dict[str, SliCase], stored_forecasts: int
) -> None:
    at = stored_forecasts
    body = client.get(
        "/slis/memory-available/forecast-violations", params={"at": at, "mode": "interval95"}
    ).json()
    (series,) = body["series"]
    assert series["forecast"]["age_s"] == 600.0 and series["forecast"]["stale"] is True
    assert body["stale_series"] == 1
    # 2272 MiB at +4 min: only its 95 % band reaches under 2 GiB; 2072 MiB at +5 min: its
    # 80 % band too; from +6 min (1872 MiB) the point forecast itself is under.
    leaves = [(v["ts"] - at, v["leaves_by"]) for v in series["violations"]]
    assert leaves == [(240, "interval95"), (300, "interval80")] + [
        (60 * k, "point") for k in range(6, 11)
    ]
    assert (series["first_breach_at"], series["first_point_breach_at"]) == (at + 240, at + 360)

    # The disk SLI's series has no stored forecast at all.
    disk = client.get("/slis/root-disk-available/forecast-violations", params={"at": at}).json()
    assert disk["series_without_forecast"] == 1
    assert disk["series"][0]["forecast"] is None and disk["series"][0]["points"] == 0


CPU_IDLE = 'node_cpu_seconds_total{job="host",cpu="0",mode="idle"}'
CPU_IDLE_LABELS = {**HOST_LABELS, "cpu": "0", "mode": "idle"}


def test_a_counter_forecast_as_a_rate_is_not_compared_with_raw_counter_bounds(
    stack: Stack, database: str, client: httpx.Client, stored_forecasts: int
) -> None:
    """The ETL forecasts a counter's rate (transform "rate"); an SLI on the raw counter
    would compare a bound on seconds of CPU with a forecast in seconds per second."""
    at = stored_forecasts
    # A rate forecast of about 0.9 s/s: far below any bound on the counter's raw value,
    # which is in the hundreds of thousands of seconds.
    rate_points = [(at + 60 * k, 0.9, 0.85, 0.95, 0.8, 1.0) for k in range(1, 11)]
    writer = Writer(stack.mysql_settings(database))
    try:
        writer.write(
            [_forecast_message(demo.CPU_SECONDS, CPU_IDLE_LABELS, at - 30, rate_points, "rate")]
        )
    finally:
        writer.close()
    body = {"name": "cpu-idle-raw", "selector": CPU_IDLE, "min": 1000}
    assert client.post("/slis", json=body, headers=AUTH).status_code == 201, body

    r = client.get("/slis/cpu-idle-raw/forecast-violations", params={"at": at})

    assert r.status_code == 200, r.text
    out = r.json()
    (series,) = out["series"]
    assert series["transform"] == "rate" and series["points"] == 10
    assert (series["comparable"], series["reason_code"]) == (False, "counter_rate")
    assert "rate()" in series["reason"]
    # Compared, every point would be "below 1000": none is reported.
    assert (series["violations"], series["leaves_by"], series["first_breach_at"]) == (
        [],
        None,
        None,
    )
    assert (out["incomparable_series"], out["violating_series"]) == (1, 0)


def test_an_expression_sli_is_not_compared_with_the_forecast_of_its_series(
    client: httpx.Client, slis: dict[str, SliCase], stored_forecasts: int
) -> None:
    """`x offset 1m` keeps the series' name, so its key finds the forecast of x: the
    forecast of the live values, not of the values a minute old the SLI evaluates."""
    at = stored_forecasts
    body = {"name": "fd-offset", "selector": f"{FD.selector} offset 1m", "max": FD.max}
    assert client.post("/slis", json=body, headers=AUTH).status_code == 201

    out = client.get("/slis/fd-offset/forecast-violations", params={"at": at}).json()

    (series,) = out["series"]
    assert series["series_key"] == series_key(demo.FILEFD, HOST_LABELS)
    assert (series["comparable"], series["reason_code"]) == (False, "expression")
    assert series["violations"] == [] and out["violating_series"] == 0
    # The same forecast under the plain selector is compared (and leaves the range).
    plain = client.get("/slis/fd-allocated/forecast-violations", params={"at": at}).json()
    assert plain["series"][0]["comparable"] is True and plain["series"][0]["reason"] is None
    assert plain["violating_series"] == 1 and plain["incomparable_series"] == 0


# --------------------------------------------------------------------------- ETL, health


def test_healthz_and_own_metrics(client: httpx.Client) -> None:
    health = client.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["mysql"]["ok"] and health["prometheus"]["ok"]
    assert client.get("/readyz").status_code == 200
    text = client.get("/metrics").text
    assert 'route="/slis/{name}/violations",status="200"' in text
    assert 'route="/slis",status="201"' in text


SCRAPE_INTERVAL_S = 15  # the stack's scrape_interval


def process_runs(prom: PrometheusClient, selector: str, end: float) -> int:
    """How many process runs reported the counter in the window: each series starts one,
    and a decrease or a gap of more than two scrape intervals starts another."""
    runs = 0
    for s in prom.query_samples(selector, end):
        runs += 1
        for i in range(1, len(s.timestamps)):
            gap = s.timestamps[i] - s.timestamps[i - 1]
            if s.values[i] < s.values[i - 1] or gap > 2 * SCRAPE_INTERVAL_S:
                runs += 1
    return runs


def test_etl_execution_time_is_what_prometheus_says(
    stack: Stack, client: httpx.Client, etl: EtlProcess
) -> None:
    cycles = f"sum(increase(sla_etl_cycle_duration_seconds_count{{{ETL_MATCHERS}}}[12h]))"
    # A few seconds in the past: a scrape that started before `end` has surely been
    # ingested by then, so the app and the direct queries below see the same samples.
    settled = 5
    with PrometheusClient(stack.prometheus_url) as prom:
        wait_until(
            lambda: any(s.value > 0 for s in prom.query(cycles, time=time.time() - settled)),
            timeout=90,
            interval=1,
            what=f"Prometheus to scrape two ETL cycles ({cycles})",
        )
        end = round(time.time() - settled, 3)
        r = client.get("/etl/execution-time", params={"window": "12h", "end": end})
        assert r.status_code == 200, r.text
        body = r.json()

        def one(query: str) -> dict[str, float]:
            return {s.labels.get("analysis", ""): s.value for s in prom.query(query, time=end)}

        h, rng = "sla_etl_analysis_duration_seconds", f"{{{ETL_MATCHERS}}}[43200s]"
        # the count is exact: the counter's rises (from 0 for a process started inside the
        # window), so when one process alone reported in the window it is the counter's last
        # value. Other tests' ETLs report under the same labels on this stack: a new process
        # shows as a decrease or, when its first scrape already counted as many cycles as the
        # old one had, only as a gap (resets() misses that one).
        runs = process_runs(prom, f"sla_etl_cycle_duration_seconds_count{rng}", end)
        restarts = runs - 1
        direct = {
            "count": one(f"sum by (analysis) (last_over_time({h}_count{rng}))"),
            "p50_s": one(
                f"histogram_quantile(0.5, sum by (analysis, le) (increase({h}_bucket{rng})))"
            ),
            "p95_s": one(
                f"histogram_quantile(0.95, sum by (analysis, le) (increase({h}_bucket{rng})))"
            ),
            "max_s": one(
                f"max by (analysis) (max_over_time(sla_etl_analysis_cycle_max_seconds{rng}))"
            ),
        }
        c = "sla_etl_cycle_duration_seconds"
        cycle = {
            "count": one(f"sum(last_over_time({c}_count{rng}))")[""],
            "p50_s": one(f"histogram_quantile(0.5, sum by (le) (increase({c}_bucket{rng})))")[""],
            "p95_s": one(f"histogram_quantile(0.95, sum by (le) (increase({c}_bucket{rng})))")[""],
            "max_s": one(f"max(max_over_time(sla_etl_last_cycle_duration_seconds{rng}))")[""],
        }
    assert etl.proc.poll() is None, etl.output()
    assert body["window_s"] == 43200 and body["end"] == end
    if restarts == 0:
        assert body["cycle"]["count"] == cycle["count"]
    assert body["cycle"]["count"] >= cycle["count"] > 0 and cycle["max_s"] > 0
    assert body["cycle"]["max_s"] == cycle["max_s"]
    # p50/p95 are histogram_quantile() capped at the measured maximum
    for stat in ("p50_s", "p95_s"):
        assert body["cycle"][stat] == min(cycle[stat], cycle["max_s"])
    names = {a["analysis"] for a in body["analyses"]}
    assert names == set(direct["count"]) >= {"adf", "hp", "acf", "forecast"}
    for a in body["analyses"]:
        name = a["analysis"]
        assert a["count"] == int(a["count"]) and a["count"] >= direct["count"][name]
        if restarts == 0:
            assert a["count"] == direct["count"][name]
        assert a["max_s"] == direct["max_s"].get(name)
        for stat in ("p50_s", "p95_s"):
            assert a[stat] == min(direct[stat][name], a["max_s"]), (a, stat)
        assert a["p50_s"] <= a["p95_s"] <= a["max_s"]
    # a longer window never counts fewer runs
    shorter = client.get("/etl/execution-time", params={"window": "1m", "end": end}).json()
    assert shorter["cycle"]["count"] <= body["cycle"]["count"]


def test_prometheus_scrapes_the_sla_manager(
    stack: Stack, client: httpx.Client, slis: dict[str, SliCase]
) -> None:
    # The test's own requests (it must not rely on earlier tests of the module)...
    assert client.get("/slis").status_code == 200
    r = client.get(f"/slis/{FD.name}/violations", params={"window": "1h", "end": _demo_end(stack)})
    assert r.status_code == 200, r.text
    want = {"/slis", "/slis/{name}/violations"}
    query = (
        'sla_manager_http_requests_total{job="sla-monitor",service="sla_manager",'
        'method="GET",status="200"}'
    )
    with PrometheusClient(stack.prometheus_url) as prom:
        # ...then a scrape that holds both routes (one before the requests may not).
        def scraped() -> list[InstantSample]:
            got = [s for s in prom.query(query) if s.value >= 1]
            return got if {s.labels["route"] for s in got} >= want else []

        got = wait_until(
            scraped,
            timeout=90,
            interval=1,
            what=f"Prometheus to scrape {query} for {sorted(want)}",
        )
    assert {s.labels["route"] for s in got} >= want
