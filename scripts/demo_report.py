"""Wait for the demo's first ETL cycle, then print what it found and where to look further.

Reads the stack's facts (stack.json) and the ETL's messages from Kafka; no settings of its
own. Run by scripts/demo. ``--anomalies`` prints only the anomaly detector's section: its
WARN/ERROR windows so far (a bounded read of the ``anomaly`` topic) and the demo's live
incident (scripts/demo_live.py); ``--alerts`` only the SLO alerts' section: what Prometheus
has pending or firing (with when a pending one fires), what Alertmanager holds of it, what
fired in the last hour and resolved, and what is expected of the rest (``make demo-report``
prints both). ``--after-incident`` first waits until the detector has judged the incident's
windows, and until the incident's page (SLO ``fd-normal-budget``) is at Alertmanager.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from sla_common.anomalies import AnomalyRecord
from sla_common.messages import AnalysisMessage

REPO = Path(__file__).resolve().parent.parent

WAIT_S = 120


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as r:  # noqa: S310 (loopback URLs from stack.json)
        return str(r.read().decode())


def successes(metrics_url: str) -> float:
    try:
        text = http_text(metrics_url)
    except OSError:
        return 0.0
    m = re.search(r'^sla_etl_cycles_total\{result="success"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def latest_messages(bootstrap: str, topic: str) -> list[AnalysisMessage]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        latest: dict[str, AnalysisMessage] = {}
        idle = 0
        while idle < 3:
            batch = consumer.poll(timeout_ms=500)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for r in records:
                    msg = AnalysisMessage.from_bytes(r.value)
                    old = latest.get(msg.series.key)
                    if old is None or msg.window.end >= old.window.end:
                        latest[msg.series.key] = msg
        return sorted(latest.values(), key=lambda m: m.series.key)
    finally:
        consumer.close()


def human(v: float) -> str:
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if abs(v) >= size:
            return f"{v / size:.2f}{unit}"
    return f"{v:.4g}"


def row(m: AnalysisMessage) -> list[str]:
    aggs = {a.window: a for a in m.aggregates}
    adf = "-" if m.adf is None else ("stationary" if m.adf.stationary else "unit root")
    if m.adf is not None:
        adf += f" p={m.adf.pvalue:.2g}"
    fc = "-"
    if m.forecast is not None:
        last = m.forecast.points[-1]
        fc = f"{human(m.forecast.mean)} [{human(last.lower95)}..{human(last.upper95)}]"
    span = "-"
    if "12h" in aggs:
        span = f"{human(aggs['12h'].min)}..{human(aggs['12h'].max)}"
    one = f"{human(aggs['1h'].mean)}" if "1h" in aggs else "-"
    labels = ",".join(f"{k}={v}" for k, v in sorted(m.series.labels.items()) if k != "job")
    return [m.series.metric, labels, adf, one, span, fc, str(len(m.skipped))]


def table(rows: list[list[str]]) -> str:
    head = ["metric", "partition", "ADF", "1h mean", "12h min..max", "next 10 min (95%)", "skip"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


GIB = 2**30
# Demo SLIs on the demo incidents (sla_common/demo.py), plus one set at the current value
# of free memory, which its 10-minute forecast is bound to cross.
DEMO_SLIS: list[dict[str, Any]] = [
    {
        "name": "fd-allocated",
        "selector": 'node_filefd_allocated{job="host"}',
        "max": 20000,
        "description": "file descriptors below 20k (demo: a spike 50-30 min before)",
    },
    {
        "name": "fd-normal",
        "selector": 'node_filefd_allocated{job="host"}',
        "max": 8000,
        "description": "file descriptors under 8k (normal 3-5.5k; demo: the spike, and the "
        "live incident's +6000)",
    },
    {
        "name": "memory-available",
        "selector": 'node_memory_MemAvailable_bytes{job="host"}',
        "min": 2 * GIB,
        "description": "at least 2 GiB available (demo: a leak 5h20-4h30 before)",
    },
    {
        "name": "root-disk-free",
        "selector": 'node_filesystem_avail_bytes{job="host"}',
        "labels": {"device": "/dev/sda2"},
        "min": 10 * GIB,
        "description": "10 GiB free on / (demo: filling up 2h40-2h before)",
    },
]


def request(method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (loopback)
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def current_value(prom: str, selector: str) -> float | None:
    url = f"{prom}/api/v1/query?query={urllib.parse.quote(selector)}"
    try:
        result = json.loads(http_text(url))["data"]["result"]
    except (OSError, ValueError, KeyError):
        return None
    return float(result[0]["value"][1]) if result else None


def put_slis(api: str, token: str, prom: str) -> list[dict[str, Any]]:
    slis = list(DEMO_SLIS)
    free = current_value(prom, 'node_memory_MemFree_bytes{job="host"}')
    if free is not None:
        slis.append(
            {
                "name": "memory-free-headroom",
                "selector": 'node_memory_MemFree_bytes{job="host"}',
                "max": round(free),
                "description": "free memory not above its value at demo start",
            }
        )
    for sli in slis:
        code, doc = request("POST", f"{api}/slis", token, sli)
        if code == 409:
            spec = {k: v for k, v in sli.items() if k != "name"}
            code, doc = request("PUT", f"{api}/slis/{sli['name']}", token, spec)
        if code not in (200, 201):
            print(f"  could not create SLI {sli['name']}: {code} {doc}")
    return slis


def sli_rows(api: str, slis: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for sli in slis:
        name = sli["name"]
        lo = human(sli["min"]) if "min" in sli else ""
        hi = human(sli["max"]) if "max" in sli else ""
        rng = f"{lo}..{hi}"
        _c, status = request("GET", f"{api}/slis/{name}/status")
        now = "-"
        if isinstance(status, dict) and status.get("series"):
            now = "ok" if status["outside"] == 0 else f"OUT ({status['outside']})"
        counts = []
        for window in ("1h", "3h", "12h"):
            _c, v = request("GET", f"{api}/slis/{name}/violations?window={window}&samples=false")
            counts.append(
                str(sum(s["violating"] for s in v["series"])) if isinstance(v, dict) else "?"
            )
        _c, f = request("GET", f"{api}/slis/{name}/forecast-violations?horizon=10m")
        predicted = "-"
        if isinstance(f, dict):
            hits = [s for s in f["series"] if s["violations"]]
            if hits:
                first = min(s["first_breach_at"] for s in hits)
                p = max(s["breach_probability"] or 0.0 for s in hits)
                at = time.strftime("%H:%M", time.gmtime(first))
                predicted = f"YES at {at} UTC (p={p:.2f})"
            elif f["series_without_forecast"] == f["series_total"]:
                predicted = "no forecast yet"
            else:
                predicted = "no"
        rows.append([name, rng, now, *counts, predicted])
    return rows


def sli_table(rows: list[list[str]]) -> str:
    head = ["SLI", "range", "now", "1h", "3h", "12h", "violation predicted in 10 min"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    return "\n".join(lines + [fmt.format(*r) for r in rows])


def wait_stored(api: str, wanted: int) -> None:
    """Until the SLA manager sees stored forecasts for the demo host (storage has caught up)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        _c, f = request("GET", f"{api}/slis/fd-allocated/forecast-violations?horizon=10m")
        if (
            isinstance(f, dict)
            and f.get("series_total", 0) >= wanted
            and (f["series_without_forecast"] == 0)
        ):
            return
        time.sleep(1)


