"""Pipeline's fault branches, deterministically: a fake Prometheus client and a fake producer.

The real-stack runs (tests/integration/test_etl.py) show the ETL against real services; these
drive each branch of a cycle on purpose and check what it reports, what it counted, and what
reached the "broker" (each message at most once per cycle, never re-sent within a cycle).
The fake producer's futures are kafka-python's own ``Future``; its ``close``/``_sender``
behave as kafka-python 3.0's do when a flush times out (see sla_common.kafka.close_producer).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
)
from kafka.future import Future

import etl_data_pipeline.pipeline as pipeline_module
from etl_data_pipeline.metrics import EtlMetrics
from etl_data_pipeline.pipeline import Pipeline
from etl_data_pipeline.settings import EtlSettings
from sla_common.messages import AnalysisMessage
from sla_common.prometheus import (
    PrometheusError,
    PrometheusUnavailable,
    RangeSeries,
)
from sla_common.series import series_key
from tests.unit.promfake import AnsweringPrometheus

END = 1_800_000_000  # a multiple of 15
WINDOW_S = 1200  # short: the real analyses run, quickly
STEP_S = 15
TOPIC = "etl-unit"


def settings(*selectors: str, **extra: Any) -> EtlSettings:
    return EtlSettings(
        etl_selectors=selectors,
        etl_window_s=WINDOW_S,
        etl_step_s=STEP_S,
        etl_season_s=600,
        kafka_topic=TOPIC,
        kafka_dlq_topic=f"{TOPIC}.dlq",
        kafka_flush_timeout_s=1.0,
        **extra,
    )


def series(metric: str, n: int, seed: int = 0) -> list[RangeSeries]:
    """``n`` gauges of ``metric`` covering the window at the ETL's step."""
    ts = np.arange(END - WINDOW_S, END + 1, STEP_S, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return [
        RangeSeries(
            labels={"__name__": metric, "job": "unit", "i": str(i)},
            timestamps=ts,
            values=100 + 10 * np.sin(ts / 300.0) + rng.normal(0, 1, ts.size),
        )
        for i in range(n)
    ]


# What the fake broker does with one record: ack it, fail it (the broker's error), or
# never answer (it stays buffered until the producer is force-closed).
ACK, HANG = "ack", "hang"
Fate = Callable[[AnalysisMessage], "str | KafkaError"]


class FakeSender:
    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer
        self.forced = False

    def force_close(self) -> None:
        self.forced = True
        for future, _msg in self.producer.pending:
            future.failure(KafkaError("producer force-closed"))
        self.producer.pending = []

    def join(self, timeout: float | None = None) -> None:
        pass


@dataclass
class FakeProducer:
    fate: Fate = lambda msg: ACK
    send_raises: Callable[[AnalysisMessage], KafkaError | None] = lambda msg: None
    sent: list[AnalysisMessage] = field(default_factory=list)
    pending: list[tuple[Future, AnalysisMessage]] = field(default_factory=list)
    closed: bool = False
    close_calls: int = 0

    def __post_init__(self) -> None:
        self._sender = FakeSender(self)

    def send(self, topic: str, key: bytes, value: bytes) -> Future:
        assert not self.closed, "send on a closed producer"
        assert topic == TOPIC
        msg = AnalysisMessage.from_bytes(value)
        assert key == msg.kafka_key()
        error = self.send_raises(msg)
        if error is not None:
            raise error
        self.sent.append(msg)
        future = Future()
        self.pending.append((future, msg))
        return future

    def _deliver(self) -> None:
        still: list[tuple[Future, AnalysisMessage]] = []
        for future, msg in self.pending:
            fate = self.fate(msg)
            if fate == ACK:
                future.success(msg.series.key)
            elif isinstance(fate, KafkaError):
                future.failure(fate)
            else:
                still.append((future, msg))
        self.pending = still

    def flush(self, timeout: float | None = None) -> None:
        self._deliver()
        if self.pending:
            raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")

    def close(self, timeout: float | None = None) -> None:
        # kafka-python 3.0: close flushes first and raises when that times out.
        self.close_calls += 1
        self.flush(timeout)
        self.closed = True


class Producers:
    """The ``connect`` given to Pipeline: hands out fake producers, or raises."""

    def __init__(self, *make: Callable[[], FakeProducer | KafkaError]) -> None:
        self.make = list(make)
        self.made: list[FakeProducer] = []
        self.calls = 0

    def __call__(self, s: EtlSettings) -> FakeProducer:
        self.calls += 1
        item = self.make.pop(0)() if self.make else FakeProducer()
        if isinstance(item, KafkaError):
            raise item
        self.made.append(item)
        return item

    def sent_keys(self) -> list[str]:
        return [m.series.key for p in self.made for m in p.sent]


def make_pipeline(
    s: EtlSettings, prom: AnsweringPrometheus, producers: Producers
) -> tuple[Pipeline, EtlMetrics]:
    metrics = EtlMetrics()
    return Pipeline(s, metrics, clock=lambda: END, prometheus=prom, connect=producers), metrics


def sample(metrics: EtlMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def cycles(metrics: EtlMetrics) -> tuple[float, float]:
    return (
        sample(metrics, "sla_etl_cycles_total", result="success"),
        sample(metrics, "sla_etl_cycles_total", result="failed"),
    )


def keys_of(rs: Iterable[RangeSeries]) -> list[str]:
    return [
        series_key(r.labels["__name__"], {k: v for k, v in r.labels.items() if k != "__name__"})
        for r in rs
    ]


# --------------------------------------------------------------------------- the good path


def test_a_good_cycle_publishes_each_series_once_and_moves_the_success_metrics() -> None:
    prom = AnsweringPrometheus({"m": series("m", 3)})
    producers = Producers()
    p, metrics = make_pipeline(settings("m"), prom, producers)
    report = p.run_cycle()
    assert report.ok and report.error is None
    assert (report.start, report.end) == (END - WINDOW_S, END)
    assert report.published == 3 and report.failed_series == 0
    assert sorted(producers.sent_keys()) == sorted(keys_of(series("m", 3)))
    assert cycles(metrics) == (1, 0)
    assert sample(metrics, "sla_etl_messages_published_total") == 3
    assert sample(metrics, "sla_etl_series_analysed_total") == 3
    assert sample(metrics, "sla_etl_series_last_cycle") == 3
    assert sample(metrics, "sla_etl_last_success_timestamp_seconds") == END
    assert sample(metrics, "sla_etl_stage_duration_seconds_count", stage="fetch") == 1

    # the producer is kept for the next cycle; close() flushes it and closes both clients
    assert p.run_cycle().ok and producers.calls == 1
    p.close()
    assert producers.made[0].closed and prom.closed


def test_a_cycle_that_matched_nothing_succeeds_with_nothing_published() -> None:
    prom = AnsweringPrometheus({"m": [], "n": []})
    producers = Producers()
    p, metrics = make_pipeline(settings("m", "n"), prom, producers)
    report = p.run_cycle()
    assert report.ok and report.published == 0 and report.failed_series == 0
    assert report.selector_errors == ()
    assert producers.sent_keys() == []
    assert prom.queries == ["m", "n"]
    assert cycles(metrics) == (1, 0)
    assert sample(metrics, "sla_etl_series_last_cycle") == 0
    assert sample(metrics, "sla_etl_messages_published_total") == 0


# --------------------------------------------------------------------------- Prometheus


@pytest.mark.parametrize(
    "error",
    [
        PrometheusUnavailable("timed out after 10 s"),
        PrometheusUnavailable("Prometheus answered 503: overloaded"),
    ],
    ids=["timeout", "5xx"],
)
def test_prometheus_unavailable_fails_the_cycle_and_publishes_nothing(
    error: PrometheusUnavailable,
) -> None:
    # the first selector answered, the second did not: nothing of the cycle goes out
    prom = AnsweringPrometheus({"m": series("m", 2), "n": error})
    producers = Producers()
    p, metrics = make_pipeline(settings("m", "n"), prom, producers)
    report = p.run_cycle()
    assert not report.ok
    assert report.error == f"Prometheus unavailable: {error}"
    assert report.published == 0
    assert producers.calls == 0 and producers.sent_keys() == []
    assert cycles(metrics) == (0, 1)
    assert sample(metrics, "sla_etl_last_success_timestamp_seconds") == 0
    assert sample(metrics, "sla_etl_stage_duration_seconds_count", stage="fetch") == 1
    assert sample(metrics, "sla_etl_cycle_duration_seconds_count") == 1


def test_a_rejected_selector_is_reported_and_counted_and_the_others_go_on() -> None:
    bad = PrometheusError("bad_data", "parse error at char 5", 400)
    prom = AnsweringPrometheus({"bad{": bad, "m": series("m", 2)})
    producers = Producers()
    p, metrics = make_pipeline(settings("bad{", "m"), prom, producers)
    report = p.run_cycle()
    assert report.ok
    assert report.selector_errors == ("bad{: bad_data: parse error at char 5",)
    assert report.published == 2
    assert sorted(producers.sent_keys()) == sorted(keys_of(series("m", 2)))
    assert sample(metrics, "sla_etl_selector_errors_total") == 1
    assert cycles(metrics) == (1, 0)


def test_every_selector_rejected_fails_the_cycle_without_connecting_to_kafka() -> None:
    bad = PrometheusError("bad_data", "parse error", 400)
    prom = AnsweringPrometheus({"a{": bad, "b{": bad})
    producers = Producers()
    p, metrics = make_pipeline(settings("a{", "b{"), prom, producers)
    report = p.run_cycle()
    assert not report.ok and report.error == "every selector failed"
    assert len(report.selector_errors) == 2
    assert producers.calls == 0
    assert sample(metrics, "sla_etl_selector_errors_total") == 2
    assert cycles(metrics) == (0, 1)


# --------------------------------------------------------------------------- analyses


def test_a_failing_analysis_skips_that_series_only(monkeypatch: pytest.MonkeyPatch) -> None:
    rs = series("m", 3)
    broken = keys_of(rs)[1]
    real = pipeline_module.analyse_series

    def analyse_series(fs: Any, *args: Any) -> Any:
        if fs.ref.key == broken:
            raise FloatingPointError("the fit diverged")
        return real(fs, *args)

    monkeypatch.setattr(pipeline_module, "analyse_series", analyse_series)
    prom = AnsweringPrometheus({"m": rs})
    producers = Producers()
    p, metrics = make_pipeline(settings("m"), prom, producers)
    report = p.run_cycle()
    assert report.ok
    assert report.published == 2 and report.failed_series == 1
    assert broken not in producers.sent_keys() and len(producers.sent_keys()) == 2
    assert sample(metrics, "sla_etl_series_failed_total") == 1
    assert sample(metrics, "sla_etl_series_analysed_total") == 2
    assert sample(metrics, "sla_etl_messages_published_total") == 2
    assert cycles(metrics) == (1, 0)


def test_a_message_over_the_size_limit_fails_that_series_only() -> None:
    rs = series("m", 3)
    big = keys_of(rs)[0]

    def too_large(msg: AnalysisMessage) -> KafkaError | None:
        return MessageSizeTooLargeError("too large") if msg.series.key == big else None

    producers = Producers(lambda: FakeProducer(send_raises=too_large))
    p, metrics = make_pipeline(settings("m"), AnsweringPrometheus({"m": rs}), producers)
    report = p.run_cycle()
    assert report.ok and report.published == 2 and report.failed_series == 1
    assert sorted(producers.sent_keys()) == sorted(keys_of(rs)[1:])
    assert sample(metrics, "sla_etl_series_failed_total") == 1
    assert not producers.made[0].closed  # not a broker fault: the producer is kept


# --------------------------------------------------------------------------- Kafka


def test_kafka_unavailable_at_connect_fails_the_cycle_and_the_next_one_reconnects() -> None:
    # what make_producer raises when no broker answers (kafka-python 3.0)
    down = KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9092")
    producers = Producers(lambda: down, FakeProducer)
    p, metrics = make_pipeline(settings("m"), AnsweringPrometheus({"m": series("m", 2)}), producers)
    first = p.run_cycle()
    assert not first.ok and first.published == 0
    assert first.error is not None and first.error.startswith(
        "Kafka unavailable: KafkaTimeoutError"
    )
    second = p.run_cycle()
    assert second.ok and second.published == 2
    assert producers.calls == 2
    assert cycles(metrics) == (1, 1)


def test_a_partial_publish_fails_the_cycle_counts_only_the_acknowledged_and_resends_nothing() -> (
    None
):
    rs = series("m", 4)
    refused = keys_of(rs)[2]

    def broker(msg: AnalysisMessage) -> str | KafkaError:
        return NotEnoughReplicasError("not enough replicas") if msg.series.key == refused else ACK

    producers = Producers(lambda: FakeProducer(fate=broker), FakeProducer)
    p, metrics = make_pipeline(settings("m"), AnsweringPrometheus({"m": rs}), producers)
    report = p.run_cycle()
    assert not report.ok
    assert report.published == 3
    assert report.error is not None and report.error.startswith("1 of 4 not acknowledged")
    assert "NotEnoughReplicasError" in report.error
    first = producers.made[0]
    assert sorted(m.series.key for m in first.sent) == sorted(keys_of(rs))  # each once
    assert first.closed  # dropped: the next cycle starts from a new producer
    assert sample(metrics, "sla_etl_messages_published_total") == 3
    assert sample(metrics, "sla_etl_series_last_cycle") == 0  # set by successes only
    assert sample(metrics, "sla_etl_last_success_timestamp_seconds") == 0
    assert cycles(metrics) == (0, 1)

    again = p.run_cycle()  # the next cycle republishes everything, once, on a new producer
    assert again.ok and again.published == 4
    assert producers.calls == 2 and sorted(m.series.key for m in producers.made[1].sent) == sorted(
        keys_of(rs)
    )
    assert sample(metrics, "sla_etl_messages_published_total") == 7
    assert cycles(metrics) == (1, 1)


def test_a_flush_timeout_fails_the_cycle_and_the_unacknowledged_records_for_good() -> None:
    rs = series("m", 3)
    stuck = keys_of(rs)[1]
    producers = Producers(
        lambda: FakeProducer(fate=lambda msg: HANG if msg.series.key == stuck else ACK)
    )
    p, metrics = make_pipeline(settings("m"), AnsweringPrometheus({"m": rs}), producers)
    report = p.run_cycle()
    assert not report.ok
    assert report.error is not None and report.error.startswith("publish failed: KafkaTimeout")
    assert report.published == 2
    producer = producers.made[0]
    # close timed out as well, so the sender was force-closed: the stuck record failed
    # instead of reaching the broker later, after the cycle was reported failed
    assert producer._sender.forced and producer.closed and producer.pending == []
    assert producer.close_calls == 2  # the close that timed out, the one after force_close
    assert sample(metrics, "sla_etl_messages_published_total") == 2
    assert cycles(metrics) == (0, 1)


def test_a_send_error_mid_cycle_stops_the_cycle_and_counts_what_was_acknowledged() -> None:
    rs = series("m", 4)
    keys = keys_of(rs)
    at = sorted(keys)[1]  # the order the fetch sorts series in

    def no_metadata(msg: AnalysisMessage) -> KafkaError | None:
        return KafkaTimeoutError("no metadata after 10 s") if msg.series.key == at else None

    producers = Producers(lambda: FakeProducer(send_raises=no_metadata))
    p, metrics = make_pipeline(settings("m"), AnsweringPrometheus({"m": rs}), producers)
    report = p.run_cycle()
    assert not report.ok
    assert (
        report.error
        == "publish failed: KafkaTimeoutError: KafkaTimeoutError: no metadata after 10 s"
    )
    assert producers.sent_keys() == [sorted(keys)[0]]  # the rest waits for the next cycle
    assert report.published == 1  # delivered while the dropped producer closed
    assert producers.made[0].closed
    assert sample(metrics, "sla_etl_messages_published_total") == 1
    assert cycles(metrics) == (0, 1)


# --------------------------------------------------------------------------- the loop


class CountedStop(threading.Event):
    """A stop flag that records each wait and is set after ``waits`` of them (no sleeping)."""

    def __init__(self, waits: int) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.limit = waits

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(-1.0 if timeout is None else timeout)
        if len(self.waits) >= self.limit:
            self.set()
        return self.is_set()


def test_failed_cycles_back_off_exponentially_up_to_the_cap_and_a_success_resets_it() -> None:
    down = PrometheusUnavailable("connection refused")
    prom = AnsweringPrometheus({"m": down})
    p, metrics = make_pipeline(
        settings("m", etl_interval_s=30, etl_max_backoff_s=5), prom, Producers()
    )
    stop = CountedStop(waits=5)
    p.run_forever(stop)
    assert stop.waits == [1, 2, 4, 5, 5]
    assert cycles(metrics) == (0, 5)

    prom.answers["m"] = series("m", 1)
    stop = CountedStop(waits=1)
    p.run_forever(stop)  # a success waits for the rest of the interval
    assert cycles(metrics) == (1, 5)
    assert 0 < stop.waits[0] <= 30


# --------------------------------------------------------------------------- closing


def test_close_with_a_broker_that_does_not_answer_returns_and_closes_everything() -> None:
    producers = Producers(lambda: FakeProducer(fate=lambda msg: HANG))
    prom = AnsweringPrometheus({"m": series("m", 1)})
    p, _metrics = make_pipeline(settings("m"), prom, producers)
    p._connect()
    producer = producers.made[0]
    future = producer.send(TOPIC, *_one_message(p))
    p.close()  # final flush times out, close times out: forced, not hung or raised
    assert future.failed() and producer._sender.forced and producer.closed
    assert prom.closed
    p.close()  # twice is harmless


def _one_message(p: Pipeline) -> tuple[bytes, bytes]:
    report_series, _errors = p.fetch(END - WINDOW_S, END)
    (msg,) = list(p._messages("run", report_series, END - WINDOW_S, END, []))
    return msg.kafka_key(), msg.to_bytes()
