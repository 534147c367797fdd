"""Remote-write receiver: samples per second accepted (204) from Prometheus-style batches.

The receiver runs as deployed (``python -m anomaly_detection.receiver``, uvicorn, one
process) against the broker at ``bootstrap``, on a fresh topic; every request is answered
only after the broker acknowledged its records, so the figure includes the Kafka round trip.
Requests are what Prometheus 2.42 sends: ``max_samples_per_send`` = 500 samples, either
500 series x 1 sample (live scraping of many series: the worst case for one record per
series) or 50 series x 10 samples (catching up a backlog), from 1 or 4 concurrent senders
(Prometheus' shards). The senders run on the same machine and share its cores.

``decode``: the same bodies decoded in-process (snappy, protobuf, records encoded), no HTTP
and no Kafka: the part of the cost that is the receiver's own code.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from anomaly_detection.receiver.decode import decode, write_request_body
from tests.integration.stackutil import REPO, free_port, stop_process, wait_until

HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
REQUESTS = 200  # per measured run: 100,000 samples
SHAPES = {"500x1": (500, 1), "50x10": (50, 10)}  # series x samples per series
SENDERS = (1, 4)
T0_MS = 1_767_225_600_000


def bodies(series: int, per_series: int, n: int) -> list[bytes]:
    out = []
    for r in range(n):
        t = T0_MS + r * per_series * 15_000
        out.append(
            write_request_body(
                (
                    {"__name__": "node_cpu_usage", "instance": f"host-{s}:9100", "job": "bench"},
                    [(t + i * 15_000, float((s * 7 + r + i) % 100)) for i in range(per_series)],
                )
                for s in range(series)
            )
        )
    return out


def _send(url: str, chunk: list[bytes]) -> int:
    ok = 0
    with httpx.Client(timeout=60) as client:
        for body in chunk:
            r = client.post(url, content=body, headers=HEADERS)
            ok += r.status_code == 204
    return ok


def one_run(url: str, reqs: list[bytes], senders: int) -> float:
    chunks = [reqs[i::senders] for i in range(senders)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        ok = sum(pool.map(lambda c: _send(url, c), chunks))
    took = time.perf_counter() - t0
    assert ok == len(reqs), f"{len(reqs) - ok} requests not accepted"
    return took


def measure(bootstrap: str, repeats: int = 3) -> dict[str, Any]:
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_SAMPLES_TOPIC": f"bench-samples-{uuid.uuid4().hex[:8]}",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-receiver-{port}.log"  # noqa: S108
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "anomaly_detection.receiver"],
            env=env,
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/api/v1/write"
    results: dict[str, Any] = {"requests_per_run": REQUESTS, "samples_per_request": 500}
    try:
        wait_until(lambda: _up(port) or proc.poll() is not None, timeout=30, what="receiver")
        assert proc.poll() is None, log.read_text()
        for name, (series, per) in SHAPES.items():
            reqs = bodies(series, per, REQUESTS)
            one_run(url, reqs[:20], 1)  # warm-up: connections, topic metadata
            decode_runs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for body in reqs:
                    decode(body, 64 << 20)
                decode_runs.append(REQUESTS * 500 / (time.perf_counter() - t0))
            row: dict[str, Any] = {
                "body_bytes_median": statistics.median(len(b) for b in reqs),
                "decode_samples_per_s_median": statistics.median(decode_runs),
            }
            for senders in SENDERS:
                runs = [REQUESTS * 500 / one_run(url, reqs, senders) for _ in range(repeats)]
                row[f"senders_{senders}"] = {
                    "samples_per_s_median": statistics.median(runs),
                    "samples_per_s_runs": runs,
                }
            results[name] = row
    finally:
        stop_process(proc, timeout=20)
    return results


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def summary(r: dict[str, Any]) -> str:
    parts = []
    for name in SHAPES:
        row = r[name]
        accepted = ", ".join(
            f"{s} sender{'s' if s > 1 else ''} {row[f'senders_{s}']['samples_per_s_median']:.0f}/s"
            for s in SENDERS
        )
        parts.append(
            f"{name} (series x samples per 500-sample request): accepted {accepted}; "
            f"decode alone {row['decode_samples_per_s_median']:.0f}/s"
        )
    return "receiver: " + "; ".join(parts)
