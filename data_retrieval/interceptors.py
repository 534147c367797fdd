"""Server interceptors: what every call goes through before a servicer sees it.

- :class:`BearerToken`: ``authorization: Bearer <GRPC_API_TOKEN>`` metadata, compared in
  constant time; without it (or with another token) the call ends ``UNAUTHENTICATED``
  with a short message, before its request is even parsed. Methods under ``open_prefixes``
  (health checking) need no token.
- :class:`UndecodableRequests`: a request whose bytes are not a valid message of the
  method's request type ends ``INVALID_ARGUMENT`` with one DEBUG line. grpc.aio parses a
  request before any servicer code runs and, when that fails, logs an ERROR with a
  traceback and answers ``UNKNOWN``: anyone could flood the log. So the method's request
  deserializer is wrapped to return an :class:`Undecodable` marker instead of raising, and
  its behaviour to abort on that marker.

Both rebuild the method handler the server found (same kind, same response serializer),
so they apply to every service on the server, whichever way it was registered.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from sla_common.tokens import same_token

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # generic in the stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[..., Any]
# Called with the method's full path and the code a call was refused with (for metrics).
OnRefused = Callable[[str, grpc.StatusCode], None]

# Messages, not secrets:
MISSING_TOKEN = "this server needs 'authorization: Bearer <token>' metadata (GRPC_API_TOKEN)"  # noqa: S105
WRONG_TOKEN = "wrong token"  # noqa: S105


def _behavior(handler: Handler) -> Behavior | None:
    for fn in (
        handler.unary_unary,
        handler.unary_stream,
        handler.stream_unary,
        handler.stream_stream,
    ):
        if fn is not None:
            return fn
    return None


def rebuild(
    handler: Handler, behavior: Behavior, deserializer: Callable[[bytes], Any] | None
) -> Handler:
    """A handler of the same kind as ``handler`` with this behaviour and deserializer."""
    make: Callable[..., Handler] = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(
        behavior, request_deserializer=deserializer, response_serializer=handler.response_serializer
    )


def _metadata_value(details: grpc.HandlerCallDetails, key: str) -> str | None:
    for k, v in details.invocation_metadata or ():
        if k == key:
            return v if isinstance(v, str) else None
    return None


class BearerToken(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        token: str,
        *,
        open_prefixes: Sequence[str] = (),
        on_refused: OnRefused | None = None,
    ) -> None:
        if not token:
            raise ValueError("an empty token would let anyone in")
        self._token = token
        self._open = tuple(open_prefixes)
        self._on_refused = on_refused

    def refusal(self, details: grpc.HandlerCallDetails) -> str | None:
        """Why this call is refused, or None when it may proceed."""
        if details.method.startswith(self._open):
            return None
        value = _metadata_value(details, "authorization")
        if value is None:
            return MISSING_TOKEN
        scheme, _, given = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not same_token(given.strip(), self._token):
            return WRONG_TOKEN
        return None

    async def intercept_service(  # type: ignore[override] # None: no such method (not in the stubs)
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        why = self.refusal(handler_call_details)
        if why is None:
            return handler
        method = handler_call_details.method
        log.debug("%s: UNAUTHENTICATED: %s", method, why)
        if self._on_refused is not None:
            self._on_refused(method, grpc.StatusCode.UNAUTHENTICATED)

        async def deny(_request: Any, context: Context) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)

        # No deserializer: the request's bytes are not even parsed.
        return rebuild(handler, deny, None)


@dataclass(frozen=True)
class Undecodable:
    """In place of a request whose bytes did not parse."""

    size: int
    error: str


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as e:  # noqa: BLE001 (whatever the bytes do to the parser is theirs)
            return Undecodable(len(raw), f"{type(e).__name__}: {e}")

    return parse


def _type_name(deserialize: Callable[[bytes], Any]) -> str:
    owner = getattr(deserialize, "__self__", None)  # Message.FromString, a classmethod
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "")) or "request"


class UndecodableRequests(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, *, on_refused: OnRefused | None = None) -> None:
        self._on_refused = on_refused

    async def intercept_service(  # type: ignore[override] # None: no such method (not in the stubs)
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        inner = _behavior(handler)
        if inner is None or not (
            inspect.iscoroutinefunction(inner) or inspect.isasyncgenfunction(inner)
        ):
            return handler  # not an asyncio handler: left as it is
        method = handler_call_details.method
        message = (
            f"the request is not a valid {_type_name(handler.request_deserializer)} "
            "message (protobuf binary encoding)"
        )
        on_refused = self._on_refused

        async def refuse(bad: Undecodable, context: Context) -> None:
            log.debug(
                "%s: INVALID_ARGUMENT: %d bytes that do not parse (%s)", method, bad.size, bad.error
            )
            if on_refused is not None:
                on_refused(method, grpc.StatusCode.INVALID_ARGUMENT)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

        behavior = (
            _guard_stream_requests(inner, refuse)
            if handler.request_streaming
            else _guard_unary_request(inner, refuse)
        )
        return rebuild(handler, behavior, _tolerant(handler.request_deserializer))


if TYPE_CHECKING:
    Refuse = Callable[[Undecodable, Context], Awaitable[None]]


def _guard_unary_request(inner: Behavior, refuse: Refuse) -> Behavior:
    if inspect.isasyncgenfunction(inner):

        async def guarded_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            async for response in inner(request, context):
                yield response

        return guarded_stream

    async def guarded(request: Any, context: Context) -> Any:
        if isinstance(request, Undecodable):
            await refuse(request, context)
        return await inner(request, context)

    return guarded


def _guard_stream_requests(inner: Behavior, refuse: Refuse) -> Behavior:
    async def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await refuse(request, context)
            yield request

    if inspect.isasyncgenfunction(inner):

        async def guarded_stream(requests: AsyncIterator[Any], context: Context) -> Any:
            async for response in inner(checked(requests, context), context):
                yield response

        return guarded_stream

    async def guarded(requests: AsyncIterator[Any], context: Context) -> Any:
        return await inner(checked(requests, context), context)

    return guarded
