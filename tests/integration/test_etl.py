"""The ETL against real Prometheus (backfilled demo history) and a real Kafka-protocol broker."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from statsmodels.tsa.stattools import adfuller

from etl_data_pipeline.analyses import analyse, prepare
from etl_data_pipeline.pipeline import Pipeline, analysis_config, build_message
from etl_data_pipeline.settings import EtlSettings
from sla_common import demo
from sla_common.kafka import Compression, close_producer, ensure_topics, make_producer
from sla_common.messages import AnalysisMessage
from sla_common.mysql import MysqlSettings
from sla_common.prometheus import PrometheusClient
from sla_common.series import series_key
from tests.integration.retrievalutil import TempDatabase, demo_messages
from tests.integration.stackutil import (
    REPO,
    Stack,
    consume_records,
    dump_logs,
    free_port,
    metric_value,
    run_bounded,
    scripts_env,
    start_module,
    stop_process,
    wait_until,
)

HOST_GAUGES = (
    'node_memory_MemFree_bytes{job="host"};node_memory_MemAvailable_bytes{job="host"};'
    'node_filesystem_free_bytes{job="host"};node_filesystem_avail_bytes{job="host"};'
    'node_filefd_allocated{job="host"}'
)
PY = sys.executable


def demo_keys(stack: Stack, names: set[str]) -> set[str]:
    assert stack.demo_seed is not None and stack.demo_end is not None
    return {
        s.key()
        for s in demo.generate(seed=stack.demo_seed, end=stack.demo_end, hours=1, step_s=15)
        if s.name in names
    }


END_MARKER = b"etl-test-end-marker"


def consume_all(
    bootstrap: str, topic: str, expect: int, timeout: float = 30.0, *, finished: bool = True
) -> list[AnalysisMessage]:
    """Every message of ``topic`` from the beginning (no consumer group: no join delay).

    ``finished``: the ETL has exited after its flush. A marker is then appended to each
    partition; its offset says how many records precede it, and all of them are read: a
    duplicate cannot still be on its way unseen ("exactly one each" needs no quiet period).
    With an ETL still running (``finished=False``): at least ``expect`` messages.
    """
    if not finished:
        raw = consume_records(bootstrap, topic, expect, timeout)
    else:
        producer = make_producer(bootstrap, "etl-test-marker")
        try:
            partitions = sorted(producer.partitions_for(topic))
            before = sum(
                producer.send(topic, key=END_MARKER, value=END_MARKER, partition=p)
                .get(timeout=10)
                .offset
                for p in partitions
            )
        finally:
            close_producer(producer, 10.0)
        records = consume_records(bootstrap, topic, before + len(partitions), timeout)
        markers = sorted(r.partition for r in records if r.value == END_MARKER)
        raw = [r for r in records if r.value != END_MARKER]
        assert markers == partitions and len(raw) == before, (markers, len(raw), before)
        assert len(raw) >= expect, f"{len(raw)} messages, expected {expect}"
    msgs = [AnalysisMessage.from_bytes(r.value) for r in raw]
    for r, msg in zip(raw, msgs, strict=True):
        assert r.key == msg.kafka_key()
    return msgs


def etl_env(stack: Stack, topic: str, **extra: str) -> dict[str, str]:
    env = {"KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": f"{topic}.dlq", "ETL_SELECTORS": HOST_GAUGES}
    return stack.service_env(**{**env, **extra})


def run_once(
    stack: Stack, topic: str, end: int | None = None, **extra: str
) -> subprocess.CompletedProcess[str]:
    argv = [PY, "-m", "etl_data_pipeline", "--once"]
    if end is not None:
        argv += ["--end", str(end)]
    return run_bounded(argv, timeout=120, env=etl_env(stack, topic, **extra))


@pytest.fixture(scope="module")
def once(stack: Stack) -> tuple[str, list[AnalysisMessage]]:
    """One --once cycle over the demo gauges, window ending at the demo's last sample."""
    topic = f"etl-once-{uuid.uuid4().hex[:8]}"
    proc = run_once(stack, topic, end=stack.demo_end)
    assert proc.returncode == 0, proc.stdout
    return topic, consume_all(stack.kafka_bootstrap, topic, expect=7)


