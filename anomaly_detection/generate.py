"""``python -m anomaly_detection.generate``: example samples straight to the samples topic.

The second way in (the reference's producer, without Prometheus): ``--series`` CPU-usage-like
series (``cpu_usage_percent{host="example-N",job="example"}``, percent: a daily cycle, noise,
bounded to 0..100) with injected bursts, produced at ``--rate`` samples per second in all,
in the samples record format (:mod:`sla_common.samples`, keyed by series key) to
``KAFKA_SAMPLES_TOPIC``. Event time is preserved: a sample's timestamp is when it is due
(from ``--start``, default now, one step apart per series), not when it was sent. Every
``--burst-every`` seconds of event time each series gets a burst of ``--burst-length``
seconds, ``--burst-size`` noise standard deviations above its normal value (series start
their bursts at different offsets). Same arguments and ``--seed``: the same samples.

``--truth FILE`` writes the injected bursts (series key, start, end in Unix seconds) as JSON,
the ground truth a detector's output can be checked against. ``--fast`` sends as fast as
the broker takes them (timestamps unchanged) instead of pacing to ``--rate``.

Settings from the environment: ``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_SAMPLES_TOPIC``,
``KAFKA_PARTITIONS`` and ``KAFKA_SAMPLES_RETENTION_MS`` (for a topic it creates),
``KAFKA_COMPRESSION``. Exit codes: 0 done, 1 broker unreachable or a send failed,
2 invalid settings or arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kafka.errors import KafkaError

from anomaly_detection.receiver.settings import SamplesTopicSettings
from sla_common.cli import settings_and_logging, stop_on_signals
from sla_common.kafka import close_producer, make_producer
from sla_common.samples import MAX_SAMPLES_PER_RECORD, SampleBatch

log = logging.getLogger("anomaly_detection.generate")

METRIC = "cpu_usage_percent"
DAY_S = 86_400.0


@dataclass(frozen=True)
class Plan:
    series: int = 10
    rate: float = 100.0  # samples per second, all series together
    duration_s: float = 60.0
    start_s: float = 0.0  # Unix seconds of the first sample
    seed: int = 42
    burst_every_s: float = 60.0  # 0: no bursts
    burst_length_s: float = 5.0
    burst_size: float = 4.0  # in noise standard deviations
    batch: int = 1  # samples per record (per series)

    @property
    def step_s(self) -> float:
        """Event time between two samples of one series."""
        return self.series / self.rate

    @property
    def rounds(self) -> int:
        return max(1, math.floor(self.duration_s / self.step_s))


@dataclass(frozen=True)
class Shape:
    labels: dict[str, str]
    level: float  # mean usage, percent
    amplitude: float  # of the daily cycle
    phase: float
    noise: float  # standard deviation
    burst_offset_s: float


def shapes(plan: Plan) -> list[Shape]:
    rnd = random.Random(plan.seed)  # noqa: S311 (example data, reproducible by seed)
    out = []
    for i in range(plan.series):
        out.append(
            Shape(
                labels={"host": f"example-{i}", "job": "example"},
                level=rnd.uniform(15, 45),
                amplitude=rnd.uniform(3, 12),
                phase=rnd.uniform(0, 2 * math.pi),
                noise=rnd.uniform(1, 3),
                burst_offset_s=rnd.uniform(0, plan.burst_every_s) if plan.burst_every_s else 0,
            )
        )
    return out


def in_burst(plan: Plan, shape: Shape, t_s: float) -> bool:
    if plan.burst_every_s <= 0:
        return False
    since = (t_s - plan.start_s - shape.burst_offset_s) % plan.burst_every_s
    return t_s - plan.start_s >= shape.burst_offset_s and since < plan.burst_length_s


def value(plan: Plan, shape: Shape, t_s: float, rnd: random.Random) -> float:
    daily = shape.amplitude * math.sin(2 * math.pi * t_s / DAY_S + shape.phase)
    x = shape.level + daily + rnd.gauss(0, shape.noise)
    if in_burst(plan, shape, t_s):
        x += plan.burst_size * shape.noise
    return round(min(100.0, max(0.0, x)), 3)


def batches(plan: Plan) -> Iterator[tuple[float, SampleBatch]]:
    """(event time the record is due, record) in due order: deterministic for a plan."""
    rnd = random.Random(plan.seed + 1)  # noqa: S311 (example data, reproducible by seed)
    all_shapes = shapes(plan)
    pending: list[tuple[list[int], list[float]]] = [([], []) for _ in all_shapes]
    for j in range(plan.rounds):
        t_s = plan.start_s + j * plan.step_s
        last = j == plan.rounds - 1
        for shape, (ts, xs) in zip(all_shapes, pending, strict=True):
            ts.append(round(t_s * 1000))
            xs.append(value(plan, shape, t_s, rnd))
            if len(ts) >= plan.batch or last:
                yield t_s, SampleBatch(METRIC, shape.labels, list(ts), list(xs))
                ts.clear()
                xs.clear()


def truth(plan: Plan) -> list[dict[str, object]]:
    """The injected bursts: series key, start and end (Unix seconds, end exclusive)."""
    if plan.burst_every_s <= 0:
        return []
    end_s = plan.start_s + plan.rounds * plan.step_s
    bursts: list[tuple[float, str, float]] = []
    for shape in shapes(plan):
        key = SampleBatch(METRIC, shape.labels, [0], [0.0]).key
        b = plan.start_s + shape.burst_offset_s
        while b < end_s:
            bursts.append((b, key, min(end_s, b + plan.burst_length_s)))
            b += plan.burst_every_s
    return [{"series": k, "start": b, "end": e} for b, k, e in sorted(bursts)]


def _positive(kind: type[float] | type[int]) -> Callable[[str], float | int]:
    def parse(text: str) -> float | int:
        v = kind(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return v

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m anomaly_detection.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--series", type=_positive(int), default=10, help="how many series (10)")
    p.add_argument(
        "--rate", type=_positive(float), default=100.0, help="samples/s, all series (100)"
    )
    p.add_argument(
        "--duration", type=_positive(float), default=60.0, help="seconds of event time (60)"
    )
    p.add_argument("--start", type=float, help="Unix seconds of the first sample (now)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--burst-every", type=float, default=60.0, help="seconds; 0: no bursts (60)")
    p.add_argument("--burst-length", type=_positive(float), default=5.0, help="seconds (5)")
    p.add_argument("--burst-size", type=float, default=4.0, help="noise std devs added (4)")
    p.add_argument("--batch", type=_positive(int), default=1, help="samples per record (1)")
    p.add_argument("--truth", type=Path, help="write the injected bursts to this JSON file")
    p.add_argument("--fast", action="store_true", help="do not pace: send as fast as possible")
    return p


def plan_from(args: argparse.Namespace) -> Plan:
    if args.batch > MAX_SAMPLES_PER_RECORD:
        raise ValueError(f"--batch: at most {MAX_SAMPLES_PER_RECORD}")
    if args.burst_every < 0:
        raise ValueError("--burst-every must be >= 0")
    return Plan(
        series=args.series,
        rate=args.rate,
        duration_s=args.duration,
        start_s=time.time() if args.start is None else args.start,
        seed=args.seed,
        burst_every_s=args.burst_every,
        burst_length_s=args.burst_length,
        burst_size=args.burst_size,
        batch=args.batch,
    )


def produce(
    plan: Plan, settings: SamplesTopicSettings, *, fast: bool, stop: threading.Event
) -> int:
    """Send the plan's records, paced unless ``fast``; the samples acknowledged."""
    settings.ensure_samples_topic(10_000)
    producer = make_producer(
        settings.kafka_bootstrap_servers,
        "anomaly-generate",
        compression=settings.kafka_compression,
    )
    sent = 0
    wall0 = time.monotonic()
    try:
        for due_s, batch in batches(plan):
            if stop.is_set():
                break
            if not fast:
                wait = (due_s - plan.start_s) - (time.monotonic() - wall0)
                if wait > 0 and stop.wait(wait):
                    break
            producer.send(
                settings.kafka_samples_topic, key=batch.kafka_key(), value=batch.to_bytes()
            )
            sent += len(batch.values)
        producer.flush(timeout=30)
    finally:
        close_producer(producer, 10)
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = settings_and_logging(SamplesTopicSettings, log)
    if settings is None:
        return 2
    try:
        plan = plan_from(args)
    except ValueError as e:
        log.error("%s", e)
        return 2
    if args.truth:
        args.truth.write_text(json.dumps(truth(plan), indent=1) + "\n")
    stop = stop_on_signals(log, "stopping after the current record")
    log.info(
        "%d series x %d samples (every %.3f s of event time from %.3f) to %s on %s",
        plan.series,
        plan.rounds,
        plan.step_s,
        plan.start_s,
        settings.kafka_samples_topic,
        settings.kafka_bootstrap_servers,
    )
    t0 = time.monotonic()
    try:
        sent = produce(plan, settings, fast=args.fast, stop=stop)
    except KafkaError as e:
        log.error("Kafka %s: %s: %s", settings.kafka_bootstrap_servers, type(e).__name__, e)
        return 1
    took = time.monotonic() - t0
    log.info("sent %d samples in %.1f s (%.0f samples/s)", sent, took, sent / max(took, 1e-9))
    return 0


if __name__ == "__main__":
    sys.exit(main())
