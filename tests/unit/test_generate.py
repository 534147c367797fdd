"""The example-samples producer's data: deterministic, paced in event time, bursts where the
ground truth says."""

from __future__ import annotations

import statistics

from anomaly_detection import generate as g
from sla_common.samples import decode_batch

START = 1_700_000_000.0


def samples(plan: g.Plan) -> list[tuple[str, int, float]]:
    out = []
    for _due, b in g.batches(plan):
        back = decode_batch(b.to_bytes(), key=b.kafka_key())  # valid records
        out += [(back.key, t, x) for t, x in zip(back.timestamps_ms, back.values, strict=True)]
    return out


def test_same_seed_same_samples_other_seed_other_values() -> None:
    plan = g.Plan(series=3, rate=30, duration_s=10, start_s=START, seed=7)

    assert samples(plan) == samples(plan)
    other = samples(g.Plan(series=3, rate=30, duration_s=10, start_s=START, seed=8))
    assert [x for *_k, x in other] != [x for *_k, x in samples(plan)]


def test_rate_and_series_set_the_event_time_step_and_count() -> None:
    plan = g.Plan(series=4, rate=40, duration_s=5, start_s=START)  # 10 samples/s per series

    got = samples(plan)

    assert len(got) == 4 * 50
    first = sorted(t for k, t, _x in got if k == got[0][0])
    assert first[:3] == [1_700_000_000_000, 1_700_000_000_100, 1_700_000_000_200]
    assert all(0 <= x <= 100 for *_k, x in got)
    assert {k for k, *_r in got} == {
        f'cpu_usage_percent{{host="example-{i}",job="example"}}' for i in range(4)
    }


def test_records_batch_samples_and_come_due_in_event_time_order() -> None:
    plan = g.Plan(series=2, rate=20, duration_s=3, start_s=START, batch=4)

    records = list(g.batches(plan))

    assert [len(b.values) for _d, b in records] == [4, 4] * 7 + [2, 2]
    dues = [d for d, _b in records]
    assert dues == sorted(dues)
    assert all(d * 1000 >= b.timestamps_ms[-1] - 1 for d, b in records)


def test_bursts_are_where_the_truth_says_and_stand_out() -> None:
    plan = g.Plan(
        series=3,
        rate=30,
        duration_s=600,
        start_s=START,
        burst_every_s=120,
        burst_length_s=10,
        burst_size=5,
    )
    bursts = g.truth(plan)
    assert len(bursts) >= 3 * 4

    def bursting(key: str, t_ms: int) -> bool:
        return any(b["series"] == key and b["start"] <= t_ms / 1000 < b["end"] for b in bursts)  # type: ignore[operator]

    inside = [x for k, t, x in samples(plan) if bursting(k, t)]
    outside = [x for k, t, x in samples(plan) if not bursting(k, t)]
    assert inside and outside
    assert statistics.mean(inside) > statistics.mean(outside) + 5  # 5 noise std devs (1..3 each)


def test_no_bursts_when_asked() -> None:
    plan = g.Plan(series=2, rate=20, duration_s=30, start_s=START, burst_every_s=0)
    assert g.truth(plan) == []
    assert not any(g.in_burst(plan, s, START + 3) for s in g.shapes(plan))
