"""Storage: rows/s into MySQL, batched upserts vs a naive consumer; draining a backlog.

Needs MYSQL_* (a server where it may create and drop ``bench_storage_*`` databases) and
KAFKA_BOOTSTRAP_SERVERS from the environment (``make bench`` sources the stack's env).

1. Rows/s. Workload: 16 series × 3 consecutive ETL runs (windows 60 s apart, so each
   run rewrites the previous run's overlapping HP and decomposition points, as in
   production), built from real ETL messages of 12 h × 15 s (2,881 points; ≈ 5,800 rows
   each, of which HP + decomposition are 99 %). Ours: ``Writer.write`` (what the consumer
   runs) on batches of at most STORAGE_BATCH_MAX_ROWS rows, one transaction each.
   Baseline, same run: a naive consumer that sends one single-row upsert and commits after
   every row, timed on one whole message (the same table mix) and extrapolated. Each
   repetition starts from a fresh database; medians are reported.
2. Backlog: 10,000 *small* ETL-shaped messages (1 h × 60 s windows: 61 points, ≈ 180 rows
   each, 200 series × 50 runs; realistic 12 h messages would make this a 10-minute run) are
   produced to a fresh topic, then ``python -m data_storage`` is started as a subprocess on
   it: time until all 10,000 are committed (the group join included, and reported apart),
   and the consumer's peak RSS (VmHWM from /proc/PID/status).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from data_storage.rows import (
    CHILD_TABLES,
    RUNS,
    SERIES,
    child_rows,
    row_count,
    run_rows,
    series_rows,
)
from data_storage.samples import analysed, moved, ref
from data_storage.settings import StorageSettings
from data_storage.writer import Writer
from etl_data_pipeline.analyses import AnalysisConfig
from sla_common.kafka import ensure_topics, make_producer
from sla_common.messages import AnalysisMessage
from sla_common.mysql import close_quietly, connect, drop_database
from sla_common.mysql_startup import wait_and_migrate
from tests.integration.stackutil import free_port, metric_value

REPO = Path(__file__).resolve().parent.parent
SERIES_COUNT = 16
RUNS_COUNT = 3
BACKLOG = 10_000
BACKLOG_SERIES = 200
DRAIN_TIMEOUT_S = 600.0


def _settings(database: str, **extra: Any) -> StorageSettings:
    return StorageSettings(mysql_database=database, **extra)


@contextmanager
def fresh_database(prefix: str) -> Iterator[StorageSettings]:
    s = _settings(f"{prefix}_{uuid.uuid4().hex[:10]}")
    wait_and_migrate(s, deadline_s=30)  # what `python -m sla_common.migrate` runs
    try:
        yield s
    finally:
        drop_database(s)


def workload(end: int) -> list[AnalysisMessage]:
    bases = [analysed(ref("bench_base", i=str(i)), end, seed=i) for i in range(4)]
    out = []
    for run in range(RUNS_COUNT):
        run_id = uuid.uuid4().hex
        for i in range(SERIES_COUNT):
            series = ref("node_bench_bytes", instance=f"host-{i}:9100", job="bench")
            out.append(moved(bases[i % 4], series=series, dt=60 * run, run_id=run_id))
    return out


def batches(msgs: list[AnalysisMessage], max_rows: int) -> list[list[AnalysisMessage]]:
    out: list[list[AnalysisMessage]] = [[]]
    rows = 0
    for m in msgs:
        if out[-1] and rows + row_count(m) > max_rows:
            out.append([])
            rows = 0
        out[-1].append(m)
        rows += row_count(m)
    return out


def batched_rate(msgs: list[AnalysisMessage]) -> tuple[float, int]:
    with fresh_database("bench_storage") as s:
        writer = Writer(s)
        try:
            rows = 0
            t = time.perf_counter()
            for batch in batches(msgs, s.storage_batch_max_rows):
                rows += writer.write(batch).total_rows
            return rows / (time.perf_counter() - t), rows
        finally:
            writer.close()


def naive_rate(msg: AnalysisMessage) -> tuple[float, int]:
    """One single-row upsert and one COMMIT per row, as a naive consumer writes."""
    with fresh_database("bench_storage_naive") as s:
        conn = connect(s)
        try:
            t = time.perf_counter()
            with conn.cursor() as cur:
                (srow,) = series_rows([msg])
                cur.execute(SERIES.upsert_sql(), srow)
                conn.commit()
                cur.execute(f"SELECT id FROM {SERIES.name} WHERE key_hash = %s", (srow[0],))  # noqa: S608
                (sid,) = cur.fetchone() or (0,)
                rows = 1
                children = child_rows([msg], {msg.series.key: int(sid)})
                for table in CHILD_TABLES:
                    sql = table.upsert_sql()
                    for row in children[table.name]:
                        cur.execute(sql, row)
                        conn.commit()
                        rows += 1
                for row in run_rows([msg]):
                    cur.execute(RUNS.upsert_sql(), row)
                    conn.commit()
                    rows += 1
            return rows / (time.perf_counter() - t), rows
        finally:
            close_quietly(conn)


# --------------------------------------------------------------------------- backlog


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def backlog_messages(end: int) -> list[AnalysisMessage]:
    cfg = AnalysisConfig(season_s=600)
    bases = [
        analysed(ref("bench_small", i=str(i)), end, points=61, step_s=60, seed=i, config=cfg)
        for i in range(8)
    ]
    runs = BACKLOG // BACKLOG_SERIES
    out = []
    for run in range(runs):
        run_id = uuid.uuid4().hex
        dt = 60 * (run - runs)
        for i in range(BACKLOG_SERIES):
            series = ref("node_backlog_bytes", instance=f"host-{i}:9100", job="bench")
            out.append(moved(bases[i % 8], series=series, dt=dt, run_id=run_id))
    return out


def drain(bootstrap: str, end: int) -> dict[str, Any]:
    msgs = backlog_messages(end)
    topic = f"bench-storage-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic, f"{topic}.dlq"], partitions=3)
    producer = make_producer(bootstrap, "bench-storage")
    try:
        for m in msgs:
            producer.send(topic, key=m.kafka_key(), value=m.to_bytes())
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=5)
    payload_bytes = sum(len(m.to_bytes()) for m in msgs[:100]) / 100
    rows = sum(row_count(m) for m in msgs)

    with fresh_database("bench_storage_drain") as s:
        port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
            "KAFKA_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
            "MYSQL_DATABASE": s.mysql_database,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
            "STORAGE_RETENTION_S": "0",
            "LOG_LEVEL": "WARNING",
        }
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "data_storage"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        first = done = None
        hwm = -1
        try:
            while time.monotonic() - t0 < DRAIN_TIMEOUT_S and proc.poll() is None:
                n = metric_value(port, "sla_storage_messages_stored_total")
                if n > 0 and first is None:
                    first = time.monotonic() - t0
                if n >= BACKLOG:
                    done = time.monotonic() - t0
                    break
                time.sleep(0.1)
            hwm = _vm_hwm_kib(proc.pid) if proc.poll() is None else -1
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                _out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                _out, err = proc.communicate()
        if done is None:
            raise RuntimeError(
                f"backlog not drained (exit {proc.returncode}):\n{err.decode()[-3000:]}"
            )
        conn = connect(s)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM analyses")
                (stored,) = cur.fetchone() or (0,)
        finally:
            close_quietly(conn)
    assert first is not None
    return {
        "messages": BACKLOG,
        "message_bytes_mean": round(payload_bytes),
        "rows": rows,
        "drain_s": done,
        "until_first_commit_s": first,
        "after_first_commit_s": done - first,
        "messages_per_s_after_first_commit": BACKLOG / max(1e-9, done - first),
        "rows_per_s_after_first_commit": rows / max(1e-9, done - first),
        "peak_rss_mib": hwm / 1024,
        "exit_code": proc.returncode,
        "analyses_rows_stored": int(stored),
    }


def measure(bootstrap: str, repeats: int = 3) -> dict[str, Any]:
    end = int(time.time()) // 60 * 60
    msgs = workload(end)
    ours = [batched_rate(msgs) for _ in range(max(3, repeats))]
    naive = [naive_rate(msgs[0]) for _ in range(max(3, repeats))]
    ours_med = statistics.median(r for r, _n in ours)
    naive_med = statistics.median(r for r, _n in naive)
    return {
        "rows_per_run": ours[0][1],
        "messages_per_run": len(msgs),
        "batched_rows_per_s_median": ours_med,
        "batched_runs": [r for r, _n in ours],
        "naive_rows_sampled": naive[0][1],
        "naive_rows_per_s_median": naive_med,
        "naive_runs": [r for r, _n in naive],
        "ratio": ours_med / naive_med,
        "drain": drain(bootstrap, end),
    }
