"""The detector's pure parts: windows, late samples, the status rule, learned normals,
checkpoints and /metrics — no broker."""

from __future__ import annotations

import json
import math
import random
import re
import statistics
from pathlib import Path

import pytest
from kafka import TopicPartition
from prometheus_client import generate_latest

from anomaly_detection.detector import PartitionState, Series, StateStore, reason_label
from anomaly_detection.judge import Rule
from anomaly_detection.metrics import DetectorMetrics
from anomaly_detection.rules import Baseline, deviation_of, ew_alpha, status_of
from anomaly_detection.settings import DetectorSettings
from anomaly_detection.windows import Partial, SeriesWindows, merge, partials, window_start
from sla_common.settings import SettingsError, load_settings

# ---------------------------------------------------------------- window assignment


@pytest.mark.parametrize(
    ("ts", "start"),
    [
        (0, 0),
        (499, 0),
        (500, 500),
        (999, 500),
        (1000, 1000),
        (1_700_000_000_250, 1_700_000_000_000),
    ],
)
def test_window_assignment_at_boundaries_500ms(ts: int, start: int) -> None:
    assert window_start(ts, 500) == start
    (p,) = partials([ts], [1.0], 500)
    assert p.start_ms == start


def test_a_sample_at_the_end_belongs_to_the_next_window() -> None:
    ps = partials([59_999, 60_000], [1.0, 2.0], 60_000)
    assert [(p.start_ms, p.n) for p in ps] == [(0, 1), (60_000, 1)]


def test_partials_and_merge_match_the_plain_mean_and_population_std() -> None:
    rnd = random.Random(3)
    xs = [rnd.gauss(100, 7) for _ in range(200)]
    ts = list(range(0, 200 * 250, 250))  # 50 s of 4 Hz samples, 60 s windows: one window
    (whole,) = partials(ts, xs, 60_000)
    halves = [partials(ts[:77], xs[:77], 60_000)[0], partials(ts[77:], xs[77:], 60_000)[0]]
    merged = merge(halves[0], halves[1])
    for p in (whole, merged):
        assert p.n == 200
        assert p.mean == pytest.approx(statistics.fmean(xs), rel=1e-12)
        assert math.sqrt(p.var) == pytest.approx(statistics.pstdev(xs), rel=1e-9)
    assert merged.last_ms == ts[-1]


# ---------------------------------------------------------------- closing and lateness


def test_window_closes_only_when_event_time_passes_end_plus_grace() -> None:
    w = SeriesWindows(size_ms=1000, grace_ms=300)
    assert w.add_batch([100, 900], [1.0, 3.0]) == []
    assert w.add_batch([1299], [5.0]) == []  # 1299 - 300 < 1000: window 0 still open
    (closed,) = w.add_batch([1300], [5.0])  # 1300 - 300 = 1000 >= end
    assert (closed.start_ms, closed.n, closed.mean) == (0, 2, 2.0)


def test_late_sample_within_grace_is_counted_in_its_window() -> None:
    w = SeriesWindows(size_ms=1000, grace_ms=300)
    w.add_batch([100, 1200], [1.0, 9.0])
    assert w.add_batch([950], [3.0]) == []  # late by 250 ms, within grace
    (closed,) = w.add_batch([1400], [9.0])
    assert (closed.n, closed.mean) == (2, 2.0)
    assert w.late_samples == 0


def test_late_sample_beyond_grace_is_dropped_and_counted() -> None:
    w = SeriesWindows(size_ms=1000, grace_ms=300)
    w.add_batch([100], [1.0])
    (closed,) = w.add_batch([1500], [9.0])
    assert closed.n == 1
    assert w.add_batch([999], [100.0]) == []  # its window closed: dropped
    assert w.late_samples == 1
    assert list(w.open) == [1000]


def test_a_batch_spanning_several_windows_closes_them_in_order() -> None:
    w = SeriesWindows(size_ms=500, grace_ms=0)
    closed = w.add_batch([0, 100, 600, 1100, 1700], [1, 3, 5, 7, 9])
    assert [(p.start_ms, p.n, p.mean) for p in closed] == [
        (0, 2, 2.0),
        (500, 1, 5.0),
        (1000, 1, 7.0),
    ]
    assert list(w.open) == [1500]


# ---------------------------------------------------------------- the status rule


