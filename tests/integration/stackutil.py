"""Helpers for tests against the real local stack (scripts/up): the `Stack` facts and tools.

Import from test modules as ``from tests.integration.stackutil import Stack``: the repo root is
on ``sys.path`` (the venv's editable install of the project puts it there), and that spelling is
the one mypy resolves too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pymysql
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from sla_common.mysql import MysqlSettings, drop_database
from sla_common.mysql_startup import wait_and_migrate

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
HOST = "127.0.0.1"
STEP_S = 15

T = TypeVar("T")


@dataclass(frozen=True)
class Stack:
    """What `scripts/up` wrote to ``stack.json``: where each real component listens."""

    state_dir: Path
    components: tuple[str, ...]
    prometheus_url: str
    prometheus_port: int
    node_exporter_url: str
    node_exporter_port: int
    kafka_bootstrap: str
    kafka_port: int
    mysql_host: str
    mysql_port: int
    mysql_user: str
    mysql_password: str
    mysql_database: str  # what `up` migrated: the session's own database in the tests
    mysql_mode: str | None  # "reused" | "private" | None (mariadb not among the components)
    demo_seed: int | None
    demo_end: int | None  # unix seconds of the last demo sample, a multiple of 15
    sla_manager_http_port: int
    etl_http_port: int
    storage_http_port: int
    retrieval_http_port: int
    receiver_port: int  # anomaly_detection.receiver: Prometheus remote-writes here
    pids: Mapping[str, int]
    env: Mapping[str, str]  # the exported variables of stack.env, for service subprocesses

    @classmethod
    def load(cls, state_dir: Path) -> Stack:
        facts: dict[str, Any] = json.loads((state_dir / "stack.json").read_text())
        suite = facts["suite_ports"]
        mysql = facts["mysql"]
        demo = facts["demo"]
        return cls(
            state_dir=Path(facts["state_dir"]),
            components=tuple(facts["components"]),
            prometheus_url=facts["prometheus"]["url"],
            prometheus_port=int(facts["prometheus"]["port"]),
            node_exporter_url=facts["node_exporter"]["url"],
            node_exporter_port=int(facts["node_exporter"]["port"]),
            kafka_bootstrap=facts["kafka"]["bootstrap_servers"],
            kafka_port=int(facts["kafka"]["port"]),
            mysql_host=mysql["host"],
            mysql_port=int(mysql["port"]),
            mysql_user=mysql["user"],
            mysql_password=mysql["password"],
            mysql_database=mysql.get("database", "sla_monitor"),
            mysql_mode=mysql["mode"],
            demo_seed=demo["seed"],
            demo_end=demo["end"],
            sla_manager_http_port=int(suite["sla_manager"]),
            etl_http_port=int(suite["etl_data_pipeline"]),
            storage_http_port=int(suite["data_storage"]),
            retrieval_http_port=int(suite["data_retrieval"]),
            receiver_port=int(suite.get("anomaly_detection.receiver", 0)),
            pids={str(k): int(v) for k, v in facts["pids"].items()},
            env={str(k): str(v) for k, v in facts["env"].items()},
        )

    def mysql_settings(self, database: str | None = None) -> MysqlSettings:
        """Settings of the stack's MySQL (its root login) for ``database`` (default: the
        one `up` migrated)."""
        return MysqlSettings(
            mysql_host=self.mysql_host,
            mysql_port=self.mysql_port,
            mysql_user=self.mysql_user,
            mysql_password=self.mysql_password,
            mysql_database=database or self.mysql_database,
        )

    def service_env(self, **extra: str) -> dict[str, str]:
        """os.environ plus stack.env plus ``extra``: the environment for a service under test."""
        return {**os.environ, **self.env, **extra}


# --------------------------------------------------------------------------- processes


class Runner(Protocol):
    def __call__(
        self,
        argv: Sequence[str | Path],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]: ...


def run_bounded(
    argv: Sequence[str | Path],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run to completion within ``timeout`` s; stdout and stderr merged into ``stdout``.

    On timeout the whole process group is killed and AssertionError names the command and
    shows its output so far: a hung child never hangs the test session.
    """
    proc = subprocess.Popen(
        [str(a) for a in argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd or REPO,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(
            f"{' '.join(map(str, argv))} did not finish in {timeout} s; output:\n{out}"
        ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, None)


def migrate(env: Mapping[str, str], timeout: float = 90) -> str:
    """``python -m sla_common.migrate`` with ``env`` (its MYSQL_*): what compose's migrate
    service and scripts/up run before the services; its output. AssertionError if it fails."""
    result = run_bounded([sys.executable, "-m", "sla_common.migrate"], timeout=timeout, env=env)
    if result.returncode != 0:
        raise AssertionError(f"migrate failed (exit {result.returncode}):\n{result.stdout}")
    return result.stdout


def wait_until(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.25
) -> T:
    """Poll ``probe`` until it returns something truthy; AssertionError naming ``what`` if not."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def aligned_now(step_s: int = STEP_S) -> int:
    return int(time.time()) // step_s * step_s


# --------------------------------------------------------------------------- the stack scripts


def scripts_env(state_dir: Path, **overrides: str) -> dict[str, str]:
    """Environment for scripts/up|down|status: no STACK_* leaking in from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACK_")}
    env.update(STACK_DIR=str(state_dir), STACK_SKIP_BOOTSTRAP="1", PYTHONUNBUFFERED="1")
    env.update(overrides)
    return env


def dump_logs(state_dir: Path, lines: int = 40) -> str:
    """The tail of every log under ``state_dir/logs``, for a failure message."""
    parts = []
    for log in sorted((state_dir / "logs").glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"---- {log} (last {lines} lines)\n" + "\n".join(text))
    return "\n".join(parts) or f"(no logs under {state_dir / 'logs'})"


def mysql_answers(port: int, user: str = "root", password: str = "", host: str = HOST) -> bool:
    """`select 1` over TCP with the mariadb client: a real login, not just an open port."""
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        return False
    argv = [client, "--no-defaults", "--protocol=tcp", f"-h{host}", f"-P{port}", f"-u{user}"]
    argv += ["--connect-timeout=2", "-N", "-B", "-e", "select 1"]
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "MYSQL_PWD": password},
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and out.stdout.strip() == "1"


# --------------------------------------------------------------------------- Prometheus


def prom_get(base_url: str, path: str, **params: str | int | float) -> Any:
    """GET a Prometheus API path; the ``data`` member of a successful answer."""
    query = urllib.parse.urlencode({k: str(v) for k, v in params.items()})
    url = f"{base_url}{path}" + (f"?{query}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (test's own http URL)
        body = json.loads(resp.read())
    assert body.get("status") == "success", body
    return body["data"]


def prom_query(base_url: str, query: str, at: float | None = None) -> list[dict[str, Any]]:
    params: dict[str, str | int | float] = {"query": query}
    if at is not None:
        params["time"] = at
    result: list[dict[str, Any]] = prom_get(base_url, "/api/v1/query", **params)["result"]
    return result


def prom_query_range(
    base_url: str, query: str, start: float, end: float, step: float = STEP_S
) -> list[dict[str, Any]]:
    data = prom_get(base_url, "/api/v1/query_range", query=query, start=start, end=end, step=step)
    result: list[dict[str, Any]] = data["result"]
    return result


def kafka_topics(bootstrap: str) -> list[str]:
    """The broker's topic names (a Metadata request for all topics: creates nothing)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return list(admin.list_topics())
    finally:
        admin.close()


def delete_topic(bootstrap: str, topic: str) -> None:
    """Delete ``topic`` and wait until the broker no longer lists it."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()
    wait_until(lambda: topic not in kafka_topics(bootstrap), timeout=10, what=f"{topic} deleted")


def consume_records(
    bootstrap: str,
    topic: str,
    expect: int,
    timeout: float = 30.0,
    partitions: Sequence[int] | None = None,
) -> list[Any]:
    """Every record of ``topic`` from the beginning, without a group (no join delay).

    Polls until ``expect`` records came or ``timeout`` passed, then once more for a second:
    records beyond the expected count (duplicates) show up too. ``partitions``: all of the
    topic's when None (waiting for the topic to exist).
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        if partitions is None:
            partitions = sorted(
                wait_until(
                    lambda: consumer.partitions_for_topic(topic),
                    timeout=timeout,
                    what=f"topic {topic}",
                )
            )
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(out) < expect:
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
        for records in consumer.poll(timeout_ms=1000).values():
            out.extend(records)
        return out
    finally:
        consumer.close()


def start_module(
    module: str, env: Mapping[str, str], log: Path, *args: str
) -> subprocess.Popen[bytes]:
    """``python -m module *args`` from the repo root with ``env``, its output appended to
    ``log``."""
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env=dict(env),
            cwd=REPO,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop_process(
    proc: subprocess.Popen[bytes], timeout: float = 30.0, sig: int = signal.SIGTERM
) -> int:
    """``sig`` (SIGTERM), then SIGKILL when it has not exited after ``timeout`` s; its code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def metric_value(port: int, name: str, labels: str = "") -> float:
    """One sample of a service's /metrics on loopback:``port``; -1 when absent or unreachable."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return -1.0
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


class PrometheusProcess:
    """A private Prometheus (loopback) on the TSDB folder ``data`` with the scrape config
    ``config_yml``, on a port that stays the same across :meth:`stop` and :meth:`start` (a
    client sees it go down and come back). Files go in ``root``."""

    def __init__(self, config_yml: str, data: Path, root: Path, port: int | None = None) -> None:
        self.config = root / "prometheus.yml"
        self.config.write_text(config_yml)
        self.data = data
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = root / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> str:
        """Start it and wait until ready; its URL."""
        with self.log_path.open("a") as log_fh:
            self.proc = proc = subprocess.Popen(
                [
                    shutil.which("prometheus") or "/usr/bin/prometheus",
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.data}",
                    "--storage.tsdb.retention.time=30d",
                    f"--web.listen-address={HOST}:{self.port}",
                ],
                stdout=log_fh,
                stderr=subprocess.STDOUT,
            )
        wait_until(
            lambda: proc.poll() is not None or _ready(self.port),
            timeout=timeout,
            what=f"prometheus ready on {self.url}",
        )
        if proc.poll() is not None:
            raise AssertionError(
                f"prometheus exited {proc.returncode}:\n{self.log_path.read_text()}"
            )
        return self.url

    def stop(self, timeout: float = 15) -> None:
        """Stop it (SIGTERM, SIGKILL after ``timeout``) and wait until its port is closed."""
        if self.proc is not None:
            stop_process(self.proc, timeout=timeout)
            self.proc = None
        wait_until(lambda: not port_open(self.port), timeout=timeout, what=f"{self.url} closed")


@contextmanager
def private_prometheus(config_yml: str, data: Path, root: Path) -> Iterator[str]:
    """A private Prometheus (loopback, free port) on the TSDB folder ``data`` with the scrape
    config ``config_yml``; yields its URL once ready, stops it on exit. Files go in ``root``."""
    prom = PrometheusProcess(config_yml, data, root)
    try:
        yield prom.start(timeout=30)
    finally:
        prom.stop()


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/-/ready", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@contextmanager
def scratch_database(base: MysqlSettings, prefix: str = "sla_test") -> Iterator[MysqlSettings]:
    """A fresh database ``<prefix>_<random>`` on the server of ``base`` (its settings),
    migrated by the code ``python -m sla_common.migrate`` runs (the services only check the
    schema); dropped on exit (quietly when the server is gone by then)."""
    settings = base.model_copy(update={"mysql_database": f"{prefix}_{uuid.uuid4().hex[:12]}"})
    try:
        wait_and_migrate(settings, deadline_s=30)
        yield settings
    finally:
        with suppress(pymysql.err.Error):
            drop_database(settings)


PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool_blocks(openmetrics: Path, out: Path, timeout: float = 90) -> None:
    """``promtool tsdb create-blocks-from openmetrics``: the TSDB blocks of ``openmetrics``
    in ``out`` (what a Prometheus started on ``out`` reads); AssertionError with promtool's
    output when it fails."""
    proc = subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
