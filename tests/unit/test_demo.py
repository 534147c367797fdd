"""The demo history generator: determinism, shape, realism and the exact incident geometry."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from sla_common import demo
from sla_common.series import series_key

STEP = 15
DAY = 86400
HOUR = 3600
GIB = 1024**3
# Not a multiple of 15: generate() must align it down.
END = 1_760_000_007
ALIGNED = END - END % STEP

# The designed incidents for a 15 s step: (first, last) violating sample as seconds before the
# aligned end, and how many samples violate.
EXPECTED: dict[str, tuple[int, int, int]] = {
    "memory_leak_free": (5 * HOUR + 30 * 60, 4 * HOUR + 30 * 60, 241),
    "memory_leak_available": (5 * HOUR + 20 * 60, 4 * HOUR + 30 * 60, 201),
    "disk_fill_avail": (2 * HOUR + 40 * 60, 2 * HOUR, 161),
    "disk_fill_free": (2 * HOUR + 15 * 60, 2 * HOUR, 61),
    "fd_spike": (50 * 60, 30 * 60, 81),
}
# The whole episode (ramp included) as seconds before the aligned end: before and after it the
# series is normal and keeps MARGIN (in the series' unit) away from the threshold.
EPISODE = {
    "memory_leak_free": (6 * HOUR, 4 * HOUR + 30 * 60),
    "memory_leak_available": (6 * HOUR, 4 * HOUR + 30 * 60),
    "disk_fill_avail": (3 * HOUR, 2 * HOUR),
    "disk_fill_free": (3 * HOUR, 2 * HOUR),
    "fd_spike": (50 * 60, 30 * 60),
}
MARGIN = {
    "memory_leak_free": 1.5 * GIB,
    "memory_leak_available": 4 * GIB,
    "disk_fill_avail": 20 * GIB,
    "disk_fill_free": 20 * GIB,
    "fd_spike": 10000.0,
}
BASE = {"instance": "demo-host:9100", "job": "host"}
ROOT = {**BASE, "device": "/dev/sda2", "fstype": "ext4", "mountpoint": "/"}
RUN = {**BASE, "device": "tmpfs", "fstype": "tmpfs", "mountpoint": "/run"}


def by_key(series: list[demo.DemoSeries]) -> dict[str, demo.DemoSeries]:
    return {s.key(): s for s in series}


def get(series: list[demo.DemoSeries], name: str, labels: Mapping[str, str]) -> demo.DemoSeries:
    return by_key(series)[series_key(name, labels)]


@pytest.fixture(scope="module")
def history() -> list[demo.DemoSeries]:
    return demo.generate(seed=42, end=END)


def om_text(series: list[demo.DemoSeries]) -> str:
    buf = io.StringIO()
    demo.write_openmetrics(series, buf)
    return buf.getvalue()


# --- determinism ---------------------------------------------------------------------------


def test_same_arguments_give_bit_identical_output(history: list[demo.DemoSeries]) -> None:
    again = demo.generate(seed=42, end=END)
    assert [s.key() for s in again] == [s.key() for s in history]
    for a, b in zip(history, again, strict=True):
        assert a.values.tobytes() == b.values.tobytes()
        assert a.timestamps.tobytes() == b.timestamps.tobytes()
    assert om_text(again) == om_text(history)


def test_other_seed_gives_other_noise_but_same_incidents(history: list[demo.DemoSeries]) -> None:
    other = demo.generate(seed=43, end=END)
    for a, b in zip(history, other, strict=True):
        assert np.array_equal(a.timestamps, b.timestamps)
        assert not np.array_equal(a.values, b.values), a.key()
    assert [(i.name, i.start, i.end, i.samples) for i in demo.incidents(43, END)] == [
        (i.name, i.start, i.end, i.samples) for i in demo.incidents(42, END)
    ]


def test_output_does_not_depend_on_python_hash_seed() -> None:
    code = (
        "import hashlib, io\n"
        "from sla_common import demo\n"
        "buf = io.StringIO()\n"
        f"demo.write_openmetrics(demo.generate(7, {END}, hours=2.0), buf)\n"
        "print(hashlib.sha256(buf.getvalue().encode()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
        )
        digests.add(out.stdout.strip())
    buf = io.StringIO()
    demo.write_openmetrics(demo.generate(7, END, hours=2.0), buf)
    assert digests == {hashlib.sha256(buf.getvalue().encode()).hexdigest()}


# --- shape ---------------------------------------------------------------------------------


def test_required_series_are_present(history: list[demo.DemoSeries]) -> None:
    keys = set(by_key(history))
    required = {
        series_key("node_memory_MemFree_bytes", BASE),
        series_key("node_memory_MemAvailable_bytes", BASE),
        series_key("node_filefd_allocated", BASE),
    }
    for fs in (ROOT, RUN):
        required.add(series_key("node_filesystem_free_bytes", fs))
        required.add(series_key("node_filesystem_avail_bytes", fs))
    for cpu in ("0", "1"):
        for mode in ("idle", "user", "system", "iowait"):
            required.add(series_key("node_cpu_seconds_total", {**BASE, "cpu": cpu, "mode": mode}))
    assert required <= keys
    assert len(keys) == len(history), "series keys must be unique"


def test_key_is_prometheus_style_with_sorted_labels(history: list[demo.DemoSeries]) -> None:
    fd = get(history, "node_filefd_allocated", BASE)
    assert fd.key() == 'node_filefd_allocated{instance="demo-host:9100",job="host"}'
    root = get(history, "node_filesystem_avail_bytes", ROOT)
    assert root.key() == (
        'node_filesystem_avail_bytes{device="/dev/sda2",fstype="ext4",'
        'instance="demo-host:9100",job="host",mountpoint="/"}'
    )
    for s in history:
        assert list(s.labels) == sorted(s.labels)
        assert s.labels["job"] == "host"
        assert s.labels["instance"] == "demo-host:9100"


def test_every_series_covers_24h_at_15s(history: list[demo.DemoSeries]) -> None:
    for s in history:
        ts = s.timestamps
        assert ts.dtype == np.int64
        assert s.values.dtype == np.float64
        assert len(ts) == 24 * HOUR // STEP + 1
        assert ts[-1] == ALIGNED
        assert ts[-1] - ts[0] >= 24 * HOUR
        assert np.all(np.diff(ts) == STEP)
        assert np.all(np.isfinite(s.values))


def test_arrays_are_read_only(history: list[demo.DemoSeries]) -> None:
    with pytest.raises(ValueError, match="read-only"):
        history[0].values[0] = 1.0


def test_hours_and_step_are_configurable() -> None:
    series = demo.generate(seed=1, end=END, hours=48, step_s=60)
    end = END - END % 60
    for s in series:
        assert len(s.timestamps) == 48 * 60 + 1
        assert s.timestamps[-1] == end
        assert np.all(np.diff(s.timestamps) == 60)
    got = {i.name: (end - i.start, end - i.end, i.samples) for i in demo.incidents(1, END, 48, 60)}
    assert got == {name: (a, b, (a - b) // 60 + 1) for name, (a, b, _) in EXPECTED.items()}


@pytest.mark.parametrize(("hours", "step"), [(0.0, 15), (-1.0, 15), (24.0, 0), (24.0, 301)])
def test_bad_arguments_are_rejected(hours: float, step: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        demo.generate(end=END, hours=hours, step_s=step)


# --- realism -------------------------------------------------------------------------------


def test_filesystem_avail_is_free_minus_root_reserve(history: list[demo.DemoSeries]) -> None:
    root_avail = get(history, "node_filesystem_avail_bytes", ROOT).values
    root_free = get(history, "node_filesystem_free_bytes", ROOT).values
    assert np.all(root_avail < root_free)
    assert np.all(root_free - root_avail == 5 * GIB)  # 5 % of a 100 GiB ext4
    assert np.all(root_free <= 100 * GIB)
    assert np.all(root_avail > 0)
    run_avail = get(history, "node_filesystem_avail_bytes", RUN).values
    run_free = get(history, "node_filesystem_free_bytes", RUN).values
    assert np.array_equal(run_avail, run_free)  # tmpfs reserves nothing
    assert np.all((run_free > 1.5 * GIB) & (run_free < 1.6 * GIB))
    assert np.all(root_avail % 4096 == 0)


def test_memory_is_plausible_for_16_gib(history: list[demo.DemoSeries]) -> None:
    free = get(history, "node_memory_MemFree_bytes", BASE).values
    avail = get(history, "node_memory_MemAvailable_bytes", BASE).values
    assert np.all(free < avail)
    assert np.all(avail < 16 * GIB)
    assert np.all(free > 0.25 * GIB)
    assert np.all(avail % 1024 == 0)


def test_filefd_is_an_integer_count(history: list[demo.DemoSeries]) -> None:
    fd = get(history, "node_filefd_allocated", BASE).values
    assert np.all(fd == np.round(fd))
    assert 1000 < float(np.median(fd)) < 10000


def _cycle_r2(ts: npt.NDArray[np.int64], values: npt.NDArray[np.float64], period: int) -> float:
    """Share of variance explained by one sine of ``period`` (least squares)."""
    w = 2 * np.pi * ts.astype(np.float64) / period
    x = np.column_stack([np.ones_like(w), np.cos(w), np.sin(w)])
    coef, *_ = np.linalg.lstsq(x, values, rcond=None)
    resid = values - x @ coef
    return float(1 - resid.var() / values.var())


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("node_memory_MemAvailable_bytes", BASE),
        ("node_memory_MemFree_bytes", BASE),
        ("node_filesystem_avail_bytes", ROOT),
        ("node_filefd_allocated", BASE),
    ],
)
def test_gauges_have_daily_and_hourly_cycles_and_noise(
    history: list[demo.DemoSeries], name: str, labels: Mapping[str, str]
) -> None:
    s = get(history, name, labels)
    # The first 12 h hold no incident.
    keep = s.timestamps < ALIGNED - 12 * HOUR
    ts, vs = s.timestamps[keep], s.values[keep]
    assert _cycle_r2(ts, vs, DAY) > 0.5
    # Remove the daily cycle, then an hourly one must explain most of what is left.
    w = 2 * np.pi * ts.astype(np.float64) / DAY
    x = np.column_stack([np.ones_like(w), np.cos(w), np.sin(w)])
    coef, *_ = np.linalg.lstsq(x, vs, rcond=None)
    detrended = vs - x @ coef
    assert _cycle_r2(ts, detrended, HOUR) > 0.5
    # ... and there is noise: consecutive samples are not a smooth curve.
    assert np.std(np.diff(vs, n=2)) > 0


def test_cpu_counters_are_monotonic_with_exactly_one_reset(
    history: list[demo.DemoSeries],
) -> None:
    reboot_ts = demo.cpu_reboot_sample(END)
    assert reboot_ts == ALIGNED - 8 * HOUR
    cpu = [s for s in history if s.name == "node_cpu_seconds_total"]
    assert len(cpu) == 8
    for s in cpu:
        d = np.diff(s.values)
        drops = np.flatnonzero(d < 0)
        assert len(drops) == 1, s.key()
        assert s.timestamps[drops[0] + 1] == reboot_ts
        assert s.values[drops[0] + 1] < 15  # restarted from (almost) zero
        assert np.all(s.values >= 0)
        assert np.all(s.values == np.round(s.values, 2))  # USER_HZ = 100


def test_cpu_modes_sum_to_one_second_per_second(history: list[demo.DemoSeries]) -> None:
    for cpu in ("0", "1"):
        series = [
            get(history, "node_cpu_seconds_total", {**BASE, "cpu": cpu, "mode": m})
            for m in ("idle", "user", "system", "iowait")
        ]
        total = sum(np.diff(s.values) for s in series)
        assert isinstance(total, np.ndarray)
        normal = total[total > 0]  # drop the reset step
        assert len(normal) == len(total) - 1
        np.testing.assert_allclose(normal / STEP, 1.0, atol=0.04 / STEP + 1e-9)
        user = np.diff(series[1].values) / STEP
        assert 0.05 < float(np.median(user[user > 0])) < 0.5


def test_short_history_has_no_reset_and_only_recent_incidents() -> None:
    series = demo.generate(seed=5, end=END, hours=1.0)
    for s in series:
        if s.name == "node_cpu_seconds_total":
            assert np.all(np.diff(s.values) >= 0)
    assert [i.name for i in demo.incidents(5, END, hours=1.0)] == ["fd_spike"]


# --- incidents -----------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "end"), [(42, END), (0, 1_700_000_000), (2024, 1_800_000_013)])
def test_incidents_are_exactly_where_designed(seed: int, end: int) -> None:
    series = demo.generate(seed=seed, end=end)
    aligned = end - end % STEP
    found = demo.incidents(seed=seed, end=end)
    assert [i.name for i in found] == list(EXPECTED)
    for inc in found:
        first, last, count = EXPECTED[inc.name]
        assert (inc.start, inc.end) == (aligned - first, aligned - last), inc.name
        assert inc.samples == count
        s = by_key(series)[inc.key()]
        assert s.name == inc.metric
        hits = inc.violates(s.values)
        inside = (s.timestamps >= inc.start) & (s.timestamps <= inc.end)
        # Every sample in [start, end] violates, none outside does.
        assert np.array_equal(hits, inside), inc.name
        assert int(hits.sum()) == (inc.end - inc.start) // STEP + 1 == count
        # Outside the episode, the series keeps well clear of the threshold, so that other
        # seeds are just as safe.
        lo, hi = EPISODE[inc.name]
        normal = (s.timestamps < aligned - lo) | (s.timestamps > aligned - hi)
        gap = np.abs(s.values[normal] - inc.threshold)
        assert float(gap.min()) > MARGIN[inc.name], inc.name


def test_incident_values_and_directions(history: list[demo.DemoSeries]) -> None:
    found = {i.name: i for i in demo.incidents(42, END)}
    avail = get(history, "node_memory_MemAvailable_bytes", BASE)
    leak = found["memory_leak_available"]
    assert leak.direction == "below"
    assert leak.threshold == 2 * GIB
    low = avail.values[(avail.timestamps >= leak.start) & (avail.timestamps <= leak.end)]
    assert 0.8 * GIB < float(low.min()) < 1.0 * GIB
    # It drains from normal over about an hour and is back to normal right after the restart.
    before = avail.values[avail.timestamps == ALIGNED - 6 * HOUR][0]
    after = avail.values[avail.timestamps == leak.end + STEP][0]
    assert before > 6 * GIB
    assert after > 6 * GIB

    disk = found["disk_fill_avail"]
    assert disk.labels == ROOT
    assert disk.threshold == 10 * GIB
    fd = found["fd_spike"]
    assert (fd.direction, fd.threshold) == ("above", 20000.0)
    fd_series = get(history, "node_filefd_allocated", BASE)
    spike = fd_series.values[(fd_series.timestamps >= fd.start) & (fd_series.timestamps <= fd.end)]
    assert float(spike.min()) > 30000


@pytest.mark.parametrize(
    ("window_h", "names"),
    [
        (1, {"fd_spike"}),
        (3, {"fd_spike", "disk_fill_avail", "disk_fill_free"}),
        (12, set(EXPECTED)),
    ],
)
def test_windows_contain_different_incidents(window_h: int, names: set[str]) -> None:
    found = demo.incidents(42, END)
    lo = ALIGNED - window_h * HOUR
    inside = {i.name for i in found if i.start >= lo and i.end <= ALIGNED}
    overlapping = {i.name for i in found if i.end >= lo}
    assert inside == overlapping == names


def test_incident_specs_match_the_api() -> None:
    for spec in demo.INCIDENT_SPECS:
        assert spec.labels["job"] == "host"
        assert spec.first_offset_s > spec.last_offset_s
        assert spec.first_offset_s < 12 * HOUR
    assert len({s.name for s in demo.INCIDENT_SPECS}) == len(demo.INCIDENT_SPECS)


# --- OpenMetrics ---------------------------------------------------------------------------

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\}) (\S+) (\d+)$")


def test_openmetrics_text_is_what_promtool_needs(history: list[demo.DemoSeries]) -> None:
    buf = io.StringIO()
    written = demo.write_openmetrics(history, buf)
    text = buf.getvalue()
    assert text.endswith("\n# EOF\n")
    assert written == sum(len(s.timestamps) for s in history)

    types: dict[str, str] = {}
    seen_family: list[str] = []
    samples: dict[str, list[tuple[int, float]]] = {}
    current: str | None = None
    for line in text.splitlines()[:-1]:
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ")
            assert family not in types, "one TYPE line per family"
            types[family] = kind
            current = family
            seen_family.append(family)
            continue
        m = SAMPLE_RE.match(line)
        assert m, line
        name, labels, value, ts = m.groups()
        assert current is not None
        assert name in (current, current + "_total"), "samples follow their family's TYPE"
        samples.setdefault(name + labels, []).append((int(ts), float(value)))
    assert types["node_cpu_seconds"] == "counter"
    assert types["node_filefd_allocated"] == "gauge"
    assert "node_cpu_seconds_total" not in types
    assert sum(len(v) for v in samples.values()) == written

    for s in history:
        got = samples[s.key()]
        ts = np.array([t for t, _ in got])
        # Seconds, not milliseconds: within the last day before the aligned end.
        assert ts.min() >= ALIGNED - 24 * HOUR
        assert ts.max() == ALIGNED
        assert 1e9 < ts.min() < 1e10
        assert np.all(np.diff(ts) > 0), "sorted within a series"
        # repr() round-trips: the parsed values are exactly the generated ones.
        assert np.array_equal(np.array([v for _, v in got]), s.values)


def test_writer_sorts_and_spells_special_values() -> None:
    s = demo.DemoSeries(
        name="x_total",
        labels={"b": "2", "a": 'q"\\'},
        timestamps=np.array([30, 10, 20], dtype=np.int64),
        values=np.array([float("inf"), float("nan"), -float("inf")]),
    )
    buf = io.StringIO()
    assert demo.write_openmetrics([s], buf) == 3
    assert buf.getvalue() == (
        "# TYPE x counter\n"
        'x_total{a="q\\"\\\\",b="2"} NaN 10\n'
        'x_total{a="q\\"\\\\",b="2"} -Inf 20\n'
        'x_total{a="q\\"\\\\",b="2"} +Inf 30\n'
        "# EOF\n"
    )


def test_writer_rejects_what_promtool_would_mangle() -> None:
    ts = np.array([1, 1], dtype=np.int64)
    dup = demo.DemoSeries("g", {}, ts, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="duplicate"):
        demo.write_openmetrics([dup], io.StringIO())
    bad = demo.DemoSeries("bad-name", {}, ts[:1], np.array([1.0]))
    with pytest.raises(ValueError, match="invalid metric name"):
        demo.write_openmetrics([bad], io.StringIO())


# --- CLI -----------------------------------------------------------------------------------


def test_cli_write_logs_counts_and_writes_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # setup_logging() would replace caplog's handler on the root logger.
    monkeypatch.setattr("sla_common.logging.setup_logging", lambda *a, **k: None)
    out = tmp_path / "demo.om"
    inc = tmp_path / "incidents.json"
    with caplog.at_level(logging.INFO, logger="sla_common.demo"):
        rc = demo.main(
            [
                *("write", "--seed", "42", "--end", str(END), "--hours", "2", "--step", "15"),
                *("--out", str(out), "--incidents-out", str(inc)),
            ]
        )
    assert rc == 0
    samples = 15 * (2 * HOUR // STEP + 1)
    assert f"wrote 15 series, {samples} samples" in caplog.text
    expected = io.StringIO()
    demo.write_openmetrics(demo.generate(42, END, 2, 15), expected)
    assert out.read_text() == expected.getvalue()
    doc = json.loads(inc.read_text())
    assert doc["end"] == ALIGNED
    assert [i["name"] for i in doc["incidents"]] == [
        "disk_fill_avail",
        "disk_fill_free",
        "fd_spike",
    ]


def test_cli_incidents_writes_json_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["incidents", "--seed", "42", "--end", str(END)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["end"] == ALIGNED
    assert doc["step_s"] == STEP
    assert [i["name"] for i in doc["incidents"]] == list(EXPECTED)
    assert doc["incidents"] == [i.to_dict() for i in demo.incidents(42, END)]
    fd = doc["incidents"][-1]
    assert fd["key"] == 'node_filefd_allocated{instance="demo-host:9100",job="host"}'
    assert fd["samples"] == 81


def test_cli_bad_step_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["incidents", "--end", str(END), "--step", "0"]) == 2


def test_module_runs_as_a_script(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sla_common.demo", "incidents", "--end", str(END)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert json.loads(proc.stdout)["incidents"][0]["name"] == "memory_leak_free"