@pytest.mark.parametrize(
    ("mean", "status"),
    [
        (10.0, "SAFE"),
        (11.0, "SAFE"),  # exactly 1 std: the reference's strict ">" keeps it SAFE
        (11.0001, "WARN"),
        (8.5, "WARN"),
        (12.0, "WARN"),  # exactly 2 std: WARN
        (12.0001, "ERROR"),
        (7.9, "ERROR"),
    ],
)
def test_reference_rule_normal_10_std_1(mean: float, status: str) -> None:
    assert status_of(mean, 10.0, 1.0) == status


def test_reference_rule_by_hand_with_its_own_constants() -> None:
    # The reference: |mean - NORMAL_MEAN| > 2*NORMAL_STDDEV -> ERROR, > NORMAL_STDDEV -> WARN.
    normal_mean, normal_std = 35.0, 5.0
    cases = {36.2: "SAFE", 41.0: "WARN", 28.0: "WARN", 45.5: "ERROR", 24.0: "ERROR"}
    for mean, expected in cases.items():
        assert status_of(mean, normal_mean, normal_std) == expected
        assert deviation_of(mean, normal_mean, normal_std) == pytest.approx((mean - 35) / 5)


def test_multipliers_are_configurable() -> None:
    assert status_of(12.5, 10.0, 1.0, warn=2.0, error=3.0) == "WARN"
    assert status_of(13.5, 10.0, 1.0, warn=2.0, error=3.0) == "ERROR"
    assert status_of(11.5, 10.0, 1.0, warn=2.0, error=3.0) == "SAFE"


def test_zero_normal_std_any_change_is_an_error_with_a_finite_deviation() -> None:
    assert status_of(1.0, 1.0, 0.0) == "SAFE" and deviation_of(1.0, 1.0, 0.0) == 0.0
    assert status_of(1.1, 1.0, 0.0) == "ERROR"
    assert math.isfinite(deviation_of(1.1, 1.0, 0.0)) and deviation_of(0.9, 1.0, 0.0) < 0


# ---------------------------------------------------------------- learned normals


def _window(start: int, xs: list[float]) -> Partial:
    (p,) = partials([start + i for i in range(len(xs))], xs, 60_000)
    return p


def test_learning_until_min_history_then_learned_normal_of_the_samples() -> None:
    rule = Rule(window_ms=60_000, alpha=ew_alpha(60_000, 3600), min_history=10)
    b = Baseline()
    rnd = random.Random(5)
    statuses = []
    for i in range(40):
        xs = [rnd.gauss(50, 4) for _ in range(4)]
        statuses.append(rule.judge(b, _window(i * 60_000, xs))[0])
    assert statuses[:10] == ["LEARNING"] * 10
    assert "LEARNING" not in statuses[10:]
    assert b.mean == pytest.approx(50, abs=1.5)
    assert b.std == pytest.approx(4, rel=0.25)  # the samples' spread, not the means'


def test_robust_baseline_does_not_learn_an_incident_but_absorbs_a_lasting_shift() -> None:
    alpha = ew_alpha(60_000, 3600)
    rule = Rule(window_ms=60_000, alpha=alpha, min_history=10)
    rnd = random.Random(9)
    b = Baseline()
    for i in range(120):
        rule.judge(b, _window(i * 60_000, [rnd.gauss(10, 1) for _ in range(4)]))
    # A 10-minute incident at +6 sigma: all ERROR, and the normal barely moves.
    incident = [
        rule.judge(b, _window((120 + i) * 60_000, [rnd.gauss(16, 1) for _ in range(4)]))[0]
        for i in range(10)
    ]
    assert incident == ["ERROR"] * 10
    assert b.mean < 11.0
    # A plain EW mean would have moved further.
    plain = Baseline(120, 10.0, 1.0)
    for _ in range(10):
        plain.learn(16.0, 1.0, alpha, clip=None)
    assert plain.mean > b.mean
    # A level shift that lasts (a day at +3): it becomes normal again.
    last = []
    for i in range(24 * 60):
        last.append(
            rule.judge(b, _window((200 + i) * 60_000, [rnd.gauss(13, 1) for _ in range(4)]))[0]
        )
    assert last[-60:].count("ERROR") == 0


