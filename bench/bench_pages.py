"""The SLI page in headless Chromium (issue 18): time to a drawn page, and the assets' size.

Starts ``python -m sla_manager`` on a fresh database (of the MySQL that MYSQL_* name, against
PROMETHEUS_URL: ``make bench`` starts the local stack with its demo history), creates one
SLI whose selector gives 10 demo-host series, stores a 60-point forecast (80 % and 95 %
bands) and anomaly windows for each, then loads ``/ui/slis/<name>?window=12h&end=<demo
end>`` (12 h at 15 s: 2,881 evaluations per series) ``loads`` times in Debian's Chromium
through Playwright, each in a fresh page with an empty cache. Time to drawn: from the
navigation's start to the moment the script has drawn the chart (``performance.now()`` at
that point, so the browser's own clock on both ends); p50 over the loads.

Baseline: a page without a browser is not a thing a user gets, so the baseline
is the API work alone: the page's three API requests (violations with values, forecast
with all points, anomalies per series) fetched by httpx, one after the other, p50 over
the same number of rounds. The ratio says how much the browser adds to the API's time.

Assets: the bytes the page loads (HTML, dashboard.js with uPlot bundled, dashboard.css),
raw and gzipped (level 9; the budget is 250 KB gzipped).
"""

from __future__ import annotations

import gzip
import os
import secrets
import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.bench_sla import _App
from data_storage.anomalies import AnomalyWriter
from data_storage.writer import Writer
from sla_common.anomalies import AnomalyRecord
from sla_common.mysql import MysqlSettings
from sla_common.series import series_key
from sla_manager.routes.pages import PAGES_DIR, STATIC_DIR
from tests.integration.pagesutil import chromium, wait_ready, watched_page
from tests.integration.slautil import forecast_message

# 10 demo-host series: 2 memory, 4 filesystem, the fd count, 3 CPU modes of cpu 0.
SELECTOR = (
    '{job="host",cpu!="1",mode!="user",'
    '__name__=~"node_memory_.+|node_filesystem_.+|node_filefd_allocated|node_cpu_seconds_total"}'
)
SERIES = 10
BUDGET_GZIP_BYTES = 250_000
FORECAST_POINTS = 60
# The import alone takes 50 s on a loaded 2-core machine.
START_TIMEOUT_S = 180.0


def _series(prom: str, at: int) -> list[dict[str, str]]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": SELECTOR, "time": at}, timeout=30)
    r.raise_for_status()
    return [dict(x["metric"]) for x in r.json()["data"]["result"]]


def _store(database: str, labels_of: list[dict[str, str]], at: int) -> None:
    settings = MysqlSettings(mysql_database=database)
    messages, records = [], []
    for full in labels_of:
        metric = full["__name__"]
        labels = {k: v for k, v in full.items() if k != "__name__"}
        key = series_key(metric, labels)
        locs = [100.0 + k for k in range(FORECAST_POINTS)]
        messages.append(forecast_message(metric, labels, at, locs, 8.0))
        for k in range(20):  # a window every 30 min, every fourth an ERROR
            status = "ERROR" if k % 4 == 0 else "WARN"
            records.append(
                AnomalyRecord.model_validate(
                    {
                        "detector": {"name": "sigma", "version": "1"},
                        "series": {"key": key, "metric": metric, "labels": labels},
                        "window": {"start": at - 1800 * (k + 1), "end": at - 1800 * (k + 1) + 60},
                        "count": 4,
                        "mean": 1.0,
                        "std": 0.1,
                        "normal": {"mean": 0.0, "std": 0.2, "source": "learned"},
                        "deviation": 5.0,
                        "status": status,
                    }
                )
            )
    writer = Writer(settings)
    try:
        writer.write(messages)
    finally:
        writer.close()
    anomalies = AnomalyWriter(settings)
    try:
        anomalies.write(records)
    finally:
        anomalies.close()


def asset_sizes() -> dict[str, Any]:
    files = {
        "page.html": PAGES_DIR / "page.html",
        "dashboard.js": STATIC_DIR / "dashboard.js",
        "dashboard.css": STATIC_DIR / "dashboard.css",
    }
    out: dict[str, Any] = {}
    for name, path in files.items():
        raw = Path(path).read_bytes()
        out[name] = {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9))}
    out["total_bytes"] = sum(v["bytes"] for v in out.values())
    out["total_gzip_bytes"] = sum(v["gzip_bytes"] for k, v in out.items() if k != "total_bytes")
    out["budget_gzip_bytes"] = BUDGET_GZIP_BYTES
    return out


