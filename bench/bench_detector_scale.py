"""The detector's scale-out: 1 and then 2 processes of one consumer group, same topic.

For each shape of :data:`bench.bench_detector.SHAPES` and each repeat, :data:`TOTAL` samples
of 100 series are produced once to a fresh samples topic of :data:`PARTITIONS` partitions
(an even split for 1 and 2 processes); then a fresh consumer group of 1 detector process
(``anomaly_detection.detector.Detector``, as deployed: decode, windows, judge, produce every
window's record, checkpoint a second) reads all of it, then a fresh group of 2 processes
started together reads the same topic. A run ends when the group's committed offsets reach
the end of every partition; each process then gets SIGTERM and reports when it processed
what.

Figures per run, from the processes' own clocks (start-up excluded):

- ``end_to_end``: all samples (less each process' first poll, which is not timed) / (last
  sample processed by any process − first by any); for
  2 processes this includes the group's rebalance when the second member joins;
- ``steady``: samples/s summed over the processes while all of them were processing (from
  the latest first sample to the earliest last sample): the scale-out factor without the
  join and the tail;
- ``reread``: samples processed twice (a partition revoked by the rebalance is read again
  from its last checkpoint by its new owner);
- ``cpu_s_per_100k``: the detector processes' CPU seconds per 100,000 samples, and the
  broker's when ``STACK_DIR`` points at the local stack (tansu shares the machine);
- ``samples_per_cpu_s_per_process``: each process' samples per second of its own CPU time
  (``time.process_time`` in the process, from its first to its last processed sample), and
  their median ``samples_per_cpu_s``: on cores shared with other work the wall throughput
  shows the scheduler's share, this shows the cost; the same per-process figure with 1 and
  2 processes (``ratio_per_cpu_s`` ≈ 1) is what makes the wall figure add up given a free
  core per process;
- ``machine_busy``: the share of all cores busy (``/proc/stat``) during the run.

``python -m bench detector-scale`` (or ``detector``, which includes it); one member alone:
``python -m bench.bench_detector_scale BOOTSTRAP TOPIC WINDOW_MS GROUP``.
"""

from __future__ import annotations

import bisect
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from bench.bench_detector import REPO, SHAPES, bench_settings, produce
from sla_common.kafka import make_admin

TOTAL = 200_000
PARTITIONS = 4
PROCESSES = (1, 2)
RUN_TIMEOUT_S = 600.0
TICK_S = 0.02


