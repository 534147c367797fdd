"""A realistic node-exporter host of ~210 series with incidents and their ground truth.

Dev-only test data for the explanations (issue 15): the stack's demo host
(:mod:`sla_common.demo`, 15 series) is too small to explain anything. This one has an
8-CPU, 16 GiB host's CPU time per cpu and mode, memory fields, vmstat paging counters,
disk I/O of three devices, five filesystems, four network interfaces, load, processes,
file descriptors, sockets, TCP counters and pressure stall information.

Every series is ``level + daily cycle + hourly cycle + smooth noise`` (AR(1)), and counters
integrate a rate built the same way. Unrelated things happen too: a nightly backup (02:00
UTC, 40 min: reads on sda, traffic on eth1, CPU on cpu 3), a cron job at minute 0 of every
hour (forks, running processes, context switches), and a batch job 10 h before ``end``
(user CPU on cpus 4-7, load).

Three incidents at fixed offsets from ``end`` move the metrics they would move on a real
host, and each keeps its ground truth: the SLI series with its threshold, the *causes* (the
series that embody the root cause) and the *followers* (what it drags along):

- ``memory_leak`` (onset end-6h, restart after end-4h30m): anonymous memory grows 9 GiB in
  an hour; MemFree and MemAvailable fall, the page cache is evicted (Cached, Active/Inactive
  file), major page faults and swap-out rise, memory pressure stalls. SLI: MemAvailable
  < 2 GiB. Causes: Active_anon, AnonPages, Committed_AS.
- ``disk_fill`` (end-3h to end-2h): a runaway log writes 12 MiB/s to /var on sdb; its
  avail/free bytes fall 42 GiB, sdb's I/O time and write latency, dirty pages and iowait
  rise. SLI: avail of /var < 10 GiB. Causes: sdb's written bytes and completed writes.
- ``fd_spike`` (end-50m to end-30m): a connection storm on eth0: TCP connections in use and
  established, passive opens, sockets and allocated file descriptors, eth0's packets,
  softirq time. SLI: node_filefd_allocated > 20000. Causes: passive opens, TCP in use,
  established connections.

Pure function of ``(seed, end, hours, step_s)``, bit-identical for the same arguments.
:meth:`Host.features` gives the matrix explanations work on: gauges as they are, counters
as per-second rates over a trailing window (what ``rate(x[1m])`` returns).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.signal import lfilter

from sla_common.demo import DemoSeries, align_end
from sla_common.series import series_key
from sla_manager.explain.features import counter_rates

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

KIB = 1024.0
MIB = 1024 * KIB
GIB = 1024 * MIB
MINUTE = 60
HOUR = 3600
DAY = 86400

INSTANCE = "demo-host:9100"
JOB = "host"
MEM_TOTAL = 16 * GIB
CPUS = tuple(str(i) for i in range(8))
CPU_MODES = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
DISKS = ("nvme0n1", "sda", "sdb")
INTERFACES = ("docker0", "eth0", "eth1", "lo")
# mountpoint -> (device, fstype, size bytes, normal avail bytes)
FILESYSTEMS: dict[str, tuple[str, str, float, float]] = {
    "/": ("/dev/sda2", "ext4", 100 * GIB, 61 * GIB),
    "/boot": ("/dev/sda1", "ext4", 1 * GIB, 0.7 * GIB),
    "/var": ("/dev/sdb1", "ext4", 200 * GIB, 45 * GIB),
    "/home": ("/dev/sdb2", "ext4", 300 * GIB, 180 * GIB),
    "/run": ("tmpfs", "tmpfs", 1.6 * GIB, 1.55 * GIB),
}

Direction = Literal["below", "above"]

# Incident anchors, seconds before end.
LEAK_ONSET = 6 * HOUR
LEAK_PEAK = 5 * HOUR
LEAK_RESTART = 4 * HOUR + 30 * MINUTE
DISK_ONSET = 3 * HOUR
DISK_CLEANUP = 2 * HOUR
FD_ONSET = 50 * MINUTE
FD_END = 30 * MINUTE
BATCH_ONSET = 10 * HOUR
BATCH_END = 9 * HOUR


def _labels(**labels: str) -> dict[str, str]:
    return {"instance": INSTANCE, "job": JOB, **labels}


def _key(name: str, **labels: str) -> str:
    return series_key(name, _labels(**labels))


@dataclass(frozen=True)
class HostIncident:
    """One incident and its ground truth. ``start``/``end``: first and last sample where the
    SLI violates its threshold (the anomalous interval); ``onset``: when the cause begins."""

    name: str
    sli: str
    threshold: float
    direction: Direction
    causes: tuple[str, ...]
    followers: tuple[str, ...]
    onset: int
    start: int
    end: int
    description: str


@dataclass(frozen=True)
class Features:
    """The matrix explanations work on: one row per series, one column per timestamp."""

    keys: tuple[str, ...]
    metrics: tuple[str, ...]
    labels: tuple[dict[str, str], ...]
    timestamps: IntArray
    values: FloatArray

    def row(self, key: str) -> int:
        return self.keys.index(key)


@dataclass(frozen=True)
class Host:
    timestamps: IntArray
    series: tuple[DemoSeries, ...]
    counters: frozenset[str]  # keys of cumulative series (to be read as rates)
    incidents: tuple[HostIncident, ...]

    def by_key(self) -> dict[str, DemoSeries]:
        return {s.key(): s for s in self.series}

    def features(self, rate_window_s: int = 60) -> Features:
        """Gauges as they are, counters as per-second rates over a trailing window of
        ``rate_window_s`` (the first window's worth of points reuse the first full rate)."""
        ts = self.timestamps
        step = int(ts[1] - ts[0]) if len(ts) > 1 else 1
        k = max(1, rate_window_s // step)
        rows = []
        for s in self.series:
            v = np.asarray(s.values, dtype=np.float64)
            if s.key() in self.counters:
                v = counter_rates(v, step, k)
            rows.append(v)
        return Features(
            keys=tuple(s.key() for s in self.series),
            metrics=tuple(s.name for s in self.series),
            labels=tuple(dict(s.labels) for s in self.series),
            timestamps=ts,
            values=np.vstack(rows),
        )


class _Gen:
    """Per-series random draws: each series' noise depends only on (seed, key, n)."""

    def __init__(self, seed: int, ts: IntArray, step_s: int, end: int) -> None:
        self.seed = seed
        self.ts = ts
        self.t = ts.astype(np.float64)
        self.step = step_s
        self.end = end
        self.n = len(ts)
        self.series: list[DemoSeries] = []
        self.counters: set[str] = set()

    def rng(self, key: str) -> np.random.Generator:
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
        return np.random.default_rng([self.seed & (2**64 - 1), h])

    def smooth(self, rng: np.random.Generator, phi: float = 0.95) -> FloatArray:
        """Unit-variance AR(1) noise, correlated over ~1/(1-phi) steps."""
        white = np.clip(rng.standard_normal(self.n), -4, 4)
        out = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], white)
        return np.asarray(out, dtype=np.float64)

    def daily(self, peak_hour: float) -> FloatArray:
        return np.asarray(np.cos(2 * np.pi * (self.t - peak_hour * HOUR) / DAY))

    def hourly(self, phase: float) -> FloatArray:
        return np.asarray(np.sin(2 * np.pi * self.t / HOUR + phase))

    def profile(self, anchors: Sequence[tuple[float, float]]) -> FloatArray:
        """Piecewise-linear through (seconds before end, value) anchors, flat outside."""
        xs = np.array([self.end - a for a, _ in anchors], dtype=np.float64)
        ys = np.array([v for _, v in anchors], dtype=np.float64)
        return np.asarray(np.interp(self.t, xs, ys))

    def window(self, first_before_end: float, last_before_end: float) -> FloatArray:
        return np.asarray(
            (self.t >= self.end - first_before_end) & (self.t <= self.end - last_before_end),
            dtype=np.float64,
        )

    def daily_window(self, hour: float, minutes: float) -> FloatArray:
        """1 in [hour, hour + minutes) UTC every day."""
        sod = np.mod(self.t, DAY)
        return np.asarray((sod >= hour * HOUR) & (sod < hour * HOUR + minutes * MINUTE), float)

    def bursts(self, key: str, share: FloatArray | float, minutes: float = 2.0) -> FloatArray:
        """0/1 bursts of about ``minutes`` that cover about ``share`` of the time (a share
        that may vary over time): what bursty kernel counters look like."""
        rng = self.rng(key)
        steps = max(1, int(minutes * MINUTE / self.step))
        starts = rng.random(self.n) < np.asarray(share) / steps
        return np.asarray(np.convolve(starts, np.ones(steps))[: self.n] > 0, dtype=np.float64)

    def cron(self, minutes: float = 2) -> FloatArray:
        return np.asarray(np.mod(self.t, HOUR) < minutes * MINUTE, dtype=np.float64)

    def pattern(
        self, key: str, level: float, daily: float = 0.0, hourly: float = 0.0,
        noise: float = 0.0, peak_hour: float = 14.0, phi: float = 0.95,
    ) -> FloatArray:  # fmt: skip
        rng = self.rng(key)
        phase = float(rng.uniform(0, 2 * math.pi))
        return np.asarray(
            level
            + daily * self.daily(peak_hour)
            + hourly * self.hourly(phase)
            + noise * self.smooth(rng, phi)
        )

    def gauge(
        self,
        name: str,
        values: FloatArray,
        unit: float = 0.0,
        labels: Mapping[str, str] | None = None,
        **more: str,
    ) -> None:
        v = np.round(np.asarray(values) / unit) * unit if unit else np.asarray(values)
        self.series.append(DemoSeries(name, _labels(**(labels or {}), **more), self.ts, v))

    def counter(self, name: str, rate: FloatArray, integer: bool = True, **labels: str) -> None:
        """A counter whose per-second rate is ``rate`` (clipped at 0)."""
        key = _key(name, **labels)
        start = float(self.rng(key + "#start").uniform(1e5, 1e7))
        v = start + np.cumsum(np.maximum(rate, 0.0) * self.step)
        if integer:
            v = np.floor(v)
        self.series.append(DemoSeries(name, _labels(**labels), self.ts, v))
        self.counters.add(key)


