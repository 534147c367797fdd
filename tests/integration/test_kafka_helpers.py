"""sla_common.kafka against the real broker (tansu): producer close, topic watch, no auto-create."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from kafka.errors import KafkaError

from sla_common.kafka import TopicWatch, close_producer, ensure_topics, make_producer
from tests.integration.stackutil import (
    SCRIPTS,
    Stack,
    consume_records,
    delete_topic,
    free_port,
    kafka_topics,
    run_bounded,
    scripts_env,
    wait_until,
)


def records(bootstrap: str, topic: str, expect: int) -> list[bytes]:
    return [r.value for r in consume_records(bootstrap, topic, expect, 3.0, partitions=[0])]


@pytest.mark.timeout(90)
def test_close_producer_with_the_broker_down_returns_and_never_delivers_later(
    tmp_path: Path,
) -> None:
    # kafka-python's own close(timeout) raises when its flush times out and leaves the
    # sender thread running: the record would reach the broker once it is back, long after
    # the caller reported it failed.
    port = free_port()
    env = scripts_env(tmp_path / "kafka", STACK_COMPONENTS="kafka", STACK_KAFKA_PORT=str(port))
    bootstrap = f"127.0.0.1:{port}"
    topic = f"helpers-close-{uuid.uuid4().hex[:8]}"
    try:
        assert run_bounded([SCRIPTS / "up"], timeout=60, env=env).returncode == 0
        ensure_topics(bootstrap, [topic], partitions=1)
        producer = make_producer(bootstrap, "helpers-test", max_block_ms=2000)
        producer.send(topic, b"before").get(timeout=10)
        threads_before = {t.ident for t in threading.enumerate()}

        assert run_bounded([SCRIPTS / "down"], timeout=60, env=env).returncode == 0
        future = producer.send(topic, b"late")  # buffered: no broker to take it
        t0 = time.monotonic()
        assert close_producer(producer, 1.0) is False
        assert time.monotonic() - t0 < 10
        assert future.is_done and future.failed()
        assert not producer._sender.is_alive()  # kafka-python internals: what the helper is for
        assert {t.ident for t in threading.enumerate()} <= threads_before

        assert run_bounded([SCRIPTS / "up"], timeout=60, env=env).returncode == 0
        ensure_topics(bootstrap, [topic], partitions=1)
        time.sleep(3)  # room for a leaked sender to reconnect and deliver
        assert records(bootstrap, topic, 1) == []
    finally:
        run_bounded([SCRIPTS / "down", "--purge"], timeout=60, env=env)


@pytest.mark.timeout(60)
def test_close_producer_with_the_broker_up_sends_everything(stack: Stack) -> None:
    topic = f"helpers-close-up-{uuid.uuid4().hex[:8]}"
    ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    producer = make_producer(stack.kafka_bootstrap, "helpers-test", linger_ms=500)
    futures = [producer.send(topic, f"m{i}".encode()) for i in range(20)]
    assert close_producer(producer, 10.0) is True
    assert all(f.is_done and f.succeeded() for f in futures)
    assert sorted(records(stack.kafka_bootstrap, topic, 20)) == sorted(
        f"m{i}".encode() for i in range(20)
    )


@pytest.mark.timeout(60)
def test_topic_watch_reports_a_recreated_topic_once_and_never_creates_one(stack: Stack) -> None:
    bootstrap = stack.kafka_bootstrap
    topic = f"helpers-watch-{uuid.uuid4().hex[:8]}"
    stop = threading.Event()
    watch = TopicWatch(bootstrap, topic, interval_s=0.2, timeout_ms=3000, stop=stop).start()
    try:
        time.sleep(1.0)  # a few checks of a topic that does not exist
        assert topic not in kafka_topics(bootstrap)
        assert watch.current_id() is None

        ensure_topics(bootstrap, [topic], partitions=2)
        first = wait_until(watch.current_id, timeout=10, what="the topic's first id")
        assert watch.take() is None  # appearing is not a re-creation

        delete_topic(bootstrap, topic)
        ensure_topics(bootstrap, [topic], partitions=2)
        change = wait_until(watch.take, timeout=10, what="the re-creation noticed")
        assert change[0] == first
        assert change[1] == watch.current_id() != first
        time.sleep(0.6)
        assert watch.take() is None  # reported once
    finally:
        stop.set()


@pytest.mark.timeout(60)
def test_with_no_broker_the_helpers_fail_within_their_timeout() -> None:
    nobody = f"127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(KafkaError):
        make_producer(nobody, "helpers-test", max_block_ms=1500)
    producer_s = time.monotonic() - t0
    t0 = time.monotonic()
    with pytest.raises(KafkaError):
        ensure_topics(nobody, ["t"], timeout_ms=1500)
    admin_s = time.monotonic() - t0
    # kafka-python's own default would wait 30 s for each
    assert producer_s < 10, producer_s
    assert admin_s < 10, admin_s