# SLOs on three demo SLIs: the fd spike's (30 days); the live incident's (LIVE_SLO); the
# free-memory headroom's (7 days), whose forecast is bound to cross its range: the
# predicted-breach alert's case.
# LIVE_SLO is 99.9 % so that the live incident's 3 minutes page: 14.4x over 1 h is 1.44 % of
# the hour (52 s: four 15 s evaluations), 14.4x over 5 min one evaluation in 20; at 99.5 %
# the page needs 4.3 minutes of the hour, longer than the incident.
LIVE_SLO = "fd-normal-budget"
DEMO_SLOS: list[dict[str, Any]] = [
    {"name": "fd-budget", "sli": "fd-allocated", "objective": 99.5, "period": "30d"},
    {"name": LIVE_SLO, "sli": "fd-normal", "objective": 99.9, "period": "30d"},
    {"name": "memory-headroom-budget", "sli": "memory-free-headroom", "objective": 99.0,
     "period": "7d"},
]  # fmt: skip


def put_slos(api: str, token: str, slis: list[dict[str, Any]]) -> list[str]:
    names = []
    known = {s["name"] for s in slis}
    for slo in DEMO_SLOS:
        if slo["sli"] not in known:
            continue
        code, doc = request("POST", f"{api}/slos", token, slo)
        if code == 409:
            spec = {k: v for k, v in slo.items() if k != "name"}
            code, doc = request("PUT", f"{api}/slos/{slo['name']}", token, spec)
        if code in (200, 201):
            names.append(slo["name"])
        else:
            print(f"  could not create SLO {slo['name']}: {code} {doc}")
    return names


