"""The ``Explain`` RPC: the SLA manager's explanation pipeline (:mod:`sla_manager.explain.run`,
the code behind ``POST /explanations``) over gRPC, reading its candidates from Prometheus
(``PROMETHEUS_URL``), not from the database.

:func:`request_of` checks a request and turns it into the REST request model, so both APIs
accept and refuse the same things; :func:`response_of` turns the answer into its message.
Both are pure. A refusal is a :class:`RequestError` with one short message naming the field
(``anomalous[0].start``, ``step_seconds``...). :class:`Explainer` runs the pipeline in a
thread (it is sorting and counting, plus the Prometheus queries), at most
``RETRIEVAL_EXPLAIN_CONCURRENT`` at once; a call waiting for its turn gives up at its
deadline. A call whose deadline passes while its explanation runs gets DEADLINE_EXCEEDED at
once; the thread finishes its work and the result is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import ValidationError

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval.settings import RetrievalSettings
from data_retrieval.validation import NANOS_PER_S, RequestError, invalid
from sla_common.prometheus import (
    PrometheusBusy,
    PrometheusClient,
    PrometheusError,
    PrometheusUnavailable,
)
from sla_manager.explain.run import (
    ExplainInputError,
    ExplainRequest,
    ExplainResponse,
    RankedSeries,
    ValueRange,
    run_explanation,
)

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

DEFAULT_MAX_RANKED = 20
MAX_MESSAGE_CHARS = 300
# The REST model's field names that the message spells otherwise.
_FIELD_NAMES = {"step": "step_seconds"}
_BOUNDS = ("start", "end")


# --------------------------------------------------------------------------- the request


def _field(loc: Sequence[int | str]) -> str:
    """A pydantic error location as the message's field path: ``anomalous[0].start``."""
    parts = list(loc)
    if len(parts) == 3 and parts[0] == "anomalous" and parts[2] in (0, 1):
        return f"anomalous[{parts[1]}].{_BOUNDS[int(parts[2])]}"
    if len(parts) == 2 and parts[0] == "reference" and parts[1] in (0, 1):
        return f"reference.{_BOUNDS[int(parts[1])]}"
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + _FIELD_NAMES.get(part, part)
    return out


