"""Helpers for the SLA manager's tests: the app run for real, on a free loopback port.

- :class:`AppProcess`: ``python -m sla_manager`` as a subprocess (what production runs:
  settings from the environment, the start-up wait and schema check, uvicorn, SIGTERM);
  :class:`EtlProcess` the same for the ETL.
- :class:`ServerThread`: ``create_app(settings)`` under uvicorn in a thread of the test
  process, for tests that build the settings themselves.
- :func:`running_app`: :class:`AppProcess` on a database with a write token, ready, and
  stopped (cleanly) on exit: how the SLA tests start the manager; :func:`app_client` a
  client to it.
- :func:`stack_database`: a uniquely named, migrated database on the stack's MySQL, dropped
  afterwards.
- :func:`sla_settings`: the app's settings as its environment on the stack gives them;
  :func:`scratch_settings` the same on a scratch database.
- :func:`store_cauchy_forecast`: a forecast of the demo host's live file descriptors, made
  now, written by data_storage's own writer (what the SLA manager's breach probabilities read).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, Self

import httpx
import numpy as np
import pytest
import uvicorn

from data_storage.writer import Writer
from sla_common import demo
from sla_common.messages import AnalysisMessage, Forecast, ForecastPoint, Grid, SeriesRef, Window
from sla_common.mysql import MysqlSettings
from sla_common.series import series_key
from sla_manager.app import create_app
from sla_manager.settings import SlaSettings
from tests.integration.stackutil import (
    HOST,
    Stack,
    free_port,
    scratch_database,
    start_module,
    stop_process,
    wait_until,
)

START_TIMEOUT_S = 90.0  # importing the app takes over 30 s on a loaded 2-core machine


def _answers(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/metrics", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class ServiceProcess:
    """``python -m <module>`` of the suite with ``env``, serving HTTP (its /metrics at least)
    on HTTP_HOST:HTTP_PORT = loopback:``port``; its output goes to ``log``."""

    module: str

    def __init__(self, env: Mapping[str, str], log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.log = log
        self.proc = start_module(
            self.module,
            {**env, "HTTP_HOST": HOST, "HTTP_PORT": str(self.port), "PYTHONUNBUFFERED": "1"},
            log,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> Self:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.module} exited {self.proc.returncode}:\n{self.output()}"
                )
            return _answers(self.base_url)

        try:
            wait_until(ready, timeout=timeout, what=f"{self.module} on {self.base_url}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n---- {self.module} log\n{self.output()}") from None
        return self

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.module} still running after {timeout} s:\n{self.output()}"
            ) from None

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 20 s; the exit code."""
        return stop_process(self.proc, timeout=20)


class AppProcess(ServiceProcess):
    """``python -m sla_manager``: what production runs (settings from the environment, the
    start-up wait and schema check, uvicorn, SIGTERM)."""

    module = "sla_manager"


class EtlProcess(ServiceProcess):
    """``python -m etl_data_pipeline``, whose timings the SLA manager reports."""

    module = "etl_data_pipeline"


