"""The local stack scripts against the real components: up/status/down, scrapes, demo, Kafka."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from tests.integration.stackutil import (
    HOST,
    SCRIPTS,
    STEP_S,
    Runner,
    Stack,
    dump_logs,
    free_port,
    mysql_answers,
    pid_alive,
    port_open,
    prom_get,
    prom_query,
    prom_query_range,
    scripts_env,
    wait_until,
)

DAY_S = 24 * 3600
SUITE_SERVICES = {
    "sla_manager",
    "etl_data_pipeline",
    "data_storage",
    "data_retrieval",
    "anomaly_detection.receiver",
    "anomaly_detection",
    "anomaly_detection.batch",
    "anomaly_detection.outliers:schedule",
}


def _up(run: Runner, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = run([SCRIPTS / "up"], timeout=120, env=env)
    if result.returncode != 0:
        state_dir = Path(env["STACK_DIR"])
        pytest.fail(f"scripts/up failed:\n{result.stdout}\n{dump_logs(state_dir)}", pytrace=False)
    return result


def _status(run: Runner, env: dict[str, str]) -> tuple[int, dict[str, str]]:
    result = run([SCRIPTS / "status"], timeout=30, env=env)
    states = {
        line.split()[0]: line.split()[1]
        for line in result.stdout.splitlines()
        if line.startswith("  ") and not line.strip().startswith("environment")
    }
    return result.returncode, states


# --------------------------------------------------------------------------- the shared stack


def test_status_reports_every_component_up(
    stack: Stack, stack_env: dict[str, str], run: Runner
) -> None:
    code, states = _status(run, stack_env)

    assert code == 0, states
    assert states == {
        "node-exporter": "running",
        "demo-exporter": "running",
        "kafka": "running",
        "mariadb": "reused" if stack.mysql_mode == "reused" else "running",
        "alertmanager": "running",
        "prometheus": "running",
    }


def test_demo_host_stays_live_after_its_history(stack: Stack) -> None:
    """The demo exporter continues the backfilled gauges, so "now" has demo data too."""
    assert stack.demo_end is not None
    selector = 'node_filefd_allocated{job="host",instance="demo-host:9100"}'

    def fresh() -> list[dict[str, Any]]:
        rows = prom_query(stack.prometheus_url, f"timestamp({selector})")
        end = stack.demo_end or 0
        return [r for r in rows if float(r["value"][1]) > end]

    wait_until(fresh, timeout=45, what=f"a live sample of {selector} after the history")
    (row,) = prom_query(stack.prometheus_url, selector)
    assert row["metric"]["job"] == "host" and row["metric"]["instance"] == "demo-host:9100"
    assert 2000 < float(row["value"][1]) < 20000  # the normal range, not an incident


def test_second_up_starts_nothing(stack: Stack, stack_env: dict[str, str], run: Runner) -> None:
    t0 = time.monotonic()
    result = _up(run, stack_env)
    elapsed = time.monotonic() - t0

    assert " started " not in result.stdout, result.stdout
    assert "demo history" not in result.stdout.split("Where to look")[0]  # no second backfill
    assert Stack.load(stack.state_dir).pids == stack.pids
    assert all(pid_alive(pid) for pid in stack.pids.values())
    assert elapsed < 15, f"an idempotent up took {elapsed:.1f} s"


def test_stack_env_matches_stack_json(stack: Stack) -> None:
    text = (stack.state_dir / "stack.env").read_text()
    exported = dict(
        line.removeprefix("export ").split("=", 1)
        for line in text.splitlines()
        if line.startswith("export ")
    )
    assert exported["PROMETHEUS_URL"] == stack.prometheus_url
    assert exported["KAFKA_BOOTSTRAP_SERVERS"] == stack.kafka_bootstrap
    assert exported["MYSQL_PORT"] == str(stack.mysql_port)
    assert exported["MYSQL_PASSWORD"] == "''"
    assert exported["STACK_DEMO_SEED"] == "42"
    assert exported["STACK_DEMO_END"] == str(stack.demo_end)
    assert exported["ETL_HTTP_PORT"] == str(stack.etl_http_port)
    assert exported["MYSQL_DATABASE"] == stack.mysql_database


def test_the_session_migrates_a_database_of_its_own(stack: Stack, run: Runner) -> None:
    """Not the default sla_monitor, which `make demo` (and any other checkout, with its own
    migrations) uses on a shared MariaDB: `up` migrated the session's database, and the
    services get its name from stack.env."""
    assert stack.mysql_database.startswith("sla_it_")
    check = run(
        [sys.executable, "-m", "sla_common.migrate", "check"], timeout=60, env=stack.service_env()
    )
    assert check.returncode == 0, check.stdout
    assert f"{stack.mysql_database} is at schema version" in check.stdout


def test_files_holding_the_token_are_private(stack: Stack) -> None:
    for name in ("stack.env", "stack.json", "sla_api_token"):
        mode = stat.S_IMODE((stack.state_dir / name).stat().st_mode)
        assert mode == 0o600, f"{name} is {oct(mode)}"


def test_prometheus_scrapes_node_exporter(stack: Stack) -> None:
    def node_up() -> bool:
        result = prom_query(stack.prometheus_url, 'up{job="node"}')
        return len(result) == 1 and result[0]["value"][1] == "1"

    # First scrape within one 15 s interval of start; allow a few.
    wait_until(node_up, timeout=60, what=f'up{{job="node"}} == 1 at {stack.prometheus_url}')


def test_prometheus_scrapes_the_suite_endpoints(stack: Stack) -> None:
    def listed() -> dict[str, str]:
        targets = prom_get(stack.prometheus_url, "/api/v1/targets")["activeTargets"]
        return {
            t["labels"]["service"]: t["scrapeUrl"]
            for t in targets
            if t["labels"].get("job") == "sla-monitor"
        }

    # Right after start Prometheus may not have listed its targets yet.
    suite = wait_until(listed, timeout=60, what="the sla-monitor targets listed")

    assert set(suite) == SUITE_SERVICES
    assert suite["etl_data_pipeline"] == f"http://{HOST}:{stack.etl_http_port}/metrics"
    assert suite["sla_manager"] == f"http://{HOST}:{stack.sla_manager_http_port}/metrics"
    assert suite["data_storage"] == f"http://{HOST}:{stack.storage_http_port}/metrics"
    assert suite["data_retrieval"] == f"http://{HOST}:{stack.retrieval_http_port}/metrics"
    receiver = suite["anomaly_detection.receiver"]
    assert receiver == f"http://{HOST}:{stack.receiver_port}/metrics"
    batch = suite["anomaly_detection.batch"]  # scripts/demo starts its schedule there
    assert batch == f"http://{HOST}:{stack.env['ANOMALY_BATCH_PORT']}/metrics"
    # the autoencoder's schedule (scripts/demo starts it; the executor has no /metrics)
    outliers = suite["anomaly_detection.outliers:schedule"]
    assert outliers == f"http://{HOST}:{stack.env['OUTLIERS_SCHEDULE_PORT']}/metrics"


def test_backfilled_demo_history_is_queryable(stack: Stack) -> None:
    assert stack.demo_seed == 42
    assert stack.demo_end is not None
    assert stack.demo_end % STEP_S == 0

    series = prom_query_range(
        stack.prometheus_url,
        'node_filefd_allocated{job="host"}',
        start=stack.demo_end - DAY_S,
        end=stack.demo_end,
    )

    assert series, "no demo history for node_filefd_allocated{job='host'}"
    for s in series:
        assert len(s["values"]) >= DAY_S // STEP_S, s["metric"]
        assert int(s["values"][-1][0]) == stack.demo_end


def test_backfilled_raw_sample_count(stack: Stack) -> None:
    assert stack.demo_end is not None
    result = prom_query(
        stack.prometheus_url,
        'count_over_time(node_filefd_allocated{job="host"}[24h])',
        at=stack.demo_end,
    )

    assert result
    assert all(int(r["value"][1]) >= DAY_S // STEP_S for r in result)


def test_kafka_produce_consume_roundtrip(stack: Stack) -> None:
    topic = f"stack-test-{uuid.uuid4().hex[:12]}"
    sent = [f"message {i}".encode() for i in range(20)]
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, request_timeout_ms=10_000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()

    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=5)
    try:
        for value in sent:
            producer.send(topic, key=b"stack-test", value=value)
        producer.flush(timeout=10)
    finally:
        producer.close()

    # Explicit assignment, no group: a group join would add seconds on tansu.
    consumer = KafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        received: list[bytes] = []
        for record in consumer:
            received.append(record.value)
            if len(received) == len(sent):
                break
    finally:
        consumer.close()

    assert received == sent


# --------------------------------------------------------------------------- own state dirs


@pytest.mark.timeout(120)
def test_private_mariadb_starts_and_stops(tmp_path: Path, run: Runner) -> None:
    port = free_port()
    env = scripts_env(
        tmp_path, STACK_COMPONENTS="mariadb", STACK_MYSQL_MODE="private", STACK_MYSQL_PORT=str(port)
    )
    try:
        _up(run, env)
        facts = json.loads((tmp_path / "stack.json").read_text())
        pid = facts["pids"]["mariadb"]

        assert facts["mysql"]["mode"] == "private"
        assert mysql_answers(port)
        assert _status(run, env) == (0, {"mariadb": "running"})
        assert (tmp_path / "data" / "mariadb" / "mysql").is_dir()
        # `up` ran the one migrate command on MYSQL_DATABASE (default sla_monitor).
        assert (tmp_path / "logs" / "migrate.log").is_file()
        check = run(
            [sys.executable, "-m", "sla_common.migrate", "check"],
            timeout=60,
            env={**env, "MYSQL_PORT": str(port), "MYSQL_USER": "root", "MYSQL_PASSWORD": ""},
        )
        assert check.returncode == 0 and "sla_monitor is at schema version" in check.stdout

        down = run([SCRIPTS / "down"], timeout=60, env=env)

        assert down.returncode == 0, down.stdout
        assert not pid_alive(pid)
        assert not port_open(port)
        assert not (tmp_path / "pids" / "mariadb.pid").exists()
        assert _status(run, env) == (3, {"mariadb": "stopped"})
    finally:
        run([SCRIPTS / "down", "--purge"], timeout=60, env=env)
    assert not (tmp_path / "data").exists()


@pytest.mark.timeout(120)
def test_down_stops_only_what_up_started(tmp_path: Path, run: Runner) -> None:
    """A reused MariaDB, a same-named process and a pid file pointing elsewhere all survive."""
    exporter_port, decoy_port = free_port(), free_port()
    mysql_port = 3306 if mysql_answers(3306) else free_port()
    env = scripts_env(
        tmp_path,
        STACK_COMPONENTS="node-exporter,mariadb",
        STACK_NODE_EXPORTER_PORT=str(exporter_port),
        STACK_MYSQL_PORT=str(mysql_port),
        STACK_DEMO="0",
    )
    # The same executable as ours, not started by up: `down` must not find it by name.
    decoy = subprocess.Popen(
        ["/usr/bin/prometheus-node-exporter", f"--web.listen-address={HOST}:{decoy_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        _up(run, env)
        facts = json.loads((tmp_path / "stack.json").read_text())
        exporter_pid = facts["pids"]["node-exporter"]
        mysql_pid = facts["pids"].get("mariadb")
        # A pid file for a process we did not start (as after pid recycling): never signalled.
        (tmp_path / "pids" / "recycled.pid").write_text(f"{sleeper.pid}\n")
        (tmp_path / "pids" / "recycled.json").write_text(
            json.dumps(
                {
                    "pid": sleeper.pid,
                    "argv": ["/usr/bin/prometheus-node-exporter"],
                    "start_ticks": 1,
                }
            )
        )

        down = run([SCRIPTS / "down"], timeout=60, env=env)

        assert down.returncode == 0, down.stdout
        assert not pid_alive(exporter_pid)
        assert not port_open(exporter_port)
        assert decoy.poll() is None, "down killed a process it did not start"
        assert sleeper.poll() is None, "down signalled a pid whose command line is not ours"
        assert not list((tmp_path / "pids").glob("*.pid"))
        if facts["mysql"]["mode"] == "reused":
            assert mysql_pid is None
            assert mysql_answers(mysql_port), "down stopped a MariaDB it had only reused"
        else:
            assert mysql_pid is not None
            assert not pid_alive(mysql_pid)
    finally:
        for proc in (decoy, sleeper):
            proc.terminate()
            proc.wait(timeout=10)
        run([SCRIPTS / "down", "--purge"], timeout=60, env=env)


@pytest.mark.timeout(60)
def test_up_refuses_a_port_taken_by_someone_else(tmp_path: Path, run: Runner) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((HOST, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = scripts_env(
            tmp_path, STACK_COMPONENTS="node-exporter", STACK_NODE_EXPORTER_PORT=str(port)
        )
        result = run([SCRIPTS / "up"], timeout=30, env=env)

    assert result.returncode != 0
    assert "STACK_NODE_EXPORTER_PORT" in result.stdout
    assert not list((tmp_path / "pids").glob("*.pid"))


@pytest.mark.timeout(60)
def test_readiness_gives_up_with_what_it_waited_for(tmp_path: Path, run: Runner) -> None:
    fake = tmp_path / "fake-broker"
    fake.write_text('#!/bin/sh\necho "fake broker: never listens"\nwhile :; do sleep 1; done\n')
    fake.chmod(0o755)
    port = free_port()
    env = scripts_env(
        tmp_path / "state",
        STACK_COMPONENTS="kafka",
        STACK_KAFKA_PORT=str(port),
        STACK_READY_TIMEOUT="1.5",
        CALF_TANSU_BIN=str(fake),
    )
    t0 = time.monotonic()
    result = run([SCRIPTS / "up"], timeout=30, env=env)

    assert result.returncode != 0
    assert time.monotonic() - t0 < 15
    assert f"Kafka ApiVersions round trip on {HOST}:{port}" in result.stdout
    assert "fake broker: never listens" in result.stdout  # the log tail
    assert not list((tmp_path / "state" / "pids").glob("*.pid")), "a failed up left a process"
