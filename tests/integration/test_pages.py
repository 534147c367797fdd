"""The SLA manager's pages in headless Chromium (issue 18), against the real test stack with
the demo history: ``python -m sla_manager`` on a scratch database holding the demo's SLIs, an
SLO, a stored forecast of the demo host's file descriptors, anomaly windows on its fd
spike, and two ETL cycles (the ETL's own fetch and analyses of a few demo series over 3 h,
stored by data_storage's writer). Every request leaving the machine is refused and counted
(the pages work offline). The read routes the pages added to the API (``/etl/cycles``,
``/slos/{name}/budget-history``) are checked against what they read here too.

Screenshots go to test-artifacts/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser

from data_storage.anomalies import AnomalyWriter
from data_storage.writer import Writer
from etl_data_pipeline.pipeline import Pipeline, analyse_series, analysis_config, build_message
from etl_data_pipeline.settings import EtlSettings
from sla_common import demo
from sla_common.anomalies import AnomalyRecord
from sla_common.messages import AnalysisMessage
from sla_common.series import series_key
from tests.integration.pagesutil import chromium, screenshot, wait_ready, watched_page
from tests.integration.slautil import AppProcess, app_env, forecast_message, stack_database
from tests.integration.stackutil import Stack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOKEN = "integration-token-pages-7c1d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GIB = 2**30
LABELS = dict(demo.BASE_LABELS)
# The demo's SLIs (as scripts/demo_report.py creates them), on its incidents.
SLIS: list[dict[str, Any]] = [
    {"name": "fd-allocated", "selector": 'node_filefd_allocated{job="host"}', "max": 20000,
     "description": "file descriptors below 20k"},
    {"name": "memory-available", "selector": 'node_memory_MemAvailable_bytes{job="host"}',
     "min": 2 * GIB, "description": "at least 2 GiB available"},
    {"name": "root-disk-free", "selector": 'node_filesystem_avail_bytes{job="host"}',
     "labels": {"device": "/dev/sda2"}, "min": 10 * GIB, "description": "10 GiB free on /"},
    {"name": "nothing-matches", "selector": 'node_filefd_allocated{job="no-such-job"}',
     "max": 1, "description": "a selector without series: no data"},
]  # fmt: skip
SLO = f"pages-{uuid.uuid4().hex[:6]}"
FORECAST_POINTS = 30
# The import alone takes 50 s on a loaded 2-core machine (load 15 seen).
START_TIMEOUT_S = 180.0
# Two ETL cycles over 3 h of a few demo series, with a one-day season: the decomposition
# needs two seasons, so the ETL skips it on every series (its own reason).
ETL_SELECTORS = (
    'node_filefd_allocated{job="host"}',
    'node_memory_MemAvailable_bytes{job="host"}',
    'node_filesystem_avail_bytes{job="host"}',
)
ETL_WINDOW_S = 3 * 3600
# run id -> the messages the ETL made in that cycle
CYCLES: dict[str, list[AnalysisMessage]] = {}


def _etl_cycles(stack: Stack) -> list[AnalysisMessage]:
    """Two cycles of the ETL's fetch and analyses (no broker: the messages go to the writer
    directly), ending an hour apart at the demo's end."""
    assert stack.demo_end is not None
    settings = EtlSettings(
        prometheus_url=stack.prometheus_url,
        etl_selectors=ETL_SELECTORS,
        etl_window_s=ETL_WINDOW_S,
        etl_season_s=86_400,
    )
    cfg = analysis_config(settings)
    pipeline = Pipeline(settings)
    out: list[AnalysisMessage] = []
    try:
        for end in (stack.demo_end - 3600, stack.demo_end):
            run_id = f"pages-{uuid.uuid4().hex[:12]}"
            start = end - ETL_WINDOW_S
            fetched, errors = pipeline.fetch(start, end)
            assert fetched and not errors, errors
            msgs = [
                build_message(
                    run_id,
                    end + 30,
                    fs.ref,
                    start,
                    end,
                    analyse_series(fs, settings.etl_step_s, end, cfg),
                    settings.etl_forecast_horizon_s,
                )
                for fs in fetched
            ]
            CYCLES[run_id] = msgs
            out += msgs
    finally:
        pipeline.close()
    return out


