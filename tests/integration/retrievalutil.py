"""Helpers for the data_retrieval tests and benchmark: real data, a real database, a server.

- :func:`demo_messages`: real ETL messages (the ETL's analyses of the deterministic demo
  history of :mod:`sla_common.demo`, built by the ETL's own ``build_message``).
- :class:`TempDatabase`: a uniquely named database on a real MySQL/MariaDB, migrated by the
  migrate command's code, filled by data_storage's ``Writer``, dropped afterwards.
- :class:`ServerThread`: ``data_retrieval.server.create_server`` on port 0, served by an
  event loop in a background thread, so tests can use plain blocking gRPC stubs and read
  the server's metrics registry directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from data_retrieval.metrics import RetrievalMetrics
from data_retrieval.server import RetrievalServer, create_server
from data_retrieval.settings import RetrievalSettings
from data_storage.writer import Writer
from etl_data_pipeline.analyses import AnalysisConfig, analyse, prepare
from etl_data_pipeline.pipeline import build_message
from sla_common import demo
from sla_common.messages import AnalysisMessage, SeriesRef
from sla_common.mysql import MysqlSettings, close_quietly, connect, fetch_all
from sla_common.series import series_key
from tests.integration.stackutil import REPO, free_port, scratch_database, wait_until

HOST = "127.0.0.1"
STEP_S = 15


# --------------------------------------------------------------------------- data


def analysed_message(
    metric: str,
    labels: dict[str, str],
    timestamps: np.ndarray[Any, Any],
    values: np.ndarray[Any, Any],
    *,
    end: int,
    window_s: int,
    run_id: str,
    produced_at: int | None = None,
    step_s: int = STEP_S,
) -> AnalysisMessage:
    """The message the ETL publishes for these samples, analysed over ``[end - window_s, end]``."""
    start = end - window_s
    keep = (timestamps >= start) & (timestamps <= end)
    result = analyse(prepare(timestamps[keep], values[keep], step_s), end, AnalysisConfig())
    ref = SeriesRef(key=series_key(metric, labels), metric=metric, labels=labels, selector=metric)
    return build_message(
        run_id, produced_at if produced_at is not None else end, ref, start, end, result, 600
    )


def demo_messages(
    *, seed: int, end: int, runs: Sequence[int], window_s: int, names: Iterable[str] | None = None
) -> list[AnalysisMessage]:
    """One message per demo series per run; run ``i`` ends ``runs[i]`` seconds before ``end``."""
    wanted = set(names) if names is not None else None
    hours = (window_s + max(runs)) / 3600 + 0.25
    out: list[AnalysisMessage] = []
    for s in demo.generate(seed=seed, end=end, hours=hours, step_s=STEP_S):
        if wanted is not None and s.name not in wanted:
            continue
        for i, back in enumerate(runs):
            out.append(
                analysed_message(
                    s.name,
                    dict(s.labels),
                    s.timestamps,
                    s.values,
                    end=end - back,
                    window_s=window_s,
                    run_id=f"run-{i}-{end - back}",
                )
            )
    return out


def synthetic_messages(
    metric: str, count: int, *, end: int, window_s: int, distinct: int = 10, seed: int = 7
) -> list[AnalysisMessage]:
    """``count`` series of ``metric`` (label ``instance``), ``distinct`` analysed for real and
    reused under the other keys (analyses are not what the benchmark measures)."""
    rng = np.random.default_rng(seed)
    n = window_s // STEP_S + 1
    ts = end - window_s + STEP_S * np.arange(n)
    base: list[AnalysisMessage] = []
    for i in range(min(distinct, count)):
        level = 1e9 * (1 + i)
        vs = level + 0.05 * level * np.sin(np.arange(n) / (40 + i)) + rng.normal(0, level / 1e3, n)
        base.append(
            analysed_message(
                metric,
                {"instance": f"i{i:03d}"},
                ts,
                vs,
                end=end,
                window_s=window_s,
                run_id="bench",
            )
        )
    out = []
    for i in range(count):
        msg = base[i % len(base)]
        labels = {"instance": f"i{i:03d}"}
        ref = msg.series.model_copy(update={"key": series_key(metric, labels), "labels": labels})
        out.append(msg.model_copy(update={"series": ref}))
    return out


# --------------------------------------------------------------------------- database


@dataclass
class TempDatabase:
    """:func:`~tests.integration.stackutil.scratch_database` named ``prefix_<random>`` on the
    server of ``base`` (migrated on enter, dropped on exit), with ways to fill and read it."""

    base: MysqlSettings
    prefix: str = "sla_rt"
    settings: MysqlSettings = field(init=False)
    _scratch: contextlib.ExitStack = field(init=False, default_factory=contextlib.ExitStack)

    @property
    def name(self) -> str:
        return self.settings.mysql_database

    def __enter__(self) -> TempDatabase:
        self.settings = self._scratch.enter_context(scratch_database(self.base, self.prefix))
        return self

    def __exit__(self, *exc: object) -> None:
        self._scratch.close()

    def store(self, messages: Sequence[AnalysisMessage], batch: int = 20) -> None:
        """Write through data_storage's Writer, as the storage consumer does."""
        writer = Writer(self.settings)
        try:
            for i in range(0, len(messages), batch):
                writer.write(messages[i : i + batch])
        finally:
            writer.close()

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = connect(self.settings, autocommit=True)
        try:
            return fetch_all(conn, sql, args or None)
        finally:
            close_quietly(conn)

    def retrieval_settings(self, **overrides: Any) -> RetrievalSettings:
        fields = {
            k: v
            for k, v in self.settings.model_dump().items()
            if k in RetrievalSettings.model_fields
        }
        # No token or TLS from the caller's environment (a shell that sourced stack.env).
        fields.update(grpc_host=HOST, grpc_port=0, http_port=0, grpc_api_token=None)
        fields.update(grpc_tls_cert_file=None, grpc_tls_key_file=None)
        fields.update(overrides)
        return RetrievalSettings(**fields)


