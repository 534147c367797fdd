"""A small, typed client for the Prometheus HTTP API.

Why not prometheus-api-client: every call here needs a timeout, Prometheus' own error text
(a bad selector must be reported in Prometheus' words), a clear split between "your query
is wrong" and "Prometheus is down", and numpy arrays rather than DataFrames of strings.
That is a few dozen lines on httpx; the request parameters (:func:`query_params`) and the
response parsing are pure and shared by the sync client here and any async caller.

Bounds, so that one expensive selector cannot take Prometheus' or the caller's memory:

- every query carries Prometheus' ``timeout=`` parameter (the client's timeout): Prometheus
  stops evaluating then, instead of running on after the caller gave up; the HTTP read
  waits :data:`TIMEOUT_GRACE_S` longer so that Prometheus' own answer (and its reason)
  arrives first (:class:`PrometheusTimeout`);
- ``max_concurrent``: at most that many queries in flight per client; a caller waits up to
  ``slot_wait_s`` for a slot, then gets :class:`PrometheusBusy` (no unbounded queue);
- ``max_response_bytes``: a response body larger than that is not read on
  (:class:`PrometheusResultTooLarge`);
- :meth:`PrometheusClient.count` asks how many series an expression gives (an instant
  ``count``) before a caller fetches them with a range query;
- a subquery of more than :data:`MAX_POINTS_PER_QUERY` steps (``[7d:1s]``: 604,800) is
  refused before it is sent (:class:`PrometheusQueryTooExpensive`): Prometheus 2.42 checks
  neither its timeout nor ``--query.max-samples`` while it expands a selector over such a
  subquery's steps, and ran on for a minute into gigabytes with one.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# Prometheus refuses range queries resolving to more than 11,000 points per series.
MAX_POINTS_PER_QUERY = 11_000
# How much longer than the query's own timeout the HTTP read waits for Prometheus' answer.
TIMEOUT_GRACE_S = 1.0
# The step of a subquery without one (`[1h:]`): Prometheus' evaluation_interval, 15 s in
# the stack's and compose's prometheus.yml.
DEFAULT_SUBQUERY_STEP_S = 15.0

_DURATION_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION_UNIT_S["y"] = 365 * 86_400
_DURATION = r"(?:[0-9]+(?:ms|[smhdwy]))+"
_SUBQUERY = re.compile(rf"\[\s*({_DURATION})\s*:\s*({_DURATION})?\s*\]")
_DURATION_PART = re.compile(r"([0-9]+)(ms|[smhdwy])")
# String literals, whose text is not PromQL: "..." and '...' with escapes, `...` raw.
_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`""")


class PrometheusError(Exception):
    """Prometheus understood the request and rejected it (bad PromQL, bad range...)."""

    def __init__(self, error_type: str, message: str, status: int) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.status = status


class PrometheusUnavailable(Exception):
    """Prometheus could not be reached, timed out, or failed on its side (5xx)."""


class PrometheusTimeout(PrometheusUnavailable):
    """Prometheus stopped evaluating the query at its ``timeout`` (too expensive, or
    Prometheus overloaded)."""


class PrometheusResultTooLarge(PrometheusError):
    """The answer is larger than the client's ``max_response_bytes``: not read on."""


class PrometheusQueryTooExpensive(PrometheusError):
    """Refused before it was sent: see :func:`subquery_steps`."""


class PrometheusBusy(Exception):
    """Every query slot of this client stayed taken for ``slot_wait_s``: try again later."""


@dataclass(frozen=True)
class RangeSeries:
    labels: Mapping[str, str]  # includes __name__ when the result has one
    timestamps: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]

    @property
    def metric(self) -> str | None:
        return self.labels.get("__name__")


@dataclass(frozen=True)
class InstantSample:
    labels: Mapping[str, str]
    timestamp: float
    value: float


def duration_s(text: str) -> float:
    """A PromQL duration (``1h30m``, ``500ms``, ``7d``) in seconds."""
    return sum(int(n) * _DURATION_UNIT_S[unit] for n, unit in _DURATION_PART.findall(text))


def subquery_steps(expr: str) -> tuple[int, str] | None:
    """The subquery of ``expr`` evaluating the most steps per series (range / resolution,
    a missing resolution taken as :data:`DEFAULT_SUBQUERY_STEP_S`), and its text; None
    without one. Read from the text (string literals left out), not parsed: a subquery in
    a comment counts too, which errs on the safe side."""
    worst: tuple[int, str] | None = None
    for m in _SUBQUERY.finditer(_STRING.sub('""', expr)):
        step = duration_s(m.group(2)) if m.group(2) else DEFAULT_SUBQUERY_STEP_S
        steps = int(duration_s(m.group(1)) / step) if step > 0 else 2**62
        if worst is None or steps > worst[0]:
            worst = (steps, m.group(0))
    return worst


