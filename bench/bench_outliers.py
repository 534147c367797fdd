"""Autoencoder outliers (issue 17): training time per series (Keras on JAX vs the
scikit-learn MLP baseline) and the executor's ``POST /calculate`` latency, p50/p99.

Data: the demo's node_filefd_allocated (seed 42, ``sla_common.demo``). Training: 18 h at a
60 s step (1,080 points), the defaults of ``ModelParams`` (32-16-8-16-32, 20 epochs). The
/calculate figures run the executor's FastAPI app in-process (FastAPI's TestClient) over an
in-memory Prometheus answer: the executor's own cost (model cache check, scoring, JSON),
without Prometheus' query time. 12 h of one series at 15 s (2,881 points) and 50 series of
12 h at 60 s (721 points each), every series with a model.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from anomaly_detection.outliers.executor import create_app
from anomaly_detection.outliers.model import ModelParams, train
from anomaly_detection.outliers.store import MemoryStore, ModelCache
from sla_common import demo
from sla_common.prometheus import PrometheusClient, RangeSeries
from sla_common.series import series_key

END = 1_764_000_000
H = 3600


class _StaticPrometheus(PrometheusClient):
    def __init__(self, series: list[RangeSeries]) -> None:
        super().__init__("http://127.0.0.1:1")
        self.held = series

    def query_range(self, query: str, start: float, end: float, step: float) -> list[RangeSeries]:
        return self.held


def _fd(step: int, hours: float) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    s = next(x for x in demo.generate(42, END, 24.0, 15) if x.name == demo.FILEFD)
    m = (s.timestamps >= END - hours * H) & (s.timestamps % step == 0)
    return s.timestamps[m].astype(np.float64), s.values[m], dict(s.labels)


def _train_times(backend: str, repeats: int) -> list[float]:
    t, v, _ = _fd(60, 24)
    train_t, train_v = t[t < END - 6 * H], v[t < END - 6 * H]
    out = []
    for i in range(repeats):
        t0 = time.perf_counter()
        train(train_t, train_v, ModelParams(backend=backend, seed=i), "fd")  # type: ignore[arg-type]
        out.append(time.perf_counter() - t0)
    return out


def _latency(series: list[RangeSeries], requests: int) -> dict[str, float]:
    store = MemoryStore()
    fast = ModelParams(backend="mlp", epochs=5)
    for s in series:
        key = series_key(s.metric or "", s.labels)
        store.put(train(s.timestamps, s.values, fast, key))
    client = TestClient(create_app(_StaticPrometheus(series), ModelCache(store), 100, 11_000))
    body = {"selector": "x", "start": 0, "end": 43_200, "step": 60}
    client.post("/calculate", json=body)  # warm
    ms = []
    for _ in range(requests):
        t0 = time.perf_counter()
        r = client.post("/calculate", json=body)
        ms.append((time.perf_counter() - t0) * 1e3)
        assert r.status_code == 200, r.text
    q = np.quantile(ms, [0.5, 0.99])
    return {"p50_ms": round(float(q[0]), 1), "p99_ms": round(float(q[1]), 1), "requests": requests}


def measure(repeats: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {"train_s": {}}
    # The first Keras training in a process pays JAX's compile of the new shapes: reported.
    for backend in ("mlp", "keras"):
        times = _train_times(backend, repeats + 1)
        out["train_s"][backend] = {
            "first": round(times[0], 2),
            "median_after_first": round(statistics.median(times[1:]), 2),
            "runs": [round(x, 2) for x in times],
        }
    t, v, labels = _fd(15, 12)
    one = [RangeSeries({"__name__": demo.FILEFD, **labels}, t, v)]
    t, v, labels = _fd(60, 12)
    fifty = [
        RangeSeries({"__name__": demo.FILEFD, **labels, "shard": str(i)}, t, v + i)
        for i in range(50)
    ]
    out["calculate_one_series_12h_15s"] = _latency(one, 50)
    out["calculate_50_series_12h_60s"] = _latency(fifty, 20)
    return out


def summary(r: dict[str, Any]) -> str:
    lines = ["outliers: training time per series (18 h at 60 s, 1,080 points), s"]
    for b, x in r["train_s"].items():
        lines.append(f"  {b:6s} first {x['first']} s, then median {x['median_after_first']} s")
    for k in ("calculate_one_series_12h_15s", "calculate_50_series_12h_60s"):
        x = r[k]
        lines.append(f"  {k}: p50 {x['p50_ms']} ms, p99 {x['p99_ms']} ms ({x['requests']} req)")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(measure()))