def backfill_slo_rules(state: Path, facts: dict[str, Any]) -> None:
    """The SLO recording rules over the demo history (once per Prometheus data dir): the
    SLOs then have the demo incidents in their past, and the burn-rate alerts see them."""
    demo = facts.get("demo") or {}
    marker = state / "data" / "prometheus" / ".slo-backfilled"
    if not demo.get("end") or not demo.get("hours") or marker.exists():
        return
    start = int(demo["end"]) - int(demo["hours"]) * 3600
    print("\nBackfilling the SLO recording rules over the demo history (promtool) ...")
    argv = [sys.executable, str(REPO / "scripts" / "slo_backfill.py"), f"--start={start}"]
    result = subprocess.run(argv, timeout=600, check=False)
    if result.returncode == 0:
        marker.write_text(f"{start}\n")


def _pct(x: float | None, scale: float = 100.0) -> str:
    return "-" if x is None else f"{scale * x:.1f}%"


def slo_report(api: str, prom: str, names: list[str]) -> str:
    """The SLOs' status once Prometheus has evaluated their rules, and the alerts' states."""
    deadline = time.monotonic() + 60
    rows = []
    for name in names:
        _c, st = request("GET", f"{api}/slos/{name}")
        while isinstance(st, dict) and st.get("compliance") is None and time.monotonic() < deadline:
            time.sleep(2)
            _c, st = request("GET", f"{api}/slos/{name}")
        if not isinstance(st, dict):
            continue
        burn = {b["window"]: b["burn_rate"] for b in st["burn_rates"]}
        ex = st["exhaustion_s"]
        rows.append([
            name, f"{st['objective']}% / {st['period']}", _pct(st["compliance"], 1.0),
            _pct(st["budget"]["remaining"]),
            "-" if burn.get("5m") is None else f"{burn['5m']:.1f}x",
            "-" if burn.get("1h") is None else f"{burn['1h']:.1f}x",
            "never" if ex is None else f"{ex / 3600:.1f} h",
        ])  # fmt: skip
    head = ["SLO", "objective", "compliance", "budget left", "burn 5m", "burn 1h", "exhausted in"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)


LIVE_INCIDENT_FILE = "demo-live-incident.json"  # written by scripts/demo_live.py schedule
DETECTOR = "anomaly_detection"
READ_S = 30  # the bounded read of the anomaly topic
AFTER_INCIDENT_WAIT_S = 300
STATUSES = ("LEARNING", "SAFE", "WARN", "ERROR")
MAX_WARN_ROWS = 10


# The demo history's incidents, explained (EXstream, issue 15): the SLIs that cover them,
# searched over the 12 h before the history's end (the live incident comes later).
EXPLAINED_SLIS = ("memory-available", "root-disk-free", "fd-allocated")
EXPLAIN_WINDOW_S = 12 * 3600
SHOWN_RANKED = 3


def explanation_lines(name: str, doc: dict[str, Any]) -> list[str]:
    """An SLI's violation explanation (the REST answer) in a few lines: which series left its
    range when, the predicates joined by AND, the best ranked series."""
    spans = ", ".join(f"{_hms(a)[:5]}-{_hms(b)[:5]}" for a, b in doc["anomalous"])
    lines = [f"  {name}: {doc['series']} outside its range {spans} UTC"]
    if doc["explanation"]:
        first, *rest = doc["explanation"]
        lines += [f"    {first}", *(f"    AND {p}" for p in rest)]
    else:
        lines.append("    no series separates it from the reference")
    top = ", ".join(f"{s['series']} ({s['distance']:.2f})" for s in doc["ranked"][:SHOWN_RANKED])
    if top:
        lines.append(f"    ranked first: {top}")
    lines.append(
        f"    {doc['candidates']} candidates, {doc['false_positives']} dropped as false "
        f"positives, {len(doc['excluded'])} excluded as the SLI's own series or its copies"
    )
    return lines