def test_static_override_is_used_from_the_first_window() -> None:
    rule = Rule(window_ms=500, static=(35.0, 5.0), min_history=10)
    status, dev, normal = rule.judge(Baseline(), _window(0, [46.0]))
    assert (status, dev, normal.source, normal.mean, normal.std) == ("ERROR", 2.2, "static", 35, 5)


def test_record_carries_the_window_in_seconds_and_validates() -> None:
    rule = Rule(window_ms=500, static=(35.0, 5.0))
    (p,) = partials([1_700_000_000_700], [41.0], 500)
    rec = rule.record("k", "cpu", {"host": "a"}, Baseline(), p)
    assert (rec.window.start, rec.window.end) == (1_700_000_000.5, 1_700_000_001.0)
    assert rec.status == "WARN" and rec.count == 1 and rec.std == 0.0
    assert rec.detector.name == "sigma"


# ---------------------------------------------------------------- settings, state, metrics


def test_settings_defaults_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(DetectorSettings)
    assert (s.kafka_samples_topic, s.kafka_anomaly_topic) == ("samples", "anomaly")
    assert (s.anomaly_window_ms, s.anomaly_warn_stddevs, s.anomaly_error_stddevs) == (60_000, 1, 2)
    monkeypatch.setenv("NORMAL_MEAN", "3")
    with pytest.raises(SettingsError, match="NORMAL_STDDEV"):
        load_settings(DetectorSettings)
    monkeypatch.setenv("NORMAL_STDDEV", "1.5")
    assert Rule.from_settings(load_settings(DetectorSettings)).static == (3.0, 1.5)


OVERRIDES = json.dumps(
    [
        {"selector": 'node_cpu_busy{instance="db:9100"}', "mean": 0.8, "std": 0.05},
        {"selector": "node_cpu_busy", "mean": 0.3, "std": 0.1},
        {"selector": '{job="batch", team=""}', "mean": 100, "std": 0},
    ]
)


def test_per_selector_overrides_first_match_then_global_then_learned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANOMALY_NORMAL_OVERRIDES", OVERRIDES)
    rule = Rule.from_settings(load_settings(DetectorSettings))
    db = {"instance": "db:9100", "job": "node"}
    assert rule.static_for("node_cpu_busy", db) == (0.8, 0.05)  # the first match wins
    assert rule.static_for("node_cpu_busy", {"instance": "web:9100"}) == (0.3, 0.1)
    assert rule.static_for("queue_depth", {"job": "batch"}) == (100.0, 0.0)
    assert rule.static_for("queue_depth", {"job": "batch", "team": "a"}) is None  # team=""
    assert rule.static_for("node_load1", db) is None  # learned

    # Each series is judged against its own constants from its first window ...
    p = _window(0, [0.95])
    rec = rule.record("k", "node_cpu_busy", db, Baseline(), p)
    assert (rec.status, rec.normal.source, rec.normal.mean, rec.normal.std) == (
        "ERROR",
        "static",
        0.8,
        0.05,
    )
    assert rec.deviation == pytest.approx(3.0)
    other = rule.record("k2", "node_cpu_busy", {"instance": "web:9100"}, Baseline(), p)
    assert (other.status, other.normal.mean) == ("ERROR", 0.3)
    # ... and one no override matches learns (LEARNING first), or takes the global normal.
    assert rule.record("k3", "node_load1", db, Baseline(), p).status == "LEARNING"
    monkeypatch.setenv("NORMAL_MEAN", "1")
    monkeypatch.setenv("NORMAL_STDDEV", "0.5")
    rule = Rule.from_settings(load_settings(DetectorSettings))
    rec = rule.record("k3", "node_load1", db, Baseline(), p)
    assert (rec.status, rec.normal.mean, rec.normal.std) == ("SAFE", 1.0, 0.5)
    assert rule.record("k", "node_cpu_busy", db, Baseline(), p).normal.mean == 0.8


