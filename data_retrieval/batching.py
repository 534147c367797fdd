"""Coalescing of concurrent point lookups into batches (the "DataLoader" pattern).

Under load, many ``GetDickeyFuller`` calls wait for the same few database threads, each to
run the same one-row query. A :class:`Coalescer` lets a lookup run at once while a database
slot is free; lookups that arrive while all slots are busy are gathered and answered by ONE
query for all their keys when a slot frees up. Alone, a lookup waits for nothing; at 16 calls
in flight, a query answers several of them, and per-call database work (a round trip, the
parsing of a result set's column descriptions) is shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """``await get(key)`` -> ``fetch([keys...])[key]`` (None when the result lacks it)."""

    def __init__(
        self,
        fetch: Callable[[Sequence[K]], Awaitable[Mapping[K, V]]],
        *,
        slots: int,
        max_batch: int = 64,
    ) -> None:
        if slots < 1 or max_batch < 1:
            raise ValueError("slots and max_batch must be at least 1")
        self._fetch = fetch
        self._slots = slots
        self._max_batch = max_batch
        self._busy = 0
        self._waiting: dict[K, list[asyncio.Future[V | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # queries run, for metrics and tests

    async def get(self, key: K) -> V | None:
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        self._start()
        return await future

    def _start(self) -> None:
        while self._waiting and self._busy < self._slots:
            keys = list(self._waiting)[: self._max_batch]
            batch = {k: self._waiting.pop(k) for k in keys}
            self._busy += 1
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)  # a reference, so the task is not collected mid-way
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: dict[K, list[asyncio.Future[V | None]]]) -> None:
        try:
            self.batches += 1
            found = await self._fetch(list(batch))
        except Exception as e:  # noqa: BLE001 (not handled here: raised in every waiting call)
            for futures in batch.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(e)
        else:
            for key, futures in batch.items():
                for f in futures:
                    if not f.done():  # a caller that gave up (cancelled) is skipped
                        f.set_result(found.get(key))
        finally:
            for futures in batch.values():  # only if this task itself was cancelled
                for f in futures:
                    f.cancel()
            self._busy -= 1
            self._start()