def explanation_section(api: str, end: float) -> str:
    """What changed during each demo incident, by the SLI that caught it."""
    lines = [
        "\nWhat else changed during each incident (EXstream explanations; "
        "GET /slis/NAME/violations/explanation):"
    ]
    start = end - EXPLAIN_WINDOW_S
    for name in EXPLAINED_SLIS:
        url = f"{api}/slis/{name}/violations/explanation?start={start:.0f}&end={end:.0f}"
        code, doc = request("GET", url)
        if code == 200 and isinstance(doc, dict):
            lines += explanation_lines(name, doc)
        else:
            detail = doc.get("detail") if isinstance(doc, dict) else doc
            if isinstance(detail, list) and detail and isinstance(detail[0], dict):
                detail = detail[0].get("msg")
            lines.append(f"  {name}: not explained ({code}: {detail})")
    return "\n".join(lines)


def anomaly_records(bootstrap: str, topic: str) -> list[AnomalyRecord]:
    """Every record on ``topic`` up to its end offsets now (at most READ_S), one per window."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out: dict[tuple[str, str, float], AnomalyRecord] = {}
        deadline = time.monotonic() + READ_S
        while time.monotonic() < deadline and any(consumer.position(tp) < ends[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    try:
                        rec = AnomalyRecord.from_bytes(r.value)
                    except ValueError:
                        continue
                    out[rec.idempotency_key()] = rec  # at-least-once: a retry repeats a window
        return sorted(out.values(), key=lambda a: (a.window.start, a.series.key))
    finally:
        consumer.close()


def metric_values(url: str, name: str) -> dict[str, float]:
    """``name``'s samples on ``url`` as {label text: value} ({} when it does not answer)."""
    try:
        text = http_text(url)
    except OSError:
        return {}
    pat = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.M)
    return {m.group(1) or "": float(m.group(2)) for m in pat.finditer(text)}