def _entries(*entries: tuple[str, object, object]) -> str:
    return json.dumps([{"selector": sel, "mean": m, "std": sd} for sel, m, sd in entries])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("[{", "not JSON"),
        ('{"selector": "up", "mean": 1, "std": 1}', "expected a JSON list"),
        (_entries(('up{job=~"n.*"}', 1, 1)), "only equality matchers"),
        (_entries(("rate(up[5m])", 1, 1)), "not a plain vector selector"),
        (_entries(("{}", 1, 1)), "not a plain vector selector"),
        (_entries(('{job=""}', 1, 1)), "non-empty matcher"),
        (_entries(("up", 1, -1)), "greater than or equal to 0"),
        (_entries(("up", "NaN", 1)), "finite"),
        ('[{"selector": "up", "mean": 1}]', "STD"),
        ('[{"selector": "up", "mean": 1, "std": 1, "stddev": 2}]', "STDDEV"),
        (_entries(('up{a="1"}', 1, 1), ('{a="1", __name__="up"}', 2, 1)), "listed twice"),
    ],
)
def test_bad_overrides_are_refused_at_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("ANOMALY_NORMAL_OVERRIDES", value)
    with pytest.raises(SettingsError, match="ANOMALY_NORMAL_OVERRIDES") as e:
        load_settings(DetectorSettings)
    assert reason.lower() in str(e.value).lower()


def test_the_readme_example_of_overrides_is_valid() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    m = re.search(r"^ANOMALY_NORMAL_OVERRIDES='(.*?)'$", readme, re.MULTILINE | re.DOTALL)
    assert m is not None
    s = load_settings(DetectorSettings, anomaly_normal_overrides=m.group(1))
    rule = Rule.from_settings(s)
    assert rule.static_for("node_cpu_busy", {"instance": "db:9100", "job": "node"}) == (0.8, 0.05)
    assert rule.static_for("node_load1", {"instance": "web:9100"}) == (1.5, 0.5)


def test_a_blank_override_setting_is_no_override() -> None:
    assert (
        load_settings(DetectorSettings, anomaly_normal_overrides=" ").anomaly_normal_overrides == ()
    )


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path, 1000, 200)
    tp = TopicPartition("samples", 2)
    assert store.load(tp).offset is None
    w = SeriesWindows(1000, 200)
    w.add_batch([100, 1100, 1150], [1.0, 2.0, 4.0])
    ps = PartitionState(
        offset=42, series={"k": Series("cpu", {"h": "a"}, w, Baseline(3, 1.5, 0.25))}
    )
    store.save(tp, ps)
    back = store.load(tp)
    assert back.offset == 42
    s = back.series["k"]
    assert (s.metric, s.labels, s.baseline) == ("cpu", {"h": "a"}, Baseline(3, 1.5, 0.25))
    assert s.windows.open == w.open and s.windows.latest_ms == 1150
    assert [p.name for p in tmp_path.iterdir()] == ["samples-2.json"]  # no temp file left


def test_metrics_carry_the_series_labels_and_bound_the_series() -> None:
    m = DetectorMetrics(max_series=2)
    m.observe("k1", "node_load1", {"instance": "h:9100", "job": "node"}, -2.5, "ERROR")
    m.observe("k2", "cpu", {"host": "b"}, 0.5, "SAFE")
    m.observe("k3", "cpu", {"host": "c"}, 9.0, "ERROR")
    m.observe("k1", "node_load1", {"instance": "h:9100", "job": "node"}, 0.25, "SAFE")
    text = generate_latest(m.registry).decode()
    assert 'anomaly_score{for="node_load1",instance="h:9100",job="node"} 0.25' in text
    assert 'anomaly_status{for="cpu",host="b"} 0.0' in text
    assert 'host="c"' not in text
    assert "anomaly_series_not_exposed 1.0" in text
    assert 'anomaly_windows_total{status="ERROR"} 2.0' in text


def test_dead_letter_reason_labels_are_bounded() -> None:
    assert reason_label("not JSON: Expecting value") == "not JSON"
    assert reason_label("label zzz_secret is longer than 4096 characters") == "label"
    assert reason_label("something new with input in it") == "invalid"


def test_invalid_settings_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from anomaly_detection.__main__ import main  # noqa: PLC0415

    monkeypatch.setenv("ANOMALY_WINDOW_MS", "soon")
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "ANOMALY_WINDOW_MS" in err and "Traceback" not in err
    monkeypatch.delenv("ANOMALY_WINDOW_MS")
    monkeypatch.setenv("ANOMALY_NORMAL_OVERRIDES", '[{"selector": "up{", "mean": 1, "std": 1}]')
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "ANOMALY_NORMAL_OVERRIDES" in err and "Traceback" not in err
