"""A small, typed client for the Prometheus HTTP API.

Why not prometheus-api-client: every call here needs a timeout, Prometheus' own error text
(a bad selector must be reported in Prometheus' words), a clear split between "your query
is wrong" and "Prometheus is down", and numpy arrays rather than DataFrames of strings.
That is a few dozen lines on httpx; the response parsing is pure and shared by the sync
client here and any async caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

# Prometheus refuses range queries resolving to more than 11,000 points per series.
MAX_POINTS_PER_QUERY = 11_000


class PrometheusError(Exception):
    """Prometheus understood the request and rejected it (bad PromQL, bad range...)."""

    def __init__(self, error_type: str, message: str, status: int) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.status = status


class PrometheusUnavailable(Exception):
    """Prometheus could not be reached, timed out, or failed on its side (5xx)."""


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


def parse_response(response: httpx.Response) -> Any:
    """Return ``data`` of a Prometheus API response or raise the matching error."""
    if response.status_code >= 500:
        raise PrometheusUnavailable(
            f"Prometheus answered {response.status_code}: {response.text[:200]}"
        )
    try:
        body = response.json()
    except ValueError as e:
        raise PrometheusUnavailable(f"Prometheus answered non-JSON ({response.status_code})") from e
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
    """Synchronous client; one ``httpx.Client`` (connection pool) per instance."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: Mapping[str, str | float]) -> Any:
        try:
            # POST with a form body: long selectors would overflow a GET's URL.
            response = self._http.post(path, data=dict(params))
        except httpx.HTTPError as e:
            raise PrometheusUnavailable(f"{self.base_url}{path}: {type(e).__name__}: {e}") from e
        return parse_response(response)

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
