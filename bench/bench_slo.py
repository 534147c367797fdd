"""SLO status latency (50 SLOs, 30-day period) against raw range queries, and Prometheus'
rule-evaluation time for 100 SLOs.

Starts ``python -m sla_manager`` itself (as bench_sla: fresh database, PROMETHEUS_URL, and
SLO_RULES_FILE from the stack's environment, so Prometheus loads what it writes), creates 50
SLIs on the demo host's gauges and one 30-day SLO on each (40 threshold SLOs, 10 ratio SLOs
on the CPU counter), waits until Prometheus has evaluated their rules, then measures:

- ``recording_rules``: ``GET /slos/{name}``, the answer from the rules' recorded series (one
  instant query whatever the period);
- ``raw_queries`` (baseline, same run): ``GET /slos/{name}?source=raw_queries``, the same
  figures computed from the SLI itself: for each window a subquery over the selector at the
  60 s step (43 200 evaluations for 30 days) or a rate over the raw counter samples;
- rule evaluation: 50 more SLOs (100), then Prometheus' own
  ``prometheus_rule_group_last_duration_seconds`` of the SLO groups, summed per evaluation
  cycle and the slowest group, after the groups have run a few times.

Everything is deleted at the end (the rule file is left empty).
"""

from __future__ import annotations

import os
import re
import secrets
import statistics
import sys
import time
from typing import Any

import httpx

from bench.bench_sla import _App, _create_slis, _drive, _median_runs

THRESHOLD_SLOS = 40
RATIO_SLOS = 10
EXTRA_SLOS = 50  # for the rule-evaluation figure: 100 in all
LATENCY_RUN = (1, 200, 8.0)
RAW_RUN = (1, 20, 30.0)  # the baseline is slow: fewer requests, same statistic
TARGET_P99_MS = 1000.0
_GROUP = re.compile(
    r'^prometheus_rule_group_last_duration_seconds\{rule_group="[^"]*;slo-[^"]*"\} (\S+)$'
)
RATIO = {
    "errors": 'sum(rate(node_cpu_seconds_total{job="host",mode="iowait"}[{{.window}}]))',
    "total": 'sum(rate(node_cpu_seconds_total{job="host"}[{{.window}}]))',
}


def _create_slos(client: httpx.Client, token: str, slis: list[str], prefix: str) -> list[str]:
    auth = {"Authorization": f"Bearer {token}"}
    names = []
    for i, sli in enumerate(slis):
        name = f"{prefix}-{i:02d}"
        body: dict[str, Any] = {"name": name, "objective": 99.5, "period": "30d"}
        if i < len(slis) - RATIO_SLOS:
            body["sli"] = sli
        else:
            body["ratio"] = RATIO
        r = client.post("/slos", json=body, headers=auth)
        r.raise_for_status()
        names.append(name)
    return names


def _wait_recorded(client: httpx.Client, names: list[str], timeout: float = 120.0) -> float:
    t0 = time.monotonic()
    pending = set(names)
    while pending:
        pending = {n for n in pending if client.get(f"/slos/{n}").json()["compliance"] is None}
        if pending and time.monotonic() - t0 > timeout:
            raise RuntimeError(f"no recorded series after {timeout:.0f} s for {sorted(pending)}")
        if pending:
            time.sleep(1)
    return time.monotonic() - t0


def _rule_durations(prometheus_url: str) -> list[float]:
    text = httpx.get(f"{prometheus_url}/metrics", timeout=10).text
    return [float(m.group(1)) for line in text.splitlines() if (m := _GROUP.match(line))]


def measure(repeats: int = 3) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    prometheus_url = os.environ.get("PROMETHEUS_URL", "http://127.0.0.1:9090")
    app = _App(token)
    names: list[str] = []
    try:
        slis = _create_slis(app.base_url, token)
        with httpx.Client(base_url=app.base_url, timeout=120) as c:
            names = _create_slos(c, token, slis, "bench-slo")
            waited = _wait_recorded(c, names)
            sample = c.get(f"/slos/{names[0]}").json()
            raw_sample = c.get(f"/slos/{names[0]}", params={"source": "raw_queries"}).json()
        out: dict[str, Any] = {
            "slos": len(names),
            "threshold_slos": len(names) - RATIO_SLOS,
            "ratio_slos": RATIO_SLOS,
            "period": sample["period"],
            "first_recorded_after_s": waited,
            "sample": {"recording_rules": sample["compliance"], "raw": raw_sample["compliance"]},
            "scenarios": {},
        }
        for label, query, run in (
            ("recording_rules", "", LATENCY_RUN),
            ("raw_queries", "?source=raw_queries", RAW_RUN),
        ):
            paths = [f"/slos/{n}{query}" for n in names]
            _drive(app.base_url, paths, 1, 5, 60.0)
            runs = [_drive(app.base_url, paths, *run) for _ in range(repeats)]
            out["scenarios"][label] = _median_runs(runs)
        s = out["scenarios"]
        out["p50_ratio"] = s["raw_queries"]["p50_ms"] / s["recording_rules"]["p50_ms"]
        out["target_p99_ms"] = TARGET_P99_MS
        out["target_met"] = s["recording_rules"]["p99_ms"] < TARGET_P99_MS

        with httpx.Client(base_url=app.base_url, timeout=120) as c:
            names += _create_slos(c, token, slis[:EXTRA_SLOS], "bench-more")
            _wait_recorded(c, names[-EXTRA_SLOS:])
        cycles = []
        for _ in range(max(repeats, 3)):
            time.sleep(16)  # one evaluation interval (15 s) and a scrape of Prometheus itself
            durations = _rule_durations(prometheus_url)
            cycles.append(
                {
                    "groups": len(durations),
                    "sum_s": sum(durations),
                    "max_s": max(durations, default=0.0),
                }
            )
        out["rule_evaluation_100_slos"] = {
            "groups": cycles[-1]["groups"],
            "sum_s_median": statistics.median(c["sum_s"] for c in cycles),
            "max_group_s_median": statistics.median(c["max_s"] for c in cycles),
            "cycles": cycles,
        }
        return out
    finally:
        with httpx.Client(base_url=app.base_url, timeout=60) as c:
            for n in names:
                c.delete(f"/slos/{n}", headers={"Authorization": f"Bearer {token}"})
        app.close()


def summary(result: dict[str, Any]) -> str:
    s = result["scenarios"]
    rec, raw = s["recording_rules"], s["raw_queries"]
    ev = result["rule_evaluation_100_slos"]
    return "\n".join(
        [
            f"slo: {result['slos']} SLOs ({result['threshold_slos']} threshold, "
            f"{result['ratio_slos']} ratio), period {result['period']}",
            f"  GET /slos/{{name}} from the recorded series: p50 {rec['p50_ms']:.1f} ms, "
            f"p99 {rec['p99_ms']:.1f} ms ({rec['requests']} requests)",
            f"  baseline, raw queries: p50 {raw['p50_ms']:.1f} ms, p99 {raw['p99_ms']:.1f} ms "
            f"({raw['requests']} requests); {result['p50_ratio']:.0f}x slower at p50",
            f"  target p99 < {result['target_p99_ms']:.0f} ms "
            f"{'met' if result['target_met'] else 'MISSED'}",
            f"  rule evaluation, 100 SLOs ({ev['groups']} groups): "
            f"{1000 * ev['sum_s_median']:.1f} ms per cycle in all, slowest group "
            f"{1000 * ev['max_group_s_median']:.1f} ms",
        ]
    )


if __name__ == "__main__":
    sys.stdout.write(summary(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 3)) + "\n")
