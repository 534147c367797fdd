"""The batch job's MySQL side: scores into ``anomalies``, models, runs (migration 0006).

Scores: one row per point of a series, keyed like every anomaly row by (series key hash,
detector, window start in ms), so a re-run upserts the same rows (the last write wins):
``window_start_ms`` = the point's time, ``window_end_ms`` = + the step, ``sample_count``
1, ``mean`` the value, ``normal_mean``/``normal_std`` the training points', ``deviation``
the value's in training stds, ``status`` ERROR when flagged else SAFE, ``score`` the score,
``normal_period_s`` NULL (migration 0008: which streaming normal judged, not a batch thing).
That is what ``GET /anomalies`` and ``ListAnomalies`` read (filter ``detector=iforest``).

Runs: a row is inserted ``running`` at the start and set ``complete`` (or ``failed``) only
at the end; a job killed half-way leaves ``running`` (or ``failed``) behind, never
``complete``, and its scores are rewritten, the same rows, by the next run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from anomaly_detection.batch import core
from data_storage.anomalies import ANOMALIES, MAX_METRIC_CHARS
from data_storage.rows import Table, _compact_json
from sla_common.mysql import Connection, fetch_all, insert_rows, series_key_hash
from sla_common.series import series_key

SCORES = Table(
    ANOMALIES.name,
    (*ANOMALIES.columns, "score"),
    key=ANOMALIES.key,
    version=None,
    time_column=ANOMALIES.time_column,
)
ROWS_PER_COMMIT = 20_000
SCHEMA_VERSION = 1  # of the row's content, as the streaming records' schema_version


@dataclass(frozen=True)
class SeriesRef:
    key: str
    metric: str
    labels: Mapping[str, str]  # without __name__

    @classmethod
    def of(cls, labels: Mapping[str, str]) -> SeriesRef:
        """From Prometheus' label set of a series (``__name__`` included)."""
        metric = labels.get("__name__", "")
        own = {k: v for k, v in labels.items() if k != "__name__"}
        return cls(series_key(metric, own), metric, own)

    def prometheus_labels(self) -> dict[str, str]:
        return {"__name__": self.metric, **self.labels}


def score_rows(
    ref: SeriesRef, model: core.Model, version: str, scored: core.Scored, now: int
) -> list[tuple[Any, ...]]:
    kh = series_key_hash(ref.key)
    labels = _compact_json(dict(ref.labels))
    step_ms = model.params.step_s * 1000
    std = model.normal_std if model.normal_std > 0 else 1.0
    flags = scored.flags
    rows = []
    for t, v, s, f in zip(
        scored.times.tolist(),
        scored.values.tolist(),
        scored.scores.tolist(),
        flags.tolist(),
        strict=True,
    ):
        start_ms = round(t * 1000)
        rows.append(
            (
                kh,
                core.MODEL_NAME,
                start_ms,
                start_ms + step_ms,
                ref.key,
                ref.metric[:MAX_METRIC_CHARS],
                labels,
                version,
                SCHEMA_VERSION,
                1,
                float(v),
                0.0,
                model.normal_mean,
                model.normal_std,
                "learned",
                (float(v) - model.normal_mean) / std,
                "ERROR" if f else "SAFE",
                now,
                None,  # normal_period_s: a streaming window's, not a batch point's
                float(s),
            )
        )
    return rows


def write_scores(
    conn: Connection, ref: SeriesRef, model: core.Model, version: str, scored: core.Scored
) -> int:
    """Upsert the scored points of one series; commits every :data:`ROWS_PER_COMMIT`."""
    rows = score_rows(ref, model, version, scored, int(time.time()))
    for i in range(0, len(rows), ROWS_PER_COMMIT):
        conn.begin()
        with conn.cursor() as cur:
            insert_rows(
                cur, SCORES.insert_head(), rows[i : i + ROWS_PER_COMMIT], SCORES.upsert_tail()
            )
        conn.commit()
    return len(rows)


