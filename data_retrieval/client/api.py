"""The async client of RetrievalService (grpc.aio), and the parsing of what users type.

Every call carries a deadline (GRPC_TIMEOUT_S / --timeout) and, when the client has one,
the server's bearer token (GRPC_API_TOKEN). A failed call raises :class:`ClientError` with
the gRPC status and the server's message, which says what to fix.

A stream asked for everything (``limit=0``) follows the server's ``next_page_token``: the
server returns at most RETRIEVAL_MAX_LIMIT items per call, and the client asks again for
the rest, each call with its own deadline.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2_grpc as pb_grpc

M = TypeVar("M")

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


class ClientError(Exception):
    """A call failed: ``code`` and the server's ``details``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class InputError(ValueError):
    """Something the user typed cannot be used; the message says what is expected."""


# --------------------------------------------------------------------------- parsing input


def parse_label(text: str) -> tuple[str, str]:
    """``name=value`` (the value may contain '=')."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise InputError(f"label {text!r} is not name=value")
    return name.strip(), value


def parse_time(text: str, *, now: float | None = None) -> int:
    """Epoch seconds from epoch seconds, an ISO 8601 time (UTC unless it says otherwise), or
    ``-DURATION`` before now (e.g. ``-3h``)."""
    text = text.strip()
    back = _DURATION.match(text[1:]) if text.startswith("-") else None
    if back is not None:
        base = datetime.now(UTC).timestamp() if now is None else now
        return int(base) - int(back.group(1)) * _UNIT_S[back.group(2)]
    if re.fullmatch(r"\d{1,12}", text):
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"time {text!r}: give epoch seconds, an ISO 8601 time such as "
            "2026-01-01T12:00:00Z, or a duration back from now such as -3h"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def selector(
    *, metric: str | None = None, labels: Mapping[str, str] | None = None, key: str | None = None
) -> pb.SeriesSelector:
    return pb.SeriesSelector(metric=metric or "", labels=dict(labels or {}), series_key=key or "")


def time_range(start: int | None = None, end: int | None = None) -> pb.TimeRange | None:
    if start is None and end is None:
        return None
    tr = pb.TimeRange()
    if start is not None:
        tr.start.seconds = start
    if end is not None:
        tr.end.seconds = end
    return tr


# --------------------------------------------------------------------------- the client


def channel_credentials(ca_file: Path | None) -> grpc.ChannelCredentials:
    """TLS trusting ``ca_file`` (PEM), or the system's roots when None."""
    return grpc.ssl_channel_credentials(root_certificates=ca_file.read_bytes() if ca_file else None)