def _forecast(at: int) -> AnalysisMessage:
    """A forecast of the demo host's fd count made now: 30 minutes, rising toward the
    range's bound with 80 % / 95 % intervals."""
    locs = [15000.0 + 100.0 * k for k in range(FORECAST_POINTS)]
    return forecast_message(demo.FILEFD, LABELS, at, locs, 800.0)


def _anomaly(start: float, detector: str, status: str, deviation: float) -> AnomalyRecord:
    return AnomalyRecord.model_validate(
        {
            "detector": {"name": detector, "version": "1"},
            "series": {
                "key": series_key(demo.FILEFD, LABELS),
                "metric": demo.FILEFD,
                "labels": LABELS,
            },
            "window": {"start": start, "end": start + 60},
            "count": 4,
            "mean": 42000.0,
            "std": 10.0,
            "normal": {"mean": 15000.0, "std": 500.0, "source": "learned"},
            "deviation": deviation,
            "status": status,
        }
    )


@pytest.fixture(scope="module")
def database(stack: Stack) -> Iterator[str]:
    assert stack.demo_end is not None
    with stack_database(stack) as name:
        writer = Writer(stack.mysql_settings(name))
        try:
            writer.write([_forecast(int(time.time()))])
            writer.write(_etl_cycles(stack))
        finally:
            writer.close()
        spike = stack.demo_end - demo.FD_SPIKE_FIRST_OFFSET_S
        records = [_anomaly(spike + 60 * k, "sigma", "ERROR", 50.0 + k) for k in range(3)]
        records += [_anomaly(spike + 120, "iforest", "WARN", 1.5)]
        records += [_anomaly(stack.demo_end - 120, "sigma", "SAFE", 0.2)]
        anomalies = AnomalyWriter(stack.mysql_settings(name))
        try:
            anomalies.write(records)
        finally:
            anomalies.close()
        yield name