def test_once_publishes_exactly_one_valid_message_per_series(
    stack: Stack, once: tuple[str, list[AnalysisMessage]]
) -> None:
    _topic, msgs = once
    expected = demo_keys(
        stack,
        {
            "node_memory_MemFree_bytes",
            "node_memory_MemAvailable_bytes",
            "node_filesystem_free_bytes",
            "node_filesystem_avail_bytes",
            "node_filefd_allocated",
        },
    )
    assert len(expected) == 7
    keys = [m.series.key for m in msgs]
    assert sorted(keys) == sorted(expected)  # exactly one each, nothing else
    assert len({m.run_id for m in msgs}) == 1
    for m in msgs:
        assert m.window.end == stack.demo_end and m.window.start == m.window.end - 43200
        assert m.window.samples == 2881  # Prometheus ranges include both ends
        assert m.grid.count == 2881 and m.window.interpolated == 0
        assert m.adf is not None and m.hp is not None and m.acf is not None
        assert m.decomposition is not None and m.forecast is not None
        assert [a.window for a in m.aggregates] == ["1h", "3h", "12h"]
        assert len(m.forecast.points) == 10 and m.skipped == []


def test_message_values_equal_a_direct_computation(
    stack: Stack, once: tuple[str, list[AnalysisMessage]]
) -> None:
    _topic, msgs = once
    assert stack.demo_end is not None and stack.demo_seed is not None
    by_key = {m.series.key: m for m in msgs}
    end = stack.demo_end
    generated = {
        s.key(): s for s in demo.generate(seed=stack.demo_seed, end=end, hours=24, step_s=15)
    }
    for key, msg in by_key.items():
        s = generated[key]
        sel = (s.timestamps >= end - 43200) & (s.timestamps <= end)
        values = s.values[sel]
        # aggregates: straight from the generator's numbers, independent of our code
        for agg in msg.aggregates:
            seconds = {"1h": 3600, "3h": 10800, "12h": 43200}[agg.window]
            w = s.values[(s.timestamps > end - seconds) & (s.timestamps <= end)]
            assert agg.count == w.size
            assert (agg.max, agg.min) == (w.max(), w.min())
            assert agg.mean == pytest.approx(w.mean(), rel=1e-12)
            assert agg.std == pytest.approx(w.std(), rel=1e-9)
        # ADF: statsmodels directly, same lag rule
        assert msg.adf is not None
        lag = math.ceil(12 * (values.size / 100) ** 0.25)
        assert msg.adf.regression == "ct"  # ETL_ADF_REGRESSION's default
        stat, pvalue, *_ = adfuller(
            values, maxlag=lag, regression="ct", autolag=None, result_object=False
        )
        assert msg.adf.statistic == pytest.approx(stat, rel=1e-9)
        assert msg.adf.pvalue == pytest.approx(pvalue, rel=1e-6, abs=1e-12)
        # HP: trend + cycle reproduce the data exactly
        assert msg.hp is not None
        np.testing.assert_allclose(np.add(msg.hp.trend, msg.hp.cycle), values, rtol=1e-12)

    # the whole message equals the same code run on the same data fetched directly
    key = series_key("node_filefd_allocated", {"instance": "demo-host:9100", "job": "host"})
    with PrometheusClient(stack.prometheus_url) as prom:
        (rs,) = prom.query_range(key, end - 43200, end, 15)
    result = analyse(prepare(rs.timestamps, rs.values, 15), end, analysis_config(EtlSettings()))
    ref = by_key[key].series
    direct = build_message(
        by_key[key].run_id, by_key[key].produced_at, ref, end - 43200, end, result, 600
    )
    got = by_key[key]
    assert got.model_dump(exclude={"durations_ms"}) == direct.model_dump(exclude={"durations_ms"})