def check_cost(query: str) -> None:
    """Raise PrometheusQueryTooExpensive for a subquery of more than MAX_POINTS_PER_QUERY
    steps (the limit Prometheus itself puts on a range query's points per series)."""
    worst = subquery_steps(query)
    if worst is not None and worst[0] > MAX_POINTS_PER_QUERY:
        raise PrometheusQueryTooExpensive(
            "too_expensive",
            f"the subquery {worst[1]} evaluates {worst[0]} steps per series, more than "
            f"{MAX_POINTS_PER_QUERY}: use a coarser resolution or a shorter range",
            422,
        )


def query_params(params: Mapping[str, str | float], timeout_s: float) -> dict[str, str]:
    """The form of a ``/api/v1/query`` or ``/api/v1/query_range`` request: ``params`` as
    text, and ``timeout`` in seconds (Prometheus accepts a float) so that it stops
    evaluating then, unless ``params`` has one already."""
    form = {k: str(v) for k, v in params.items()}
    form.setdefault("timeout", repr(float(timeout_s)))
    return form


def parse_response(response: httpx.Response) -> Any:
    """Return ``data`` of a Prometheus API response or raise the matching error."""
    try:
        body = response.json()
    except ValueError as e:
        if response.status_code >= 500:
            raise PrometheusUnavailable(
                f"Prometheus answered {response.status_code}: {response.text[:200]}"
            ) from e
        raise PrometheusUnavailable(f"Prometheus answered non-JSON ({response.status_code})") from e
    if not isinstance(body, dict):
        raise PrometheusUnavailable(f"Prometheus answered {response.status_code}: not an object")
    if body.get("errorType") == "timeout":
        raise PrometheusTimeout(f"Prometheus gave up on the query: {body.get('error', '')}")
    if response.status_code >= 500:
        raise PrometheusUnavailable(
            f"Prometheus answered {response.status_code}: {response.text[:200]}"
        )
    if body.get("status") != "success":
        raise PrometheusError(
            str(body.get("errorType", "unknown")), str(body.get("error", "")), response.status_code
        )
    return body.get("data")


def parse_matrix(data: Any) -> list[RangeSeries]:
    if data.get("resultType") != "matrix":
        raise PrometheusError("bad_data", f"expected a matrix, got {data.get('resultType')}", 200)
    out = []
    for item in data["result"]:
        pairs = item.get("values", [])
        ts = np.fromiter((float(p[0]) for p in pairs), dtype=np.float64, count=len(pairs))
        # Prometheus encodes values as strings ("NaN", "+Inf" included); float() reads them all.
        vs = np.fromiter((float(p[1]) for p in pairs), dtype=np.float64, count=len(pairs))
        out.append(RangeSeries(dict(item["metric"]), ts, vs))
    return out


def parse_vector(data: Any) -> list[InstantSample]:
    kind = data.get("resultType")
    if kind == "scalar":
        ts, v = data["result"]
        return [InstantSample({}, float(ts), float(v))]
    if kind != "vector":
        raise PrometheusError("bad_data", f"expected a vector, got {kind}", 200)
    return [
        InstantSample(dict(i["metric"]), float(i["value"][0]), float(i["value"][1]))
        for i in data["result"]
    ]


def range_chunks(start: float, end: float, step: float) -> list[tuple[float, float]]:
    """Split [start, end] so no chunk resolves to more than MAX_POINTS_PER_QUERY points."""
    span = step * (MAX_POINTS_PER_QUERY - 1)
    chunks = []
    t = start
    while True:
        stop = min(end, t + span)
        chunks.append((t, stop))
        if stop >= end:
            return chunks
        t = stop + step


def merge_chunks(parts: Sequence[list[RangeSeries]]) -> list[RangeSeries]:
    """Join per-chunk results of the same series (same label set) in time order."""
    merged: dict[tuple[tuple[str, str], ...], list[RangeSeries]] = {}
    for part in parts:
        for s in part:
            merged.setdefault(tuple(sorted(s.labels.items())), []).append(s)
    out = []
    for pieces in merged.values():
        ts = np.concatenate([p.timestamps for p in pieces])
        vs = np.concatenate([p.values for p in pieces])
        order = np.argsort(ts, kind="stable")
        out.append(RangeSeries(pieces[0].labels, ts[order], vs[order]))
    return out


