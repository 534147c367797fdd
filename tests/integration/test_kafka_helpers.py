"""sla_common.kafka against the real broker (tansu): producer close, topic watch, no auto-create,
compression and the size limit set on the topics it creates."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError

from sla_common.kafka import (
    MAX_MESSAGE_BYTES,
    TopicWatch,
    close_producer,
    ensure_topics,
    make_admin,
    make_producer,
)
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


@pytest.mark.timeout(180)
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
    control: Any = None
    try:
        assert run_bounded([SCRIPTS / "up"], timeout=60, env=env).returncode == 0
        ensure_topics(bootstrap, [topic], partitions=1)
        # The control: a producer left open, as a leaked sender would be (same reconnect
        # backoff). When its record arrives after the restart, the closed producer's would
        # have had its chance too. Not idempotent: tansu forgets producer ids on restart, so
        # an idempotent producer's buffered records fail then (UnknownProducerIdError) and
        # could not show anything.
        control = KafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="helpers-control",
            enable_idempotence=False,
            max_block_ms=2000,
        )
        control.send(topic, b"control-before").get(timeout=10)
        producer = make_producer(bootstrap, "helpers-test", max_block_ms=2000)
        producer.send(topic, b"before").get(timeout=10)
        threads_before = {t.ident for t in threading.enumerate()}

        assert run_bounded([SCRIPTS / "down"], timeout=60, env=env).returncode == 0
        future = producer.send(topic, b"late")  # buffered: no broker to take it
        control_future = control.send(topic, b"control")
        t0 = time.monotonic()
        assert close_producer(producer, 1.0) is False
        assert time.monotonic() - t0 < 10
        assert future.is_done and future.failed()
        assert not producer._sender.is_alive()  # kafka-python internals: what the helper is for
        assert {t.ident for t in threading.enumerate()} <= threads_before

        assert run_bounded([SCRIPTS / "up"], timeout=60, env=env).returncode == 0
        ensure_topics(bootstrap, [topic], partitions=1)
        control_future.get(timeout=60)  # the control's sender reconnected and delivered
        assert records(bootstrap, topic, 1) == [b"control"]
    finally:
        if control is not None:
            close_producer(control, 5.0)
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
        wait_until(lambda: watch.checks >= 3, timeout=20, what="checks of a missing topic")
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
        seen = watch.checks
        wait_until(lambda: watch.checks >= seen + 3, timeout=20, what="three more checks")
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


@pytest.mark.timeout(60)
def test_ensure_topics_sets_max_message_bytes_on_the_topics_it_creates(stack: Stack) -> None:
    bootstrap = stack.kafka_bootstrap
    limited, plain = (f"helpers-size-{uuid.uuid4().hex[:8]}" for _ in range(2))
    ensure_topics(bootstrap, [limited], partitions=1, max_message_bytes=MAX_MESSAGE_BYTES)
    ensure_topics(bootstrap, [plain], partitions=1)
    admin = make_admin(bootstrap, "helpers-test", 10_000)
    try:
        # tansu reports the configs a topic was created with under "all" only
        found = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in (limited, plain)],
            config_filter="all",
        )["topic"]
    finally:
        admin.close()
    assert found[limited]["max.message.bytes"]["value"] == str(MAX_MESSAGE_BYTES)
    assert "max.message.bytes" not in found[plain]  # the broker's message.max.bytes applies


@pytest.mark.timeout(60)
def test_make_producer_compresses_with_zstd_within_the_size_limit_by_default(stack: Stack) -> None:
    topic = f"helpers-zstd-{uuid.uuid4().hex[:8]}"
    ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    value = json.dumps({"trend": [1e9 + i / 7 for i in range(20_000)]}).encode()
    producer = make_producer(stack.kafka_bootstrap, "helpers-test")
    try:
        assert producer.config["compression_type"] == "zstd"
        assert producer.config["max_request_size"] == MAX_MESSAGE_BYTES
        producer.send(topic, value).get(timeout=10)
        sent = producer.metrics()["producer-metrics"]
        assert sent["compression-rate-avg"] < 0.6, sent  # what went out was compressed
        assert sent["batch-size-max"] < 0.6 * len(value), sent
    finally:
        close_producer(producer, 5.0)
    assert records(stack.kafka_bootstrap, topic, 1) == [value]
