"""Deterministic demo history for the node-exporter seed metrics, with known incidents.

The local stack has a real node-exporter, but a freshly started Prometheus holds minutes of data,
not the 12-24 h the analyses and the SLA windows need, and a healthy laptop never leaks memory on
cue. This module fabricates a day of history for one imaginary 16 GiB host
(``job="host", instance="demo-host:9100"``) and writes it in the OpenMetrics text format that
``promtool tsdb create-blocks-from openmetrics`` backfills into Prometheus.

Everything is a pure function of ``(seed, end, hours, step_s)``: the same arguments give
bit-identical arrays and bytes, so tests can assert exact violation counts. Noise comes from a
numpy ``Generator`` seeded with ``seed`` and a *stable* hash of the series key (python's
``hash()`` is salted per process and would break that).

Each gauge is ``level + daily cycle + hourly cycle + bounded noise``; the noise is clipped at 3σ
so that, outside the incidents, no sample comes within a gigabyte (or ten thousand descriptors)
of an incident threshold. Incidents sit at fixed offsets from ``end``; their ramps pass each
threshold half a step before a sample, with ramp noise smaller than the distance of any sample
from the threshold, so the violating samples form one contiguous run whose first and last
timestamps are exactly ``end - first_offset_s`` and ``end - last_offset_s`` (for any step that
divides the offsets, e.g. 15 s):

======================  ============================================  =========  ======  ======
name                    series                                        threshold  first   last
======================  ============================================  =========  ======  ======
memory_leak_free        node_memory_MemFree_bytes                     < 2 GiB    -5h30m  -4h30m
memory_leak_available   node_memory_MemAvailable_bytes                < 2 GiB    -5h20m  -4h30m
disk_fill_avail         node_filesystem_avail_bytes{device=sda2}      < 10 GiB   -2h40m  -2h
disk_fill_free          node_filesystem_free_bytes{device=sda2}       < 10 GiB   -2h15m  -2h
fd_spike                node_filefd_allocated                         > 20000    -50m    -30m
======================  ============================================  =========  ======  ======

so a 1 h window ending at ``end`` sees only the fd spike, 3 h adds the disk, 12 h adds memory.
``node_cpu_seconds_total`` is a counter that resets once, at a reboot 8 h before ``end``.

CLI::

    python -m sla_common.demo write --seed 42 --end EPOCH --hours 24 --step 15 --out FILE
    python -m sla_common.demo incidents --seed 42 --end EPOCH
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType
from typing import Any, Literal, TextIO

import numpy as np
import numpy.typing as npt

from sla_common.series import series_key

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
MINUTE = 60
HOUR = 3600
DAY = 86400

JOB = "host"
INSTANCE = "demo-host:9100"
BASE_LABELS: Mapping[str, str] = MappingProxyType({"instance": INSTANCE, "job": JOB})

MEM_TOTAL_BYTES = 16 * GIB
ROOT_SIZE_BYTES = 100 * GIB
# ext4 reserves 5 % of the blocks for root: avail = free - reserve, a constant gap.
ROOT_RESERVE_BYTES = ROOT_SIZE_BYTES // 20
RUN_SIZE_BYTES = 1638 * MIB  # /run is a tmpfs of 10 % of RAM on Debian
ROOT_FS: Mapping[str, str] = MappingProxyType(
    {"device": "/dev/sda2", "fstype": "ext4", "mountpoint": "/"}
)
RUN_FS: Mapping[str, str] = MappingProxyType(
    {"device": "tmpfs", "fstype": "tmpfs", "mountpoint": "/run"}
)
CPUS = ("0", "1")
CPU_MODES = ("idle", "iowait", "system", "user")

MEMORY_THRESHOLD_BYTES = 2 * GIB
DISK_THRESHOLD_BYTES = 10 * GIB
FD_THRESHOLD = 20000.0

# Incident geometry, as offsets in seconds before the (step-aligned) end.
LEAK_START_OFFSET_S = 6 * HOUR
LEAK_FREE_CROSS_OFFSET_S = 5 * HOUR + 30 * MINUTE
LEAK_AVAIL_CROSS_OFFSET_S = 5 * HOUR + 20 * MINUTE
LEAK_FLOOR_OFFSET_S = 5 * HOUR
LEAK_RESTART_OFFSET_S = 4 * HOUR + 30 * MINUTE  # last leaking sample; the next one is restarted
DISK_START_OFFSET_S = 3 * HOUR
DISK_AVAIL_CROSS_OFFSET_S = 2 * HOUR + 40 * MINUTE
DISK_FREE_CROSS_OFFSET_S = 2 * HOUR + 15 * MINUTE
DISK_CLEANUP_OFFSET_S = 2 * HOUR  # last full sample; the next one is after the clean-up
FD_SPIKE_FIRST_OFFSET_S = 50 * MINUTE
FD_SPIKE_LAST_OFFSET_S = 30 * MINUTE
CPU_REBOOT_OFFSET_S = 8 * HOUR  # the host reboots half a step before the sample at end - 8 h

MAX_STEP_S = 300  # the incident anchors are minutes apart; coarser steps would reorder them

Direction = Literal["below", "above"]
Kind = Literal["gauge", "counter"]

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _labels(*parts: Mapping[str, str], **extra: str) -> Mapping[str, str]:
    merged: dict[str, str] = {}
    for part in parts:
        merged.update(part)
    merged.update(extra)
    return MappingProxyType(dict(sorted(merged.items())))


@dataclass(frozen=True, eq=False)
class DemoSeries:
    """One series: metric name, full label set, and its samples (time-sorted, read-only)."""

    name: str
    labels: Mapping[str, str]
    timestamps: IntArray  # epoch seconds
    values: FloatArray

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _labels(self.labels))
        ts = np.array(self.timestamps, dtype=np.int64)
        vs = np.array(self.values, dtype=np.float64)
        if ts.shape != vs.shape or ts.ndim != 1:
            raise ValueError(f"{self.name}: timestamps and values must be 1-d of equal length")
        ts.setflags(write=False)
        vs.setflags(write=False)
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "values", vs)

    @property
    def kind(self) -> Kind:
        """Counters follow the Prometheus naming convention: their samples end in ``_total``."""
        return "counter" if self.name.endswith("_total") else "gauge"

    def key(self) -> str:
        return series_key(self.name, self.labels)


@dataclass(frozen=True)
class IncidentSpec:
    """An incident as designed: the violating samples run from ``end - first_offset_s`` to
    ``end - last_offset_s`` inclusive (when the step divides the offsets)."""

    name: str
    metric: str
    labels: Mapping[str, str]
    threshold: float
    direction: Direction
    first_offset_s: int
    last_offset_s: int
    description: str

    def key(self) -> str:
        return series_key(self.metric, self.labels)


@dataclass(frozen=True)
class Incident:
    """An incident as found in generated data: ``start``/``end`` are the first and last
    violating sample timestamps (epoch s) and ``samples`` how many samples violate."""

    name: str
    metric: str
    labels: Mapping[str, str]
    start: int
    end: int
    threshold: float
    direction: Direction
    description: str
    samples: int = field(default=0)

    def key(self) -> str:
        return series_key(self.metric, self.labels)

    def violates(self, values: FloatArray) -> npt.NDArray[np.bool_]:
        return values < self.threshold if self.direction == "below" else values > self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "labels": dict(self.labels),
            "key": self.key(),
            "start": self.start,
            "end": self.end,
            "samples": self.samples,
            "threshold": self.threshold,
            "direction": self.direction,
            "description": self.description,
        }


MEM_AVAIL = "node_memory_MemAvailable_bytes"
MEM_FREE = "node_memory_MemFree_bytes"
FS_AVAIL = "node_filesystem_avail_bytes"
FS_FREE = "node_filesystem_free_bytes"
FILEFD = "node_filefd_allocated"
CPU_SECONDS = "node_cpu_seconds_total"

INCIDENT_SPECS: tuple[IncidentSpec, ...] = (
    IncidentSpec(
        name="memory_leak_free",
        metric=MEM_FREE,
        labels=_labels(BASE_LABELS),
        threshold=float(MEMORY_THRESHOLD_BYTES),
        direction="below",
        first_offset_s=LEAK_FREE_CROSS_OFFSET_S,
        last_offset_s=LEAK_RESTART_OFFSET_S,
        description="a process leaks memory from end-6h, MemFree falls under 2 GiB, "
        "bottoms out near 0.4 GiB and recovers when the process restarts after end-4h30m",
    ),
    IncidentSpec(
        name="memory_leak_available",
        metric=MEM_AVAIL,
        labels=_labels(BASE_LABELS),
        threshold=float(MEMORY_THRESHOLD_BYTES),
        direction="below",
        first_offset_s=LEAK_AVAIL_CROSS_OFFSET_S,
        last_offset_s=LEAK_RESTART_OFFSET_S,
        description="the same leak seen in MemAvailable: from ~8 GiB at end-6h to ~1 GiB at "
        "end-5h, under 2 GiB from end-5h20m until the restart after end-4h30m",
    ),
    IncidentSpec(
        name="disk_fill_avail",
        metric=FS_AVAIL,
        labels=_labels(BASE_LABELS, ROOT_FS),
        threshold=float(DISK_THRESHOLD_BYTES),
        direction="below",
        first_offset_s=DISK_AVAIL_CROSS_OFFSET_S,
        last_offset_s=DISK_CLEANUP_OFFSET_S,
        description="a runaway log fills / from end-3h: avail under 10 GiB from end-2h40m, "
        "down to 3 GiB at end-2h, then a clean-up restores it",
    ),
    IncidentSpec(
        name="disk_fill_free",
        metric=FS_FREE,
        labels=_labels(BASE_LABELS, ROOT_FS),
        threshold=float(DISK_THRESHOLD_BYTES),
        direction="below",
        first_offset_s=DISK_FREE_CROSS_OFFSET_S,
        last_offset_s=DISK_CLEANUP_OFFSET_S,
        description="the same disk fill seen in free bytes (avail + the 5 GiB root reserve): "
        "under 10 GiB from end-2h15m to end-2h",
    ),
    IncidentSpec(
        name="fd_spike",
        metric=FILEFD,
        labels=_labels(BASE_LABELS),
        threshold=FD_THRESHOLD,
        direction="above",
        first_offset_s=FD_SPIKE_FIRST_OFFSET_S,
        last_offset_s=FD_SPIKE_LAST_OFFSET_S,
        description="a connection storm holds ~41k file descriptors (normal ~4-5k) "
        "from end-50m to end-30m",
    ),
)


def align_end(end: int | None, step_s: int) -> int:
    """``end`` (default: now) rounded down to a multiple of ``step_s``."""
    if step_s < 1:
        raise ValueError(f"step_s must be a positive number of seconds, got {step_s!r}")
    if end is None:
        end = int(time.time())
    return int(end) - int(end) % step_s


def cpu_reboot_sample(end: int | None, step_s: int = 15) -> int:
    """Timestamp of the first ``node_cpu_seconds_total`` sample after the reboot."""
    e = align_end(end, step_s)
    # Samples are e - k*step; the reboot is at e - offset - step/2: the first sample after it
    # has the largest k with k*step < offset + step/2.
    k = math.ceil(CPU_REBOOT_OFFSET_S / step_s + 0.5) - 1
    return e - k * step_s


def _check_args(hours: float, step_s: int) -> None:
    if not isinstance(step_s, int) or not 1 <= step_s <= MAX_STEP_S:
        raise ValueError(f"step_s must be an integer in [1, {MAX_STEP_S}], got {step_s!r}")
    if not (math.isfinite(hours) and hours > 0) or hours * HOUR < step_s:
        raise ValueError(f"hours must be positive and cover at least one step, got {hours!r}")


def _grid(end: int, hours: float, step_s: int) -> IntArray:
    n = int(hours * HOUR // step_s) + 1
    return end - step_s * np.arange(n - 1, -1, -1, dtype=np.int64)


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class _Draws:
    """The random numbers of one series, drawn in a fixed order so that each series' noise
    depends only on (seed, series key, number of samples), not on which series came first."""

    def __init__(self, seed: int, key: str, n: int) -> None:
        rng = np.random.default_rng([seed & (2**64 - 1), _stable_hash(key)])
        self.phase = float(rng.uniform(0.0, 2 * math.pi))
        self.noise: FloatArray = np.clip(rng.standard_normal(n), -3.0, 3.0)
        self.jitter: FloatArray = rng.uniform(-1.0, 1.0, n)


def _daily(t: FloatArray | float, peak_hour: float) -> FloatArray:
    """1 at ``peak_hour`` UTC, -1 twelve hours later."""
    return np.asarray(np.cos(2 * np.pi * (np.asarray(t) - peak_hour * HOUR) / DAY))


def _hourly(t: FloatArray | float, phase: float) -> FloatArray:
    return np.asarray(np.sin(2 * np.pi * np.asarray(t) / HOUR + phase))


def _ramp(
    t: FloatArray, anchors: Sequence[tuple[float, float]], jitter: FloatArray, step_s: int
) -> FloatArray:
    """Piecewise-linear through ``anchors`` plus jitter of at most 0.2 step's worth of the local
    slope: every sample is at least half a step's worth of slope from an anchor's value, so the
    jitter can never carry a sample across the threshold an anchor sits on."""
    xs = np.array([a[0] for a in anchors], dtype=np.float64)
    ys = np.array([a[1] for a in anchors], dtype=np.float64)
    if np.any(np.diff(xs) <= 0):
        raise ValueError("ramp anchors must be strictly increasing in time")
    slopes = np.diff(ys) / np.diff(xs)
    segment = np.clip(np.searchsorted(xs, t, side="right") - 1, 0, len(slopes) - 1)
    amplitude = 0.2 * step_s * np.abs(slopes[segment])
    return np.asarray(np.interp(t, xs, ys) + amplitude * jitter, dtype=np.float64)


def _round_to(values: FloatArray, unit: float) -> FloatArray:
    return np.asarray(np.round(values / unit) * unit, dtype=np.float64)


def _memory(seed: int, ts: IntArray, end: int, step_s: int) -> tuple[DemoSeries, DemoSeries]:
    labels = _labels(BASE_LABELS)
    t = ts.astype(np.float64)
    n = len(ts)
    da = _Draws(seed, series_key(MEM_AVAIL, labels), n)
    dc = _Draws(seed, series_key(MEM_FREE, labels), n)

    def avail_det(x: FloatArray | float) -> FloatArray:
        # Busy afternoons (peak 14:00 UTC) use memory: available is lowest then.
        return 9 * GIB - 1.5 * GIB * _daily(x, 14) + 0.25 * GIB * _hourly(x, da.phase)

    def cache_det(x: FloatArray | float) -> FloatArray:
        return 2.5 * GIB + 0.4 * GIB * _daily(x, 14) + 0.1 * GIB * _hourly(x, dc.phase)

    # Normal range: available 7.1-10.9 GiB, page cache 1.9-3.1 GiB, so free 4.0-9.0 GiB:
    # more than 2 GiB from the 2 GiB threshold with the noise at its 3σ clip.
    avail = avail_det(t) + 40 * MIB * da.noise
    cache = cache_det(t) + 20 * MIB * dc.noise
    free = avail - cache

    start = end - LEAK_START_OFFSET_S
    half = step_s / 2
    leak = (ts >= start) & (ts <= end - LEAK_RESTART_OFFSET_S)
    if leak.any():
        a0 = float(avail_det(float(start)))
        f0 = a0 - float(cache_det(float(start)))
        floor_t = float(end - LEAK_FLOOR_OFFSET_S)
        restart_t = float(end - LEAK_RESTART_OFFSET_S)
        avail[leak] = _ramp(
            t[leak],
            [
                (float(start), a0),
                (end - LEAK_AVAIL_CROSS_OFFSET_S - half, float(MEMORY_THRESHOLD_BYTES)),
                (floor_t, 1.0 * GIB),
                (restart_t, 0.9 * GIB),
            ],
            da.jitter[leak],
            step_s,
        )
        # Free crosses first and ends lower, always at least ~0.5 GiB under available.
        free[leak] = _ramp(
            t[leak],
            [
                (float(start), f0),
                (end - LEAK_FREE_CROSS_OFFSET_S - half, float(MEMORY_THRESHOLD_BYTES)),
                (floor_t, 0.5 * GIB),
                (restart_t, 0.4 * GIB),
            ],
            dc.jitter[leak],
            step_s,
        )
    # /proc/meminfo counts in kB.
    return (
        DemoSeries(MEM_FREE, labels, ts, _round_to(free, KIB)),
        DemoSeries(MEM_AVAIL, labels, ts, _round_to(avail, KIB)),
    )


def _filesystems(seed: int, ts: IntArray, end: int, step_s: int) -> list[DemoSeries]:
    t = ts.astype(np.float64)
    n = len(ts)
    root = _labels(BASE_LABELS, ROOT_FS)
    run = _labels(BASE_LABELS, RUN_FS)
    dr = _Draws(seed, series_key(FS_AVAIL, root), n)
    dt = _Draws(seed, series_key(FS_AVAIL, run), n)

    def root_avail_det(x: FloatArray | float) -> FloatArray:
        # Logs grow through the day (peak 18:00 UTC) and are rotated away at night.
        return 38 * GIB - 1.5 * GIB * _daily(x, 18) + 0.3 * GIB * _hourly(x, dr.phase)

    # Normal range 36.1-39.9 GiB, far above the 10 GiB threshold.
    root_avail = root_avail_det(t) + 30 * MIB * dr.noise
    start = end - DISK_START_OFFSET_S
    fill = (ts >= start) & (ts <= end - DISK_CLEANUP_OFFSET_S)
    if fill.any():
        half = step_s / 2
        root_avail[fill] = _ramp(
            t[fill],
            [
                (float(start), float(root_avail_det(float(start)))),
                (end - DISK_AVAIL_CROSS_OFFSET_S - half, float(DISK_THRESHOLD_BYTES)),
                # avail 5 GiB = free 10 GiB: the free-bytes threshold is crossed here.
                (end - DISK_FREE_CROSS_OFFSET_S - half, float(DISK_THRESHOLD_BYTES - 5 * GIB)),
                (float(end - DISK_CLEANUP_OFFSET_S), 3.0 * GIB),
            ],
            dr.jitter[fill],
            step_s,
        )
    root_avail = _round_to(root_avail, 4096)
    root_free = root_avail + ROOT_RESERVE_BYTES

    used_run = (
        2.5 * MIB
        + 0.5 * MIB * _daily(t, 10)
        + 0.2 * MIB * _hourly(t, dt.phase)
        + 0.05 * MIB * dt.noise
    )
    run_free = _round_to(RUN_SIZE_BYTES - used_run, 4096)  # tmpfs has no reserve: avail == free
    return [
        DemoSeries(FS_AVAIL, root, ts, root_avail),
        DemoSeries(FS_AVAIL, run, ts, run_free),
        DemoSeries(FS_FREE, root, ts, root_free),
        DemoSeries(FS_FREE, run, ts, run_free.copy()),
    ]


def _filefd(seed: int, ts: IntArray, end: int) -> DemoSeries:
    labels = _labels(BASE_LABELS)
    t = ts.astype(np.float64)
    d = _Draws(seed, series_key(FILEFD, labels), len(ts))
    # Normal range ~3000-5500, never near 20000.
    fds = 4200 + 900 * _daily(t, 15) + 250 * _hourly(t, d.phase) + 60 * d.noise
    spike = (ts >= end - FD_SPIKE_FIRST_OFFSET_S) & (ts <= end - FD_SPIKE_LAST_OFFSET_S)
    fds[spike] = 41000 + 1500 * d.jitter[spike]  # 39500..42500, always above 20000
    return DemoSeries(FILEFD, labels, ts, np.round(fds))


def _cpu(seed: int, ts: IntArray, end: int, step_s: int) -> list[DemoSeries]:
    t = ts.astype(np.float64)
    n = len(ts)
    disk_busy = (ts > end - DISK_START_OFFSET_S) & (ts <= end - DISK_CLEANUP_OFFSET_S)
    reboot = end - CPU_REBOOT_OFFSET_S - step_s / 2
    after = np.flatnonzero(ts > reboot)
    boot_idx = int(after[0]) if len(after) else n
    uptime_at_start = 30 * DAY  # the host was booted a month before the history starts
    out: list[DemoSeries] = []
    for cpu_i, cpu in enumerate(CPUS):
        draws = {
            mode: _Draws(seed, series_key(CPU_SECONDS, _labels(BASE_LABELS, cpu=cpu, mode=mode)), n)
            for mode in CPU_MODES
        }
        frac: dict[str, FloatArray] = {}
        for mode, level, day, hour, sigma in (
            ("user", 0.18, 0.10, 0.03, 0.01),
            ("system", 0.06, 0.02, 0.01, 0.005),
            ("iowait", 0.01, 0.005, 0.002, 0.002),
        ):
            d = draws[mode]
            frac[mode] = level + day * _daily(t, 14) + hour * _hourly(t, d.phase) + sigma * d.noise
        frac["iowait"] = frac["iowait"] + np.where(disk_busy, 0.08 - 0.02 * cpu_i, 0.0)
        for mode in ("user", "system", "iowait"):
            frac[mode] = np.clip(frac[mode], 0.0005, None)
        # Every CPU second goes to some mode: the modes of one cpu sum to 1 s/s.
        frac["idle"] = 1.0 - frac["user"] - frac["system"] - frac["iowait"]
        for mode in CPU_MODES:
            inc = frac[mode] * step_s  # CPU seconds spent in (t - step, t]
            counter = np.empty(n)
            before = slice(0, boot_idx)
            mean_rate = float(frac[mode].mean())
            counter[before] = mean_rate * (uptime_at_start - step_s) + np.cumsum(inc[before])
            if boot_idx < n:
                # The reboot happens half-way through this sample's interval.
                after_boot = slice(boot_idx, n)
                counter[after_boot] = np.cumsum(inc[after_boot]) - 0.5 * inc[boot_idx]
            # /proc/stat counts in USER_HZ = 1/100 s.
            out.append(
                DemoSeries(
                    CPU_SECONDS,
                    _labels(BASE_LABELS, cpu=cpu, mode=mode),
                    ts,
                    np.round(counter, 2),
                )
            )
    return out


def generate(
    seed: int = 42, end: int | None = None, hours: float = 24.0, step_s: int = 15
) -> list[DemoSeries]:
    """``hours`` of history at ``step_s`` ending at ``end`` (default now), aligned down to the
    step; ``int(hours * 3600 // step_s) + 1`` samples per series, the last one at the aligned
    end. Same arguments, bit-identical output."""
    _check_args(hours, step_s)
    e = align_end(end, step_s)
    ts = _grid(e, hours, step_s)
    mem_free, mem_avail = _memory(seed, ts, e, step_s)
    return [
        mem_free,
        mem_avail,
        *_filesystems(seed, ts, e, step_s),
        _filefd(seed, ts, e),
        *_cpu(seed, ts, e, step_s),
    ]


def find_incidents(series: Iterable[DemoSeries]) -> list[Incident]:
    """The incidents of :data:`INCIDENT_SPECS` as they appear in ``series``: first and last
    violating sample and the number of violating samples. Incidents outside the history are
    left out."""
    by_key = {s.key(): s for s in series}
    found: list[Incident] = []
    for spec in INCIDENT_SPECS:
        s = by_key.get(spec.key())
        if s is None:
            continue
        inc = Incident(
            name=spec.name,
            metric=spec.metric,
            labels=spec.labels,
            start=0,
            end=0,
            threshold=spec.threshold,
            direction=spec.direction,
            description=spec.description,
        )
        hits = np.flatnonzero(inc.violates(s.values))
        if len(hits) == 0:
            continue
        found.append(
            Incident(
                name=spec.name,
                metric=spec.metric,
                labels=spec.labels,
                start=int(s.timestamps[hits[0]]),
                end=int(s.timestamps[hits[-1]]),
                threshold=spec.threshold,
                direction=spec.direction,
                description=spec.description,
                samples=len(hits),
            )
        )
    return found


def incidents(
    seed: int = 42, end: int | None = None, hours: float = 24.0, step_s: int = 15
) -> list[Incident]:
    """The incidents in ``generate(seed, end, hours, step_s)``, measured on the data itself."""
    return find_incidents(generate(seed, end, hours, step_s))


def _format_values(values: FloatArray) -> list[str]:
    # repr() of a python float round-trips exactly; NaN/Inf need the OpenMetrics spelling.
    out = [repr(v) for v in values.tolist()]
    if not np.isfinite(values).all():
        special = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}
        out = [special.get(v, v) for v in out]
    return out


def write_openmetrics(series: Iterable[DemoSeries], out: TextIO) -> int:
    """Write ``series`` as OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics``
    and return the number of samples written.

    promtool's traps, all handled here: one ``# TYPE`` per family before its samples (a counter
    family is named without ``_total``), timestamps in seconds (milliseconds are accepted and
    land in the year 58864), samples of a series in time order (out-of-order ones are dropped
    silently), and the closing ``# EOF``.
    """
    families: dict[str, tuple[Kind, list[DemoSeries]]] = {}
    for s in series:
        if not _NAME_RE.match(s.name):
            raise ValueError(f"invalid metric name {s.name!r}")
        for label in s.labels:
            if not _LABEL_RE.match(label):
                raise ValueError(f"invalid label name {label!r} in {s.key()}")
        family = s.name.removesuffix("_total") if s.kind == "counter" else s.name
        kind, members = families.setdefault(family, (s.kind, []))
        if kind != s.kind:
            raise ValueError(f"{s.key()}: family {family} mixes gauges and counters")
        members.append(s)

    written = 0
    for family, (kind, members) in families.items():
        out.write(f"# TYPE {family} {kind}\n")
        for s in members:
            ts, vs = s.timestamps, s.values
            if len(ts) > 1 and np.any(np.diff(ts) <= 0):
                order = np.argsort(ts, kind="stable")
                ts, vs = ts[order], vs[order]
                if np.any(np.diff(ts) == 0):
                    raise ValueError(f"{s.key()}: duplicate timestamps")
            prefix = s.key() + " "
            out.write(
                "".join(
                    [
                        f"{prefix}{v} {t}\n"
                        for v, t in zip(_format_values(vs), ts.tolist(), strict=True)
                    ]
                )
            )
            written += len(ts)
    out.write("# EOF\n")
    return written


def _incidents_json(incs: Sequence[Incident], seed: int, end: int, hours: float, step: int) -> str:
    doc = {
        "seed": seed,
        "end": end,
        "hours": hours,
        "step_s": step,
        "incidents": [i.to_dict() for i in incs],
    }
    return json.dumps(doc, indent=2) + "\n"


def _cmd_write(args: argparse.Namespace) -> int:
    end = align_end(args.end, args.step)
    started = time.perf_counter()
    series = generate(args.seed, end, args.hours, args.step)
    generated = time.perf_counter()
    with open(args.out, "w", encoding="utf-8", newline="\n") as fh:
        samples = write_openmetrics(series, fh)
    done = time.perf_counter()
    log.info(
        "wrote %d series, %d samples (%d..%d, step %ds) to %s: generate %.2fs, write %.2fs",
        len(series),
        samples,
        int(series[0].timestamps[0]),
        end,
        args.step,
        args.out,
        generated - started,
        done - generated,
    )
    if args.incidents_out:
        text = _incidents_json(find_incidents(series), args.seed, end, args.hours, args.step)
        with open(args.incidents_out, "w", encoding="utf-8") as fh:
            fh.write(text)
        log.info("wrote incidents to %s", args.incidents_out)
    return 0


def _cmd_incidents(args: argparse.Namespace) -> int:
    end = align_end(args.end, args.step)
    incs = incidents(args.seed, end, args.hours, args.step)
    sys.stdout.write(_incidents_json(incs, args.seed, end, args.hours, args.step))
    return 0


# --------------------------------------------------------------------------- live exporter


def live_exposition(seed: int, now: float, step_s: int = 15) -> str:
    """The demo host's gauges at ``now`` in Prometheus' text format (no timestamps).

    The deterministic parts (daily and hourly cycles) are functions of absolute time, so the
    live values continue the backfilled history; the noise is fresh. Incidents lie at least
    30 minutes before the end of any generated history, so the newest sample is always a
    normal one. Counters are left out: their value depends on when the history starts, and
    a live copy would look like a reset at the seam.
    """
    end = align_end(int(now), step_s)
    lines = []
    for s in generate(seed=seed, end=end, hours=3 * step_s / HOUR, step_s=step_s):
        if s.kind == "gauge":
            lines.append(f"{s.key()} {_format_values(s.values[-1:])[0]}")
    return "\n".join(lines) + "\n"


def serve(
    seed: int,
    host: str,
    port: int,
    exposition: Callable[[int, float], str] = live_exposition,
) -> None:
    """Serve ``exposition(seed, now)`` (default :func:`live_exposition`) on
    ``http://host:port/metrics`` until interrupted."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = exposition(seed, time.time()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    log.info("demo host live on http://%s:%d/metrics (seed %d)", host, port, seed)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def serve_until_signalled(
    seed: int, host: str, port: int, exposition: Callable[[int, float], str] = live_exposition
) -> int:
    """:func:`serve` until SIGTERM or Ctrl-C; 0."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        serve(seed, host, port, exposition)
    except KeyboardInterrupt:
        log.info("demo exporter stopped")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    return serve_until_signalled(args.seed, args.host, args.port)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sla_common.demo",
        description="Deterministic demo history for the node-exporter seed metrics.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, helptext in (
        ("write", "write the demo history as OpenMetrics text"),
        ("incidents", "print the incidents of that history as JSON"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--seed", type=int, default=42)
        sp.add_argument("--end", type=int, default=None, help="epoch seconds (default: now)")
        sp.add_argument("--hours", type=float, default=24.0)
        sp.add_argument("--step", type=int, default=15, help="seconds between samples")
    write = sub.choices["write"]
    write.add_argument("--out", required=True, help="OpenMetrics file to write")
    write.add_argument("--incidents-out", default=None, help="also write the incidents JSON here")
    write.add_argument("--log-level", default="INFO")
    live = sub.add_parser("serve", help="serve the demo host's current values for scraping")
    live.add_argument("--seed", type=int, default=42)
    live.add_argument("--host", default="127.0.0.1")
    live.add_argument("--port", type=int, default=9101)
    live.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "write": _cmd_write,
        "incidents": _cmd_incidents,
        "serve": _cmd_serve,
    }
    if args.command in {"write", "serve"}:
        # Imported here so that library users of this module do not configure logging.
        from sla_common.logging import setup_logging  # noqa: PLC0415

        setup_logging(args.log_level)
    try:
        return handlers[args.command](args)
    except ValueError as exc:
        log.error("%s", exc)  # a bad argument, not a bug: no traceback
        return 2


if __name__ == "__main__":
    sys.exit(main())
