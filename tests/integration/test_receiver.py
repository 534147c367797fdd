"""anomaly_detection.receiver with real Prometheus remote-writing live samples to it and the
real broker (tansu): records on the samples topic with the series' keys and Prometheus' own
values, and no sample lost while the broker is down (the receiver answers 503, Prometheus
retries, everything arrives once the broker is back)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition

from anomaly_detection.receiver.decode import write_request_body
from sla_common.samples import decode_batch
from sla_common.series import series_key
from tests.integration.stackutil import (
    HOST,
    SCRIPTS,
    Stack,
    free_port,
    metric_value,
    private_prometheus,
    prom_query,
    run_bounded,
    scripts_env,
    start_module,
    stop_process,
    wait_until,
)

RECEIVER = "anomaly_detection.receiver"
HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
Sample = tuple[str, int]  # (series key, Unix ms)
# What the stack's Prometheus remote-writes by default (STACK_REMOTE_WRITE_*): the demo host.
LIVE_DEMO = '{job="host",__name__=~"node_.*"}'


def requests_with(port: int, code: str) -> float:
    return metric_value(port, "anomaly_receiver_requests_total", f'{{code="{code}"}}')


def start_receiver(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = start_module(RECEIVER, env, log)
    wait_until(
        lambda: (
            proc.poll() is not None
            or metric_value(port, "anomaly_receiver_samples_received_total") >= 0
        ),
        timeout=30,
        what="the receiver's /metrics",
    )
    assert proc.poll() is None, log.read_text()
    return proc


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        stop_process(proc, timeout=20)


class TopicReader:
    """Every record of ``topic`` from the beginning (no group), read incrementally."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.samples: dict[Sample, float] = {}
        self.records = 0
        self.assigned = False
        self.first: dict[int, tuple[int, float]] = {}  # partition: (first offset, its 1st t)

    def poll(self) -> None:
        if not self.assigned:
            parts = self.consumer.partitions_for_topic(self.topic)
            if not parts:
                return
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            self.consumer.assign(tps)
            self.consumer.seek_to_beginning(*tps)
            self.assigned = True
        for batch in self.consumer.poll(timeout_ms=500).values():
            for rec in batch:
                b = decode_batch(rec.value, key=rec.key)  # the key is the series key
                self.records += 1
                self.first.setdefault(rec.partition, (rec.offset, b.timestamps_ms[0] / 1000))
                for t, x in zip(b.timestamps_ms, b.values, strict=True):
                    self.samples[(b.key, t)] = x

    def close(self) -> None:
        self.consumer.close()


def prometheus_samples(
    url: str, selector: str, since_s: float, until_s: float
) -> dict[Sample, float]:
    """Prometheus' own raw samples of ``selector`` in (since_s, until_s]."""
    window = math.ceil(until_s - since_s) + 1
    out: dict[Sample, float] = {}
    for row in prom_query(url, f"{selector}[{window}s]", at=until_s):
        labels = dict(row["metric"])
        key = series_key(labels.pop("__name__"), labels)
        for t, v in row["values"]:
            ms = round(float(t) * 1000)
            if since_s * 1000 < ms <= until_s * 1000:
                out[(key, ms)] = float(v)
    return out