def test_incident_windows_show_up_in_the_aggregates(
    stack: Stack, once: tuple[str, list[AnalysisMessage]]
) -> None:
    _topic, msgs = once
    assert stack.demo_end is not None
    found = {i.name: i for i in demo.incidents(seed=stack.demo_seed or 42, end=stack.demo_end)}
    by_key = {m.series.key: {a.window: a for a in m.aggregates} for m in msgs}

    fd = by_key[found["fd_spike"].key()]
    assert fd["1h"].max > demo.FD_THRESHOLD and fd["12h"].max > demo.FD_THRESHOLD
    mem = by_key[found["memory_leak_free"].key()]
    assert mem["12h"].min < demo.MEMORY_THRESHOLD_BYTES
    assert (
        mem["3h"].min > demo.MEMORY_THRESHOLD_BYTES and mem["1h"].min > demo.MEMORY_THRESHOLD_BYTES
    )
    disk = by_key[found["disk_fill_avail"].key()]
    assert disk["3h"].min < demo.DISK_THRESHOLD_BYTES < disk["1h"].min
    assert disk["12h"].min < demo.DISK_THRESHOLD_BYTES
    # the tmpfs series of the same metric carries no incident: its range is its own
    tmpfs = series_key(
        "node_filesystem_avail_bytes",
        {
            "device": "tmpfs",
            "fstype": "tmpfs",
            "instance": "demo-host:9100",
            "job": "host",
            "mountpoint": "/run",
        },
    )
    assert by_key[tmpfs]["3h"].min > 0.5 * by_key[tmpfs]["12h"].max


