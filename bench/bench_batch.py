"""The Spark batch job's compute path (issue 16): series scored per second on Spark
``local[1]`` and ``local[2]`` against a plain one-process loop, in the same run.

Each series is made inside its task (a day at one point a minute, a daily cycle, noise and
one spike; deterministic per index), then trained and scored exactly as the job does
(:func:`anomaly_detection.batch.core.train` / ``score``, the same ``Params`` defaults):
no Prometheus, no MySQL, so what is measured is the work and Spark's overhead on it.
Spark figures exclude the session start, which is measured on its own; the first job of a
session (Python workers starting) is included, as a job run by the schedule pays it once.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np
import pandas as pd

from anomaly_detection.batch import core, job
from anomaly_detection.batch.settings import BatchSettings

POINTS = 1440
STEP = 60


def _params() -> core.Params:
    s = BatchSettings()
    return core.Params(
        s.batch_step_s, s.batch_windows_s, s.batch_min_points, s.batch_contamination, s.batch_trees
    )


def one(i: int, params: core.Params) -> int:
    """Make series ``i``, train on it, score it; the number of flagged points."""
    rng = np.random.default_rng(i)
    t = 1_700_000_000.0 + STEP * np.arange(POINTS, dtype=np.float64)
    v = 100 + 20 * np.sin(2 * np.pi * np.arange(POINTS) / POINTS) + rng.normal(0, 2, POINTS)
    v[int(rng.integers(200, POINTS))] += 60
    m = core.train(f"s{i}", t, v, params)
    assert isinstance(m, core.Model)
    return int(core.score(m, t, v, t[0]).flags.sum())


def _group(params: core.Params, pdf: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"i": pdf["i"], "flagged": [one(int(i), params) for i in pdf["i"]]})


def loop(n: int) -> float:
    params = _params()
    t0 = time.perf_counter()
    for i in range(n):
        one(i, params)
    return time.perf_counter() - t0


def train_ms(n: int) -> float:
    """Median milliseconds to train one series (features + forest), alone."""
    params = _params()
    times = []
    for i in range(n):
        rng = np.random.default_rng(i)
        t = 1_700_000_000.0 + STEP * np.arange(POINTS, dtype=np.float64)
        v = 100 + 20 * np.sin(2 * np.pi * np.arange(POINTS) / POINTS) + rng.normal(0, 2, POINTS)
        t0 = time.perf_counter()
        core.train(f"s{i}", t, v, params)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def spark(master: str, n: int, per_task: int, repeats: int) -> dict[str, Any]:
    params = _params()
    t0 = time.perf_counter()
    session = job.spark_session(BatchSettings(), master)
    start_s = time.perf_counter() - t0
    runs = []
    try:
        for _ in range(repeats):
            groups = (n + per_task - 1) // per_task
            session.conf.set("spark.sql.shuffle.partitions", str(groups))
            df = session.createDataFrame([(i // per_task, i) for i in range(n)], "grp int, i int")
            t1 = time.perf_counter()
            got = (
                df.groupBy("grp")
                .applyInPandas(lambda pdf: _group(params, pdf), "i int, flagged int")
                .collect()
            )
            runs.append(time.perf_counter() - t1)
            assert len(got) == n
    finally:
        session.stop()
    return {"session_start_s": round(start_s, 2), "runs_s": [round(r, 2) for r in runs]}


def measure(n: int = 200, per_task: int = 8, repeats: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {"series": n, "points": POINTS, "series_per_task": per_task}
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    loops = [loop(n) for _ in range(repeats)]
    out["loop"] = {"runs_s": [round(r, 2) for r in loops]}
    for master in ("local[1]", "local[2]"):
        out[master] = spark(master, n, per_task, repeats)
    for key in ("loop", "local[1]", "local[2]"):
        med = statistics.median(out[key]["runs_s"])
        out[key]["series_per_s_median"] = round(n / med, 2)
    base = out["loop"]["series_per_s_median"]
    for master in ("local[1]", "local[2]"):
        out[master]["vs_loop"] = round(out[master]["series_per_s_median"] / base, 2)
    out["train_and_score_ms_per_series_loop"] = round(1000 * statistics.median(loops) / n, 1)
    out["train_ms_per_series_median"] = round(train_ms(min(n, 50)), 1)
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def summary(r: dict[str, Any]) -> str:
    return (
        f"batch: {r['series']} series x {r['points']} points: loop "
        f"{r['loop']['series_per_s_median']} series/s, local[1] "
        f"{r['local[1]']['series_per_s_median']} ({r['local[1]']['vs_loop']}x), local[2] "
        f"{r['local[2]']['series_per_s_median']} ({r['local[2]']['vs_loop']}x); session start "
        f"{r['local[1]']['session_start_s']} / {r['local[2]']['session_start_s']} s; training "
        f"{r['train_ms_per_series_median']} ms a series; load "
        f"{r['load_average']}"
    )


if __name__ == "__main__":
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    res = measure(n)
    print(json.dumps(res, indent=1))
    print(summary(res))