@pytest.fixture(scope="module")
def base_url(
    stack: Stack, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    rules = stack.state_dir / "rules" / f"{SLO}.rules.yml"
    env = app_env(
        stack.service_env(),
        MYSQL_DATABASE=database,
        SLA_API_TOKEN=TOKEN,
        ENVIRONMENT="test",
        SLO_RULES_FILE=str(rules),
    )
    proc = AppProcess(env, tmp_path_factory.mktemp("sla-pages") / "sla.log")
    try:
        proc.wait_ready(timeout=START_TIMEOUT_S)
        with httpx.Client(base_url=proc.base_url, timeout=60, headers=AUTH) as c:
            for sli in SLIS:
                r = c.post("/slis", json=sli)
                assert r.status_code == 201, r.text
            slo = {"name": SLO, "sli": "fd-allocated", "objective": 99.5, "period": "30d"}
            r = c.post("/slos", json=slo)
            assert r.status_code == 201, r.text
        yield proc.base_url
    finally:
        proc.stop()
        rules.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _get(base_url: str, path: str, **params: Any) -> Any:
    r = httpx.get(base_url + path, params=params, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_overview_lists_every_sli_with_its_state_worst_first(
    base_url: str, browser: Browser
) -> None:
    w = watched_page(browser)
    w.page.goto(base_url + "/")
    wait_ready(w.page)
    rows = w.page.locator("#slis tbody tr")
    got = [
        (r.get_attribute("data-sli"), r.get_attribute("data-state")) for r in rows.element_handles()
    ]
    want = {s["name"]: _get(base_url, f"/slis/{s['name']}/status")["state"] for s in SLIS}
    assert dict(got) == want
    assert want["nothing-matches"] == "no_data"
    # Worst on top: whatever is violated or without data comes before what is ok.
    rank = {"violated": 0, "no_data": 1, "ok": 2}
    order = [rank[str(s)] for _n, s in got]
    assert order == sorted(order)
    fd = w.page.locator('#slis tr[data-sli="fd-allocated"]')
    assert fd.locator("[data-breach-probability]").get_attribute("data-breach-probability") != ""
    assert "sigma" in fd.inner_text()  # the latest anomaly window per detector
    assert w.page.locator(f'#slos tr[data-slo="{SLO}"]').count() == 1
    screenshot(w.page, "overview")
    assert w.errors == [] and w.external == []


def test_sli_page_draws_series_forecast_anomalies_and_the_apis_violation_intervals(
    base_url: str, browser: Browser
) -> None:
    w = watched_page(browser)
    w.page.goto(base_url + "/ui/slis/fd-allocated?window=3h")
    wait_ready(w.page)
    drawn = w.page.evaluate(
        "() => { const u = window.slaDashboard.charts.sli; const d = window.slaDashboard.drawn.sli;"
        " return {...d, canvas: !!u.ctx.canvas.width,"
        " xs: u.data[0].length, labels: u.series.slice(1).map(s => s.label)}; }"
    )
    assert drawn["canvas"]
    series = 'node_filefd_allocated{instance="demo-host:9100",job="host"}'
    assert series in drawn["labels"]
    assert "max" in drawn["labels"]
    forecast = [lab for lab in drawn["labels"] if lab.endswith(series) and lab != series]
    assert len(forecast) == 5  # point forecast, 80 % and 95 % bounds
    # The stored points after now (the forecast was made when the module started).
    assert FORECAST_POINTS - 5 <= drawn["forecastPoints"] <= FORECAST_POINTS
    assert sorted({(d, s) for d, s, _t in drawn["anomalies"]}) == [
        ("iforest", "WARN"),
        ("sigma", "ERROR"),
    ]
    # The shaded intervals are the API's for the same range and step.
    api = _get(
        base_url,
        "/slis/fd-allocated/violations",
        start=drawn["start"],
        end=drawn["end"],
        step=f"{drawn['step']}s",
        samples="false",
    )
    intervals = [[i["start"], i["end"]] for s in api["series"] for i in s["intervals"]]
    assert intervals, "the demo's fd spike is within 3 h"
    assert drawn["shaded"] == intervals
    assert w.page.locator("#sli-chart").get_attribute("data-shaded") is not None
    screenshot(w.page, "sli")

    # A selected violation shows its explanation: what the API answered for it.
    with w.page.expect_response(
        lambda r: "/violations/explanation" in r.url, timeout=120_000
    ) as answer:
        w.page.locator("#violations button.explain").first.click()
    assert answer.value.status == 200
    body = answer.value.json()
    (first, last), *_ = body["anomalous"]  # the violation the button belongs to
    assert first <= intervals[0][1] and last >= intervals[0][0]
    explanation = w.page.locator("#explanation")
    explanation.wait_for(timeout=30_000)
    assert explanation.get_attribute("data-predicates") == str(len(body["explanation"]))
    shown = [c.inner_text() for c in explanation.locator(".predicates code").all()]
    assert shown == body["explanation"]
    ranked = explanation.locator("table.ranked tbody tr code").all()
    assert [c.inner_text() for c in ranked] == [r["series"] for r in body["ranked"][:8]]
    if body["false_positives"]:
        assert str(body["false_positives"]) in explanation.locator("summary").inner_text()
    # each explaining feature's values drawn small beside it: the API's points, one chart each
    assert "values=" in answer.value.url
    features = w.page.evaluate("() => window.slaDashboard.drawn.features")
    assert features == [
        {"series": r["series"], "points": len(r["values"])} for r in body["ranked"][:8]
    ]
    assert all(0 < f["points"] <= 80 for f in features)
    assert explanation.locator("table.ranked .spark canvas").count() == len(features)
    screenshot(w.page, "sli-explanation")

    # Another window reloads the chart with its own range.
    w.page.locator('button[data-window="1h"]').click()
    w.page.wait_for_function(
        "() => window.slaDashboard.ready &&"
        " document.querySelector('button[data-window=\"1h\"]').getAttribute('aria-pressed')"
        " === 'true'",
        timeout=60_000,
    )
    span = w.page.evaluate(
        "() => { const x = window.slaDashboard.charts.sli.data[0]; return x[x.length-1] - x[0]; }"
    )
    assert 3600 <= span < 3 * 3600  # 1 h of history plus the forecast's 30 min
    assert w.errors == [] and w.external == []


def test_slo_page_shows_budget_burn_rates_against_thresholds_and_alerts(
    base_url: str, browser: Browser
) -> None:
    w = watched_page(browser)
    w.page.goto(f"{base_url}/ui/slos/{SLO}")
    wait_ready(w.page)
    status = _get(base_url, f"/slos/{SLO}", alerts="true")
    windows = [b["window"] for b in status["burn_rates"]]
    rows = w.page.locator("#burn-rates tbody tr")
    assert [r.get_attribute("data-window") for r in rows.element_handles()] == windows
    # Each alert threshold is a tick on the bar of its windows.
    ticks = w.page.locator("#burn-rates .tick").count()
    assert ticks == 2 * len(status["alert_windows"])
    assert w.page.locator("#alerts").count() == 1
    assert w.page.evaluate("() => !!window.slaDashboard.charts.burndown.ctx.canvas.width")
    # The burn-down spans the SLO's whole period (30 days), 121 times; the demo's history is
    # one day long, so the budget is known at the last 4 or 5 of them (one every 6 h).
    drawn = w.page.evaluate("() => window.slaDashboard.drawn.burndown")
    assert drawn["total"] == 121 and drawn["step"] == 6 * 3600
    assert drawn["end"] - drawn["start"] == 30 * 86_400
    assert 4 <= drawn["points"] <= 5
    screenshot(w.page, "slo")
    assert w.errors == [] and w.external == []


def test_budget_history_is_the_status_at_each_time(base_url: str) -> None:
    h = _get(base_url, f"/slos/{SLO}/budget-history", source="raw_queries", points=121)
    assert h["period"] == "30d" and h["step_s"] == 6 * 3600 and len(h["points"]) == 121
    assert h["end"] - h["start"] == 30 * 86_400 and h["budget_total"] == 0.005
    known = [(t, v) for t, v in h["points"] if v is not None]
    assert 4 <= len(known) <= 5 and known[-1][0] == h["points"][-1][0]  # the demo's day
    for t, left in known[-2:]:
        at = _get(base_url, f"/slos/{SLO}", time=t, source="raw_queries")
        assert left == pytest.approx(at["budget"]["remaining"], rel=1e-9)
    # recording rules: nothing before Prometheus loaded them; the newest point once it did
    r = httpx.get(f"{base_url}/slos/{SLO}/budget-history", params={"points": 3}, timeout=60)
    assert r.status_code == 200 and len(r.json()["points"]) == 3
    for params, status in (
        ({"points": 1}, 422),
        ({"points": 501}, 422),
        ({"source": "guess"}, 422),
        ({"end": -1}, 422),
        ({"bogus": 1}, 422),
    ):
        r = httpx.get(f"{base_url}/slos/{SLO}/budget-history", params=params, timeout=60)
        assert r.status_code == status, (params, r.text)
    r = httpx.get(f"{base_url}/slos/no-such-slo/budget-history", timeout=60)
    assert r.status_code == 404, r.text


def _skips(msgs: list[AnalysisMessage]) -> dict[tuple[str, str], int]:
    return dict(Counter((sk.analysis, sk.reason) for m in msgs for sk in m.skipped))


def test_etl_cycles_answer_what_the_etl_analysed_and_skipped(base_url: str) -> None:
    assert len(CYCLES) == 2
    body = _get(base_url, "/etl/cycles", window="1d")
    by_run = {c["run_id"]: c for c in body["cycles"]}
    ends = [c["window_end"] for c in body["cycles"]]
    assert ends == sorted(ends, reverse=True)  # newest first
    for run_id, msgs in CYCLES.items():
        c = by_run[run_id]
        assert c["series_analysed"] == len(msgs)
        assert c["series_with_skips"] == sum(1 for m in msgs if m.skipped)
        assert {(k["analysis"], k["reason"]): k["series"] for k in c["skipped"]} == _skips(msgs)
        assert ("decomposition", "too_short") in _skips(msgs)  # 3 h < two one-day seasons
        assert c["window_end"] - c["window_start"] == ETL_WINDOW_S
        one = _get(base_url, f"/etl/cycles/{run_id}")
        assert one["truncated"] is False
        assert [s["series"] for s in one["series"]] == sorted(m.series.key for m in msgs)
        want = {m.series.key: sorted((k.analysis, k.reason, k.detail) for k in m.skipped)
                for m in msgs}  # fmt: skip
        got = {s["series"]: sorted((k["analysis"], k["reason"], k["detail"]) for k in s["skipped"])
               for s in one["series"]}  # fmt: skip
        assert got == want
        assert len(_get(base_url, f"/etl/cycles/{run_id}", limit=1)["series"]) == 1
    # a window that ended before both cycles holds neither; limit keeps the newest
    older = _get(base_url, "/etl/cycles", window="1h", end=min(ends) - 1)
    assert not set(CYCLES) & {c["run_id"] for c in older["cycles"]}
    assert len(_get(base_url, "/etl/cycles", window="1d", limit=1)["cycles"]) == 1
    for path, params, status in (
        ("/etl/cycles", {"window": "40d"}, 422),
        ("/etl/cycles", {"window": "soon"}, 422),
        ("/etl/cycles", {"limit": 0}, 422),
        ("/etl/cycles", {"bogus": 1}, 422),
        ("/etl/cycles/no-such-run", {}, 404),
        ("/etl/cycles/bad%20id", {}, 422),
        (f"/etl/cycles/{next(iter(CYCLES))}", {"limit": 0}, 422),
    ):
        r = httpx.get(base_url + path, params=params, timeout=60)
        assert r.status_code == status, (path, params, r.text)


def test_etl_page_and_docs_work_offline(base_url: str, browser: Browser) -> None:
    w = watched_page(browser)
    w.page.goto(base_url + "/ui/etl?window=1d")
    wait_ready(w.page)
    assert w.page.locator('#etl-table tr[data-analysis="whole cycle"]').count() == 1
    # series analysed and skipped per cycle: the API's figures, drawn and listed
    api = _get(base_url, "/etl/cycles", window="1d")["cycles"]
    drawn = w.page.evaluate("() => window.slaDashboard.drawn.cycles")
    assert drawn["cycles"] == len(api)
    assert drawn["analysed"] == [c["series_analysed"] for c in reversed(api)]
    assert drawn["skipped"] == [c["series_with_skips"] for c in reversed(api)]
    assert w.page.evaluate("() => !!window.slaDashboard.charts.cycles.ctx.canvas.width")
    total = Counter[tuple[str, str]]()
    for c in api:
        total.update({(k["analysis"], k["reason"]): k["series"] for k in c["skipped"]})
    rows = w.page.locator("#etl-reasons tbody tr").element_handles()
    shown = {(r.get_attribute("data-analysis"), r.get_attribute("data-reason")):
             int(r.get_attribute("data-count") or 0) for r in rows}  # fmt: skip
    assert shown == dict(total)
    # the newest cycle's series with their skipped analyses, and another cycle's on request
    newest = w.page.locator("#etl-cycle")
    assert newest.get_attribute("data-run") == api[0]["run_id"]
    older = min(CYCLES, key=lambda r: CYCLES[r][0].window.end)
    w.page.locator(f'#etl-cycles-table tr[data-run="{older}"] button').click()
    w.page.locator(f'#etl-cycle[data-run="{older}"]').wait_for(timeout=30_000)
    listed = w.page.locator("#etl-skipped-series tbody tr").element_handles()
    assert {r.get_attribute("data-series") for r in listed} == {
        m.series.key for m in CYCLES[older] if m.skipped
    }
    screenshot(w.page, "etl")
    w.page.goto(base_url + "/docs")
    w.page.locator(".swagger-ui .opblock").first.wait_for(timeout=30_000)
    assert w.page.locator(".swagger-ui .opblock").count() > 10
    assert w.errors == [] and w.external == []


def test_keyboard_reaches_every_control(base_url: str, browser: Browser) -> None:
    w = watched_page(browser)
    w.page.goto(base_url + "/ui/slis/fd-allocated?window=3h")
    wait_ready(w.page)
    controls = w.page.evaluate(
        "() => Array.from(document.querySelectorAll('a[href], button'))"
        ".map((e, i) => { e.dataset.kb = String(i); return String(i); })"
    )
    reached: set[str] = set()
    for _ in range(3 * len(controls)):  # bounded: Tab cycles through the page
        w.page.keyboard.press("Tab")
        kb = w.page.evaluate("() => document.activeElement && document.activeElement.dataset.kb")
        if kb is not None:
            reached.add(kb)
        if reached == set(controls):
            break
    assert reached == set(controls)
    # A window button works from the keyboard too.
    w.page.locator('button[data-window="12h"]').focus()
    w.page.keyboard.press("Enter")
    w.page.wait_for_function(
        "() => window.slaDashboard.ready && document.querySelector('button[data-window=\"12h\"]')"
        ".getAttribute('aria-pressed') === 'true'",
        timeout=60_000,
    )
    assert w.errors == []