def test_default_selectors_cover_real_node_exporter_too(stack: Stack) -> None:
    """No job filter: the demo host and the real node-exporter scraped by the stack."""
    topic = f"etl-default-{uuid.uuid4().hex[:8]}"
    env = etl_env(stack, topic)
    env.pop("ETL_SELECTORS")
    wait_until(
        lambda: _series_count(stack, 'node_filefd_allocated{job="node"}'),
        timeout=40,
        what="Prometheus to scrape node-exporter",
    )
    proc = run_bounded([PY, "-m", "etl_data_pipeline", "--once"], timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout
    expected = set()
    with PrometheusClient(stack.prometheus_url) as prom:
        for sel in EtlSettings().etl_selectors:
            for s in prom.query_range(sel, time.time() - 600, time.time(), 15):
                expected.add(
                    series_key(sel, {k: v for k, v in s.labels.items() if k != "__name__"})
                )
    msgs = consume_all(stack.kafka_bootstrap, topic, expect=len(expected))
    keys = {m.series.key for m in msgs}
    assert any('job="node"' in k for k in keys), keys
    assert any('job="host"' in k for k in keys), keys
    assert len(keys) == len(msgs)  # one message per series
    assert expected <= keys


def _series_count(stack: Stack, selector: str) -> int:
    """Series with a sample at the step the ETL's window will end on (not merely "now")."""
    with PrometheusClient(stack.prometheus_url) as prom:
        return len(prom.query(selector, time=time.time() // 15 * 15 - 15))


def test_a_bad_selector_is_reported_and_the_others_go_on(stack: Stack) -> None:
    topic = f"etl-bad-{uuid.uuid4().hex[:8]}"
    proc = run_once(
        stack,
        topic,
        end=stack.demo_end,
        ETL_SELECTORS='node_filefd_allocated{job="host"};rate(node_filefd_allocated{job=;'
        'node_cpu_seconds_total{job="host",cpu="0"}',
    )
    assert proc.returncode == 0, proc.stdout
    assert "rejected by Prometheus" in proc.stdout and "parse error" in proc.stdout
    msgs = consume_all(stack.kafka_bootstrap, topic, expect=5)
    by_metric: dict[str, list[AnalysisMessage]] = {}
    for m in msgs:
        by_metric.setdefault(m.series.metric, []).append(m)
    assert len(by_metric["node_filefd_allocated"]) == 1
    cpu = by_metric["node_cpu_seconds_total"]
    assert len(cpu) == 4  # cpu 0 × 4 modes
    # counters are analysed as rates, across the demo's counter reset (a reboot at end-8h)
    for m in cpu:
        assert m.series.transform == "rate"
        twelve = next(a for a in m.aggregates if a.window == "12h")
        assert twelve.min >= 0 and twelve.max <= 1.0 + 1e-9


def test_invalid_settings_fail_at_start_naming_the_field(stack: Stack) -> None:
    proc = run_once(stack, "unused", ETL_WINDOW_S="twelve hours")
    assert proc.returncode == 2
    assert "ETL_WINDOW_S" in proc.stdout and "Traceback" not in proc.stdout


# --------------------------------------------------------------------------- faults


class EtlProcess:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = start_module("etl_data_pipeline", env, log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        return stop_process(self.proc, timeout=60)


@pytest.fixture
def etl_factory(tmp_path: Path) -> Iterator[list[EtlProcess]]:
    started: list[EtlProcess] = []
    yield started
    for p in started:
        code = p.stop()
        if code not in (0, None):
            sys.stderr.write(p.output())


def _side_stack(tmp_path: Path, name: str, **env: str) -> tuple[Path, dict[str, str]]:
    state = tmp_path / name
    return state, scripts_env(state, **env)


def _side_prometheus(
    stack: Stack, tmp_path: Path, name: str, port: int, **env: str
) -> tuple[Path, dict[str, str]]:
    """A Prometheus of its own on ``port``, with the session's demo history."""
    return _side_stack(
        tmp_path,
        name,
        STACK_COMPONENTS="prometheus",
        STACK_PROMETHEUS_PORT=str(port),
        STACK_DEMO_SEED=str(stack.demo_seed),
        STACK_DEMO_END=str(stack.demo_end),
        **env,
    )


def test_broker_down_then_back(stack: Stack, tmp_path: Path, etl_factory: list[EtlProcess]) -> None:
    kafka_port = free_port()
    state, env = _side_stack(
        tmp_path, "kafka", STACK_COMPONENTS="kafka", STACK_KAFKA_PORT=str(kafka_port)
    )
    try:
        _broker_down_then_back(stack, tmp_path, etl_factory, state, env, kafka_port)
    finally:
        run_bounded([REPO / "scripts" / "down"], timeout=60, env=env)


def _broker_down_then_back(
    stack: Stack,
    tmp_path: Path,
    etl_factory: list[EtlProcess],
    state: Path,
    env: dict[str, str],
    kafka_port: int,
) -> None:
    up = run_bounded([REPO / "scripts" / "up"], timeout=60, env=env)
    assert up.returncode == 0, up.stdout + dump_logs(state)
    bootstrap = f"127.0.0.1:{kafka_port}"
    http_port = free_port()
    topic = "etl-faults"
    etl = EtlProcess(
        etl_env(
            stack,
            topic,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            HTTP_PORT=str(http_port),
            ETL_INTERVAL_S="2",
            ETL_MAX_BACKOFF_S="2",
            ETL_SELECTORS='node_filefd_allocated{job="host"}',
            KAFKA_FLUSH_TIMEOUT_S="5",
        ),
        tmp_path / "etl.log",
    )
    etl_factory.append(etl)
    ok = 'sla_etl_cycles_total{result="success"}'
    wait_until(lambda: metric_value(http_port, ok) >= 1, timeout=60, what="a successful cycle")
    assert len(consume_all(bootstrap, topic, expect=1, finished=False)) >= 1

    assert run_bounded([REPO / "scripts" / "down"], timeout=60, env=env).returncode == 0
    failed = 'sla_etl_cycles_total{result="failed"}'
    wait_until(lambda: metric_value(http_port, failed) >= 2, timeout=90, what="failed cycles")
    assert etl.proc.poll() is None, etl.output()
    assert "Kafka unavailable" in etl.output() or "publish failed" in etl.output()
    successes_while_down = metric_value(http_port, ok)

    up = run_bounded([REPO / "scripts" / "up"], timeout=60, env=env)
    assert up.returncode == 0, up.stdout + dump_logs(state)
    wait_until(
        lambda: metric_value(http_port, ok) > successes_while_down,
        timeout=90,
        what="a successful cycle after the broker came back",
    )
    # the broker is memory-only: what is there now was published after the restart
    msgs = consume_all(bootstrap, topic, expect=1, finished=False)
    assert msgs and msgs[0].series.metric == "node_filefd_allocated"
    assert etl.proc.poll() is None
    assert etl.stop() == 0  # SIGTERM: finishes, flushes, exits 0


def test_prometheus_down_then_back(
    stack: Stack, tmp_path: Path, etl_factory: list[EtlProcess]
) -> None:
    prom_port = free_port()
    http_port = free_port()
    topic = f"etl-promdown-{uuid.uuid4().hex[:8]}"
    etl = EtlProcess(
        etl_env(
            stack,
            topic,
            PROMETHEUS_URL=f"http://127.0.0.1:{prom_port}",
            HTTP_PORT=str(http_port),
            ETL_INTERVAL_S="2",
            ETL_MAX_BACKOFF_S="2",
            PROMETHEUS_TIMEOUT_S="2",
            ETL_SELECTORS='node_filefd_allocated{job="host"}',
        ),
        tmp_path / "etl.log",
    )
    etl_factory.append(etl)
    failed = 'sla_etl_cycles_total{result="failed"}'
    ok = 'sla_etl_cycles_total{result="success"}'
    wait_until(lambda: metric_value(http_port, failed) >= 2, timeout=60, what="failed cycles")
    assert metric_value(http_port, ok) == 0
    assert "Prometheus unavailable" in etl.output()
    assert etl.proc.poll() is None

    # a Prometheus of its own on that port, with the demo history
    state, env = _side_prometheus(stack, tmp_path, "prom", prom_port)
    try:
        up = run_bounded([REPO / "scripts" / "up"], timeout=90, env=env)
        assert up.returncode == 0, up.stdout + dump_logs(state)
        wait_until(
            lambda: metric_value(http_port, ok) >= 1, timeout=60, what="a cycle after recovery"
        )
        msgs = consume_all(stack.kafka_bootstrap, topic, expect=1, finished=False)
        assert msgs and all(m.series.metric == "node_filefd_allocated" for m in msgs)
    finally:
        run_bounded([REPO / "scripts" / "down"], timeout=60, env=env)


def test_metrics_are_scraped_by_the_stack_prometheus(
    stack: Stack, tmp_path: Path, etl_factory: list[EtlProcess]
) -> None:
    """The ETL on the port the stack's Prometheus scrapes: its timings become queryable."""
    topic = f"etl-scrape-{uuid.uuid4().hex[:8]}"
    etl = EtlProcess(
        etl_env(
            stack,
            topic,
            HTTP_PORT=str(stack.etl_http_port),
            ETL_INTERVAL_S="5",
            ETL_SELECTORS='node_filefd_allocated{job="host"}',
        ),
        tmp_path / "etl.log",
    )
    etl_factory.append(etl)
    q = (
        "sum(sla_etl_analysis_duration_seconds_count"
        '{service="etl_data_pipeline",analysis="forecast"})'
    )
    with PrometheusClient(stack.prometheus_url) as prom:
        got = wait_until(
            lambda: [s for s in prom.query(q) if s.value >= 1],
            timeout=75,
            what=f"Prometheus to scrape the ETL: {q}",
            interval=2,
        )
        assert got[0].value >= 1
        analysed = 'sla_etl_series_analysed_total{service="etl_data_pipeline"}'
        wait_until(
            lambda: [s for s in prom.query(analysed) if s.value >= 1],
            timeout=30,
            what=f"{analysed} to count the analysed series",
            interval=2,
        )
        up = prom.query('up{job="sla-monitor",service="etl_data_pipeline"}')
        assert up and up[0].value == 1.0
    assert etl.proc.poll() is None


# --------------------------------------------------------------------------- message size

KAFKA_DEFAULT_LIMIT = 1_048_588  # Apache Kafka's default message.max.bytes (1 MiB + 12)
DAY = 86_400


@contextmanager
def storage_of(stack: Stack, tmp_path: Path, topic: str) -> Iterator[tuple[TempDatabase, int]]:
    """``python -m data_storage`` storing ``topic`` into a fresh database (and its port)."""
    base = MysqlSettings(
        mysql_host=stack.mysql_host,
        mysql_port=stack.mysql_port,
        mysql_user=stack.mysql_user,
        mysql_password=stack.mysql_password,
    )
    with TempDatabase(base, prefix="etl_size") as db:
        port = free_port()
        env = stack.service_env(
            KAFKA_TOPIC=topic,
            KAFKA_DLQ_TOPIC=f"{topic}.dlq",
            KAFKA_GROUP_ID=f"group-{topic}",
            MYSQL_DATABASE=db.name,
            HTTP_PORT=str(port),
            STORAGE_BATCH_MAX_WAIT_MS="200",
        )
        log = tmp_path / f"storage-{topic}.log"
        proc = start_module("data_storage", env, log)
        try:
            yield db, port
        finally:
            if stop_process(proc, timeout=30) != 0:
                sys.stderr.write(log.read_text(errors="replace")[-5000:])


def wait_stored(port: int, n: int, what: str) -> None:
    wait_until(
        lambda: metric_value(port, "sla_storage_messages_stored_total") >= n,
        timeout=90,
        what=what,
    )


def stored(db: TempDatabase) -> dict[str, tuple[int, int, int]]:
    """series key -> (window start, window end, HP points) of what data_storage wrote."""
    rows = db.query(
        "SELECT s.series_key, a.window_start, a.window_end, "
        "(SELECT COUNT(*) FROM hp_points h WHERE h.series_id = s.id) "
        "FROM analyses a JOIN series s ON s.id = a.series_id"
    )
    return {str(k): (int(a), int(b), int(n)) for k, a, b, n in rows}


@pytest.mark.timeout(300)
def test_a_48h_window_goes_out_compressed_under_kafkas_default_limit_and_is_stored(
    stack: Stack, tmp_path: Path
) -> None:
    """A 48 h message is ≈ 1.06 MB of JSON, over Apache Kafka's default limit; zstd (the
    default) sends ≈ 0.4 MB. Prometheus of its own with 48 h of demo history, the ETL's
    Pipeline and producer as deployed, the session's tansu, data_storage into MariaDB."""
    assert stack.demo_end is not None and stack.demo_seed is not None
    end = stack.demo_end
    prom_port = free_port()
    state, env = _side_prometheus(stack, tmp_path, "prom48", prom_port, STACK_DEMO_HOURS="49")
    topic = f"etl-48h-{uuid.uuid4().hex[:8]}"
    settings = EtlSettings(
        prometheus_url=f"http://127.0.0.1:{prom_port}",
        kafka_bootstrap_servers=stack.kafka_bootstrap,
        kafka_topic=topic,
        kafka_dlq_topic=f"{topic}.dlq",
        etl_selectors=('node_memory_MemFree_bytes{job="host"}',),
        etl_window_s=2 * DAY,
    )
    assert settings.kafka_compression == "zstd"  # the default, not set here
    try:
        up = run_bounded([REPO / "scripts" / "up"], timeout=120, env=env)
        assert up.returncode == 0, up.stdout + dump_logs(state)
        pipeline = Pipeline(settings)
        try:
            report = pipeline.run_cycle(end=end)
            assert report.ok and report.published == 1, report
            sent = pipeline._connect().metrics()["producer-metrics"]
        finally:
            pipeline.close()
    finally:
        run_bounded([REPO / "scripts" / "down"], timeout=60, env=env)

    (record,) = consume_records(stack.kafka_bootstrap, topic, 1)
    msg = AnalysisMessage.from_bytes(record.value)
    assert (msg.window.start, msg.window.end) == (end - 2 * DAY, end)
    assert msg.window.samples == 2 * DAY // 15 + 1 and msg.window.interpolated == 0
    assert len(record.value) > KAFKA_DEFAULT_LIMIT  # uncompressed, Kafka would refuse it
    assert sent["batch-size-max"] < KAFKA_DEFAULT_LIMIT / 2, sent  # what went on the wire

    with storage_of(stack, tmp_path, topic) as (db, port):
        wait_stored(port, 1, "the 48 h message stored")
        assert stored(db) == {msg.series.key: (end - 2 * DAY, end, 2 * DAY // 15 + 1)}


@pytest.mark.timeout(240)
def test_data_storage_stores_batches_of_every_compression_type(
    stack: Stack, tmp_path: Path
) -> None:
    assert stack.demo_end is not None and stack.demo_seed is not None
    topic = f"etl-codecs-{uuid.uuid4().hex[:8]}"
    ensure_topics(stack.kafka_bootstrap, [topic, f"{topic}.dlq"], partitions=3)
    msgs = demo_messages(
        seed=stack.demo_seed,
        end=stack.demo_end,
        runs=[0],
        window_s=3 * 3600,
        names=[
            "node_memory_MemFree_bytes",
            "node_memory_MemAvailable_bytes",
            "node_filefd_allocated",
            "node_filesystem_avail_bytes",
        ],
    )
    codecs: tuple[Compression, ...] = ("none", "gzip", "lz4", "zstd")
    assert len(msgs) >= len(codecs)
    for codec, msg in zip(codecs, msgs, strict=False):
        producer = make_producer(stack.kafka_bootstrap, f"etl-test-{codec}", compression=codec)
        try:
            producer.send(topic, key=msg.kafka_key(), value=msg.to_bytes()).get(timeout=30)
            rate = producer.metrics()["producer-metrics"]["compression-rate-avg"]
            assert (rate == 1.0) if codec == "none" else (rate < 0.7), (codec, rate)
        finally:
            close_producer(producer, 10.0)

    with storage_of(stack, tmp_path, topic) as (db, port):
        wait_stored(port, len(codecs), "one message of each codec stored")
        got = stored(db)
    assert set(got) == {m.series.key for m in msgs[: len(codecs)]}