def test_stack_prometheus_remote_writes_the_demo_series_with_their_keys(
    stack: Stack, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    topic = f"samples-it-{uuid.uuid4().hex[:8]}"
    port = stack.receiver_port
    env = stack.service_env(HTTP_HOST=HOST, HTTP_PORT=str(port), KAFKA_SAMPLES_TOPIC=topic)
    started = time.time()
    processes.append(start_receiver(env, port, tmp_path / "receiver.log"))
    reader = TopicReader(stack.kafka_bootstrap, topic)
    try:
        # The demo host's live gauges, scraped every 15 s: wait for two scrapes of each.
        def enough() -> bool:
            reader.poll()
            live = prometheus_samples(stack.prometheus_url, LIVE_DEMO, started, time.time())
            keys = {k for k, _t in live}
            got = {k for k, _t in reader.samples}
            return bool(keys) and keys <= got and len(reader.samples) >= 2 * len(keys)

        try:
            wait_until(enough, timeout=120, what="two live scrapes of every demo series")
        except AssertionError:
            raise AssertionError(
                f"{len(reader.samples)} samples on the topic; Prometheus: "
                + "; ".join(
                    f"{q} = {[r['value'][1] for r in prom_query(stack.prometheus_url, q)]}"
                    for q in (
                        "prometheus_remote_storage_samples_total",
                        "prometheus_remote_storage_samples_dropped_total",
                        "prometheus_remote_storage_samples_failed_total",
                        f"count({LIVE_DEMO})",
                        "prometheus_target_scrapes_sample_out_of_bounds_total",
                        'scrape_samples_scraped{job="host"}',
                    )
                )
            ) from None
    finally:
        reader.close()
    # Prometheus sends what it scrapes from its start on (not the backfilled history): from
    # the first sample the topic has to the last, the two hold the same samples.
    since = min(t for _k, t in reader.samples) / 1000 - 0.001
    until = max(t for _k, t in reader.samples) / 1000
    theirs = prometheus_samples(stack.prometheus_url, LIVE_DEMO, since, until)
    assert reader.samples == theirs
    assert all(k.startswith("node_") and 'job="host"' in k for k, _t in reader.samples)
    assert requests_with(port, "503") == 0


def test_malformed_requests_are_400_and_oversized_413_on_the_real_server(
    stack: Stack, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    env = stack.service_env(
        HTTP_HOST=HOST,
        HTTP_PORT=str(port),
        KAFKA_SAMPLES_TOPIC=f"samples-bad-{uuid.uuid4().hex[:8]}",
        RECEIVER_MAX_BODY_BYTES="65536",
        RECEIVER_MAX_DECOMPRESSED_BYTES="1048576",
    )
    processes.append(start_receiver(env, port, tmp_path / "receiver.log"))
    url = f"http://{HOST}:{port}/api/v1/write"
    good = write_request_body([({"__name__": "m", "job": "t"}, [(1_700_000_000_000, 1.0)])])
    with httpx.Client(timeout=30) as client:
        assert client.post(url, content=good, headers=HEADERS).status_code == 204
        bad_snappy = client.post(url, content=b"\x20garbage", headers=HEADERS)
        bad_type = client.post(url, content=good, headers={**HEADERS, "Content-Type": "text/plain"})
        bomb = client.post(url, content=b"\xff\xff\xff\xff\x0f" + b"\x00" * 64, headers=HEADERS)
        huge = client.post(url, content=b"\x00" * 70_000, headers=HEADERS)
    assert (bad_snappy.status_code, bad_type.status_code) == (400, 400)
    assert "snappy" in bad_snappy.text and "Content-Type" in bad_type.text
    assert bomb.status_code == 413 and "declares" in bomb.text
    assert huge.status_code == 413
    assert requests_with(port, "400") == 2 and requests_with(port, "413") == 2
    assert stop_process(processes.pop()) == 0  # SIGTERM: drains and exits 0


# A private Prometheus scraping the receiver every second and remote-writing four of the
# series every scrape makes to it.
KEPT = "up|scrape_samples_scraped|scrape_duration_seconds|scrape_series_added"
PROM_CONFIG = """
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: receiver
    static_configs:
      - targets: ['{host}:{receiver_port}']
remote_write:
  - url: http://{host}:{receiver_port}/api/v1/write
    queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 1s}}
    write_relabel_configs:
      - source_labels: [__name__]
        regex: '{kept}'
        action: keep
"""


@pytest.mark.timeout(420)
def test_broker_down_answers_503_and_no_sample_is_lost(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    kafka_port, receiver_port = free_port(), free_port()
    bootstrap = f"{HOST}:{kafka_port}"
    kafka_env = scripts_env(
        tmp_path / "kafka", STACK_COMPONENTS="kafka", STACK_KAFKA_PORT=str(kafka_port)
    )
    env = {
        **kafka_env,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "HTTP_HOST": HOST,
        "HTTP_PORT": str(receiver_port),
        "RECEIVER_PUBLISH_TIMEOUT_S": "2",
        "RECEIVER_RETRY_AFTER_S": "1",
        "RECEIVER_ACCESS_LOG": "true",
    }
    try:
        up = run_bounded([SCRIPTS / "up"], timeout=60, env=kafka_env)
        assert up.returncode == 0, up.stdout
        processes.append(start_receiver(env, receiver_port, tmp_path / "receiver.log"))
        config = PROM_CONFIG.format(host=HOST, receiver_port=receiver_port, kept=KEPT)
        data = tmp_path / "prom-data"
        data.mkdir()
        with private_prometheus(config, data, tmp_path) as prom_url:
            published = "anomaly_receiver_samples_published_total"
            wait_until(
                lambda: metric_value(receiver_port, published) > 20,
                timeout=60,
                what="live samples published before the outage",
            )
            assert run_bounded([SCRIPTS / "down"], timeout=60, env=kafka_env).returncode == 0
            # Samples scraped before this may have been acknowledged by the broker that just
            # went away with everything it held in memory; every later one must arrive.
            down_at = time.time()
            wait_until(
                lambda: requests_with(receiver_port, "503") >= 3,
                timeout=60,
                what="the receiver answering 503 while the broker is down",
            )
            ok_before = requests_with(receiver_port, "204")
            # tansu keeps everything in memory: it comes back empty, and the receiver
            # re-creates the topic when it reconnects.
            up = run_bounded([SCRIPTS / "up"], timeout=60, env=kafka_env)
            assert up.returncode == 0, up.stdout
            wait_until(
                lambda: requests_with(receiver_port, "204") >= ok_before + 3,
                timeout=60,
                what="remote write accepted again after the broker came back",
            )
            until = time.time()
            theirs = prometheus_samples(prom_url, f'{{__name__=~"{KEPT}"}}', down_at, until)
            reader = TopicReader(bootstrap, "samples")
            try:

                def arrived() -> bool:
                    reader.poll()
                    return theirs.keys() <= reader.samples.keys()

                try:
                    wait_until(arrived, timeout=60, what="every sample since the outage")
                except AssertionError:
                    missing = sorted(theirs.keys() - reader.samples.keys(), key=lambda s: s[1])
                    got = sorted(t for _k, t in reader.samples)
                    raise AssertionError(
                        f"{len(missing)} of {len(theirs)} samples missing, from "
                        f"{missing[0][1] / 1000 - down_at:.1f} s to "
                        f"{missing[-1][1] / 1000 - down_at:.1f} s after the broker went down "
                        f"(outage until {until - down_at:.1f} s); the topic holds "
                        f"{len(got)} from {got[0] / 1000 - down_at if got else 0:.1f} s:\n"
                        + f"first records {reader.first} down_at {down_at}"
                    ) from None
            finally:
                reader.close()
        # every series, every sample since the broker went down, with Prometheus' values
        outage_s = until - down_at
        assert len({k for k, _t in theirs}) == 4
        assert len(theirs) >= 4 * outage_s * 0.8, (len(theirs), outage_s)
        assert all(reader.samples[s] == x for s, x in theirs.items())
    finally:
        run_bounded([SCRIPTS / "down", "--purge"], timeout=60, env=kafka_env)


def test_example_generator_produces_keyed_event_time_samples(stack: Stack, tmp_path: Path) -> None:
    topic = f"samples-gen-{uuid.uuid4().hex[:8]}"
    env = stack.service_env(KAFKA_SAMPLES_TOPIC=topic)
    argv = [sys.executable, "-m", "anomaly_detection.generate", "--series=5", "--rate=500"]
    argv += ["--duration=2", "--start=1700000000", "--seed=3", "--batch=10", "--fast"]
    argv += [f"--truth={tmp_path / 'truth.json'}", "--burst-every=1", "--burst-length=0.5"]
    result = run_bounded(argv, timeout=60, env=env)
    assert result.returncode == 0, result.stdout

    reader = TopicReader(stack.kafka_bootstrap, topic)
    try:

        def complete() -> bool:
            reader.poll()
            return len(reader.samples) >= 5 * 200

        wait_until(complete, timeout=60, what="the generated samples on the topic")
    finally:
        reader.close()
    assert len(reader.samples) == 1000 and reader.records == 100
    times = sorted({t for _k, t in reader.samples})
    assert times[0] == 1_700_000_000_000 and times[1] - times[0] == 10  # 100 samples/s/series
    assert "sent 1000 samples" in result.stdout
    assert json.loads((tmp_path / "truth.json").read_text())