class ServerThread:
    """``create_app(settings)`` served by uvicorn in a daemon thread on a free port."""

    def __init__(self, settings: SlaSettings) -> None:
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        config = uvicorn.Config(
            create_app(settings), host=HOST, port=self.port, log_config=None, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_until(
            lambda: self.server.started,
            timeout=START_TIMEOUT_S,
            what="uvicorn thread",
            interval=0.02,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextlib.contextmanager
def stack_database(stack: Stack, prefix: str = "sla_test") -> Iterator[str]:
    """:func:`~tests.integration.stackutil.scratch_database` on the stack's MySQL: its name."""
    with scratch_database(stack.mysql_settings(), prefix) as settings:
        yield settings.mysql_database


def app_env(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The environment for a service under test: ``base`` and ``extra``, and no SLA_* / ETL_*
    settings leaking in from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLA_", "ETL_"))}
    env.update(base)
    env.update(extra)
    return env


def sla_settings(stack: Stack, database: str, token: str) -> SlaSettings:
    """The settings ``python -m sla_manager`` builds from its environment (:func:`app_env` of
    the stack with ``database``, ENVIRONMENT=test and write token ``token``), for a
    :class:`ServerThread`."""
    env = app_env(
        stack.service_env(), MYSQL_DATABASE=database, ENVIRONMENT="test", SLA_API_TOKEN=token
    )
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        return SlaSettings()


@contextlib.contextmanager
def scratch_settings(stack: Stack, token: str) -> Iterator[SlaSettings]:
    """:func:`sla_settings` on a :func:`stack_database` of its own, dropped on exit."""
    with stack_database(stack) as database:
        yield sla_settings(stack, database, token)


DEMO_FD_LABELS = {"instance": demo.INSTANCE, "job": demo.JOB}


def forecast_only_message(
    metric: str,
    labels: dict[str, str],
    at: int,
    forecast: Forecast,
    transform: Literal["none", "rate"] = "none",
) -> AnalysisMessage:
    """An ETL message made at ``at`` (over the 12 h before it) carrying only ``forecast``
    of the series ``metric{labels}``."""
    return AnalysisMessage(
        run_id=f"test-{uuid.uuid4().hex[:8]}",
        produced_at=at,
        series=SeriesRef(
            key=series_key(metric, labels),
            metric=metric,
            labels=labels,
            selector=metric,
            transform=transform,
        ),
        window=Window(start=at - 43200, end=at, step_s=15, samples=2881, interpolated=0),
        grid=Grid(start=at - 43200, step_s=15, count=0),
        forecast=forecast,
    )


def forecast_message(
    metric: str,
    labels: dict[str, str],
    at: int,
    locs: Sequence[float],
    scale: float,
    *,
    distribution: Literal["normal", "student_t"] = "normal",
    df: float | None = None,
) -> AnalysisMessage:
    """An ETL message carrying only a forecast made at ``at``: a point a minute from
    ``at + 60``, each a ``distribution`` at ``loc`` with ``scale`` and its 80 % / 95 % bounds
    (normal quantiles), as data_storage's writer stores it."""
    points = [
        ForecastPoint(
            ts=at + 60 * (k + 1),
            value=loc,
            lower80=loc - 1.28 * scale,
            upper80=loc + 1.28 * scale,
            lower95=loc - 1.96 * scale,
            upper95=loc + 1.96 * scale,
            loc=loc,
            scale=scale,
        )
        for k, loc in enumerate(locs)
    ]
    forecast = Forecast(
        model="ETS(A,N,N) test",
        step_s=60,
        horizon_s=60 * len(locs),
        history_points=720,
        points=points,
        max=max(locs),
        min=min(locs),
        mean=float(np.mean(locs)),
        distribution=distribution,
        df=df,
        floor=0.0,
    )
    return forecast_only_message(metric, labels, at, forecast)


def store_cauchy_forecast(
    settings: MysqlSettings, locs: list[float], scale: float, at: int | None = None
) -> int:
    """A forecast of the demo host's ``node_filefd_allocated`` (the demo exporter serves it
    live) made at ``at`` (default now): one point a minute from ``at + 60``, each Cauchy
    (Student-t, 1 degree of freedom) at ``loc`` with ``scale``, so that every breach
    probability is exact by hand: P(T > z) = 1/2 − atan(z)/π. Written by data_storage's
    writer; returns ``at``."""
    at = int(time.time()) if at is None else at
    msg = forecast_message(
        demo.FILEFD, DEMO_FD_LABELS, at, locs, scale, distribution="student_t", df=1.0
    )
    writer = Writer(settings)
    try:
        writer.write([msg])
    finally:
        writer.close()
    return at


@contextlib.contextmanager
def running_app(
    stack: Stack,
    database: str,
    log: Path,
    *,
    token: str,
    port: int | None = None,
    **extra: str,
) -> Iterator[AppProcess]:
    """``python -m sla_manager`` on the stack with ``database``, write token ``token``,
    ENVIRONMENT=test and ``extra``, ready; on exit SIGTERM, and AssertionError unless it
    exited 0 after a clean stop (no traceback in its log)."""
    env = app_env(
        stack.service_env(), MYSQL_DATABASE=database, SLA_API_TOKEN=token, ENVIRONMENT="test"
    )
    app = AppProcess({**env, **extra}, log, port)
    try:
        yield app.wait_ready()
    finally:
        code = app.stop()
    output = app.output()  # checked when the test itself passed
    assert code == 0, f"SIGTERM: exit {code}\n{output}"
    assert "SLA manager stopped" in output and "Traceback" not in output, output


@contextlib.contextmanager
def app_client(
    stack: Stack,
    database: str,
    log: Path,
    *,
    token: str,
    port: int | None = None,
    timeout: float = 30.0,
    **extra: str,
) -> Iterator[httpx.Client]:
    """:func:`running_app` (with ``extra`` settings) and an HTTP client to it."""
    with (
        running_app(stack, database, log, token=token, port=port, **extra) as app,
        httpx.Client(base_url=app.base_url, timeout=timeout) as client,
    ):
        yield client