# --------------------------------------------------------------------------- server


class ServerThread:
    """A RetrievalServer on port 0 in its own event loop thread."""

    def __init__(self, settings: RetrievalSettings) -> None:
        self.settings = settings
        self.metrics = RetrievalMetrics()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server: RetrievalServer
        self.port: int

        async def start() -> tuple[RetrievalServer, int]:
            server, port = create_server(settings, metrics=self.metrics)
            await server.start()
            return server, port

        self.server, self.port = self.run(start(), timeout=30)
        self.target = f"{HOST}:{self.port}"

    def run(self, coro: Any, timeout: float = 30) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self, grace: float | None = 1.0, drain: float = 0.0) -> None:
        try:
            self.run(self.server.stop(grace, drain), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()

    def value(self, name: str, **labels: str) -> float:
        got = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess:
    """``python -m data_retrieval`` as a subprocess on free ports, ready when health says
    SERVING; its output goes to a temporary log file (shown when it fails to start)."""

    def __init__(
        self,
        mysql: MysqlSettings,
        *,
        ready_timeout: float = 30.0,
        ca_file: Path | None = None,
        **env: str,
    ) -> None:
        self.ca_file = ca_file  # the server serves TLS with a certificate this CA signed
        self.port = free_port()
        self.http_port = free_port()
        self.target = f"{HOST}:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="data_retrieval-", suffix=".log")[1])
        full_env = {
            **os.environ,
            "MYSQL_HOST": mysql.mysql_host,
            "MYSQL_PORT": str(mysql.mysql_port),
            "MYSQL_USER": mysql.mysql_user,
            "MYSQL_PASSWORD": mysql.mysql_password.get_secret_value(),
            "MYSQL_DATABASE": mysql.mysql_database,
            "GRPC_HOST": HOST,
            "GRPC_PORT": str(self.port),
            "HTTP_HOST": HOST,
            "HTTP_PORT": str(self.http_port),
            "PYTHONUNBUFFERED": "1",
            "GRPC_API_TOKEN": "",  # none unless the test gives one (not the caller's shell's)
            **env,
        }
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "data_retrieval"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=REPO,
                start_new_session=True,
            )
        try:
            wait_until(self._ready, timeout=ready_timeout, what=f"data_retrieval on {self.target}")
        except AssertionError as e:
            self.kill()
            raise AssertionError(f"{e}\n---- its output:\n{self.output()}") from None

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"data_retrieval exited with {self.proc.returncode}")
        try:
            status = health_status(self.target, timeout=1.0, ca_file=self.ca_file)
        except grpc.RpcError:
            return False
        return bool(status == health_pb2.HealthCheckResponse.SERVING)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def peak_rss_kb(self) -> int:
        """VmHWM: the most resident memory the process has had so far."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc/PID/status")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, and the exit status (killed after ``timeout`` s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"data_retrieval ignored SIGTERM for {timeout} s") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.terminate()
        finally:
            self.log_path.unlink(missing_ok=True)


def health_status(
    target: str, service: str = "", timeout: float = 5.0, ca_file: Path | None = None
) -> int:
    """Health checking needs no token; over TLS when ``ca_file`` (the CA to trust) is given."""
    channel = (
        grpc.secure_channel(target, grpc.ssl_channel_credentials(ca_file.read_bytes()))
        if ca_file is not None
        else grpc.insecure_channel(target)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        status: int = response.status
        return status


@dataclass
class Collected:
    """Everything a stream sent: the messages and the status it ended with."""

    messages: list[Any]
    code: grpc.StatusCode
    details: str


def collect(call: Iterable[Any]) -> Collected:
    messages: list[Any] = []
    try:
        for msg in call:
            messages.append(msg)
    except grpc.RpcError as e:
        return Collected(messages, e.code(), e.details() or "")
    return Collected(messages, grpc.StatusCode.OK, "")


class Terminal:
    """A program on a real pseudo-terminal: type lines, wait for text, bounded everywhere.

    The terminal is the program's controlling terminal (``setsid --ctty``), so Ctrl-C
    typed into it becomes SIGINT for the program, as at a keyboard.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        sigint_ignored: bool = False,
    ) -> None:
        self._master, slave = pty.openpty()
        # Not a process group leader, so setsid(1) makes the session without forking: the
        # program keeps this pid and is its own process group (killpg works).
        command = ["setsid", "--ctty", *argv]
        if sigint_ignored:  # as a non-interactive shell starts `cmd &`: SIGINT inherited ignored
            command = ["sh", "-c", 'trap "" INT; exec "$@"', "sh", *command]
        self.proc = subprocess.Popen(
            command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=REPO,
        )
        os.close(slave)
        self.output = ""
        self._mark = 0  # where the next expect() starts looking

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self._master, 65536)
        except OSError:  # the program exited and closed the terminal
            return False
        self.output += data.decode(errors="replace")
        return bool(data)

    def expect(self, text: str, timeout: float = 20.0) -> str:
        """Wait for ``text`` after the previous match; return the output up to it since then."""
        deadline = time.monotonic() + timeout
        while (found := self.output.find(text, self._mark)) < 0:
            left = deadline - time.monotonic()
            if left <= 0 or (not self._read(min(left, 0.2)) and self.proc.poll() is not None):
                raise AssertionError(f"no {text!r} within {timeout} s; output:\n{self.output}")
        seen, self._mark = self.output[self._mark : found + len(text)], found + len(text)
        return seen

    def send(self, line: str) -> None:
        os.write(self._master, line.encode() + b"\r")

    def send_raw(self, data: bytes) -> None:
        os.write(self._master, data)

    def wait(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        while self._read(0.05):
            pass
        if self.proc.poll() is None:
            self.kill()
            raise AssertionError(f"still running after {timeout} s; output:\n{self.output}")
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        os.close(self._master)
