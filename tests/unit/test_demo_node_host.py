"""The realistic node-exporter host (demo.node_host): size, determinism, and incidents that
move what they would move on a real host, with their ground truth."""

from __future__ import annotations

import io

import numpy as np
import pytest

from demo.node_host import GIB, MIB, Features, Host, generate_host
from sla_common.demo import write_openmetrics
from sla_manager.explain.exstream import explain

END = 1_760_000_007
STEP = 15


@pytest.fixture(scope="module")
def host() -> Host:
    return generate_host(42, END)


@pytest.fixture(scope="module")
def features(host: Host) -> Features:
    return host.features()


def _window(host: Host, start: int, end: int) -> np.ndarray:
    return (host.timestamps >= start) & (host.timestamps <= end)


def test_a_realistic_host_of_more_than_200_series(host: Host) -> None:
    keys = [s.key() for s in host.series]
    assert len(keys) >= 200
    assert len(set(keys)) == len(keys)
    names = {s.name for s in host.series}
    for family in (
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_disk_written_bytes_total",
        "node_filesystem_avail_bytes",
        "node_network_receive_bytes_total",
        "node_load1",
        "node_procs_running",
        "node_filefd_allocated",
        "node_sockstat_TCP_inuse",
        "node_vmstat_pgmajfault",
    ):
        assert family in names
    cpu = [s for s in host.series if s.name == "node_cpu_seconds_total"]
    assert len(cpu) == 8 * 8  # 8 cpus x 8 modes
    assert host.timestamps[-1] == END - END % STEP
    assert len(host.timestamps) == 24 * 240 + 1
    for s in host.series:
        assert np.isfinite(s.values).all(), s.key()
        if s.key() in host.counters:
            assert (np.diff(s.values) >= 0).all(), s.key()


def test_deterministic(host: Host) -> None:
    again = generate_host(42, END)
    for a, b in zip(host.series, again.series, strict=True):
        assert a.key() == b.key()
        assert np.array_equal(a.values, b.values)
    assert again.incidents == host.incidents
    other = generate_host(43, END)
    differs = sum(
        not np.array_equal(a.values, b.values)
        for a, b in zip(host.series, other.series, strict=True)
    )
    assert differs > 150


def test_cpu_modes_add_up_to_one_cpu(host: Host, features: Features) -> None:
    f = features
    cpu0 = [i for i, k in enumerate(f.keys) if 'cpu="0"' in k and "node_cpu_seconds" in k]
    total = f.values[cpu0].sum(axis=0)
    assert np.allclose(total[10:], 1.0, atol=0.02)


def test_incidents_and_their_ground_truth(host: Host, features: Features) -> None:
    by_key = host.by_key()
    f = features
    names = [i.name for i in host.incidents]
    assert names == ["memory_leak", "disk_fill", "fd_spike"]
    for inc in host.incidents:
        sli = by_key[inc.sli].values
        a = _window(host, inc.start, inc.end)
        bad = sli < inc.threshold if inc.direction == "below" else sli > inc.threshold
        assert bad[a].all()
        assert 10 <= a.sum() <= 200  # 2.5 to 50 minutes at 15 s
        before = _window(host, inc.onset - 3 * 3600, inc.onset - 60)
        assert not bad[before].any()
        assert inc.onset < inc.start
        # every cause moves far out of its own range of the hours before the onset
        for key in inc.causes:
            v = f.values[f.row(key)]
            ref = v[before]
            moved = np.median(v[a]) - np.median(ref)
            scale = np.subtract(*np.percentile(ref, [75, 25])) / 1.349 + 1e-12
            assert abs(moved) / scale > 5, (inc.name, key)
        assert set(inc.causes).isdisjoint(inc.followers)
        assert inc.sli not in inc.causes


def test_the_incidents_move_what_they_would_move(host: Host, features: Features) -> None:
    f = features
    leak, disk, fds = host.incidents

    def change(key: str, inc: object) -> float:
        assert hasattr(inc, "start")
        v = f.values[f.row(key)]
        a = _window(host, inc.start, inc.end)  # type: ignore[attr-defined]
        ref = _window(host, inc.onset - 3 * 3600, inc.onset - 60)  # type: ignore[attr-defined]
        return float(np.median(v[a]) - np.median(v[ref]))

    mem = 'node_memory_{}_bytes{{instance="demo-host:9100",job="host"}}'
    assert change(mem.format("AnonPages"), leak) > 8 * GIB
    assert change(mem.format("MemFree"), leak) < -3 * GIB
    assert change(mem.format("Cached"), leak) < -1 * GIB
    assert change(mem.format("SwapFree"), leak) < 0
    assert change('node_vmstat_pgmajfault{instance="demo-host:9100",job="host"}', leak) > 50
    sdb = 'node_disk_written_bytes_total{device="sdb",instance="demo-host:9100",job="host"}'
    assert change(sdb, disk) > 10 * MIB
    var = (
        'node_filesystem_free_bytes{device="/dev/sdb1",fstype="ext4",'
        'instance="demo-host:9100",job="host",mountpoint="/var"}'
    )
    assert change(var, disk) < -35 * GIB
    assert change('node_sockstat_TCP_inuse{instance="demo-host:9100",job="host"}', fds) > 30000
    # what the incidents do not touch stays put
    eth1 = 'node_network_transmit_bytes_total{device="eth1",instance="demo-host:9100",job="host"}'
    assert abs(change(eth1, fds)) < 1 * MIB
    assert abs(change(mem.format("AnonPages"), fds)) < 1 * GIB


def test_unrelated_bursts_happen_outside_the_incidents(host: Host, features: Features) -> None:
    f = features
    eth1 = 'node_network_transmit_bytes_total{device="eth1",instance="demo-host:9100",job="host"}'
    v = f.values[f.row(eth1)]
    sod = host.timestamps % 86400
    backup = (sod >= 2 * 3600 + 300) & (sod < 2 * 3600 + 35 * 60)
    assert backup.any()
    assert np.median(v[backup]) > 20 * MIB > 5 * np.median(v[~backup])


def test_writes_as_openmetrics(host: Host) -> None:
    out = io.StringIO()
    written = write_openmetrics(host.series, out)
    assert written == len(host.series) * len(host.timestamps)
    assert out.getvalue().endswith("# EOF\n")


def test_each_incident_is_explained_by_its_story() -> None:
    """The explanation of each incident (the SLI and its affine copies left out): at most 3
    predicates, the first one's group holds a cause, and every group is the incident's."""
    day = generate_host(42, END, hours=48.0)
    f = day.features()
    ts = f.timestamps
    for inc in day.incidents:
        a = (ts >= inc.start) & (ts <= inc.end)
        r = (ts >= inc.start - 7 * 3600) & (ts < inc.start - 3600)
        pairs = [(np.roll(r, -5760), np.roll(a, -5760))]  # the same intervals a day earlier
        sli = f.values[f.row(inc.sli)]
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = [abs(np.corrcoef(f.values[i], sli)[0, 1]) for i in range(len(f.keys))]
        keep = [i for i, c in enumerate(corr) if not c >= 0.9999]  # the SLI and its copies
        e = explain(f.values[keep], a, r, false_positive_intervals=pairs)
        assert 1 <= len(e.predicates) <= 3, inc.name
        first = e.clusters[0]
        group = {f.keys[keep[m]] for m in (first.representative, *first.moves_with)}
        assert group & set(inc.causes), inc.name
        story = set(inc.causes) | set(inc.followers)
        assert f.keys[keep[first.representative]] in story, inc.name