def save_model(
    conn: Connection, run_id: int, ref: SeriesRef, model: core.Model, version: str
) -> None:
    blob, sha = core.dump(model)
    meta = model.metadata()
    conn.begin()
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO anomaly_models (model, version, key_hash, series_key, metric, labels, "
            "run_id, trained_at, train_start, train_end, step_s, points, params, features, "
            "threshold, artefact, artefact_sha256) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON DUPLICATE KEY UPDATE run_id = VALUES(run_id), trained_at = VALUES(trained_at), "
            "train_start = VALUES(train_start), train_end = VALUES(train_end), "
            "step_s = VALUES(step_s), points = VALUES(points), params = VALUES(params), "
            "features = VALUES(features), threshold = VALUES(threshold), "
            "artefact = VALUES(artefact), artefact_sha256 = VALUES(artefact_sha256)",
            (
                core.MODEL_NAME,
                version,
                series_key_hash(ref.key),
                ref.key,
                ref.metric[:MAX_METRIC_CHARS],
                _compact_json(dict(ref.labels)),
                run_id,
                int(time.time()),
                int(model.train_start),
                int(model.train_end),
                float(model.params.step_s),
                model.points,
                json.dumps(meta["params"]),
                json.dumps(meta["features"]),
                model.threshold,
                blob,
                sha,
            ),
        )
    conn.commit()


@dataclass(frozen=True)
class StoredModel:
    id: int
    version: str
    model: core.Model
    params: dict[str, Any]
    features: dict[str, Any]
    train_start: int
    train_end: int


def latest_model(conn: Connection, series_key: str) -> StoredModel | None:
    """The newest model of a series (highest id), or None."""
    rows = fetch_all(
        conn,
        "SELECT id, version, artefact, artefact_sha256, params, features, train_start, "
        "train_end FROM anomaly_models WHERE key_hash = %s AND model = %s "
        "ORDER BY id DESC LIMIT 1",
        (series_key_hash(series_key), core.MODEL_NAME),
    )
    if not rows:
        return None
    r = rows[0]
    return StoredModel(
        id=int(r[0]),
        version=str(r[1]),
        model=core.load(bytes(r[2]), str(r[3])),
        params=json.loads(r[4]),
        features=json.loads(r[5]),
        train_start=int(r[6]),
        train_end=int(r[7]),
    )


def start_run(conn: Connection, kind: str, start: float, end: float, master: str) -> int:
    conn.begin()
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO anomaly_batch_runs (model, kind, status, started_at, range_start, "
            "range_end, spark_master) VALUES (%s, %s, 'running', %s, %s, %s, %s)",
            (core.MODEL_NAME, kind, time.time(), int(start), int(end), master[:255]),
        )
        run_id = int(cur.lastrowid)
    conn.commit()
    return run_id


def finish_run(
    conn: Connection,
    run_id: int,
    status: str,
    *,
    total: int,
    done: int,
    points: int,
    skips: Sequence[Mapping[str, str]],
    error: str | None = None,
) -> None:
    conn.begin()
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE anomaly_batch_runs SET status = %s, finished_at = %s, series_total = %s, "
            "series_done = %s, points = %s, skips = %s, error = %s WHERE id = %s",
            (status, time.time(), total, done, points, json.dumps(list(skips)), error, run_id),
        )
    conn.commit()


@dataclass(frozen=True)
class Run:
    id: int
    kind: str
    status: str
    series_total: int
    series_done: int
    points: int
    skips: list[dict[str, str]]
    error: str | None


def get_run(conn: Connection, run_id: int) -> Run | None:
    rows = fetch_all(
        conn,
        "SELECT id, kind, status, series_total, series_done, points, skips, error "
        "FROM anomaly_batch_runs WHERE id = %s",
        (run_id,),
    )
    if not rows:
        return None
    r = rows[0]
    return Run(
        int(r[0]),
        str(r[1]),
        str(r[2]),
        int(r[3]),
        int(r[4]),
        int(r[5]),
        json.loads(r[6]) if r[6] else [],
        None if r[7] is None else str(r[7]),
    )