def _proc_stat() -> tuple[int, int]:
    """(busy, total) jiffies of all cores."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _broker_pid() -> int | None:
    stack = os.environ.get("STACK_DIR")
    if not stack:
        return None
    try:
        return int((Path(stack) / "pids" / "kafka.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cpu_jiffies(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: off for tp, off in c.end_offsets(tps).items()}
    finally:
        c.close()


def _committed(admin: Any, group: str, topic: str) -> dict[int, int]:
    offsets = admin.list_group_offsets({group: None}).get(group, {})
    return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}


def run_group(bootstrap: str, topic: str, window_ms: int, processes: int) -> dict[str, Any]:
    """``processes`` detector processes in one fresh group over ``topic``, until it is read."""
    group = f"scale{processes}.{uuid.uuid4().hex[:8]}"
    end = _end_offsets(bootstrap, topic)
    total_samples = int(os.environ.get("BENCH_SCALE_TOTAL", TOTAL))
    argv = [sys.executable, "-m", "bench.bench_detector_scale", bootstrap, topic]
    members = [
        subprocess.Popen(
            [*argv, str(window_ms), group],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    broker = _broker_pid()
    clock: list[tuple[float, int, int, int | None]] = []  # (time, busy, total, broker jiffies)
    admin = make_admin(bootstrap, "bench-detector-scale", 10_000)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        done = False
        while not done:
            if time.monotonic() > deadline:
                raise RuntimeError(f"group {group} did not read {topic} in {RUN_TIMEOUT_S} s")
            dead = [m for m in members if m.poll() is not None]
            if dead:
                raise RuntimeError(f"a member exited early: {dead[0].communicate()[1][-2000:]}")
            busy, all_ = _proc_stat()
            clock.append((time.time(), busy, all_, _cpu_jiffies(broker)))
            committed = _committed(admin, group, topic)
            done = all(committed.get(p, -1) >= off for p, off in end.items())
            time.sleep(0.1)
    finally:
        admin.close()
        outs = []
        for m in members:
            if m.poll() is None:
                m.send_signal(signal.SIGTERM)
        for m in members:
            try:
                out, err = m.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                m.kill()
                out, err = m.communicate()
            outs.append((out, err))
    reports = []
    for out, err in outs:
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"a member reported nothing: {err[-2000:]}")
        reports.append(json.loads(lines[-1]))
    return _figures(reports, clock, total_samples, processes)


def _count_at(timeline: list[list[float]], t: float) -> float:
    """Samples processed by a member at time ``t`` (its timeline is a step function)."""
    times = [p[0] for p in timeline]
    i = bisect.bisect_right(times, t) - 1
    return timeline[i][1] if i >= 0 else 0.0


def _figures(
    reports: list[dict[str, Any]],
    clock: list[tuple[float, int, int, int | None]],
    total: int,
    processes: int,
) -> dict[str, Any]:
    firsts = [r["timeline"][0][0] for r in reports]
    lasts = [r["timeline"][-1][0] for r in reports]
    processed = sum(r["timeline"][-1][1] for r in reports)
    # Each member's first figure already includes its first poll's samples: not timed.
    before = sum(r["timeline"][0][1] for r in reports)
    t0, t1 = min(firsts), max(lasts)
    s0, s1 = max(firsts), min(lasts)
    steady = None
    if s1 - s0 >= 1.0:
        done = sum(_count_at(r["timeline"], s1) - _count_at(r["timeline"], s0) for r in reports)
        steady = done / (s1 - s0)
    inside = [c for c in clock if t0 <= c[0] <= t1] or clock[-2:]
    busy = (inside[-1][1] - inside[0][1]) / max(1, inside[-1][2] - inside[0][2])
    hz = os.sysconf("SC_CLK_TCK")
    broker_cpu = None
    if inside[0][3] is not None and inside[-1][3] is not None:
        broker_cpu = (inside[-1][3] - inside[0][3]) / hz
    cpu = sum(r["cpu_s"] for r in reports)
    # Each process' samples per CPU-second over the span its CPU clock covers (its first to
    # its last change): flat from 1 to 2 processes means the work per sample does not grow
    # with a second member, so with a free core each the wall throughput would add up.
    per_cpu = [
        (r["timeline"][-1][1] - r["timeline"][0][1]) / r["cpu_s"] if r["cpu_s"] > 0 else None
        for r in reports
    ]
    return {
        "processes": processes,
        "end_to_end_samples_per_s": (total - before) / (t1 - t0),
        "steady_samples_per_s": steady,
        "steady_s": max(0.0, s1 - s0),
        "wall_s": t1 - t0,
        "reread": processed - total,
        "per_member_samples": [r["timeline"][-1][1] for r in reports],
        "per_member_partitions": [r["partitions"] for r in reports],
        "cpu_s_per_100k": 1e5 * cpu / total,
        "samples_per_cpu_s_per_process": per_cpu,
        "samples_per_cpu_s": _median(per_cpu),
        "broker_cpu_s_per_100k": None if broker_cpu is None else 1e5 * broker_cpu / total,
        "machine_busy": busy,
        "loadavg_1m": os.getloadavg()[0],
    }


def _median(values: list[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def measure(bootstrap: str, repeats: int) -> dict[str, Any]:
    total = int(os.environ.get("BENCH_SCALE_TOTAL", TOTAL))
    out: dict[str, Any] = {"total": total, "partitions": PARTITIONS, "cores": os.cpu_count()}
    for shape, cfg in SHAPES.items():
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in PROCESSES}
        for _ in range(repeats):
            topic = f"bench.scale.{uuid.uuid4().hex[:8]}"
            produce(bootstrap, topic, cfg["per"], cfg["step_ms"], total, PARTITIONS)
            for n in PROCESSES:
                runs[n].append(run_group(bootstrap, topic, cfg["window_ms"], n))
                r = runs[n][-1]
                print(  # progress: a run takes minutes on a loaded machine
                    f"  {shape}, {n} process(es): {r['end_to_end_samples_per_s']:.0f} samples/s, "
                    f"steady {_fmt(r['steady_samples_per_s'])}, per CPU-s and process "
                    f"{', '.join(_fmt(x) for x in r['samples_per_cpu_s_per_process'])}, "
                    f"busy {r['machine_busy']:.0%}, "
                    f"load {r['loadavg_1m']:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
        med: dict[int, dict[str, float | None]] = {
            n: {
                k: _median([r[k] for r in rs])
                for k in (
                    "end_to_end_samples_per_s",
                    "steady_samples_per_s",
                    "reread",
                    "cpu_s_per_100k",
                    "samples_per_cpu_s",
                    "broker_cpu_s_per_100k",
                    "machine_busy",
                )
            }
            for n, rs in runs.items()
        }
        paired = [
            _ratio(two["end_to_end_samples_per_s"], one["end_to_end_samples_per_s"])
            for one, two in zip(runs[1], runs[2], strict=True)
        ]
        out[shape] = {
            "median": {str(n): m for n, m in med.items()},
            # 2 processes ÷ 1 process over the same topic, one after the other: the load of
            # a shared machine drifts less between the two than across repeats.
            "paired_ratios_end_to_end": paired,
            "paired_ratio_median": _median(paired),
            "ratio_end_to_end": _ratio(
                med[2]["end_to_end_samples_per_s"], med[1]["end_to_end_samples_per_s"]
            ),
            "ratio_steady": _ratio(med[2]["steady_samples_per_s"], med[1]["steady_samples_per_s"]),
            # samples per CPU-second of a process, 2 processes ÷ 1: ≈ 1 is linear given cores
            "ratio_per_cpu_s": _ratio(med[2]["samples_per_cpu_s"], med[1]["samples_per_cpu_s"]),
            "runs": {str(n): rs for n, rs in runs.items()},
        }
    return out


def summary(r: dict[str, Any]) -> str:
    lines = []
    for shape, d in r.items():
        if not isinstance(d, dict):
            continue
        one, two = d["median"]["1"], d["median"]["2"]
        lines.append(
            f"detector scale-out, {shape}, {r['total']} samples, {r['partitions']} partitions: "
            f"1 process {one['end_to_end_samples_per_s']:.0f} samples/s, 2 processes "
            f"{two['end_to_end_samples_per_s']:.0f} samples/s end to end (ratio "
            f"{d['ratio_end_to_end']:.2f}), steady {_fmt(two['steady_samples_per_s'])} "
            f"(ratio {_fmt(d['ratio_steady'], '.2f')}); machine busy "
            f"{_fmt(one['machine_busy'], '.0%')} / {_fmt(two['machine_busy'], '.0%')}; "
            f"per process {_fmt(one['samples_per_cpu_s'])} / {_fmt(two['samples_per_cpu_s'])} "
            f"samples per CPU-s (ratio {_fmt(d.get('ratio_per_cpu_s'), '.2f')}); "
            f"re-read {_fmt(two['reread'])} (median of {len(d['runs']['1'])}; paired ratios "
            f"{', '.join(_fmt(x, '.2f') for x in d['paired_ratios_end_to_end'])})"
        )
    return "\n".join(lines)


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "n/a" if v is None else format(v, spec)


# ---------------------------------------------------------------- one member, one process


def _member_main(bootstrap: str, topic: str, window_ms: int, group: str) -> None:
    from anomaly_detection.detector import Detector  # noqa: PLC0415
    from anomaly_detection.metrics import DetectorMetrics  # noqa: PLC0415

    settings = bench_settings(bootstrap, topic, window_ms, group, group)
    metrics = DetectorMetrics(10)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    timeline: list[list[float]] = []  # [wall time, samples processed] at each change
    cpu: list[float] = []  # process CPU time at the first and the latest change
    detector = Detector(settings, metrics, stop=stop)
    partitions: set[int] = set()

    def watch() -> None:
        last = 0.0
        while not stop.is_set():
            n = metrics.samples._value.get()
            if n != last:
                timeline.append([time.time(), n])
                now = time.process_time()
                cpu[:] = [cpu[0], now] if cpu else [now, now]
                last = n
                partitions.update(tp.partition for tp in list(detector.parts))
            stop.wait(TICK_S)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    detector.run()
    watcher.join(5)
    if not timeline:
        timeline.append([time.time(), 0.0])
        cpu[:] = [0.0, 0.0]
    report = {"timeline": timeline, "cpu_s": cpu[1] - cpu[0], "partitions": sorted(partitions)}
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    _member_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
