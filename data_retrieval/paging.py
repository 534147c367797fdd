"""Keyset paging of streams: page tokens, and the async plumbing between pages.

A stream walks the selected series in id order and, within a series, its rows in key
order, one database page at a time. Its position is a :class:`Cursor`: the series id and
the key of the last item delivered. A page token is that cursor, plus which RPC and which
request (selector and time range) it belongs to, so that it cannot silently resume some
other query. Tokens are opaque to clients (URL-safe base64 of a short JSON array) but not
secret: a forged one can only move the position within the caller's own selection.

:func:`in_order` reads ahead (the next pages, and the next series, while a page is being
sent); :func:`with_tokens` holds each page until the next one exists, so that the last page
of a finished stream carries an empty ``next_page_token``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf.message import Message

from data_retrieval.validation import invalid


class PageMessage(Protocol):
    """A streamed response: one page, and the token resuming after it."""

    next_page_token: str


T = TypeVar("T")
M = TypeVar("M", bound=PageMessage)

TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 2048
Position = tuple[int | str, ...]


@dataclass(frozen=True)
class Cursor:
    """Resume strictly after item ``after`` of series ``series_id`` (``()``: after the
    series itself, as ListSeries does)."""

    series_id: int
    after: Position = ()


def fingerprint(request: Message) -> str:
    """What a page token is bound to: the request without its ``limit`` and ``page_token``."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("limit")
    copy.ClearField("page_token")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


def encode_token(method: str, request_fingerprint: str, cursor: Cursor) -> str:
    doc = [TOKEN_VERSION, method, request_fingerprint, cursor.series_id, list(cursor.after)]
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_NOT_OURS = (
    "page_token is not a token this server issued: pass a response's next_page_token "
    "unchanged, or leave page_token empty to start from the beginning"
)


def decode_token(
    token: str, method: str, request_fingerprint: str, position: tuple[type, ...]
) -> Cursor:
    """The cursor in ``token``; INVALID_ARGUMENT if it is malformed or another request's.

    ``position`` gives the types of the key within a series (e.g. ``(int,)`` for a
    timestamp), which the token must match exactly.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise invalid(_NOT_OURS)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
    except (binascii.Error, ValueError):  # bad base64, bad UTF-8, bad JSON
        raise invalid(_NOT_OURS) from None
    if not (
        isinstance(doc, list)
        and len(doc) == 5
        and doc[0] == TOKEN_VERSION
        and isinstance(doc[1], str)
        and isinstance(doc[2], str)
        and type(doc[3]) is int
        and doc[3] >= 0
        and isinstance(doc[4], list)
    ):
        raise invalid(_NOT_OURS)
    _version, token_method, token_fp, series_id, after = doc
    if token_method != method:
        raise invalid(f"page_token was issued by {token_method}, not {method}")
    if token_fp != request_fingerprint:
        raise invalid(
            "page_token belongs to a different request: resume with the same selector and "
            "time range as the call that returned it (only limit may change)"
        )
    if len(after) != len(position) or any(
        type(v) is not t for v, t in zip(after, position, strict=True)
    ):
        raise invalid(_NOT_OURS)
    return Cursor(series_id, tuple(after))


# --------------------------------------------------------------------------- streams


@dataclass
class Chunk(Generic[M]):
    """One page of a stream: the response message (items filled, token not yet), how many
    items it holds, and the position after its last item."""

    message: M
    items: int
    cursor: Cursor


class More:
    """Sent by a source that stopped at its limit although items remain after it."""


MORE = More()


class _Feed(Generic[T]):
    """One source producing into a bounded queue in its own task."""

    def __init__(self, source: AsyncGenerator[T, None], buffer: int) -> None:
        self.queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(buffer)
        self.task = asyncio.ensure_future(self._run(source))

    async def _run(self, source: AsyncGenerator[T, None]) -> None:
        try:
            async with contextlib.aclosing(source):
                async for item in source:
                    await self.queue.put((_ITEM, item))
        except Exception as e:  # noqa: BLE001 (not handled here: raised to the consumer)
            await self.queue.put((_ERROR, e))
        else:
            await self.queue.put((_END, None))

    async def items(self) -> AsyncGenerator[T, None]:
        while True:
            kind, value = await self.queue.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            yield value


_ITEM, _END, _ERROR = range(3)


async def in_order(
    sources: AsyncGenerator[AsyncGenerator[T, None], None], *, ahead: int, buffer: int = 1
) -> AsyncGenerator[T, None]:
    """Every item of each source in turn (as if chained), while up to ``ahead`` sources
    run concurrently, each at most ``buffer`` items ahead of its consumer.

    This is the read-ahead of a stream: the current series' next page is read while this
    page is sent, and the next series' first pages meanwhile, on another connection.
    Closing the generator (cancel, deadline) cancels every source at its next await.
    """
    feeds: deque[_Feed[T]] = deque()
    exhausted = False

    async def top_up() -> None:
        nonlocal exhausted
        while len(feeds) < ahead and not exhausted:
            try:
                feeds.append(_Feed(await anext(sources), buffer))
            except StopAsyncIteration:
                exhausted = True

    try:
        await top_up()
        while feeds:
            items = feeds[0].items()
            async with contextlib.aclosing(items):
                async for item in items:
                    yield item
            feeds.popleft()
            await top_up()
    finally:
        for feed in feeds:
            feed.task.cancel()
        # Let the cancelled reads unwind; their errors are moot now that the stream ends.
        await asyncio.gather(*(f.task for f in feeds), return_exceptions=True)
        await sources.aclose()


async def with_tokens(
    source: AsyncGenerator[Chunk[M] | More, None], token: Callable[[Cursor], str]
) -> AsyncGenerator[Chunk[M], None]:
    """Set each chunk's ``next_page_token``: the resume token when anything follows it (a
    next chunk exists, or the source sent :data:`MORE`), else ``""``."""
    pending: Chunk[M] | None = None
    more = False
    async with contextlib.aclosing(source):
        async for item in source:
            if isinstance(item, More):
                more = True
                break
            if pending is not None:
                pending.message.next_page_token = token(pending.cursor)
                yield pending
            pending = item
    if pending is not None:
        pending.message.next_page_token = token(pending.cursor) if more else ""
        yield pending
