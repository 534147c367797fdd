"""Strict JSON request bodies: what Python's ``json`` accepts but JSON (RFC 8259) and the
rest of this service cannot hold is refused while parsing, with a 422 in FastAPI's
``json_invalid`` shape (``ctx.error`` says what), before anything echoes or uses it:

- ``NaN``, ``Infinity``, ``-Infinity`` (not JSON numbers);
- a number beyond the double range (``1e309`` would become infinity);
- a lone UTF-16 surrogate escape (``"\\ud800"``): not a Unicode character, it cannot be
  encoded as UTF-8, neither to Prometheus nor in an answer.

Used as the ``route_class`` of the routers that take a body (FastAPI's documented way to
customise the request: "Custom Request and APIRoute class").
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class _Refused(ValueError):
    def __init__(self, message: str, token: str) -> None:
        super().__init__(message)
        self.message = message
        self.token = token


def _constant(name: str) -> float:
    raise _Refused(f"{name} is not a JSON number", name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text} is beyond the range of a double", text)
    return value


def _check_unicode(value: Any) -> None:
    """Raise _Refused for the first string (key or value) that is not valid Unicode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                escape = f"\\u{ord(item[e.start]):04x}"
                raise _Refused(
                    f"lone surrogate {escape} in a string: not Unicode", escape
                ) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def loads_strict(body: bytes) -> Any:
    """``json.loads(body)`` refusing the above with ``json.JSONDecodeError`` (``pos``: about
    where the refused token is). Bytes that do not decode raise UnicodeDecodeError, as with
    ``json.loads``."""
    # What json.loads(bytes) does: so UTF-8-encoded surrogates come out as lone ones.
    text = body.decode(json.detect_encoding(body), "surrogatepass")
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_finite)
        _check_unicode(value)
    except _Refused as e:
        pos = text.find(e.token)
        pos = text.lower().find(e.token.lower()) if pos < 0 else pos
        raise json.JSONDecodeError(e.message, text, max(pos, 0)) from None
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as e:  # an integer of > 4300 digits; deep nesting
        raise json.JSONDecodeError(str(e)[:200] or type(e).__name__, text, 0) from None
    return value


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_json_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_json_handler


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: ``patch`` applied to ``target`` (neither is modified).

    An object patch merges member by member, recursively; a ``null`` member removes that
    member; anything else (an array, a string, a number, ``null`` itself) replaces the
    target whole.
    """
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out
