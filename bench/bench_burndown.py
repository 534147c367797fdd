"""The SLO page's burn-down (issue 18): one ``GET /slos/{name}/budget-history`` over the whole
period against what the page did before, and what it would have needed for the same points.

Starts ``python -m sla_manager`` on a fresh database (MYSQL_*, PROMETHEUS_URL from the
stack's environment, with the demo history), creates one threshold SLI on the demo host's
file descriptors and a 30-day SLO on it, then times, each ``repeats`` times (p50):

- ours: ``GET /slos/{name}/budget-history?source=raw_queries&points=121`` (the page's call:
  121 times over 30 days, one range query);
- baseline 1, what the page did before: ``GET /slos/{name}?time=t&source=raw_queries`` at
  25 times over the last day, 4 requests in flight (the page's limit);
- baseline 2, the same 121 points by the status route: ``GET /slos/{name}?time=t`` at each
  of the history's times, 4 in flight; its budget figures are compared with the history's
  (the largest absolute difference: the two must agree).
"""

from __future__ import annotations

import secrets
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from bench.bench_sla import _App

POINTS = 121
OLD_POINTS = 25
IN_FLIGHT = 4
SLI = {"name": "burn-fd", "selector": 'node_filefd_allocated{job="host"}', "max": 20000}
SLO = {"name": "burn-fd-30d", "sli": "burn-fd", "objective": 99.5, "period": "30d"}


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000.0, out


def _status_at(c: httpx.Client, times: list[float]) -> list[float | None]:
    def one(t: float) -> float | None:
        r = c.get(f"/slos/{SLO['name']}", params={"time": t, "source": "raw_queries"})
        r.raise_for_status()
        left: float | None = r.json()["budget"]["remaining"]
        return left

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        return list(pool.map(one, times))


def measure(repeats: int = 5) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    auth = {"Authorization": f"Bearer {token}"}
    app = _App(token)
    try:
        with httpx.Client(base_url=app.base_url, timeout=300) as c:
            c.post("/slis", json=SLI, headers=auth).raise_for_status()
            c.post("/slos", json=SLO, headers=auth).raise_for_status()
            end = round(time.time())
            path = f"/slos/{SLO['name']}/budget-history"
            params: dict[str, str | int] = {"source": "raw_queries", "points": POINTS, "end": end}
            c.get(path, params=params).raise_for_status()  # warm-up
            ours, old, same = [], [], []
            history: dict[str, Any] = {}
            for _ in range(repeats):
                ms, r = _timed(lambda: c.get(path, params=params))
                r.raise_for_status()
                ours.append(ms)
                history = r.json()
                day = [end - 86_400 + 86_400 * k / (OLD_POINTS - 1) for k in range(OLD_POINTS)]
                old.append(_timed(lambda day=day: _status_at(c, day))[0])
            times = [t for t, _v in history["points"]]
            agree = 0.0
            for _ in range(max(1, repeats // 2)):
                ms, lefts = _timed(lambda: _status_at(c, times))
                same.append(ms)
                for (_t, v), w in zip(history["points"], lefts, strict=True):
                    if (v is None) != (w is None):
                        agree = float("inf")
                    elif v is not None and w is not None:
                        agree = max(agree, abs(v - w))
        p50 = statistics.median
        return {
            "period": SLO["period"],
            "points": POINTS,
            "points_with_data": sum(1 for _t, v in history["points"] if v is not None),
            "step_s": history["step_s"],
            "ours_ms": ours,
            "ours_p50_ms": p50(ours),
            "old_page_25_points_last_day_ms": old,
            "old_page_p50_ms": p50(old),
            "status_route_121_points_ms": same,
            "status_route_p50_ms": p50(same),
            "ratio_old_page_to_ours": p50(old) / p50(ours),
            "ratio_same_points_to_ours": p50(same) / p50(ours),
            "max_abs_difference": agree,
        }
    finally:
        app.close()


def summary(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"burndown: {r['period']} SLO, {r['points']} points (one every {r['step_s']} s, "
            f"{r['points_with_data']} with data)",
            f"  GET /slos/{{name}}/budget-history (raw): p50 {r['ours_p50_ms']:.0f} ms",
            f"  baseline, the old page (25 x GET /slos/{{name}}?time= over the last day): p50 "
            f"{r['old_page_p50_ms']:.0f} ms ({r['ratio_old_page_to_ours']:.1f}x ours)",
            f"  baseline, the same 121 points by GET /slos/{{name}}?time=: p50 "
            f"{r['status_route_p50_ms']:.0f} ms ({r['ratio_same_points_to_ours']:.1f}x ours); "
            f"largest difference in budget left {r['max_abs_difference']:.2e}",
        ]
    )


if __name__ == "__main__":
    sys.stdout.write(summary(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5)) + "\n")