def _violation(
    t: IntArray, values: FloatArray, threshold: float, direction: Direction, near: int
) -> tuple[int, int]:
    """First and last violating sample of the run of violations nearest to ``near``."""
    bad = values < threshold if direction == "below" else values > threshold
    idx = np.flatnonzero(bad)
    if len(idx) == 0:
        raise ValueError("the incident does not violate its threshold in this history")
    centre = int(idx[np.argmin(np.abs(t[idx] - near))])
    lo = hi = centre
    while lo > 0 and bad[lo - 1]:
        lo -= 1
    while hi < len(bad) - 1 and bad[hi + 1]:
        hi += 1
    return int(t[lo]), int(t[hi])


def generate_host(
    seed: int = 42,
    end: int | None = None,
    hours: float = 24.0,
    step_s: int = 15,
    with_incidents: bool = True,
) -> Host:
    """``hours`` of history at ``step_s`` ending at ``end`` (aligned down to the step).
    ``with_incidents=False``: the same host on a quiet day (its unrelated bursts only)."""
    if not 1 <= step_s <= 300:
        raise ValueError("step_s must be in [1, 300]")
    if with_incidents and not hours * HOUR >= 7 * HOUR:
        raise ValueError("hours must cover the incidents (at least 7)")
    if hours * HOUR < 2 * step_s:
        raise ValueError("hours must cover at least two steps")
    e = align_end(end, step_s)
    n = int(hours * HOUR // step_s) + 1
    ts = e - step_s * np.arange(n - 1, -1, -1, dtype=np.int64)
    g = _Gen(seed, ts, step_s, e)

    backup = g.daily_window(2, 40)
    cron = g.cron(2)
    batch = g.window(BATCH_ONSET, BATCH_END)

    # ---------------------------------------------------------------- incidents' shapes
    on = 1.0 if with_incidents else 0.0
    leak = g.profile([(LEAK_ONSET, 0.0), (LEAK_PEAK, 9.0 * GIB), (LEAK_RESTART, 9.4 * GIB)]) * (
        g.t <= e - LEAK_RESTART
    )
    leak = on * leak
    leak_rate = np.gradient(leak, g.t)  # bytes/s allocated by the leak
    disk = on * g.window(DISK_ONSET, DISK_CLEANUP)
    disk_fill = g.profile([(DISK_ONSET, 0.0), (DISK_CLEANUP, 50 * GIB)]) * disk
    storm = on * g.profile(
        [(FD_ONSET + 120, 0.0), (FD_ONSET - 60, 1.0), (FD_END + 60, 1.0), (FD_END - 120, 0.0)]
    )

    # ---------------------------------------------------------------- memory
    anon = g.pattern(_key("anon#"), 5.0 * GIB, 0.6 * GIB, 0.05 * GIB, 30 * MIB)
    anon = anon + 0.4 * GIB * batch
    kernel = g.pattern(_key("kernel#"), 0.9 * GIB, 0.05 * GIB, 0.0, 8 * MIB)
    shmem = g.pattern(_key("node_memory_Shmem_bytes"), 0.3 * GIB, 0.02 * GIB, 0.0, 4 * MIB)
    buffers = g.pattern(_key("node_memory_Buffers_bytes"), 0.25 * GIB, 0.03 * GIB, 0, 5 * MIB)
    cache_want = g.pattern(_key("cache#"), 4.5 * GIB, 0.5 * GIB, 0.1 * GIB, 60 * MIB)
    cache_want = cache_want + 0.8 * GIB * backup + 0.5 * GIB * disk
    min_free = 0.25 * GIB
    used = anon + leak + kernel + shmem + buffers
    cache = np.minimum(cache_want, np.maximum(0.35 * GIB, MEM_TOTAL - used - min_free))
    evicted = np.clip((cache_want - cache) / cache_want, 0, 1)
    free = MEM_TOTAL - used - cache
    sreclaim = g.pattern(_key("node_memory_SReclaimable_bytes"), 0.35 * GIB, 0.03 * GIB, 0, 5 * MIB)
    available = free + 0.85 * cache + 0.5 * sreclaim
    swap_used = 0.2 * GIB + 1.2 * GIB * np.maximum.accumulate(evicted * (g.t <= e - LEAK_RESTART))
    swap_used = np.where(g.t > e - LEAK_RESTART, 0.2 * GIB + 0.6 * GIB * on, swap_used)
    pressure = np.clip((1.5 * GIB - available) / GIB, 0, 1)
    # dirty pages and writeback come in bursts, more of them while the log floods sdb
    dirty = g.pattern(_key("node_memory_Dirty_bytes"), 30 * MIB, 5 * MIB, 0, 8 * MIB, phi=0.7)
    dirty_bursts = g.bursts(_key("dirty#"), 0.08 + 0.5 * disk, 1.0)
    dirty = np.maximum(dirty + 250 * MIB * dirty_bursts * (0.3 + 0.7 * disk), 0)
    wb_bursts = g.bursts(_key("writeback#"), 0.05 + 0.4 * disk, 0.5)
    writeback = np.maximum(
        g.pattern(_key("node_memory_Writeback_bytes"), 1 * MIB, 0, 0, 0.8 * MIB, phi=0.5)
        + 40 * MIB * wb_bursts,
        0,
    )
    active_anon = 0.9 * anon + leak
    inactive_anon = 0.1 * anon
    active_file = 0.55 * cache
    inactive_file = 0.45 * cache
    mem = {
        "MemTotal": np.full(n, MEM_TOTAL),
        "MemFree": free,
        "MemAvailable": available,
        "Buffers": buffers,
        "Cached": cache,
        "SwapCached": 20 * MIB + 200 * MIB * evicted,
        "Active": active_anon + active_file,
        "Inactive": inactive_anon + inactive_file,
        "Active_anon": active_anon,
        "Inactive_anon": inactive_anon,
        "Active_file": active_file,
        "Inactive_file": inactive_file,
        "AnonPages": anon + leak,
        "Mapped": g.pattern(_key("node_memory_Mapped_bytes"), 0.6 * GIB, 0.05 * GIB, 0, 6 * MIB),
        "Shmem": shmem,
        "Slab": sreclaim + 0.25 * GIB,
        "SReclaimable": sreclaim,
        "SUnreclaim": g.pattern(_key("node_memory_SUnreclaim_bytes"), 0.25 * GIB, 0, 0, 2 * MIB),
        "Committed_AS": g.pattern(_key("commit#"), 9 * GIB, 0.8 * GIB, 0, 40 * MIB) + leak,
        "Dirty": dirty,
        "Writeback": writeback,
        "SwapTotal": np.full(n, 4 * GIB),
        "SwapFree": 4 * GIB - swap_used,
        "PageTables": g.pattern(_key("node_memory_PageTables_bytes"), 60 * MIB, 6 * MIB, 0, MIB)
        + leak / 512,
        "KernelStack": g.pattern(
            _key("node_memory_KernelStack_bytes"), 18 * MIB, MIB, 0, 0.2 * MIB
        ),
    }
    for field, values in mem.items():
        g.gauge(f"node_memory_{field}_bytes", values, unit=4096)

    # vmstat (cumulative; node-exporter exposes them untyped without _total)
    fault_rate = g.pattern(_key("node_vmstat_pgfault"), 9000, 4000, 800, 1500, phi=0.8)
    g.counter("node_vmstat_pgfault", fault_rate + 2000 * cron + leak_rate / 4096)
    majfault = g.pattern(_key("node_vmstat_pgmajfault"), 4, 2, 0, 2, phi=0.6)
    g.counter("node_vmstat_pgmajfault", majfault + 250 * evicted + 30 * backup)
    swapout = np.gradient(swap_used, g.t).clip(0) / 4096
    g.counter("node_vmstat_pswpout", 0.05 + swapout)
    g.counter("node_vmstat_pswpin", 0.05 + 40 * evicted * (g.t > e - LEAK_PEAK))
    io_stalls = g.bursts(_key("psi#io"), 0.04 + 0.35 * disk + 0.3 * backup, 1.0)
    for resource, extra in (("memory", pressure), ("io", 0.25 * io_stalls)):
        for kind in ("waiting", "stalled"):
            share = 0.6 if kind == "stalled" else 1.0
            base = g.pattern(_key(f"psi#{resource}{kind}"), 0.002, 0.001, 0, 0.001, phi=0.8)
            g.counter(f"node_pressure_{resource}_{kind}_seconds_total", base + share * extra, False)
    g.counter(
        "node_pressure_cpu_waiting_seconds_total",
        g.pattern(_key("psi#cpu"), 0.02, 0.01, 0, 0.01, phi=0.8) + 0.3 * batch,
        False,
    )

    # ---------------------------------------------------------------- CPU
    for cpu in CPUS:
        c = int(cpu)
        user = g.pattern(_key("cpu#user", cpu=cpu), 0.12, 0.08, 0.02, 0.03, phi=0.9)
        user = user + 0.75 * batch * (c >= 4) + 0.5 * backup * (c == 3) + 0.15 * cron
        system = g.pattern(_key("cpu#system", cpu=cpu), 0.04, 0.02, 0.005, 0.01, phi=0.9)
        system = system + 0.05 * cron + 0.03 * storm + 0.02 * disk
        iowait = g.pattern(_key("cpu#iowait", cpu=cpu), 0.008, 0.003, 0, 0.004, phi=0.8)
        io_bursts = g.bursts(_key("cpu#iowait#bursts", cpu=cpu), 0.05 + 0.3 * disk, 1.0)
        iowait = iowait + 0.07 * io_bursts + 0.05 * backup + 0.02 * pressure
        softirq = g.pattern(_key("cpu#softirq", cpu=cpu), 0.006, 0.002, 0, 0.002, phi=0.8)
        softirq = softirq + 0.09 * storm * (c < 2)
        irq = g.pattern(_key("cpu#irq", cpu=cpu), 0.002, 0.0005, 0, 0.0005, phi=0.5)
        nice = g.pattern(_key("cpu#nice", cpu=cpu), 0.003, 0.001, 0, 0.002, phi=0.9)
        steal = g.pattern(_key("cpu#steal", cpu=cpu), 0.004, 0.0, 0.002, 0.002, phi=0.9)
        modes = {
            "user": user,
            "system": system,
            "iowait": iowait,
            "softirq": softirq,
            "irq": irq,
            "nice": nice,
            "steal": steal,
        }
        modes = {k: np.clip(v, 0.0, 1.0) for k, v in modes.items()}
        busy = sum(modes.values())
        modes["idle"] = np.clip(1.0 - busy, 0.0, 1.0)
        for mode in CPU_MODES:
            g.counter("node_cpu_seconds_total", modes[mode], False, cpu=cpu, mode=mode)

    running = (
        g.pattern(_key("load#"), 1.1, 0.6, 0.15, 0.35, phi=0.9)
        + 4.0 * batch
        + 1.0 * backup
        + 0.6 * disk
        + 0.8 * storm
    )
    # load averages: exponentially damped running + blocked over 1, 5, 15 min
    for minutes, name in ((1, "node_load1"), (5, "node_load5"), (15, "node_load15")):
        alpha = 1 - math.exp(-step_s / (minutes * MINUTE))
        load = lfilter([alpha], [1.0, -(1 - alpha)], running, zi=[running[0] * (1 - alpha)])[0]
        g.gauge(name, np.asarray(load), unit=0.01)
    procs_running = np.maximum(
        1, np.round(running + 3 * cron + g.smooth(g.rng("procs#"), 0.3) * 0.8)
    )
    g.gauge("node_procs_running", procs_running)
    g.gauge(
        "node_procs_blocked",
        np.maximum(0, np.round(0.2 + 2.5 * disk + 1.5 * backup + g.smooth(g.rng("blk#"), 0.3))),
    )
    g.gauge(
        "node_processes_pids",
        g.pattern(_key("node_processes_pids"), 310, 15, 0, 4, phi=0.95) + 40 * batch,
        unit=1,
    )
    g.gauge(
        "node_processes_threads",
        g.pattern(_key("node_processes_threads"), 1450, 80, 0, 15, phi=0.95)
        + 300 * batch
        + 200 * storm,
        unit=1,
    )
    g.counter(
        "node_forks_total",
        g.pattern(_key("node_forks_total"), 6, 3, 1, 1.5, phi=0.7) + 60 * cron + 8 * batch,
    )
    ctx = g.pattern(_key("node_context_switches_total"), 9000, 3000, 500, 900, phi=0.8)
    g.counter("node_context_switches_total", ctx + 6000 * cron + 9000 * storm + 4000 * batch)
    intr = g.pattern(_key("node_intr_total"), 7000, 2000, 300, 600, phi=0.8)
    g.counter("node_intr_total", intr + 12000 * storm + 3000 * disk + 2000 * backup)

    # ---------------------------------------------------------------- disks
    disk_rates: dict[str, list[FloatArray]] = {"read": [], "written": []}
    for dev in DISKS:
        scale = {"nvme0n1": 1.5, "sda": 1.0, "sdb": 0.8}[dev]
        rb = g.pattern(
            _key("rb#", device=dev), 1.5 * MIB * scale, MIB, 0.3 * MIB, 0.6 * MIB, 10, 0.85
        )
        wb = g.pattern(
            _key("wb#", device=dev), 2.0 * MIB * scale, MIB, 0.3 * MIB, 0.7 * MIB, 15, 0.85
        )
        if dev == "sda":
            rb = rb + 80 * MIB * backup
        if dev == "sdb":
            wb = wb + 12 * MIB * disk
        rb, wb = np.maximum(rb, 0.05 * MIB), np.maximum(wb, 0.05 * MIB)
        disk_rates["read"].append(rb)
        disk_rates["written"].append(wb)
        reads = rb / (32 * KIB) + g.smooth(g.rng(f"r#{dev}"), 0.6) * 3
        writes = wb / (24 * KIB) + g.smooth(g.rng(f"w#{dev}"), 0.6) * 3
        util = np.clip(0.02 + rb / (300 * MIB) + wb / (25 * MIB), 0, 1)
        g.counter("node_disk_read_bytes_total", rb, device=dev)
        g.counter("node_disk_written_bytes_total", wb, device=dev)
        g.counter("node_disk_reads_completed_total", np.maximum(reads, 0), device=dev)
        g.counter("node_disk_writes_completed_total", np.maximum(writes, 0), device=dev)
        g.counter("node_disk_io_time_seconds_total", util, False, device=dev)
        g.counter(
            "node_disk_read_time_seconds_total", reads * 0.0004 * (1 + 3 * util), False, device=dev
        )
        g.counter(
            "node_disk_write_time_seconds_total",
            writes * 0.0008 * (1 + 6 * util),
            False,
            device=dev,
        )
        g.gauge(
            "node_disk_io_now",
            np.maximum(0, np.round(util * 4 + g.smooth(g.rng(f"q#{dev}"), 0.3) * 0.6)),
            device=dev,
        )

    # pages paged in/out: what every disk read and wrote, in KiB
    g.counter("node_vmstat_pgpgin", np.vstack(disk_rates["read"]).sum(axis=0) / KIB)
    g.counter("node_vmstat_pgpgout", np.vstack(disk_rates["written"]).sum(axis=0) / KIB)

    # ---------------------------------------------------------------- filesystems
    for mount, (device, fstype, size, avail0) in FILESYSTEMS.items():
        lab = {"device": device, "fstype": fstype, "mountpoint": mount}
        reserve = 0.0 if fstype == "tmpfs" else 0.05 * size
        drift = g.pattern(_key("fs#", **lab), 0.0, 0.002 * size, 0.0, 0.0004 * size, phi=0.995)
        avail = avail0 + drift
        if mount == "/var":
            avail = avail - disk_fill
        if mount == "/":
            avail = avail - 3 * GIB * backup  # the backup's staging files
        files = {"/": 6.5e6, "/boot": 65536, "/var": 13e6, "/home": 19.5e6, "/run": 4e6}[mount]
        g.gauge("node_filesystem_avail_bytes", avail, unit=4096, labels=lab)
        g.gauge("node_filesystem_free_bytes", avail + reserve, unit=4096, labels=lab)
        g.gauge("node_filesystem_size_bytes", np.full(n, size), labels=lab)
        g.gauge("node_filesystem_files", np.full(n, files), labels=lab)
        used_inodes = 0.2 * files + drift / (64 * KIB)
        g.gauge("node_filesystem_files_free", files - used_inodes, unit=1, labels=lab)
        g.gauge("node_filesystem_readonly", np.zeros(n), labels=lab)

    # ---------------------------------------------------------------- network
    for dev in INTERFACES:
        level = {"eth0": 6 * MIB, "eth1": 1 * MIB, "lo": 2 * MIB, "docker0": 0.3 * MIB}[dev]
        rx = g.pattern(
            _key("rx#", device=dev), level, 0.5 * level, 0.1 * level, 0.2 * level, 13, 0.9
        )
        tx = g.pattern(
            _key("tx#", device=dev), 0.6 * level, 0.3 * level, 0.1 * level, 0.15 * level, 13, 0.9
        )
        if dev == "eth0":
            rx = rx + 8 * MIB * storm
            tx = tx + 3 * MIB * storm
        if dev == "eth1":
            tx = tx + 60 * MIB * backup
        rx, tx = np.maximum(rx, 1000), np.maximum(tx, 1000)
        g.counter("node_network_receive_bytes_total", rx, device=dev)
        g.counter("node_network_transmit_bytes_total", tx, device=dev)
        g.counter("node_network_receive_packets_total", rx / 900, device=dev)
        g.counter("node_network_transmit_packets_total", tx / 700, device=dev)
        err = g.pattern(_key("err#", device=dev), 0.01, 0, 0, 0.01, phi=0.5)
        g.counter("node_network_receive_errs_total", err, device=dev)
        g.counter("node_network_transmit_errs_total", err / 2, device=dev)
        drop = g.pattern(_key("drop#", device=dev), 0.05, 0.02, 0, 0.03, phi=0.5)
        drop_bursts = g.bursts(_key("drop#bursts", device=dev), 0.03 + 0.3 * storm, 1.0)
        g.counter("node_network_receive_drop_total", drop + 20 * drop_bursts, device=dev)
        g.counter("node_network_transmit_drop_total", drop / 3, device=dev)

    # ---------------------------------------------------------------- sockets, fds, TCP
    conns = g.pattern(_key("conns#"), 420, 150, 30, 25, phi=0.95) + 36000 * storm + 60 * batch
    estab = 0.7 * conns
    g.gauge("node_sockstat_TCP_inuse", conns, unit=1)
    g.gauge("node_netstat_Tcp_CurrEstab", estab + g.smooth(g.rng("estab#"), 0.5) * 5, unit=1)
    g.gauge(
        "node_sockstat_TCP_tw",
        g.pattern(_key("tw#"), 300, 120, 40, 30, phi=0.9)
        + 900 * g.bursts(_key("tw#bursts"), 0.05 + 0.4 * storm, 3.0),
        unit=1,
    )
    g.gauge("node_sockstat_TCP_alloc", conns * 1.05 + 40, unit=1)
    g.gauge(
        "node_sockstat_TCP_orphan",
        np.maximum(0, np.round(g.pattern(_key("orph#"), 1, 0.5, 0, 1, phi=0.5))),
    )
    tcp_mem = (
        (conns * 1.05 + 40) * 8 * KIB * (1 + 0.5 * g.smooth(g.rng("tcpmem#"), 0.5).clip(-1.5, 3))
    )
    g.gauge("node_sockstat_TCP_mem_bytes", np.maximum(tcp_mem, 0), unit=4096)
    g.gauge("node_sockstat_UDP_inuse", g.pattern(_key("udp#"), 14, 2, 0, 1, phi=0.95), unit=1)
    g.gauge("node_sockstat_sockets_used", conns * 1.1 + 900 + 50 * cron, unit=1)
    opens = g.pattern(_key("opens#"), 12, 6, 2, 3, phi=0.8)
    g.counter("node_netstat_Tcp_PassiveOpens", opens + 900 * storm)
    g.counter(
        "node_netstat_Tcp_ActiveOpens",
        g.pattern(_key("aopens#"), 5, 2, 1, 1.5, phi=0.8) + 15 * cron + 10 * backup,
    )
    g.counter(
        "node_netstat_Tcp_RetransSegs",
        g.pattern(_key("retrans#"), 0.8, 0.3, 0, 0.4, phi=0.6)
        + 12 * g.bursts(_key("retrans#bursts"), 0.05 + 0.4 * storm + 0.2 * backup, 1.0),
    )
    filefd = g.pattern(_key("node_filefd_allocated"), 4800, 700, 150, 60, phi=0.95)
    filefd = filefd + conns + 40 * cron + 500 * batch
    g.gauge("node_filefd_allocated", filefd, unit=1)
    g.gauge("node_filefd_maximum", np.full(n, 9223372036854775807.0))

    # ---------------------------------------------------------------- misc
    g.gauge("node_time_seconds", g.t + 0.000123)
    g.gauge("node_boot_time_seconds", np.full(n, float(e - 40 * DAY)))
    g.gauge(
        "node_entropy_available_bits", g.pattern(_key("entropy#"), 3800, 0, 40, 60, phi=0.7), unit=1
    )
    g.gauge("node_timex_offset_seconds", g.pattern(_key("timex#"), 0, 0, 0, 0.0004, phi=0.98))

    series = tuple(g.series)
    by_key = {s.key(): s for s in series}

    def incident(
        name: str,
        sli: str,
        threshold: float,
        direction: Direction,
        causes: Sequence[str],
        followers: Sequence[str],
        onset_before_end: int,
        near_before_end: int,
        description: str,
    ) -> HostIncident:
        start, stop = _violation(ts, by_key[sli].values, threshold, direction, e - near_before_end)
        for k in (sli, *causes, *followers):
            if k not in by_key:
                raise AssertionError(f"ground truth names a series that is not generated: {k}")
        return HostIncident(
            name, sli, threshold, direction, tuple(causes), tuple(followers),
            e - onset_before_end, start, stop, description,
        )  # fmt: skip

    var = {"device": "/dev/sdb1", "fstype": "ext4", "mountpoint": "/var"}
    mem_key: Callable[[str], str] = lambda f: _key(f"node_memory_{f}_bytes")  # noqa: E731
    if not with_incidents:
        return Host(ts, series, frozenset(g.counters), ())
    incidents = (
        incident(
            "memory_leak",
            mem_key("MemAvailable"),
            2 * GIB,
            "below",
            [mem_key("Active_anon"), mem_key("AnonPages"), mem_key("Committed_AS")],
            [
                mem_key("MemFree"),
                mem_key("Active"),
                mem_key("Cached"),
                mem_key("Active_file"),
                mem_key("Inactive_file"),
                mem_key("Inactive"),
                mem_key("SwapFree"),
                mem_key("SwapCached"),
                mem_key("PageTables"),
                _key("node_vmstat_pgmajfault"),
                _key("node_vmstat_pswpout"),
                _key("node_vmstat_pswpin"),
                _key("node_pressure_memory_waiting_seconds_total"),
                _key("node_pressure_memory_stalled_seconds_total"),
            ],
            LEAK_ONSET,
            (LEAK_PEAK + LEAK_RESTART) // 2,
            "a process leaks 9 GiB of anonymous memory from end-6h; MemAvailable under 2 GiB "
            "until it restarts after end-4h30m",
        ),
        incident(
            "disk_fill",
            _key("node_filesystem_avail_bytes", **var),
            10 * GIB,
            "below",
            [
                _key("node_disk_written_bytes_total", device="sdb"),
                _key("node_disk_writes_completed_total", device="sdb"),
            ],
            [
                _key("node_filesystem_free_bytes", **var),
                _key("node_disk_io_time_seconds_total", device="sdb"),
                _key("node_disk_write_time_seconds_total", device="sdb"),
                _key("node_vmstat_pgpgout"),
                mem_key("Dirty"),
                mem_key("Writeback"),
                _key("node_pressure_io_waiting_seconds_total"),
                _key("node_pressure_io_stalled_seconds_total"),
                _key("node_procs_blocked"),
                _key("node_intr_total"),
            ],
            DISK_ONSET,
            DISK_CLEANUP,
            "a runaway log writes 12 MiB/s to /var (sdb) from end-3h; avail under 10 GiB "
            "until the clean-up after end-2h",
        ),
        incident(
            "fd_spike",
            _key("node_filefd_allocated"),
            20000.0,
            "above",
            [
                _key("node_netstat_Tcp_PassiveOpens"),
                _key("node_sockstat_TCP_inuse"),
                _key("node_netstat_Tcp_CurrEstab"),
                _key("node_sockstat_TCP_alloc"),
            ],
            [
                _key("node_sockstat_TCP_mem_bytes"),
                _key("node_sockstat_sockets_used"),
                _key("node_sockstat_TCP_tw"),
                _key("node_network_receive_bytes_total", device="eth0"),
                _key("node_network_receive_packets_total", device="eth0"),
                _key("node_network_transmit_bytes_total", device="eth0"),
                _key("node_network_transmit_packets_total", device="eth0"),
                _key("node_network_receive_drop_total", device="eth0"),
                _key("node_netstat_Tcp_RetransSegs"),
                _key("node_context_switches_total"),
                _key("node_intr_total"),
                _key("node_processes_threads"),
            ],
            FD_ONSET + 2 * MINUTE,  # the storm ramps up over the 3 minutes around end-50m
            (FD_ONSET + FD_END) // 2,
            "a connection storm on eth0 from end-50m to end-30m holds ~36k TCP connections",
        ),
    )
    return Host(ts, series, frozenset(g.counters), incidents)
