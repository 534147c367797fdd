"""Kafka publish: compression of real ETL messages (none / lz4 / zstd / gzip), and batching.

Messages are real ETL messages: one demo gauge (``node_memory_MemFree_bytes`` of the demo
host, seed 42) over a 12 h and a 48 h window at 15 s, analysed and encoded by the ETL's own
code (≈ 270 KB and ≈ 1.06 MB of JSON), sent by :func:`sla_common.kafka.make_producer` (the
ETL's producer) to a fresh topic on the broker at ``bootstrap``.

- ``compression``: for each codec and message, publish throughput (msg/s, flush once at the
  end), the producer process' CPU per message, and the bytes on the wire: the record batch
  kafka-python builds for the message (each ETL message is larger than a producer batch, so
  it is a batch of its own), checked against the producer's own ``batch-size-avg`` metric,
  and the time a consumer takes to read the message out of that batch (decompression).
  The codecs run interleaved in every repeat, so their ratios come from one run.
- ``batching``: flush once vs flush after every message, for the 12 h message and 1 KiB
  messages (uncompressed), as measured for issue 3.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from typing import Any

from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

from sla_common.kafka import Compression, ensure_topics, make_producer
from tests.integration.retrievalutil import demo_messages

CODECS: tuple[Compression, ...] = ("none", "lz4", "zstd", "gzip")
END = 1_767_225_600  # fixed: the same messages every run
WINDOWS_H = (12, 48)
COUNTS = {12: 100, 48: 50}  # messages per measured publish
CODEC_IDS = {
    "none": DefaultRecordBatchBuilder.CODEC_NONE,
    "gzip": DefaultRecordBatchBuilder.CODEC_GZIP,
    "lz4": DefaultRecordBatchBuilder.CODEC_LZ4,
    "zstd": DefaultRecordBatchBuilder.CODEC_ZSTD,
}


def etl_message(hours: int) -> bytes:
    """The ETL's message for the demo host's free memory over the last ``hours`` hours."""
    (msg,) = demo_messages(
        seed=42, end=END, runs=[0], window_s=hours * 3600, names=["node_memory_MemFree_bytes"]
    )
    return msg.to_bytes()


def batch(payload: bytes, codec: str) -> bytes:
    """The record batch kafka-python builds for ``payload`` alone with ``codec``."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=CODEC_IDS[codec], batch_size=1 << 20)
    builder.append(0, b"k0", payload)
    builder.close()
    return bytes(builder.buffer())


def decode_ms(raw: bytes, times: int = 20) -> float:
    """Median time a consumer takes to read the value out of the batch ``raw`` (decompress)."""
    runs = []
    for _ in range(times):
        t = time.perf_counter()
        for rec_batch in MemoryRecords(raw):
            for record in rec_batch:
                assert record.value
        runs.append(1000 * (time.perf_counter() - t))
    return statistics.median(runs)


def _publish(
    bootstrap: str,
    topic: str,
    payload: bytes,
    count: int,
    flush_each: bool,
    codec: Compression = "none",
) -> tuple[float, float, float]:
    """(msg/s, producer CPU ms per message, producer's batch-size-avg) for ``count`` sends."""
    producer = make_producer(bootstrap, "bench", compression=codec)
    try:
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            producer.send(topic, key=f"k{i % 50}".encode(), value=payload)
            if flush_each:
                producer.flush(timeout=60)
        producer.flush(timeout=60)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        metrics = producer.metrics().get("producer-metrics", {})
        return count / wall, 1000 * cpu / count, float(metrics.get("batch-size-avg", 0.0))
    finally:
        producer.close(timeout=5)


def _compression(bootstrap: str, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for hours in WINDOWS_H:
        payload = etl_message(hours)
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        ensure_topics(bootstrap, [topic], partitions=3)
        runs: dict[str, list[tuple[float, float, float]]] = {c: [] for c in CODECS}
        for _ in range(repeats):
            for codec in CODECS:  # interleaved: every repeat measures all codecs side by side
                runs[codec].append(_publish(bootstrap, topic, payload, COUNTS[hours], False, codec))
        per: dict[str, Any] = {}
        for codec in CODECS:
            rate = statistics.median(r[0] for r in runs[codec])
            raw = batch(payload, codec)
            wire = len(raw)
            per[codec] = {
                "consumer_decode_ms_median": decode_ms(raw),
                "msg_per_s_median": rate,
                "uncompressed_mb_per_s_median": rate * len(payload) / 1e6,
                "cpu_ms_per_msg_median": statistics.median(r[1] for r in runs[codec]),
                "wire_bytes_per_msg": wire,
                "producer_batch_size_avg": statistics.median(r[2] for r in runs[codec]),
                "size_ratio": len(payload) / wire,
                "runs_msg_per_s": [r[0] for r in runs[codec]],
            }
        for codec in CODECS:
            per[codec]["throughput_vs_none"] = (
                per[codec]["msg_per_s_median"] / per["none"]["msg_per_s_median"]
            )
        out[f"{hours}h"] = {"message_bytes": len(payload), "count": COUNTS[hours], "codecs": per}
    return out


def _batching(bootstrap: str, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, payload, count in (
        ("etl_message_12h", etl_message(12), 200),
        ("1KB", b"x" * 1024, 3000),
    ):
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        ensure_topics(bootstrap, [topic], partitions=3)
        batched = [_publish(bootstrap, topic, payload, count, False)[0] for _ in range(repeats)]
        each = [_publish(bootstrap, topic, payload, count // 10, True)[0] for _ in range(repeats)]
        out[label] = {
            "bytes": len(payload),
            "batched_msg_per_s_median": statistics.median(batched),
            "flush_each_msg_per_s_median": statistics.median(each),
            "ratio": statistics.median(batched) / statistics.median(each),
            "batched_runs": batched,
            "flush_each_runs": each,
        }
    return out


def measure(bootstrap: str, repeats: int = 3) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    return {
        "compression": _compression(bootstrap, repeats),
        "batching": _batching(bootstrap, repeats),
        "load_avg_1m_before": load_before,
        "load_avg_1m_after": os.getloadavg()[0],
    }


def summary(result: dict[str, Any]) -> str:
    lines = []
    for window, w in result["compression"].items():
        for codec, c in w["codecs"].items():
            lines.append(
                f"kafka {window} ETL message ({w['message_bytes']:,} B) {codec:>4}: "
                f"{c['msg_per_s_median']:,.0f} msg/s (x{c['throughput_vs_none']:.2f} vs none), "
                f"{c['wire_bytes_per_msg']:,} B on the wire (x{c['size_ratio']:.2f} smaller), "
                f"{c['cpu_ms_per_msg_median']:.2f} CPU-ms/msg, "
                f"consumer decode {c['consumer_decode_ms_median']:.2f} ms"
            )
    for label, k in result["batching"].items():
        lines.append(
            f"kafka {label} ({k['bytes']:,} B): batched {k['batched_msg_per_s_median']:,.0f} "
            f"msg/s, flush-each {k['flush_each_msg_per_s_median']:,.0f} msg/s, "
            f"ratio {k['ratio']:.1f}x"
        )
    lines.append(
        f"kafka load average {result['load_avg_1m_before']:.1f} before, "
        f"{result['load_avg_1m_after']:.1f} after"
    )
    return "\n".join(lines)
