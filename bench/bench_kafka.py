"""Kafka publish throughput: batched (flush once) vs flush after every message, same run.

Messages are real ETL messages (one 12 h series analysed, ≈ 200 KB of JSON) and small
1 KB messages, sent to a fresh topic on the broker at ``bootstrap``.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import numpy as np

from etl_data_pipeline.analyses import analyse, prepare
from etl_data_pipeline.pipeline import build_message
from sla_common.kafka import ensure_topics, make_producer
from sla_common.messages import SeriesRef


def sample_message() -> bytes:
    n = 2880
    ts = 1_767_225_600 + 15 * np.arange(n)
    vs = 1e9 + 1e7 * np.sin(np.arange(n) / 40) + np.random.default_rng(0).normal(0, 1e5, n)
    end = int(ts[-1])
    res = analyse(prepare(ts, vs, 15), end)
    ref = SeriesRef(key='bench{job="x"}', metric="bench", labels={"job": "x"}, selector="bench")
    return build_message("bench", end, ref, end - 43200, end, res, 600).to_bytes()


def _publish(bootstrap: str, topic: str, payload: bytes, count: int, flush_each: bool) -> float:
    producer = make_producer(bootstrap, "bench")
    try:
        t = time.perf_counter()
        for i in range(count):
            producer.send(topic, key=f"k{i % 50}".encode(), value=payload)
            if flush_each:
                producer.flush(timeout=30)
        producer.flush(timeout=30)
        return count / (time.perf_counter() - t)
    finally:
        producer.close(timeout=5)


def measure(bootstrap: str, repeats: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, payload, count in (
        ("etl_message", sample_message(), 200),
        ("1KB", b"x" * 1024, 3000),
    ):
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        ensure_topics(bootstrap, [topic], partitions=3)
        batched = [_publish(bootstrap, topic, payload, count, False) for _ in range(repeats)]
        each = [_publish(bootstrap, topic, payload, count // 10, True) for _ in range(repeats)]
        out[label] = {
            "bytes": len(payload),
            "batched_msg_per_s_median": statistics.median(batched),
            "flush_each_msg_per_s_median": statistics.median(each),
            "ratio": statistics.median(batched) / statistics.median(each),
            "batched_runs": batched,
            "flush_each_runs": each,
        }
    return out
