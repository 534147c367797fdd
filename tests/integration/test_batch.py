"""``python -m anomaly_detection.batch`` on real Spark (local[2]), the stack's Prometheus
with the demo history and its MariaDB: train + score store one score per point of every
series, exactly once (a re-run rewrites the same rows); the demo incidents score above
the threshold and the quiet hours mostly below; ``GET /anomalies`` and ``ListAnomalies``
serve them (detector ``iforest``); typed skips; Prometheus down gives a failed run, and
Prometheus stopped in the middle of a score run (a private one on the demo history) is
retried to completion when it comes back, or gives a run recorded failed whose written
series are whole; the ``schedule`` mode scores every N s, trains every M s, serves the
latest scores on /metrics meanwhile and stops on SIGTERM after the run under way.

One point a minute over the 24 h of demo history: 1,440 points per series, 7 series.
"""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from data_retrieval.settings import RetrievalSettings
from sla_common import demo
from sla_common.mysql import connect, fetch_all
from sla_common.prometheus import PrometheusClient
from sla_common.series import exact_selector, series_key
from tests.integration.retrievalutil import ServerThread as RetrievalServerThread
from tests.integration.slautil import ServerThread, sla_settings, stack_database
from tests.integration.stackutil import PrometheusProcess as PromProc
from tests.integration.stackutil import (
    Stack,
    free_port,
    pid_alive,
    port_open,
    run_bounded,
    start_module,
    stop_process,
    wait_until,
)

STEP_S = 60
WINDOW_S = 86_400
HOST_SELECTORS = [
    f'{m}{{job="{demo.JOB}"}}'
    for m in (demo.MEM_FREE, demo.MEM_AVAIL, demo.FS_AVAIL, demo.FS_FREE, demo.FILEFD)
]
TOO_SHORT = 'node_load1{job="node"}'  # the real node-exporter: minutes of data
NO_MATCH = "no_such_metric_for_the_batch_test"
GRPC_TOKEN = "batch-grpc-token-7f3a"
# A run takes 10-20 s on an idle machine (BENCHMARKS.md); generous for a loaded one.
JOB_TIMEOUT_S = 480


def _job_env(stack: Stack, db: str, **extra: str) -> dict[str, str]:
    base = {
        "MYSQL_DATABASE": db,
        "SPARK_MASTER": "local[2]",
        "BATCH_SELECTORS": ";".join([*HOST_SELECTORS, TOO_SHORT, NO_MATCH]),
        "BATCH_STEP_S": str(STEP_S),
        "BATCH_TRAIN_WINDOW_S": str(WINDOW_S),
        "BATCH_SCORE_WINDOW_S": str(WINDOW_S),
        "BATCH_SERIES_PER_TASK": "2",
        "BATCH_FETCH_ATTEMPTS": "2",
        "BATCH_FETCH_BACKOFF_S": "0.2",
    }
    return stack.service_env(**{**base, **extra})


def _job(stack: Stack, db: str, commands: str, end: int, **extra: str) -> str:
    env = _job_env(stack, db, **extra)
    argv = [sys.executable, "-m", "anomaly_detection.batch", *commands.split(), f"--end={end}"]
    done = run_bounded(argv, timeout=JOB_TIMEOUT_S, env=env)
    return f"exit {done.returncode}\n{done.stdout}"


