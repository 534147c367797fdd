"""The streaming detector: throughput per process against quixstreams, latency, NAB accuracy.

- ``throughput``: 200,000 samples of 100 series produced to a fresh samples topic
  (3 partitions), then consumed by one detector process (``anomaly_detection.detector``:
  decode, windows, judge, produce to anomaly, checkpoints) and, in the same run over the
  same topic, by the same windows and judge on quixstreams (``bench.quix_detector``), each
  in its own process and consumer group. Two shapes: records of 10 samples 100 ms apart in
  500 ms windows (the reference's window; a record spans 2 windows), and records of one
  sample 15 s apart in the default 60 s windows (what the receiver gets from a 15 s scrape).
  samples/s counts from the first sample processed to the last (start-up excluded).
- ``latency``: the detector (1 s windows, no grace) while 100 series each send one sample
  every 100 ms (1,000 samples/s) stamped with the wall clock; for every sample, the time
  from its send to the arrival of its window's record on ``anomaly``; p50 and p99.
- ``accuracy``: :mod:`bench.nab_replay` (in process, the same window and judge code).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from bench import nab_replay
from sla_common.kafka import ensure_topics
from sla_common.samples import SampleBatch

REPO = Path(__file__).resolve().parent.parent
NAB = REPO.parent / "shared" / "nab"
SERIES = 100
TOTAL = 200_000
SHAPES = {
    "10 samples/record, 500 ms windows": {"per": 10, "step_ms": 100, "window_ms": 500},
    "1 sample/record, 60 s windows": {"per": 1, "step_ms": 15_000, "window_ms": 60_000},
}


def produce(
    bootstrap: str, topic: str, per: int, step_ms: int, total: int = TOTAL, partitions: int = 3
) -> None:
    ensure_topics(bootstrap, [topic], partitions=partitions)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    t0 = 1_700_000_000_000
    n = 0
    i = 0
    while n < total:
        for s in range(SERIES):
            ts = [t0 + (i + j) * step_ms for j in range(per)]
            xs = [10.0 + ((i + j + s) % 7) for j in range(per)]
            b = SampleBatch("cpu", {"host": f"h{s}"}, ts, xs)
            producer.send(topic, key=b.kafka_key(), value=b.to_bytes())
            n += per
        i += per
    producer.flush(timeout=120)
    producer.close()


def _run(engine: str, bootstrap: str, topic: str, window_ms: int) -> float:
    """One engine in its own process over ``topic``: its samples/s."""
    argv = [sys.executable, "-m", "bench.bench_detector", engine, bootstrap, topic, str(window_ms)]
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            return float(json.loads(line)["samples_per_s"])
    raise RuntimeError(f"{engine} failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")


def throughput(bootstrap: str, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for shape, cfg in SHAPES.items():
        runs: dict[str, list[float]] = {"detector": [], "quixstreams": []}
        for _ in range(repeats):
            topic = f"bench.det.{uuid.uuid4().hex[:8]}"
            produce(bootstrap, topic, cfg["per"], cfg["step_ms"])
            for engine, values in runs.items():
                values.append(_run(engine, bootstrap, topic, cfg["window_ms"]))
        out[shape] = {
            engine: {"samples_per_s_median": statistics.median(v), "runs": v}
            for engine, v in runs.items()
        }
    return out


def latency(
    bootstrap: str, seconds: float = 20.0, rate_per_series_hz: float = 10.0
) -> dict[str, Any]:
    p = f"bench.lat.{uuid.uuid4().hex[:8]}"
    samples, anomaly = f"{p}.samples", f"{p}.anomaly"
    ensure_topics(bootstrap, [samples, anomaly], partitions=3)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_SAMPLES_TOPIC": samples,
        "KAFKA_ANOMALY_TOPIC": anomaly,
        "KAFKA_SAMPLES_DLQ_TOPIC": f"{p}.dlq",
        "KAFKA_GROUP_ID": p,
        "ANOMALY_WINDOW_MS": "1000",
        "ANOMALY_GRACE_MS": "0",
        "ANOMALY_STATE_DIR": f"/tmp/{p}",  # noqa: S108
        "HTTP_PORT": "0",
        "LOG_LEVEL": "ERROR",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "anomaly_detection"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    arrivals: dict[tuple[bytes, int], float] = {}
    stop = threading.Event()

    def consume() -> None:
        c = KafkaConsumer(anomaly, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        while not stop.is_set():
            for recs in c.poll(timeout_ms=100).values():
                now = time.time()
                for r in recs:
                    start = round(json.loads(r.value)["window"]["start"] * 1000)
                    arrivals.setdefault((r.key, start), now)
        c.close()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        time.sleep(8)  # the detector joins its group
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        sent: list[tuple[bytes, int, float]] = []
        period = 1.0 / rate_per_series_hz
        end = time.time() + seconds
        nxt = time.time()
        while time.time() < end:
            now = time.time()
            ms = int(now * 1000)
            for s in range(SERIES):
                b = SampleBatch("cpu", {"host": f"h{s}"}, [ms], [1.0 + s])
                producer.send(samples, key=b.kafka_key(), value=b.to_bytes())
                sent.append((b.kafka_key(), ms - ms % 1000, now))
            producer.flush()
            nxt += period
            time.sleep(max(0.0, nxt - time.time()))
        producer.close()
        time.sleep(5)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=30)
        t.join(10)
    last_window = max(w for _, w, _ in sent)
    lat = sorted(
        arrivals[(k, w)] - at for k, w, at in sent if w < last_window and (k, w) in arrivals
    )
    missing = sum(1 for k, w, _ in sent if w < last_window and (k, w) not in arrivals)
    q = statistics.quantiles(lat, n=100)
    return {
        "rate_samples_per_s": SERIES * rate_per_series_hz,
        "window_ms": 1000,
        "grace_ms": 0,
        "samples": len(lat),
        "missing": missing,
        "p50_s": q[49],
        "p99_s": q[98],
        "target_p99_s": 1.0 + 0.0 + 1.0,
    }


def measure(bootstrap: str, repeats: int = 3) -> dict[str, Any]:
    return {
        "throughput": throughput(bootstrap, repeats),
        "latency": latency(bootstrap),
        "accuracy": nab_replay.measure(NAB),
    }


def summary(r: dict[str, Any]) -> str:
    lines = []
    for shape, engines in r["throughput"].items():
        d, q = engines["detector"], engines["quixstreams"]
        lines.append(
            f"detector {shape}: {d['samples_per_s_median']:.0f} samples/s vs quixstreams "
            f"{q['samples_per_s_median']:.0f} samples/s (median of {len(d['runs'])})"
        )
    la = r["latency"]
    lines.append(
        f"latency at {la['rate_samples_per_s']:.0f} samples/s, 1 s windows: p50 "
        f"{la['p50_s']:.2f} s, p99 {la['p99_s']:.2f} s (missing {la['missing']})"
    )
    for cat, kinds in r["accuracy"]["categories"].items():
        for kind, sc in kinds.items():
            lines.append(
                f"NAB {cat} {kind}: detected {sc['detected']}/{sc['labelled_windows']}, "
                f"false alarms {sc['false_alarms_per_day']:.2f}/day"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------- one engine, one process


def bench_settings(bootstrap: str, topic: str, window_ms: int, group: str, tag: str) -> Any:
    """The detector's settings for a benchmark process: its own output topics (``tag``),
    state under the temp directory, no grace, errors only."""
    from anomaly_detection.settings import DetectorSettings  # noqa: PLC0415

    return DetectorSettings(
        kafka_bootstrap_servers=bootstrap,
        kafka_samples_topic=topic,
        kafka_anomaly_topic=f"{topic}.{tag}.out",
        kafka_samples_dlq_topic=f"{topic}.{tag}.dlq",
        kafka_group_id=group,
        anomaly_window_ms=window_ms,
        anomaly_grace_ms=0,
        anomaly_state_dir=str(Path(tempfile.gettempdir()) / f"bench-{group}"),
        log_level="ERROR",
    )


def _engine_main(engine: str, bootstrap: str, topic: str, window_ms: int) -> None:
    from anomaly_detection.metrics import DetectorMetrics  # noqa: PLC0415

    group = f"{engine}{uuid.uuid4().hex[:8]}"
    settings = bench_settings(bootstrap, topic, window_ms, group, engine)
    metrics = DetectorMetrics(10)
    stop = threading.Event()
    started: list[float] = []

    def watch(on_done: Any) -> None:
        first = 0.0
        while True:
            n = metrics.samples._value.get()
            if n > 0 and not started:
                started.append(time.perf_counter())
                first = n
            if n >= TOTAL:
                dt = time.perf_counter() - started[0]
                print(json.dumps({"samples_per_s": (n - first) / dt}), flush=True)
                on_done()
                return
            time.sleep(0.02)

    if engine == "detector":
        from anomaly_detection.detector import Detector  # noqa: PLC0415

        threading.Thread(target=watch, args=(stop.set,), daemon=True).start()
        Detector(settings, metrics, stop=stop).run()
    else:
        from bench.quix_detector import Pipeline  # noqa: PLC0415

        app = Pipeline(settings, metrics).application()
        threading.Thread(target=watch, args=(app.stop,), daemon=True).start()
        app.run()


if __name__ == "__main__":
    _engine_main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
