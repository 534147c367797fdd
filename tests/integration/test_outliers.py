"""The autoencoder outliers (issue 17) on the real stack: the demo history in Prometheus,
training jobs on the tansu broker, models in MariaDB, trainers and the executor as
processes. The demo's fd spike (-50 m .. -30 m before the demo's end) is the incident; the
hours before it are quiet. The model is trained on the 22 h before the last 2, so the quiet
hours it is judged on are ones it never saw, and the demo's daily cycle (24 h of history)
is nearly all in its training: with 18 h of training the 6 h it missed held levels and
slopes it had never seen, and whether it flagged some of them depended on the time of day
the suite ran (the training is seeded: one time of day, one model). The trainers use Keras
on JAX with 5 epochs (fast enough here; the defaults are 20)."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from anomaly_detection.outliers.model import ModelParams, train
from anomaly_detection.outliers.settings import OutlierSettings
from anomaly_detection.outliers.store import MysqlStore
from sla_common import demo
from sla_common.mysql import drop_database
from sla_common.mysql_startup import wait_and_migrate
from sla_common.prometheus import PrometheusClient
from sla_manager.settings import SlaSettings
from tests.integration.slautil import ServerThread, app_env
from tests.integration.stackutil import (
    HOST,
    REPO,
    Stack,
    free_port,
    metric_value,
    stop_process,
    wait_until,
)
from tests.integration.test_anomalies import anomaly_service, wait_anomalies_stored
from tests.integration.test_storage import Service, settings_for

FD = 'node_filefd_allocated{instance="demo-host:9100",job="host"}'
STEP = 60
H = 3600


class Outliers:
    def __init__(self, stack: Stack, tmp: Path) -> None:
        assert stack.demo_end is not None
        self.end = stack.demo_end
        p = f"outl{uuid.uuid4().hex[:8]}"
        self.db = p
        self.port = free_port()
        self.tmp = tmp
        self.env = stack.service_env(
            MYSQL_DATABASE=p,
            KAFKA_OUTLIER_JOBS_TOPIC=f"{p}.jobs",
            KAFKA_OUTLIER_GROUP_ID=p,
            KAFKA_OUTLIER_PARTITIONS="1",
            OUTLIERS_BACKEND="keras",
            OUTLIERS_EPOCHS="5",
            HTTP_HOST=HOST,
            HTTP_PORT=str(self.port),
            PROMETHEUS_URL=stack.prometheus_url,
        )
        self.settings = OutlierSettings(
            mysql_host=stack.mysql_host,
            mysql_port=stack.mysql_port,
            mysql_user=stack.mysql_user,
            mysql_password=stack.mysql_password,
            mysql_database=p,
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        with (self.tmp / log).open("ab") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "anomaly_detection.outliers", *args],
                env=self.env,
                cwd=REPO,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / name
        return path.read_text(errors="replace") if path.exists() else ""

    def submit(self, train_end: float, hours: float) -> None:
        args = ["submit", FD, "--end", str(train_end), "--hours", str(hours), "--step", str(STEP)]
        done = subprocess.run(
            [sys.executable, "-m", "anomaly_detection.outliers", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]

    def version(self) -> int | None:
        return MysqlStore(self.settings).versions([FD]).get(FD)

    def calculate(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"http://{HOST}:{self.port}/calculate", json=body, timeout=60)


@pytest.fixture
def outl(stack: Stack, tmp_path: Path) -> Iterator[Outliers]:
    o = Outliers(stack, tmp_path)
    wait_and_migrate(o.settings, deadline_s=30)
    yield o
    for p in o.procs:
        stop_process(p, timeout=20)
    drop_database(o.settings)


def _range(o: Outliers, a: float, b: float) -> dict[str, Any]:
    return {"selector": FD, "start": o.end + a, "end": o.end + b, "step": STEP}


@pytest.mark.timeout(900)
def test_train_survive_a_dead_trainer_flag_the_incident_and_pick_up_a_newer_model(
    outl: Outliers,
) -> None:
    o = outl
    # Trainer A takes the job (the 22 h before the last 2), and dies in the middle of it
    # (SIGKILL: nothing committed).
    a = o.start("trainer", log="a.log")
    o.submit(o.end - 2 * H, 22)
    wait_until(lambda: "job node_filefd" in o.log("a.log"), timeout=180, what="A takes the job")
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=10)
    assert "trained" not in o.log("a.log")
    assert o.version() is None
    # Trainer B joins the group, gets the partition and its uncommitted job.
    o.start("trainer", log="b.log")
    first = wait_until(o.version, timeout=420, what="B trains the job A left")
    assert "trained node_filefd" in o.log("b.log")

    o.start("serve", log="executor.log")
    wait_until(lambda: _ok(f"http://{HOST}:{o.port}/healthz"), timeout=120, what="the executor")
    # The 2 h after the training range: the quiet 70 minutes, then the incident.
    r = o.calculate(_range(o, -2 * H, 0))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "success"
    (summary,) = out["series"]
    assert summary["model"] == "autoencoder" and summary["model_version"] == first
    assert len(out["prediction"]) == 121
    # Every minute of the fd spike (-50 m .. -30 m) is flagged; nothing before it. After it,
    # a point can be flagged only while the window ending at it (32 minutes) still holds a
    # point of the spike: the network reconstructs whole windows.
    flagged = {round((x["timestamp"] - o.end) / 60) for x in out["anomalies"]}
    window = 32
    assert set(range(-50, -29)) <= flagged <= set(range(-50, -30 + window)), sorted(flagged)
    spike = next(x for x in out["anomalies"] if round((x["timestamp"] - o.end) / 60) == -40)
    assert spike["value"] > 20_000 and spike["expected"] < 10_000 and spike["score"] > 5
    # The quiet hours alone (never seen in training, no spike in any window): nothing.
    quiet = o.calculate(_range(o, -2 * H, -51 * 60)).json()
    assert quiet["status"] == "success", quiet
    assert quiet["anomalies"] == [], quiet["anomalies"][:5]

    # A re-train replaces the model; the running executor uses the new one.
    o.submit(o.end - 2 * H, 12)
    second = wait_until(
        lambda: (v := o.version()) is not None and v > first and v, timeout=420, what="re-train"
    )
    r = o.calculate(_range(o, -90 * 60, 0))
    assert r.json()["series"][0]["model_version"] == second

    # Bad requests: 400 with the reason; Prometheus' own words for a bad selector.
    r = o.calculate({"selector": "node_filefd_allocated{", "start": 0, "end": 600, "step": 60})
    assert r.status_code == 400 and r.json()["status"] == "error"
    assert "Prometheus" in r.json()["msg"]
    r = o.calculate({"selector": FD, "start": 600, "end": 0, "step": 60})
    assert r.status_code == 400 and "end must be after start" in r.json()["msg"]
    r = httpx.post(f"http://{HOST}:{o.port}/calculate", content=b"nope", timeout=10)
    assert r.status_code == 400 and r.json()["status"] == "error"
    # A series without a model: the isolation forest, and it says so.
    other = o.calculate(
        _range(o, -3 * H, 0) | {"selector": 'node_memory_MemFree_bytes{instance="demo-host:9100"}'}
    ).json()
    (mem,) = other["series"]
    assert mem["fallback"] is True and mem["model"] == "iforest"
    assert mem["fallback_reason"] == "no model for this series"


def test_prometheus_down_is_503(outl: Outliers) -> None:
    o = outl
    o.env["PROMETHEUS_URL"] = f"http://{HOST}:{free_port()}"
    o.start("serve", log="executor.log")
    wait_until(lambda: _ok(f"http://{HOST}:{o.port}/healthz"), timeout=120, what="the executor")
    r = o.calculate(_range(o, -H, 0))
    assert r.status_code == 503 and r.json()["status"] == "error"
    assert "Prometheus unavailable" in r.json()["msg"]


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _scores(port: int) -> list[tuple[dict[str, str], float]]:
    """The ``anomaly_score`` samples of a /metrics on loopback (none when unreachable)."""
    try:
        text = httpx.get(f"http://{HOST}:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return []
    return [
        (dict(s.labels), s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "anomaly_score"
    ]


@pytest.mark.timeout(600)
def test_scheduled_scoring_reaches_get_anomalies_and_metrics(
    stack: Stack, outl: Outliers, tmp_path: Path
) -> None:
    """The schedule scores the interval just ended with the stored model: its records go
    through the anomaly topic to data_storage and come back from ``GET /anomalies``
    (detector ``autoencoder``), and its /metrics shows the latest one's score."""
    o = outl
    # A model of the fd series from the demo history (the MLP trainer: same network, same
    # scoring path, seconds instead of a Keras import; the Keras trainer is tested above).
    with PrometheusClient(stack.prometheus_url, 30) as prom:
        (fd,) = prom.query_range(FD, o.end - 24 * H, o.end - 2 * H, STEP)
    labels = {k: v for k, v in fd.labels.items() if k != "__name__"}
    model = train(fd.timestamps, fd.values, ModelParams(backend="mlp", epochs=30), FD, labels)
    assert MysqlStore(o.settings).put(model)

    topic = f"{o.db}.anomaly"
    storage = anomaly_service(Service(stack, tmp_path), settings_for(stack, o.db), topic)
    metrics_port = free_port()
    o.env |= {
        "OUTLIERS_SELECTORS": FD,
        "OUTLIERS_STEP_S": str(STEP),
        "OUTLIERS_SCORE_INTERVAL_S": "900",  # the first pass scores the 15 minutes before it
        "KAFKA_ANOMALY_TOPIC": topic,
        "HTTP_PORT": str(metrics_port),
    }
    try:
        o.start("schedule", log="schedule.log")
        wait_until(
            lambda: (
                metric_value(metrics_port, "outlier_score_passes_total", '{status="complete"}') >= 1
            ),
            timeout=240,
            what=f"a scoring pass; log:\n{o.log('schedule.log')[-3000:]}",
        )
        sent = int(metric_value(metrics_port, "outlier_score_records_total"))
        assert 14 <= sent <= 16, o.log("schedule.log")  # a point a minute, one series
        wait_anomalies_stored(storage, sent)

        env = app_env(stack.service_env(), MYSQL_DATABASE=o.db, ENVIRONMENT="test")
        with pytest.MonkeyPatch.context() as mp:
            for k, v in (env | {"SLA_API_TOKEN": "t"}).items():
                mp.setenv(k, v)
            settings = SlaSettings()
        params: dict[str, Any] = {"detector": "autoencoder", "series_key": FD, "limit": 1000}
        with ServerThread(settings) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
            r = c.get("/anomalies", params=params)
            other = c.get("/anomalies", params=params | {"detector": "iforest"})
        assert r.status_code == 200, r.text
        items = r.json()
        assert len(items) == sent
        assert {i["detector"] for i in items} == {"autoencoder"}
        assert other.status_code == 200 and other.json() == []
        starts = sorted(i["window_start"] for i in items)
        assert all(b - a == STEP for a, b in itertools.pairwise(starts))
        assert all(i["status"] in ("SAFE", "WARN", "ERROR") for i in items)

        # /metrics: the latest point's score, with the series' labels and the model's name.
        latest = max(items, key=lambda i: i["window_start"])
        (got,) = [(lab, v) for lab, v in _scores(metrics_port) if lab.get("model") == "autoencoder"]
        assert got[0] == labels | {"for": demo.FILEFD, "model": "autoencoder"}
        assert got[1] == pytest.approx(latest["deviation"])
    finally:
        storage.stop()