class RetrievalClient:
    """One channel to the service; use ``async with``.

    ``token``: sent as ``authorization: Bearer <token>`` with every call. ``tls``: TLS,
    trusting ``tls_ca_file`` (PEM) when given, else the system's roots; a CA file alone
    implies TLS.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout_s: float = 30.0,
        token: str | None = None,
        tls: bool = False,
        tls_ca_file: Path | None = None,
    ) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        if tls or tls_ca_file is not None:
            self.channel = grpc.aio.secure_channel(target, channel_credentials(tls_ca_file))
        else:
            self.channel = grpc.aio.insecure_channel(target)
        self.stub = pb_grpc.RetrievalServiceStub(self.channel)

    async def __aenter__(self) -> RetrievalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close(None)

    async def _stream(
        self, method: Callable[..., Any], request: Any
    ) -> AsyncIterator[Any]:  # one message per page
        original = request
        follow = request.limit == 0  # everything: across as many calls as the server needs
        while True:
            token = ""
            call = method(request, timeout=self.timeout_s, metadata=self.metadata)
            try:
                async for msg in call:
                    token = msg.next_page_token
                    yield msg
            except grpc.aio.AioRpcError as e:
                raise ClientError(e.code(), e.details() or "") from None
            finally:
                call.cancel()  # no-op when finished; stops the server's work when abandoned
            if not (follow and token):
                return
            request = type(request)()
            request.CopyFrom(original)
            request.page_token = token

    async def series(self, sel: pb.SeriesSelector | None = None) -> list[pb.Series]:
        """Every series stored (matching ``sel``), in the server's order."""
        out: list[pb.Series] = []
        async for page in self._stream(self.stub.ListSeries, pb.ListSeriesRequest(selector=sel)):
            out.extend(page.series)
        return out

    async def dickey_fuller(self, sel: pb.SeriesSelector, at: int | None = None) -> pb.DickeyFuller:
        request = pb.GetDickeyFullerRequest(selector=sel)
        if at is not None:
            request.at.seconds = at
        try:
            result: pb.DickeyFuller = await self.stub.GetDickeyFuller(
                request, timeout=self.timeout_s, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as e:
            raise ClientError(e.code(), e.details() or "") from None
        return result

    def hodrick_prescott(
        self, sel: pb.SeriesSelector, tr: pb.TimeRange | None = None, limit: int = 0
    ) -> AsyncIterator[pb.ListHodrickPrescottResponse]:
        request = pb.ListHodrickPrescottRequest(selector=sel, time_range=tr, limit=limit)
        return self._stream(self.stub.ListHodrickPrescott, request)

    def decomposition(
        self, sel: pb.SeriesSelector, tr: pb.TimeRange | None = None, limit: int = 0
    ) -> AsyncIterator[pb.ListDecompositionResponse]:
        request = pb.ListDecompositionRequest(selector=sel, time_range=tr, limit=limit)
        return self._stream(self.stub.ListDecomposition, request)

    def autocorrelation(
        self, sel: pb.SeriesSelector, tr: pb.TimeRange | None = None, limit: int = 0
    ) -> AsyncIterator[pb.ListAutocorrelationResponse]:
        request = pb.ListAutocorrelationRequest(selector=sel, time_range=tr, limit=limit)
        return self._stream(self.stub.ListAutocorrelation, request)

    def aggregates(
        self, sel: pb.SeriesSelector, tr: pb.TimeRange | None = None, limit: int = 0
    ) -> AsyncIterator[pb.ListAggregatesResponse]:
        request = pb.ListAggregatesRequest(selector=sel, time_range=tr, limit=limit)
        return self._stream(self.stub.ListAggregates, request)

    def forecast(
        self, sel: pb.SeriesSelector, tr: pb.TimeRange | None = None, limit: int = 0
    ) -> AsyncIterator[pb.ListForecastResponse]:
        request = pb.ListForecastRequest(selector=sel, time_range=tr, limit=limit)
        return self._stream(self.stub.ListForecast, request)

    def anomalies(
        self,
        sel: pb.SeriesSelector | None = None,
        detectors: Sequence[str] = (),
        statuses: Sequence[pb.AnomalyStatus.ValueType] = (),
        tr: pb.TimeRange | None = None,
        limit: int = 0,
    ) -> AsyncIterator[pb.ListAnomaliesResponse]:
        request = pb.ListAnomaliesRequest(
            selector=sel, detectors=detectors, statuses=statuses, time_range=tr, limit=limit
        )
        return self._stream(self.stub.ListAnomalies, request)

    async def explain(
        self,
        selector: str,
        anomalous: Sequence[tuple[float, float]],
        reference: tuple[float, float] | None = None,
        step_s: float = 0.0,
        max_ranked: int = 0,
    ) -> pb.ExplainResponse:
        """Which series changed in ``anomalous`` (EXstream; intervals in Unix seconds)."""
        request = pb.ExplainRequest(
            selector=selector,
            anomalous=[interval(a, b) for a, b in anomalous],
            reference=interval(*reference) if reference is not None else None,
            step_seconds=step_s,
            max_ranked=max_ranked,
        )
        try:
            result: pb.ExplainResponse = await self.stub.Explain(
                request, timeout=self.timeout_s, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as e:
            raise ClientError(e.code(), e.details() or "") from None
        return result


def interval(start: float, end: float) -> pb.Interval:
    iv = pb.Interval()
    iv.start.FromNanoseconds(round(start * 1e9))
    iv.end.FromNanoseconds(round(end * 1e9))
    return iv


async def collect(pages: AsyncIterator[M]) -> list[M]:
    return [page async for page in pages]


def points_of(pages: Sequence[Any], field: str = "points") -> list[Any]:
    """The items of every page, in order (``field``: points, lags or aggregates)."""
    return [item for page in pages for item in getattr(page, field)]