def live_incident(state: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads((state / LIVE_INCIDENT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc


def _hms(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def wait_incident_judged(metrics_url: str, incident: dict[str, Any]) -> None:
    """Until the detector has emitted a window ending after the incident (bounded)."""
    end = float(incident["end"])
    time.sleep(max(0.0, end - time.time()))
    deadline = time.monotonic() + AFTER_INCIDENT_WAIT_S
    while time.monotonic() < deadline:
        latest = metric_values(metrics_url, "anomaly_latest_window_end_seconds").get("", 0.0)
        if latest >= end:
            return
        time.sleep(2)


def anomaly_section(facts: dict[str, Any], state: Path, after_incident: bool = False) -> str:
    """The detector's WARN/ERROR windows so far, and the live incident that should cause some."""
    port = facts["suite_ports"].get(DETECTOR)
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    topic = os.environ.get("KAFKA_ANOMALY_TOPIC", "anomaly")
    incident = live_incident(state)
    if after_incident and incident is not None:
        wait_incident_judged(metrics_url, incident)
    lines = [f"\nAnomaly detector (python -m {DETECTOR}; records on Kafka topic '{topic}'):"]
    counts = metric_values(metrics_url, "anomaly_windows_total")
    if counts:
        status = {st: counts.get('{status="' + st + '"}', 0.0) for st in STATUSES}
        judged = ", ".join(f"{st} {n:.0f}" for st, n in status.items())
        lines.append(f"  windows judged by this process: {judged}")
    else:
        lines.append(f"  the detector does not answer on {metrics_url} (not started?)")
    if incident is not None:
        now = time.time()
        start, end = float(incident["start"]), float(incident["end"])
        when = (
            f"starts in {start - now:.0f} s" if now < start else ("on now" if now < end else "over")
        )
        lines.append(
            f"  live incident: {incident['key']} +{float(incident['shift']):g} from {_hms(start)} "
            f"to {_hms(end)} UTC ({when})"
        )
    records = anomaly_records(facts["kafka"]["bootstrap_servers"], topic)
    errors = [r for r in records if r.status == "ERROR"]
    warns = [r for r in records if r.status == "WARN"]
    if not errors and not warns:
        lines.append("  no WARN or ERROR window yet")
        return "\n".join(lines)
    # Every ERROR window, the latest WARN ones (a 1-sigma band is left now and then).
    shown = sorted([*errors, *warns[-MAX_WARN_ROWS:]], key=lambda a: (a.window.start, a.series.key))
    if len(warns) > MAX_WARN_ROWS:
        lines.append(f"  ({len(warns) - MAX_WARN_ROWS} earlier WARN windows not shown)")
    head = ["metric", "partition", "window (UTC)", "mean", "normal mean", "deviation", "status"]
    rows = [
        [
            r.series.metric,
            ",".join(f"{k}={v}" for k, v in sorted(r.series.labels.items()) if k != "job"),
            f"{_hms(r.window.start)}-{_hms(r.window.end)}",
            human(r.mean),
            human(r.normal.mean),
            f"{r.deviation:+.1f} sd" if abs(r.deviation) < 1e6 else f"{r.deviation:+.1e} sd",
            r.status,
        ]
        for r in shown
    ]
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    fmt = "  " + "  ".join(f"{{:<{w}}}" for w in widths)
    lines += [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*x).rstrip() for x in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- alerts

ALERT_WAIT_S = 180  # --after-incident: for the live incident's page to reach Alertmanager
HISTORY_S = 3600  # alerts that fired and resolved: looked for this far back (Prometheus' ALERTS)
STEP_S = 15
EVALUATED_WAIT_S = 60


def get_json(url: str) -> Any:
    return json.loads(http_text(url))


def slo_alert_rules(prom: str, since: float) -> list[dict[str, Any]]:
    """Prometheus' alerting rules of SLOs, with their alerts (pending or firing), once every
    SLO group has been evaluated after ``since`` (a Prometheus that just restarted, as the
    backfill does, lists no alert until then; bounded: EVALUATED_WAIT_S); [] when
    Prometheus does not answer."""
    deadline = time.monotonic() + EVALUATED_WAIT_S
    while True:
        try:
            groups = get_json(f"{prom}/api/v1/rules?type=alert")["data"]["groups"]
        except (OSError, ValueError, KeyError):
            groups = []
        ours = [g for g in groups if any("slo" in r.get("labels", {}) for r in g["rules"])]
        fresh = all(rfc3339(g.get("lastEvaluation", "")) >= since for g in ours)
        if (ours and fresh) or time.monotonic() > deadline:
            return [r for g in ours for r in g["rules"] if "slo" in r.get("labels", {})]
        time.sleep(2)


def alertmanager_alerts(am: str | None) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds now (active, or suppressed by an inhibition)."""
    if not am:
        return []
    try:
        alerts: list[dict[str, Any]] = get_json(f"{am}/api/v2/alerts")
    except (OSError, ValueError):
        return []
    return alerts


def fired(prom: str, start: float, end: float) -> dict[tuple[str, ...], tuple[float, float]]:
    """Every SLO alert that was firing between ``start`` and ``end``: its first and last
    evaluation (Prometheus' ALERTS series), by alert key."""
    q = urllib.parse.quote('ALERTS{alertstate="firing",slo!=""}')
    url = f"{prom}/api/v1/query_range?query={q}&start={start:.0f}&end={end:.0f}&step={STEP_S}"
    try:
        result = get_json(url)["data"]["result"]
    except (OSError, ValueError, KeyError):
        return {}
    out = {}
    for series in result:
        times = [float(t) for t, _v in series["values"]]
        if times:
            out[alert_key(series["metric"])] = (min(times), max(times))
    return out


def alert_key(labels: dict[str, str]) -> tuple[str, ...]:
    return (labels.get("slo", ""), labels.get("alertname", ""), labels.get("severity", ""))


def rfc3339(text: str) -> float:
    """Prometheus' and Alertmanager's times (nanoseconds and a Z) as Unix seconds; 0 for
    what is not one (Prometheus' zero time for a group never evaluated)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _value(alertname: str, value: str) -> str:
    v = float(value)
    return f"p={v:.2f}" if alertname == "SliBreachPredicted" else f"{v:.1f}x burn"


def _am_state(alert: dict[str, Any] | None) -> str:
    if alert is None:
        return "-"
    status = alert.get("status", {})
    if status.get("inhibitedBy"):
        return "suppressed (inhibited by a page)"
    if status.get("silencedBy"):
        return "suppressed (silenced)"
    receivers = ",".join(r["name"] for r in alert.get("receivers", []))
    return f"{status.get('state', '?')} -> {receivers or '?'}"


def _labels_text(labels: dict[str, str]) -> str:
    keep = {k: v for k, v in sorted(labels.items()) if k not in ("alertname", "severity")}
    return ",".join(f"{k}={v}" for k, v in keep.items())


def wait_live_page(am: str, incident: dict[str, Any]) -> None:
    """Until Alertmanager holds the live incident's page (bounded: ALERT_WAIT_S after the
    incident's start at the latest)."""
    deadline = max(time.time(), float(incident["start"])) + ALERT_WAIT_S
    while time.time() < deadline:
        for a in alertmanager_alerts(am):
            if alert_key(a["labels"]) == (LIVE_SLO, "SloErrorBudgetBurn", "page"):
                return
        time.sleep(2)


def alert_section(facts: dict[str, Any], state: Path, after_incident: bool = False) -> str:
    """The SLO alerts: pending or firing now in Prometheus (with when a pending one fires),
    what Alertmanager holds of them, those that fired in the last hour and resolved, and
    what is expected of the live incident's page and of the predicted-breach alerts."""
    prom = facts["prometheus"]["url"]
    am = (facts.get("alertmanager") or {}).get("url")
    incident = live_incident(state)
    if after_incident and am and incident is not None:
        wait_live_page(am, incident)
    rules = slo_alert_rules(prom, time.time())
    now = time.time()
    held = {alert_key(a["labels"]): a for a in alertmanager_alerts(am)}
    history = fired(prom, now - HISTORY_S, now)
    lines = [
        "\nSLO alerts (the SLA manager's rules, evaluated by Prometheus every 15 s and sent to "
        f"Alertmanager {am or '(none in this stack)'}):"
    ]
    if not rules:
        lines.append("  Prometheus has no SLO alerting rule loaded (no SLO yet?)")
        return "\n".join(lines)
    head = ["alert", "severity", "state", "since", "value", "Alertmanager", "labels"]
    keyed: list[tuple[tuple[str, ...], list[str]]] = []
    for rule in rules:
        for a in rule.get("alerts", []):
            labels, key = a["labels"], alert_key(a["labels"])
            since = rfc3339(a["activeAt"])
            state_text = a["state"]
            if state_text == "pending":
                state_text += f" (fires {_hms(since + float(rule.get('duration', 0)))})"
            else:  # a restart (the backfill's) starts a firing alert again: its first
                # firing evaluation in the last hour is when it started
                since = min(since, history.get(key, (now, now))[0])
            keyed.append((key, [
                labels["alertname"], labels.get("severity", "-"), state_text, _hms(since),
                _value(labels["alertname"], a["value"]), _am_state(held.get(key)),
                _labels_text(labels),
            ]))  # fmt: skip
    active = {key for key, _row in keyed}
    for key, (first, last) in history.items():
        if key not in active:
            slo, alertname, severity = key
            keyed.append((key, [
                alertname, severity, f"resolved {_hms(last + STEP_S)}", _hms(first), "-", "-",
                f"slo={slo}",
            ]))  # fmt: skip
    rows = [row for _key, row in sorted(keyed)]
    if any(r["name"] == "none" for a in held.values() for r in a.get("receivers", [])):
        lines.append(
            "  (Alertmanager's receiver is 'none': set STACK_ALERT_WEBHOOK_URL before `make up` "
            "to have them posted to a webhook)"
        )
    if rows:
        widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
        fmt = "  " + "  ".join(f"{{:<{w}}}" for w in widths)
        lines += [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*x).rstrip() for x in rows]
    else:
        lines.append("  none pending or firing, none fired in the last hour")
    lines += expectations(prom, rules, active | set(history), incident, now)
    return "\n".join(lines)


def expectations(
    prom: str,
    rules: list[dict[str, Any]],
    seen: set[tuple[str, ...]],
    incident: dict[str, Any] | None,
    now: float,
) -> list[str]:
    """What is expected of the alerts that have not fired."""
    out = []
    page = (LIVE_SLO, "SloErrorBudgetBurn", "page")
    has_live = any(alert_key({**r["labels"], "alertname": r["name"]}) == page for r in rules)
    if has_live and page not in seen and incident is not None:
        start, end = float(incident["start"]), float(incident["end"])
        if now < end + 60:
            out.append(
                f"  expected: the page of {LIVE_SLO} within about a minute of the live "
                f"incident's start ({_hms(start)} UTC): 14.4x burn over 1 h and 5 min"
            )
        else:
            out.append(f"  the page of {LIVE_SLO} did not fire during the live incident")
    for r in rules:
        key = alert_key({**r["labels"], "alertname": r["name"]})
        if r["name"] != "SliBreachPredicted" or key in seen:
            continue
        expr, _gt, threshold = r["query"].rpartition(">")
        value = current_value(prom, expr.strip())
        p = "no fresh forecast" if value is None else f"p={value:.2f} now"
        out.append(
            f"  {r['name']} of {key[0]}: fires when the breach probability stays above "
            f"{threshold.strip()} for {float(r.get('duration', 0)) / 60:g} min ({p})"
        )
    return out


OUTLIERS_EXECUTOR = "anomaly_detection.outliers:serve"
OUTLIERS_SELECTOR = 'node_filefd_allocated{job="host"}'


def outliers_section(facts: dict[str, Any]) -> tuple[str, str | None]:
    """One POST /calculate to the autoencoder's executor over the last hour, summarised, and the
    curl command that makes it ("" and None if the executor is not part of this stack)."""
    port = facts.get("other_ports", {}).get(OUTLIERS_EXECUTOR)
    if port is None:
        return "", None
    url = f"http://127.0.0.1:{port}/calculate"
    end = float(facts.get("demo", {}).get("end") or time.time())
    body = {"selector": OUTLIERS_SELECTOR, "start": end - 3600, "end": end, "step": 60}
    curl = (
        f"curl -s -XPOST {url} -H 'Content-Type: application/json' "
        f"-d '{json.dumps(body, separators=(',', ':'))}'"
    )
    lines = [f"\nAutoencoder outliers (POST {url}, {OUTLIERS_SELECTOR}, the last hour of history):"]
    try:
        status, answer = request("POST", url, body=body)
    except OSError as e:
        lines.append(f"  the executor does not answer ({e}; STACK_DEMO_OUTLIERS=0?)")
        return "\n".join(lines), curl
    if status != 200 or not isinstance(answer, dict):
        lines.append(f"  HTTP {status}: {answer}")
        return "\n".join(lines), curl
    for ser in answer.get("series", []):
        how = (
            f"autoencoder v{ser.get('model_version')}"
            if not ser.get("fallback")
            else f"{ser.get('model')} ({ser.get('fallback_reason')})"
        )
        lines.append(
            f"  {ser.get('series')}: {ser.get('points')} points, "
            f"{ser.get('anomalies')} anomalies, scored by {how}"
        )
    if any(ser.get("fallback") for ser in answer.get("series", [])):
        lines.append(
            "  (the trainer trains each demo-host series within minutes of the start; until "
            "then the isolation forest scores it)"
        )
    return "\n".join(lines), curl


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo_report.py", description=__doc__)
    parser.add_argument("--anomalies", action="store_true", help="the detector's section")
    parser.add_argument("--alerts", action="store_true", help="the SLO alerts' section")
    parser.add_argument(
        "--after-incident",
        action="store_true",
        help="first wait for the live incident's windows (and its page at Alertmanager)",
    )
    args = parser.parse_args(argv)
    state = Path(os.environ.get("STACK_DIR") or REPO / ".stack")
    facts: dict[str, Any] = json.loads((state / "stack.json").read_text())
    if args.anomalies or args.alerts:
        if args.anomalies:
            print(anomaly_section(facts, state, after_incident=args.after_incident))
        if args.alerts:
            print(alert_section(facts, state, after_incident=args.after_incident))
        return 0
    env = facts["env"]
    etl_port = facts["suite_ports"]["etl_data_pipeline"]
    api = f"http://127.0.0.1:{facts['suite_ports']['sla_manager']}"
    token = env["SLA_API_TOKEN"]
    metrics_url = f"http://127.0.0.1:{etl_port}/metrics"
    topic = os.environ.get("KAFKA_TOPIC", "prometheusdata")
    prom = facts["prometheus"]["url"]
    print(f"\nWaiting (up to {WAIT_S} s) for the ETL's first cycle ({metrics_url}) ...")
    deadline = time.monotonic() + WAIT_S
    while successes(metrics_url) < 1:
        if time.monotonic() > deadline:
            log = state / "logs" / "etl_data_pipeline.log"
            print(f"no successful ETL cycle after {WAIT_S} s; see {log}")
            return 1
        time.sleep(1)
    msgs = latest_messages(facts["kafka"]["bootstrap_servers"], topic)
    print(
        f"\nFirst cycle done: {len(msgs)} series analysed over the last 12 h and published to "
        f"Kafka topic '{topic}'.\n"
    )
    print(table([row(m) for m in msgs]))
    print(
        "\nHow to read it: ADF says whether the series is stationary (p < 0.05) or wanders "
        "(unit root);\n'next 10 min' is the Holt-Winters point forecast at +10 min with its 95 % "
        "interval.\nThe demo host (job=host) has incidents in the last 12 h: a memory leak "
        "(5h30-4h30 ago),\na disk filling up (2h40-2h ago) and a file-descriptor spike "
        "(50-30 min ago); the real\nnode-exporter of this machine (job=node) is analysed too.\n"
    )
    slis = put_slis(api, token, prom)
    wait_stored(api, 1)
    print("SLIs (violations = evaluations outside the range, one a minute):\n")
    print(sli_table(sli_rows(api, slis)))
    slos = put_slos(api, token, slis)
    if slos:
        backfill_slo_rules(state, facts)
        print("\nSLOs (rules generated by the SLA manager, evaluated by Prometheus):\n")
        print(slo_report(api, prom, slos))
        print(alert_section(facts, state))
    demo_end = facts.get("demo", {}).get("end")
    if demo_end:
        print(explanation_section(api, float(demo_end)))
    print(anomaly_section(facts, state))
    outliers, outliers_curl = outliers_section(facts)
    if outliers:
        print(outliers)
    q = urllib.parse.quote(
        "histogram_quantile(0.95, sum by (le, analysis) "
        "(rate(sla_etl_analysis_duration_seconds_bucket[12h])))"
    )
    print("\nWhere to look:")
    print(f"  REST API (OpenAPI)   {api}/docs")
    print(f"  write token          {token}   (SLA_API_TOKEN in {state}/stack.env)")
    print(f"  violations           curl -s '{api}/slis/fd-allocated/violations?window=1h'")
    print(f"  predicted            curl -s '{api}/slis/memory-free-headroom/forecast-violations'")
    print(f"  ETL execution time   curl -s '{api}/etl/execution-time?window=12h'")
    if demo_end:
        t = int(demo_end)
        print(
            f"  explanation          curl -s '{api}/slis/fd-allocated/violations/explanation?"
            f"start={t - 3 * 3600}&end={t}'"
        )
    if outliers_curl:
        print(f"  autoencoder          {outliers_curl}")
    print(f"  SLO status           curl -s '{api}/slos/fd-budget'   (rules: {api}/rules)")
    if "alertmanager" in facts:
        print(f"  Alertmanager         {facts['alertmanager']['url']}")
    print(
        f"  new SLI              curl -s -XPOST {api}/slis -H 'Authorization: Bearer {token}' "
        '-H \'Content-Type: application/json\' -d \'{"name":"my-sli","selector":'
        '"node_filefd_allocated","max":10000}\''
    )
    # The client reads GRPC_TARGET and GRPC_API_TOKEN from the stack's environment.
    client = f"source {state}/stack.env; .venv/bin/python -m data_retrieval.client"
    print(f"  gRPC client (menu)   {client}")
    print(f"  gRPC client (JSON)   {client} series --json")
    print(f"  ETL metrics          {metrics_url}")
    print(
        f"  anomaly windows      make demo-report   "
        f"(detector: {prom}/classic/graph?g0.expr=anomaly_score)"
    )
    print(f"  ETL timings (p95)    {prom}/classic/graph?g0.expr={q}&g0.tab=1")
    print(f"  Prometheus           {prom}   (targets: {prom}/classic/targets)")
    print(f"  Kafka                {facts['kafka']['bootstrap_servers']}  topic '{topic}'")
    print(f"  environment          source {state}/stack.env")
    return 0


if __name__ == "__main__":
    sys.exit(main())