def _sql(stack: Stack, db: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = connect(stack.mysql_settings(db), autocommit=True)
    try:
        return fetch_all(conn, query, args)
    finally:
        conn.close()


def _rows_by_series(stack: Stack, db: str) -> dict[str, list[tuple[Any, ...]]]:
    """The iforest rows per series key: (time, status, score, value), in time order."""
    rows = _sql(
        stack,
        db,
        "SELECT series_key, window_start_ms, status, score, mean FROM anomalies "
        "WHERE detector = 'iforest' ORDER BY series_key, window_start_ms",
    )
    by: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        by.setdefault(str(r[0]), []).append(r[1:])
    return by


@pytest.fixture(scope="module")
def db(stack: Stack) -> Iterator[str]:
    with stack_database(stack) as name:
        yield name


@pytest.fixture(scope="module")
def end(stack: Stack) -> int:
    """Now on the step grid, once the real node-exporter (scraped since the stack started,
    so minutes of data: too short) has a sample before it; the demo history ends earlier."""

    def ready() -> int | None:
        t = int(time.time()) // STEP_S * STEP_S
        with PrometheusClient(stack.prometheus_url) as c:
            return t if c.series(TOO_SHORT, t - 600, t) else None

    return wait_until(ready, timeout=180, what=f"a sample of {TOO_SHORT}", interval=5)


@pytest.fixture(scope="module")
def scored(stack: Stack, db: str, end: int) -> dict[str, list[tuple[Any, ...]]]:
    """Train, then score (one process, one JVM: ``train score``): the iforest rows per
    series key (time, status, score, value)."""
    out = _job(stack, db, "train score", end)
    assert out.startswith("exit 0"), out
    return _rows_by_series(stack, db)


def _prometheus_points(
    url: str, key_labels: dict[str, str], end: int, window_s: int = WINDOW_S
) -> list[int]:
    with PrometheusClient(url) as c:
        found = c.query_range(exact_selector(key_labels), end - window_s + STEP_S, end, STEP_S)
    (s,) = [r for r in found if dict(r.labels) == key_labels]
    return [round(t * 1000) for t, v in zip(s.timestamps, s.values, strict=True) if np.isfinite(v)]


@pytest.mark.timeout(1800)
def test_every_point_is_scored_once_and_a_rerun_rewrites_the_same_rows(
    stack: Stack, db: str, end: int, scored: dict[str, list[tuple[Any, ...]]]
) -> None:
    with PrometheusClient(stack.prometheus_url) as c:
        want = {
            series_key(lab["__name__"], {k: v for k, v in lab.items() if k != "__name__"}): lab
            for sel in HOST_SELECTORS
            for lab in c.series(sel, end - WINDOW_S, end)
        }
    assert len(want) == 7 and set(scored) == set(want)
    for key, labels in want.items():
        times = [int(r[0]) for r in scored[key]]
        assert times == _prometheus_points(stack.prometheus_url, labels, end), key
        assert all(0.0 <= float(r[2]) <= 1.0 for r in scored[key])
        assert all((r[1] == "ERROR") == (float(r[2]) > 0.5) for r in scored[key])

    runs = _sql(stack, db, "SELECT kind, status, skips FROM anomaly_batch_runs ORDER BY id")
    assert [(r[0], r[1]) for r in runs] == [("train", "complete"), ("score", "complete")]
    assert '"reason": "no_match"' in runs[0][2] and NO_MATCH in runs[0][2]
    assert '"reason": "too_short"' in runs[0][2] and "node_load1" in runs[0][2]
    models = _sql(stack, db, "SELECT COUNT(*), COUNT(DISTINCT key_hash) FROM anomaly_models")
    assert models[0] == (7, 7)

    before = _sql(stack, db, "SELECT id, window_start_ms, score FROM anomalies ORDER BY id")
    out = _job(stack, db, "score", end)
    assert out.startswith("exit 0"), out
    after = _sql(stack, db, "SELECT id, window_start_ms, score FROM anomalies ORDER BY id")
    assert after == before


# Each incident as an episode: from the first abnormal sample (the leak's and the fill's
# ramps start before their thresholds are crossed) to 30 minutes after the recovery (the jump
# back is as abnormal as the jump away, and the 30 min rolling window holds the incident that
# long). Offsets before the demo history's end.
AFTER_S = 1800
WARMUP_S = 10_800  # the longest of the default BATCH_WINDOWS_S
EPISODES = {
    "memory_leak_free": (demo.LEAK_START_OFFSET_S, demo.LEAK_RESTART_OFFSET_S),
    "memory_leak_available": (demo.LEAK_START_OFFSET_S, demo.LEAK_RESTART_OFFSET_S),
    "disk_fill_avail": (demo.DISK_START_OFFSET_S, demo.DISK_CLEANUP_OFFSET_S),
    "disk_fill_free": (demo.DISK_START_OFFSET_S, demo.DISK_CLEANUP_OFFSET_S),
    "fd_spike": (demo.FD_SPIKE_FIRST_OFFSET_S, demo.FD_SPIKE_LAST_OFFSET_S),
}


def test_the_demo_incidents_score_above_the_threshold_and_quiet_hours_below(
    stack: Stack, scored: dict[str, list[tuple[Any, ...]]]
) -> None:
    assert stack.demo_seed is not None and stack.demo_end is not None
    incidents = demo.incidents(stack.demo_seed, stack.demo_end)
    assert {i.name for i in incidents} == set(EPISODES)
    for inc in incidents:
        first, last = EPISODES[inc.name]
        lo, hi = (stack.demo_end - first) * 1000, (stack.demo_end - last + AFTER_S) * 1000
        rows = scored[inc.key()]
        # Known limitation (README): the first points of the range, before the longest
        # rolling window (3 h) has filled, are judged against a few points and can be flagged.
        warm = int(rows[0][0]) + WARMUP_S * 1000
        flagged = [r for r in rows if r[1] == "ERROR" and int(r[0]) >= warm]
        inside = [r for r in flagged if lo <= int(r[0]) <= hi]
        # The incident is flagged, and it is most of what this series' model flags.
        assert inside and len(inside) >= 0.75 * len(flagged), (inc.name, len(flagged))
        assert max(float(r[2]) for r in inside) > 0.9, inc.name
    # Quiet: every series, the day before the first incident's onset (-6 h).
    quiet_end = (stack.demo_end - demo.LEAK_START_OFFSET_S) * 1000
    quiet = [r for rows in scored.values() for r in rows if int(r[0]) < quiet_end]
    flagged = sum(r[1] == "ERROR" for r in quiet)
    assert len(quiet) > 5000 and flagged / len(quiet) < 0.01, (flagged, len(quiet))


def test_rest_and_grpc_serve_the_scores(
    stack: Stack, db: str, scored: dict[str, list[tuple[Any, ...]]]
) -> None:
    fd_key = series_key(demo.FILEFD, dict(demo.BASE_LABELS))
    settings = sla_settings(stack, db, "t")
    params: dict[str, Any] = {
        "detector": "iforest",
        "status": "ERROR",
        "series_key": fd_key,
        "limit": 1000,
    }
    with ServerThread(settings) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        r = c.get("/anomalies", params=params)
    assert r.status_code == 200, r.text
    items = r.json()
    want = [r for r in scored[fd_key] if r[1] == "ERROR"]
    assert [i["window_start"] * 1000 for i in items] == [int(r[0]) for r in reversed(want)]
    assert all(i["score"] > 0.5 and i["detector"] == "iforest" for i in items)

    base = stack.mysql_settings(db)
    fields = {k: v for k, v in base.model_dump().items() if k in RetrievalSettings.model_fields}
    fields.update(grpc_host="127.0.0.1", grpc_port=0, http_port=0, grpc_api_token=GRPC_TOKEN)
    fields.update(grpc_tls_cert_file=None, grpc_tls_key_file=None)
    with (
        RetrievalServerThread(RetrievalSettings(**fields)) as srv_g,
        grpc.insecure_channel(srv_g.target) as ch,
    ):
        stub = pb_grpc.RetrievalServiceStub(ch)
        request = pb.ListAnomaliesRequest(
            detectors=["iforest"],
            statuses=[pb.ANOMALY_STATUS_ERROR],
            selector=pb.SeriesSelector(series_key=fd_key),
            limit=1000,
        )
        meta = (("authorization", f"Bearer {GRPC_TOKEN}"),)
        got = [a for page in stub.ListAnomalies(request, metadata=meta, timeout=60)
               for a in page.anomalies]  # fmt: skip
    assert [a.window_start.ToMilliseconds() for a in got] == [int(r[0]) for r in reversed(want)]
    assert all(a.HasField("score") and a.score > 0.5 for a in got)


def test_prometheus_down_fails_the_run_and_never_records_it_complete(
    stack: Stack, db: str, end: int, scored: dict[str, list[tuple[Any, ...]]]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    out = _job(stack, db, "score", end, PROMETHEUS_URL=dead)
    assert out.startswith("exit 1"), out
    assert "retrying" in out and "giving up" in out, out
    last = _sql(stack, db, "SELECT status, error FROM anomaly_batch_runs ORDER BY id DESC LIMIT 1")
    assert last[0][0] == "failed" and "PrometheusUnavailable" in last[0][1]


# --------------------------------------------------------------------------- Prometheus down
# A private Prometheus on the stack's demo history (the same OpenMetrics file, its own TSDB),
# on a port that stays the same when it is stopped and started again: the stack's own
# Prometheus, which the other tests use, is never stopped.
DOWN_WINDOW_S = 6 * 3600
DOWN_SERIES = 7


@pytest.fixture(scope="module")
def demo_prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromProc]:
    root = tmp_path_factory.mktemp("batch_prometheus")
    data = root / "data"
    om = stack.state_dir / "demo.om"
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    argv = [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(data)]
    done = run_bounded(argv, timeout=300)
    assert done.returncode == 0, done.stdout
    prom = PromProc("global:\n  scrape_interval: 15s\n", data, root)
    prom.start()
    try:
        yield prom
    finally:
        prom.stop()


def _series(url: str, selector: str, end: int) -> list[dict[str, str]]:
    with PrometheusClient(url) as c:
        return [dict(lab) for lab in c.series(selector, end - 3600, end)]


def _blocked_inserts(stack: Stack, db: str) -> int:
    """The job's connections waiting to insert into ``anomalies`` (held by LOCK TABLES)."""
    rows = _sql(
        stack,
        db,
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        "WHERE DB = %s AND ID <> CONNECTION_ID() AND INFO LIKE %s",
        db,
        "INSERT INTO anomalies %",
    )
    return int(rows[0][0])


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("comes_back", [True, False], ids=["back_mid_run", "stays_down"])
def test_prometheus_stopped_mid_score_run_is_retried_or_recorded_failed_never_half_complete(
    stack: Stack,
    db: str,
    scored: dict[str, list[tuple[Any, ...]]],
    demo_prometheus: PromProc,
    comes_back: bool,
    tmp_path: Path,
) -> None:
    """The race on purpose: ``anomalies`` is write-locked, so the first tasks (two slots of
    local[2], one series a task) fetch their history and then wait to write; Prometheus is
    stopped, the lock released: those series are written, every other one is fetched from a
    stopped Prometheus. Back mid-run: the retried fetches complete the run, every point
    scored once. Staying down: the run is recorded failed, its written series whole."""
    assert stack.demo_end is not None and scored
    end = stack.demo_end // STEP_S * STEP_S  # the private Prometheus has no live data
    with stack_database(stack, prefix="sla_batch_down") as ddb:
        # The module's trained models (one per series), not a second training run.
        copy = f"INSERT INTO anomaly_models SELECT * FROM `{db}`.anomaly_models"  # noqa: S608 (a name of this module's)
        _sql(stack, ddb, copy)
        env = _job_env(
            stack,
            ddb,
            PROMETHEUS_URL=demo_prometheus.url,
            BATCH_SELECTORS=";".join(HOST_SELECTORS),
            BATCH_SCORE_WINDOW_S=str(DOWN_WINDOW_S),
            BATCH_SERIES_PER_TASK="1",
            # Back: retried for a minute at least (the restart takes seconds); down: 2 tries.
            BATCH_FETCH_ATTEMPTS="10" if comes_back else "2",
            BATCH_FETCH_BACKOFF_S="0.5" if comes_back else "0.2",
        )
        log = tmp_path / "score.log"
        lock = connect(stack.mysql_settings(ddb), autocommit=True)
        try:
            with lock.cursor() as cur:
                cur.execute("LOCK TABLES anomalies WRITE")
            proc = start_module("anomaly_detection.batch", env, log, "score", f"--end={end}")
            try:
                wait_until(
                    lambda: _blocked_inserts(stack, ddb) or proc.poll() is not None,
                    timeout=JOB_TIMEOUT_S,
                    what="the first tasks' scores waiting for the lock",
                )
                assert proc.poll() is None, log.read_text()
                demo_prometheus.stop()
            finally:
                with lock.cursor() as cur:
                    cur.execute("UNLOCK TABLES")
            try:
                if comes_back:
                    wait_until(
                        lambda: "retrying" in log.read_text() or proc.poll() is not None,
                        timeout=JOB_TIMEOUT_S,
                        what="a fetch retried while Prometheus is stopped",
                    )
                    assert proc.poll() is None, log.read_text()
                    demo_prometheus.start()
                code = proc.wait(timeout=JOB_TIMEOUT_S)
            finally:
                stop_process(proc, timeout=30)
        finally:
            lock.close()
            if demo_prometheus.proc is None:
                demo_prometheus.start()
        out = log.read_text()

        runs = _sql(
            stack,
            ddb,
            "SELECT kind, status, series_total, series_done, points, skips, error "
            "FROM anomaly_batch_runs",
        )
        assert len(runs) == 1 and runs[0][0] == "score", runs
        _, status, total, done, points, skips_json, error = runs[0]
        rows = _rows_by_series(stack, ddb)
        want = {
            series_key(lab["__name__"], {k: v for k, v in lab.items() if k != "__name__"}): lab
            for sel in HOST_SELECTORS
            for lab in _series(demo_prometheus.url, sel, end)
        }
        assert len(want) == DOWN_SERIES and total == DOWN_SERIES, (want, runs)
        assert "retrying" in out, out
        # Every series with rows has all of its points, each once (never half a series).
        for key, got in rows.items():
            times = [int(r[0]) for r in got]
            assert times == _prometheus_points(
                demo_prometheus.url, want[key], end, DOWN_WINDOW_S
            ), key
            assert all((r[1] == "ERROR") == (float(r[2]) > 0.5) for r in got), key
        if comes_back:
            assert (code, status, done, error) == (0, "complete", DOWN_SERIES, None), out
            assert set(rows) == set(want)
            assert points == sum(len(r) for r in rows.values())
            return
        assert code == 1 and status == "failed", out
        assert "giving up" in out, out
        # Mid-run for real: the series fetched before the stop (at most one a task slot of
        # local[2]) were written, not the others.
        assert 0 < done == len(rows) <= 2, (done, sorted(rows))
        assert points == sum(len(r) for r in rows.values())
        failed = {s["series"] for s in json.loads(skips_json) if s["reason"] == "fetch_failed"}
        assert failed == set(want) - set(rows), (failed, sorted(rows))
        assert error.startswith(f"{DOWN_SERIES - done} series not fetched"), error
        assert "PrometheusUnavailable" in error, error


# --------------------------------------------------------------------------- schedule
# Short intervals: a score every 8 s, a training every 30 s (and at start), over short
# windows (6 h of training, 15 min scored) so that a run takes seconds.
SCORE_EVERY_S = 8.0
TRAIN_EVERY_S = 30.0
# How late a due run may start after it is due or after the run before it ends (a loaded
# machine's scheduling, the run's own MySQL round trips before it records its start).
START_SLACK_S = 15.0


def _descendants(pid: int) -> set[int]:
    """Every live process under ``pid`` (the JVM PySpark starts, its Python workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return []


def _runs(stack: Stack, db: str) -> list[tuple[Any, ...]]:
    """(id, kind, status, started_at, finished_at) of every run, in order."""
    return _sql(
        stack,
        db,
        "SELECT id, kind, status, started_at, finished_at FROM anomaly_batch_runs ORDER BY id",
    )


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples of the job's /metrics by name, ({} while it does not answer)."""
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    except httpx.HTTPError:
        return {}
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def _scores_match_the_latest_run(stack: Stack, db: str, port: int) -> dict[str, Any] | None:
    """The exported scores, when they are those of the latest complete score run (no score
    run under way, none finished between the reads); None otherwise."""
    before = _runs(stack, db)
    samples = _scrape(port)
    latest = _sql(
        stack,
        db,
        "SELECT a.series_key, a.score FROM anomalies a JOIN (SELECT key_hash, "
        "MAX(window_start_ms) AS t FROM anomalies WHERE detector = 'iforest' GROUP BY "
        "key_hash) m ON a.key_hash = m.key_hash AND a.window_start_ms = m.t "
        "WHERE a.detector = 'iforest'",
    )
    after = _runs(stack, db)
    complete = sum(1 for r in after if r[1] == "score" and r[2] == "complete")
    runs_metric = {
        (lab["kind"], lab["status"]): v for lab, v in samples.get("anomaly_batch_runs_total", [])
    }
    if (
        before != after
        or complete == 0
        or any(r[1] == "score" and r[2] == "running" for r in after)
        or runs_metric.get(("score", "complete")) != complete
    ):
        return None
    return {
        "exported": samples.get("anomaly_score", []),
        "stored": {str(k): float(v) for k, v in latest},
    }


def _check_every(runs: list[tuple[Any, ...]], kind: str, every: float) -> list[float]:
    """Starts of ``kind`` runs: never sooner than ``every`` after the one before, and not
    much later than that or than the end of the run just before it."""
    starts = [float(r[3]) for r in runs if r[1] == kind]
    for prev, nxt in itertools.pairwise(starts):
        before = [float(r[4]) for r in runs if float(r[3]) < nxt and r[4] is not None]
        assert nxt - prev >= every - 2.0, (kind, prev, nxt)
        assert nxt <= max(prev + every, *before) + START_SLACK_S, (kind, prev, nxt, runs)
    return starts


@pytest.mark.timeout(1200)
def test_schedule_scores_every_n_trains_every_m_serves_metrics_and_stops_on_sigterm(
    stack: Stack, tmp_path: Path
) -> None:
    port = free_port()
    with stack_database(stack, prefix="sla_batch_sched") as sdb:
        env = _job_env(
            stack,
            sdb,
            BATCH_SELECTORS=";".join(HOST_SELECTORS),
            BATCH_TRAIN_WINDOW_S=str(6 * 3600),
            BATCH_SCORE_WINDOW_S="900",
            BATCH_WINDOWS_S="300,1800",
            BATCH_SCORE_INTERVAL_S=str(SCORE_EVERY_S),
            BATCH_TRAIN_INTERVAL_S=str(TRAIN_EVERY_S),
            HTTP_HOST="127.0.0.1",
            HTTP_PORT=str(port),
        )
        log = tmp_path / "schedule.log"
        proc = start_module("anomaly_detection.batch", env, log, "schedule")
        try:
            # While it waits between runs: the latest score of each series, labelled.
            got = wait_until(
                lambda: proc.poll() is not None or _scores_match_the_latest_run(stack, sdb, port),
                timeout=JOB_TIMEOUT_S,
                what="/metrics with the scores of the latest complete score run",
            )
            assert isinstance(got, dict), log.read_text()
            exported = {
                series_key(
                    lab["for"], {k: v for k, v in lab.items() if k not in ("for", "model")}
                ): (
                    lab,
                    v,
                )
                for lab, v in got["exported"]
            }
            assert len(exported) == 7 and set(exported) == set(got["stored"]), got
            for key, (lab, v) in exported.items():
                assert lab["model"] == "iforest" and lab["job"] == demo.JOB, lab
                assert 0.0 <= v <= 1.0 and v == pytest.approx(got["stored"][key], abs=1e-12)

            # Re-trained after M, scored every N meanwhile.
            def retrained() -> bool:
                runs = _runs(stack, sdb)
                trains = [r for r in runs if r[1] == "train"]
                return proc.poll() is not None or (
                    len(trains) >= 2 and any(r[1] == "score" and r[0] > trains[1][0] for r in runs)
                )

            wait_until(retrained, timeout=JOB_TIMEOUT_S, what="a second training, a score after")
            assert proc.poll() is None, log.read_text()

            # SIGTERM during a run: that run ends (recorded complete), no other starts.
            running = wait_until(
                lambda: (
                    proc.poll() is not None
                    or next((r for r in _runs(stack, sdb) if r[2] == "running"), None)
                ),
                timeout=JOB_TIMEOUT_S,
                what="a run under way",
            )
            assert isinstance(running, tuple), log.read_text()
            children = _descendants(proc.pid)
            assert children, "no JVM under the job"
            # The driver JVM runs with BATCH_DRIVER_JAVA_OPTIONS' default.
            assert any(
                "-XX:TieredStopAtLevel=1" in _cmdline(p) and "-XX:+UseSerialGC" in _cmdline(p)
                for p in children
            ), [_cmdline(p) for p in children]
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=JOB_TIMEOUT_S)
        finally:
            stop_process(proc, timeout=30)
        out = log.read_text()
        assert code == 0, out
        assert (
            "stopping after the current run" in out and "anomaly_detection.batch stopped" in out
        ), out
        wait_until(
            lambda: not any(pid_alive(p) for p in children),
            timeout=60,
            what=f"the job's child processes {sorted(children)} gone",
        )
        assert not port_open(port)

        runs = _runs(stack, sdb)
        assert runs[-1][0] == running[0], runs  # the run under way was the last one
        assert all(r[2] == "complete" for r in runs), runs
        assert [r[1] for r in runs[:2]] == ["train", "score"], runs
        assert len(_check_every(runs, "train", TRAIN_EVERY_S)) >= 2, runs
        assert len(_check_every(runs, "score", SCORE_EVERY_S)) >= 2, runs