def measure(loads: int = 7) -> dict[str, Any]:
    prom = os.environ.get("PROMETHEUS_URL", "http://127.0.0.1:9090").rstrip("/")
    demo_end = os.environ.get("STACK_DEMO_END", "").strip()
    end = int(demo_end) if demo_end else int(time.time())
    token = secrets.token_urlsafe(24)
    app = _App(token, start_timeout_s=START_TIMEOUT_S)
    try:
        labels_of = _series(prom, end)
        if len(labels_of) != SERIES:
            raise RuntimeError(f"the selector gives {len(labels_of)} series, not {SERIES}")
        _store(app.database, labels_of, end)
        with httpx.Client(base_url=app.base_url, timeout=60) as c:
            r = c.post(
                "/slis",
                json={"name": "bench-page", "selector": SELECTOR, "max": 1e10},
                headers={"Authorization": f"Bearer {token}"},
            )
            r.raise_for_status()
            api_ms = []
            for _ in range(loads):
                t0 = time.perf_counter()
                v = c.get(
                    f"/slis/bench-page/violations?window=12h&step=15s&values=true&samples=false"
                    f"&end={end}"
                ).json()
                c.get(f"/slis/bench-page/forecast-violations?horizon=1h&all_points=true&at={end}")
                for s in v["series"]:
                    sel = s["metric"] + "{" + ",".join(f'{k}="{x}"' for k, x in s["labels"].items())
                    c.get(f"/anomalies?selector={quote(sel + '}')}&start={v['start']}&end={end}")
                api_ms.append(1000 * (time.perf_counter() - t0))
        drawn_ms: list[float] = []
        render_ms: list[float] = []  # from the last API answer to the drawn chart and table
        drawn: dict[str, Any] = {}
        with chromium() as browser:
            for _ in range(loads):
                w = watched_page(browser)
                w.page.goto(f"{app.base_url}/ui/slis/bench-page?window=12h&end={end}")
                wait_ready(w.page, timeout_ms=120_000)
                if w.errors:
                    raise RuntimeError(f"the page reported errors: {w.errors}")
                at = w.page.evaluate(
                    "() => [window.slaDashboard.drawnAt, window.slaDashboard.fetchedAt]"
                )
                drawn_ms.append(float(at[0]))
                render_ms.append(float(at[0]) - float(at[1]))
                drawn = w.page.evaluate(
                    "() => { const d = window.slaDashboard.drawn.sli; return {series: d.series"
                    ".length, shaded: d.shaded.length, anomalies: d.anomalies.length,"
                    " forecastPoints: d.forecastPoints}; }"
                )
                w.page.close()
    finally:
        app.close()
    p50 = statistics.median(drawn_ms)
    api_p50 = statistics.median(api_ms)
    return {
        "loads": loads,
        "series": SERIES,
        "evaluations_per_series": 2881,
        "drawn": drawn,
        "time_to_drawn_ms": {"p50": p50, "all": drawn_ms},
        "render_after_data_ms": {"p50": statistics.median(render_ms), "all": render_ms},
        "baseline_api_only_ms": {"p50": api_p50, "all": api_ms},
        "browser_over_api_ratio": p50 / api_p50,
        "assets": asset_sizes(),
    }


def summary(r: dict[str, Any]) -> str:
    a = r["assets"]
    return (
        f"pages: SLI page (12 h at 15 s, {r['series']} series, forecast and anomalies) drawn "
        f"in p50 {r['time_to_drawn_ms']['p50']:.0f} ms over {r['loads']} loads (drawing once "
        f"the data is in: {r['render_after_data_ms']['p50']:.0f} ms); its API "
        f"requests alone p50 {r['baseline_api_only_ms']['p50']:.0f} ms (ratio "
        f"{r['browser_over_api_ratio']:.2f}x); assets {a['total_bytes'] / 1000:.1f} KB, "
        f"{a['total_gzip_bytes'] / 1000:.1f} KB gzipped (budget {BUDGET_GZIP_BYTES / 1000:.0f})"
    )
