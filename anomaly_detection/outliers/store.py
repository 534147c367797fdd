"""Where the outlier models live: the ``outlier_models`` table (migration 0007; why MySQL is
said there). :class:`MemoryStore` is the same contract in memory, for tests and the NAB
bench.

A model is replaced atomically and only by a newer one: :meth:`MysqlStore.put` is one
upsert whose every column keeps its value unless the new ``version`` is greater.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from anomaly_detection.outliers.model import OutlierModel
from sla_common.mysql import MysqlSettings, close_quietly, connect, fetch_all, series_key_hash

log = logging.getLogger(__name__)


class ModelStore(Protocol):
    def put(self, model: OutlierModel) -> bool:
        """Store ``model`` unless a model of the same or a newer version is there."""
        ...

    def versions(self, series: Iterable[str]) -> dict[str, int]:
        """The stored version of each of ``series`` that has a model."""
        ...

    def get(self, series: str) -> OutlierModel | None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._models: dict[str, bytes] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def put(self, model: OutlierModel) -> bool:
        with self._lock:
            s, v = model.meta.series, model.meta.version
            if self._versions.get(s, -1) >= v:
                return False
            self._models[s], self._versions[s] = model.to_bytes(), v
            return True

    def versions(self, series: Iterable[str]) -> dict[str, int]:
        with self._lock:
            return {s: self._versions[s] for s in series if s in self._versions}

    def get(self, series: str) -> OutlierModel | None:
        with self._lock:
            raw = self._models.get(series)
        return OutlierModel.from_bytes(raw) if raw is not None else None


_COLUMNS = ("series_key", "backend", "meta", "model", "stored_at")
_PUT = (
    "INSERT INTO outlier_models (key_hash, series_key, version, backend, meta, model, stored_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
    + ", ".join(f"{c} = IF(VALUES(version) > version, VALUES({c}), {c})" for c in _COLUMNS)
    # version last: the conditions above read the old one.
    + ", version = GREATEST(version, VALUES(version))"
)


class MysqlStore:
    """One short connection per call: a trainer writes a model every few minutes and an
    executor asks for versions once per request."""

    def __init__(self, settings: MysqlSettings) -> None:
        self.settings = settings

    def put(self, model: OutlierModel) -> bool:
        m = model.meta
        conn = connect(self.settings, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    _PUT,
                    (
                        series_key_hash(m.series),
                        m.series,
                        m.version,
                        m.params.backend,
                        json.dumps(m.to_dict()),
                        model.to_bytes(),
                        int(time.time()),
                    ),
                )
                # MySQL: 1 row inserted, 2 updated, 0 unchanged (an older or equal version).
                return bool(cur.rowcount in (1, 2))
        finally:
            close_quietly(conn)

    def versions(self, series: Iterable[str]) -> dict[str, int]:
        keys = list(dict.fromkeys(series))
        if not keys:
            return {}
        marks = ", ".join(["%s"] * len(keys))
        conn = connect(self.settings, autocommit=True)
        try:
            rows = fetch_all(
                conn,
                f"SELECT series_key, version FROM outlier_models WHERE key_hash IN ({marks})",  # noqa: S608  (placeholders only)
                [series_key_hash(k) for k in keys],
            )
        finally:
            close_quietly(conn)
        return {str(k): int(v) for k, v in rows}

    def get(self, series: str) -> OutlierModel | None:
        conn = connect(self.settings, autocommit=True)
        try:
            rows = fetch_all(
                conn,
                "SELECT model FROM outlier_models WHERE key_hash = %s",
                (series_key_hash(series),),
            )
        finally:
            close_quietly(conn)
        return OutlierModel.from_bytes(bytes(rows[0][0])) if rows else None


@dataclass
class Cached:
    version: int
    model: OutlierModel


class ModelCache:
    """Models by series key, reloaded when the store has a newer version."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._models: dict[str, Cached] = {}
        self._lock = threading.Lock()
        self.loads = 0

    def models_for(self, keys: list[str]) -> dict[str, OutlierModel]:
        stored = self.store.versions(keys)
        out: dict[str, OutlierModel] = {}
        for key, version in stored.items():
            with self._lock:
                hit = self._models.get(key)
            if hit is None or hit.version < version:
                model = self.store.get(key)
                if model is None:
                    continue
                with self._lock:
                    self._models[key] = Cached(model.meta.version, model)
                    self.loads += 1
                log.info("loaded model %s version %d", key, model.meta.version)
                hit = self._models[key]
            out[key] = hit.model
        return out