def short_message(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def validation_message(e: ValidationError) -> str:
    """The first error of ``e`` in one line: ``field: what is wrong``."""
    errors = e.errors(include_url=False, include_input=False)
    first = errors[0]
    msg = str(first["msg"]).removeprefix("Value error, ")
    where = _field(first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return short_message(f"{where}: {msg}{more}" if where else f"{msg}{more}")


def _seconds(ts: Timestamp, field: str) -> float:
    if not 0 <= ts.nanos < NANOS_PER_S:
        raise invalid(f"{field}.nanos={ts.nanos} must be in 0..999999999")
    return ts.seconds + ts.nanos / NANOS_PER_S


def _interval(iv: pb.Interval, field: str) -> tuple[float, float]:
    if not (iv.HasField("start") and iv.HasField("end")):
        raise invalid(f"{field}: set both start and end")
    return _seconds(iv.start, f"{field}.start"), _seconds(iv.end, f"{field}.end")


def request_of(msg: pb.ExplainRequest) -> ExplainRequest:
    """The request checked as ``POST /explanations`` checks its body; :class:`RequestError`
    (INVALID_ARGUMENT) otherwise."""
    if not msg.selector.strip():
        raise invalid('selector: give a PromQL selector of the candidates, e.g. {job="node"}')
    if not msg.anomalous:
        raise invalid("anomalous: give at least one interval")
    anomalous = [_interval(iv, f"anomalous[{i}]") for i, iv in enumerate(msg.anomalous)]
    reference = _interval(msg.reference, "reference") if msg.HasField("reference") else None
    try:
        return ExplainRequest(
            selector=msg.selector,
            anomalous=anomalous,
            reference=reference,
            step=msg.step_seconds or None,
            max_ranked=msg.max_ranked or DEFAULT_MAX_RANKED,
            values=msg.values,
        )
    except ValidationError as e:
        raise invalid(validation_message(e)) from None


# --------------------------------------------------------------------------- the answer


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    whole = int(seconds // 1)
    ts.seconds, ts.nanos = whole, round((seconds - whole) * NANOS_PER_S) % NANOS_PER_S
    return ts


def _interval_msg(start: float, end: float) -> pb.Interval:
    return pb.Interval(start=_timestamp(start), end=_timestamp(end))


def _range(v: ValueRange) -> pb.ValueRange:
    return pb.ValueRange(min=v.min, max=v.max, median=v.median)


def _ranked(s: RankedSeries) -> pb.RankedSeries:
    out = pb.RankedSeries(
        series=pb.SeriesRef(key=s.series, metric=s.metric or "", labels=s.labels),
        distance=s.distance,
        direction=s.direction,
        anomalous=_range(s.anomalous),
        reference=_range(s.reference),
        reference_distance=s.reference_distance,
        plain_distance=s.plain_distance,
    )
    if s.seasonal_distance is not None:
        out.seasonal_distance = s.seasonal_distance
    for t, v in s.values or []:
        point = out.values.add(ts=_timestamp(t))
        if v is not None:
            point.value = v
    return out


def response_of(a: ExplainResponse) -> pb.ExplainResponse:
    return pb.ExplainResponse(
        anomalous=[_interval_msg(s, e) for s, e in a.anomalous],
        reference=_interval_msg(*a.reference),
        step_seconds=a.step,
        candidates=a.candidates,
        sparse=a.sparse,
        false_positives=a.false_positives,
        false_positive_series=[_ranked(s) for s in a.false_positive_series],
        ranked=[_ranked(s) for s in a.ranked],
        clusters=[
            pb.SeriesCluster(representative=c.representative, moves_with=c.moves_with)
            for c in a.clusters
        ],
        explanation=a.explanation,
        predicates=[
            pb.Predicate(
                series=p.series,
                op=p.op,
                threshold=p.threshold,
                text=p.text,
                balanced_accuracy=p.balanced_accuracy,
            )
            for p in a.predicates
        ],
        day_before=a.day_before,
        seasonal_series=a.seasonal,
        timings_ms=a.timings_ms,
        values_step_seconds=a.values_step or 0.0,
    )


# --------------------------------------------------------------------------- the work


class Explainer:
    """Runs explanations for the servicer; one Prometheus client (connection pool) per
    server, closed by :meth:`close`."""

    def __init__(self, settings: RetrievalSettings) -> None:
        self.settings = settings
        self.prometheus: PrometheusClient = settings.prometheus_client()
        self._turns = asyncio.Semaphore(settings.retrieval_explain_concurrent)

    def close(self) -> None:
        self.prometheus.close()

    async def explain(self, msg: pb.ExplainRequest, context: Context) -> pb.ExplainResponse:
        req = request_of(msg)
        async with self._turns:
            left = context.time_remaining()
            if left is not None and left <= 0:
                raise TimeoutError("no time left before the deadline")
            try:
                result = await asyncio.to_thread(
                    run_explanation,
                    self.prometheus,
                    self.settings,
                    selector=req.selector,
                    anomalous=list(req.anomalous),
                    reference=req.reference,
                    step=req.step,
                    max_ranked=req.max_ranked,
                    values=req.values,
                )
            except ExplainInputError as e:
                field = _FIELD_NAMES.get(e.field, e.field)
                raise invalid(short_message(f"{field}: {e.message}")) from None
            except PrometheusError as e:  # the query refused: its own words
                raise invalid(short_message(f"selector: Prometheus: {e.message}")) from None
            except (PrometheusUnavailable, PrometheusBusy) as e:
                raise RequestError(
                    grpc.StatusCode.UNAVAILABLE, short_message(f"Prometheus: {e}")
                ) from None
        return response_of(result.answer)