class PrometheusClient:
    """Synchronous client; one ``httpx.Client`` (connection pool) per instance, which
    threads may share. See the module doc for ``max_concurrent``, ``slot_wait_s`` and
    ``max_response_bytes`` (``None``: unbounded)."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 10.0,
        *,
        max_concurrent: int | None = None,
        slot_wait_s: float = 0.0,
        max_response_bytes: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_concurrent = max_concurrent
        self.slot_wait_s = slot_wait_s
        self.max_response_bytes = max_response_bytes
        self._slots = threading.BoundedSemaphore(max_concurrent) if max_concurrent else None
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s + TIMEOUT_GRACE_S)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: Mapping[str, str | float]) -> Any:
        """POST a query (``params`` with ``query``) under the bounds of the module doc."""
        check_cost(str(params["query"]))
        if self._slots is not None and not self._slots.acquire(timeout=self.slot_wait_s):
            raise PrometheusBusy(
                f"{self.max_concurrent} Prometheus queries already in flight "
                f"(none finished within {self.slot_wait_s:g} s)"
            )
        try:
            # POST with a form body: long selectors would overflow a GET's URL.
            form = query_params(params, self.timeout_s)
            with self._http.stream("POST", path, data=form) as streamed:
                # The body as iter_bytes() decoded it: no Content-Encoding to apply again.
                response = httpx.Response(streamed.status_code, content=self._read(streamed))
        except httpx.HTTPError as e:
            raise PrometheusUnavailable(f"{self.base_url}{path}: {type(e).__name__}: {e}") from e
        finally:
            if self._slots is not None:
                self._slots.release()
        return parse_response(response)

    def _read(self, response: httpx.Response) -> bytes:
        """The body, given up on as soon as it grows past ``max_response_bytes``."""
        limit = self.max_response_bytes
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if limit is not None and size > limit:
                raise PrometheusResultTooLarge(
                    "result_too_large",
                    f"the result is larger than {limit} bytes: narrow the selector or the range",
                    response.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def count(self, expr: str, time: float, by: Sequence[str] = ()) -> list[InstantSample]:
        """How many series ``expr`` gives at ``time``, without fetching them: the instant
        ``count by (by) (expr)``, one sample per group (none when ``expr`` gives nothing).
        A scalar expression counts as one series without labels. ``by``: label names
        (``[a-zA-Z_][a-zA-Z0-9_]*``; checked here, as they are written into the query)."""
        for name in by:
            if not _LABEL_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a label name")
        try:
            # New lines around expr: a "# comment" at its end cannot swallow the parentheses.
            return self.query(f"count by ({', '.join(by)}) ((\n{expr}\n))", time)
        except PrometheusError as e:
            if "got scalar" not in e.message:  # "expected type instant vector ..., got scalar"
                raise
        return [InstantSample({}, time, 1.0)]

    def query_range(self, query: str, start: float, end: float, step: float) -> list[RangeSeries]:
        parts = [
            parse_matrix(
                self._get(
                    "/api/v1/query_range", {"query": query, "start": a, "end": b, "step": step}
                )
            )
            for a, b in range_chunks(start, end, step)
        ]
        return parts[0] if len(parts) == 1 else merge_chunks(parts)

    def query(self, query: str, time: float | None = None) -> list[InstantSample]:
        params: dict[str, str | float] = {"query": query}
        if time is not None:
            params["time"] = time
        return parse_vector(self._get("/api/v1/query", params))

    def query_samples(self, selector: str, time: float) -> list[RangeSeries]:
        """The raw samples of a range selector (``x{...}[5m]``) at ``time``, at their scrape
        timestamps (an instant query; no step, no extrapolation)."""
        return parse_matrix(self._get("/api/v1/query", {"query": selector, "time": time}))

    def series(self, match: str, start: float, end: float) -> list[dict[str, str]]:
        """The label sets (``__name__`` included) of the series a series selector ``match``
        selects with samples between ``start`` and ``end`` (``/api/v1/series``): no
        samples are read. Stale series count, unlike an instant query's."""
        form = {"match[]": match, "start": repr(float(start)), "end": repr(float(end))}
        try:
            response = self._http.post("/api/v1/series", data=form)
        except httpx.HTTPError as e:
            raise PrometheusUnavailable(
                f"{self.base_url}/api/v1/series: {type(e).__name__}: {e}"
            ) from e
        data = parse_response(response)
        return [{str(k): str(v) for k, v in item.items()} for item in data or []]

    def metadata(self, metric: str | None = None) -> dict[str, str]:
        """Metric family -> type ("counter", "gauge", "histogram", "summary", ...) from
        ``/api/v1/metadata`` (of ``metric`` only, when given).

        Metadata comes from scrapes: backfilled or remote-written series have none, and a
        family unknown to Prometheus is simply absent. Families scraped with conflicting
        types are left out (the caller falls back to its own rule).
        """
        params = {"metric": metric} if metric is not None else {}
        try:
            # GET: Prometheus serves the metadata endpoint on GET only.
            response = self._http.get("/api/v1/metadata", params=params)
        except httpx.HTTPError as e:
            raise PrometheusUnavailable(
                f"{self.base_url}/api/v1/metadata: {type(e).__name__}: {e}"
            ) from e
        data = parse_response(response)
        out: dict[str, str] = {}
        for family, entries in (data or {}).items():
            types = {str(e.get("type", "")) for e in entries}
            if len(types) == 1:
                out[str(family)] = types.pop()
        return out

    def ready(self) -> bool:
        try:
            return self._http.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False
