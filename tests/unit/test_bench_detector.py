"""The detector benchmarks' own arithmetic: the ETL-aggregate normal of the NAB replay and
the scale-out figures (the benchmarks themselves need a broker and minutes)."""

from __future__ import annotations

from typing import Any

import pytest

from anomaly_detection.judge import Rule
from bench import bench_detector_scale as scale
from bench.bench_detector import bench_settings
from bench.nab_replay import replay_trailing

HOUR_MS = 3_600_000


def test_trailing_normal_is_learning_for_12_h_then_judges_against_the_12_h_before() -> None:
    # One sample a minute alternating 9/11 (mean 10, std 1) for 14 h, then 13 for an hour.
    ts = [i * 60_000 for i in range(15 * 60)]
    xs = [(9.0 if i % 2 else 11.0) if i < 14 * 60 else 13.0 for i in range(len(ts))]
    out = replay_trailing(ts, xs, Rule(window_ms=HOUR_MS), HOUR_MS, 12 * HOUR_MS)
    statuses = [st for _s, _e, st in out]
    assert statuses[:12] == ["LEARNING"] * 12  # windows starting before 12 h of history
    assert statuses[12:14] == ["SAFE", "SAFE"]
    assert len(statuses) == 14  # the last hour's window is still open
    # The jump's window closes with a sample after it:
    out = replay_trailing(
        [*ts, 15 * HOUR_MS], [*xs, 10.0], Rule(window_ms=HOUR_MS), HOUR_MS, 12 * HOUR_MS
    )
    assert out[-1] == (14 * HOUR_MS, 15 * HOUR_MS, "ERROR")  # 13 is 3 std devs above 10


def test_trailing_normal_on_a_large_level_has_no_cancellation() -> None:
    base = 1e12
    ts = [i * 60_000 for i in range(14 * 60)]
    xs = [base + (1.0 if i % 2 else -1.0) for i in range(len(ts))]
    statuses = [
        st for *_, st in replay_trailing(ts, xs, Rule(window_ms=HOUR_MS), HOUR_MS, 12 * HOUR_MS)
    ]
    assert statuses[12:] == ["SAFE"]


def test_scale_figures_from_two_members_timelines() -> None:
    # Member a: 1,000 samples at t=0 (its first poll), 2,000 a second until t=10 (21,000).
    # Member b: 500 at t=2 (its first poll), 1,000 a second until t=12 (10,500).
    a: dict[str, Any] = {
        "timeline": [[0.0, 1000.0]] + [[t, 1000.0 + 2000 * t] for t in range(1, 11)]
    }
    b: dict[str, Any] = {
        "timeline": [[2.0, 500.0]] + [[2.0 + t, 500.0 + 1000 * t] for t in range(1, 11)]
    }
    for m, parts in ((a, [0, 1]), (b, [2, 3])):
        m.update(cpu_s=5.0, partitions=parts)
    total = 21_000 + 10_500
    clock: list[tuple[float, int, int, int | None]] = [(0.0, 0, 0, None), (12.0, 2400, 2400, None)]
    f = scale._figures([a, b], clock, total, 2)
    assert f["end_to_end_samples_per_s"] == pytest.approx((total - 1500) / 12)
    # Both processing from t=2 (b's first) to t=10 (a's last): a did 16,000, b 8,000.
    assert f["steady_s"] == pytest.approx(8.0)
    assert f["steady_samples_per_s"] == pytest.approx(24_000 / 8)
    assert f["reread"] == 0
    assert f["cpu_s_per_100k"] == pytest.approx(1e5 * 10 / total)
    # Per process: a 20,000 samples after its first poll in 5 CPU-s, b 10,000 in 5.
    assert f["samples_per_cpu_s_per_process"] == [4000.0, 2000.0]
    assert f["samples_per_cpu_s"] == 3000.0
    assert f["machine_busy"] == 1.0
    assert f["per_member_partitions"] == [[0, 1], [2, 3]]


def test_bench_settings_keep_each_process_group_apart() -> None:
    s = bench_settings("127.0.0.1:1", "bench.t", 500, "g1", "quixstreams")
    assert (s.kafka_samples_topic, s.kafka_anomaly_topic, s.kafka_samples_dlq_topic) == (
        "bench.t",
        "bench.t.quixstreams.out",
        "bench.t.quixstreams.dlq",
    )
    assert (s.kafka_group_id, s.anomaly_window_ms, s.anomaly_grace_ms) == ("g1", 500, 0)
    assert s.anomaly_state_dir.endswith("bench-g1")
