"""MySQL access for SLO definitions (the ``slos`` table of migration 0002).

The definition is stored as the validated request body (JSON); ``sli_name`` is a column of
its own so that "which SLOs use this SLI" is an index lookup. Every statement is
parameterised; connections come from the app's pool in autocommit mode.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pymysql
from pymysql.constants import ER

from sla_common.mysql import errno_of, fetch_all
from sla_common.mysql_pool import ConnectionPool
from sla_manager.slo.model import Slo, SloSpec

COLUMNS = "name, definition, created_at, updated_at"


class DuplicateSlo(Exception):
    pass


def _fields(spec: SloSpec) -> dict[str, Any]:
    """The definition alone (a SloCreate body also has the name, which is a column)."""
    return spec.model_dump(mode="json", include=set(SloSpec.model_fields))


def _definition(spec: SloSpec) -> str:
    return json.dumps(_fields(spec), sort_keys=True, ensure_ascii=False)


def _record(row: Sequence[Any]) -> Slo:
    name, definition, created, updated = row
    body = json.loads(definition) if isinstance(definition, str | bytes) else definition
    return Slo(name=str(name), **body, created_at=int(created), updated_at=int(updated))


class SloStore:
    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def all(self) -> list[Slo]:
        """Every SLO (the rule file holds them all)."""
        with self.pool.connection() as conn:
            rows = fetch_all(conn, f"SELECT {COLUMNS} FROM slos ORDER BY name")  # noqa: S608
        return [_record(r) for r in rows]

    def list(self, limit: int, after: str | None = None) -> list[Slo]:
        with self.pool.connection() as conn:
            if after is None:
                rows = fetch_all(
                    conn,
                    f"SELECT {COLUMNS} FROM slos ORDER BY name LIMIT %s",  # noqa: S608
                    (limit,),
                )
            else:
                rows = fetch_all(
                    conn,
                    f"SELECT {COLUMNS} FROM slos WHERE name > %s "  # noqa: S608
                    "ORDER BY name LIMIT %s",
                    (after, limit),
                )
        return [_record(r) for r in rows]

    def get(self, name: str) -> Slo | None:
        with self.pool.connection() as conn:
            rows = fetch_all(
                conn,
                f"SELECT {COLUMNS} FROM slos WHERE name = %s",  # noqa: S608
                (name,),
            )
        return _record(rows[0]) if rows else None

    def create(self, name: str, spec: SloSpec, now: int) -> Slo:
        try:
            with self.pool.connection() as conn, conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO slos (name, sli_name, definition, created_at, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (name, spec.sli, _definition(spec), now, now),
                )
        except pymysql.err.IntegrityError as e:
            if errno_of(e) == ER.DUP_ENTRY:
                raise DuplicateSlo(name) from e
            raise
        return Slo(name=name, **_fields(spec), created_at=now, updated_at=now)

    def update(self, name: str, spec: SloSpec, now: int) -> Slo | None:
        with self.pool.connection() as conn:
            with conn.cursor() as cur:
                cur.execute(
                    "UPDATE slos SET sli_name = %s, definition = %s, updated_at = %s "
                    "WHERE name = %s",
                    (spec.sli, _definition(spec), now, name),
                )
            rows = fetch_all(
                conn,
                f"SELECT {COLUMNS} FROM slos WHERE name = %s",  # noqa: S608
                (name,),
            )
        return _record(rows[0]) if rows else None

    def delete(self, name: str) -> bool:
        with self.pool.connection() as conn, conn.cursor() as cur:
            return cur.execute("DELETE FROM slos WHERE name = %s", (name,)) > 0
