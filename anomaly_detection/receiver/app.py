"""The receiver's HTTP API: ``POST /api/v1/write`` (Prometheus remote write v1), ``/metrics``.

Checks, in order, each a 4xx with a short reason that Prometheus logs (it drops a batch on a
4xx other than 429, so these are only for requests that can never succeed):

1. ``Content-Encoding: snappy`` and ``Content-Type: application/x-protobuf`` (with no
   ``proto=`` parameter or ``proto=prometheus.WriteRequest``: remote write v2 is not
   spoken here) -> 400;
2. the body's size, from ``Content-Length`` before reading and counted while reading
   -> 413 past ``RECEIVER_MAX_BODY_BYTES``;
3. snappy's declared uncompressed length -> 413 past ``RECEIVER_MAX_DECOMPRESSED_BYTES``
   (before decompressing), bad snappy or protobuf -> 400.

Then the records are published and the answer waits for the broker: 204 once every record is
acknowledged, 503 with ``Retry-After`` otherwise (Prometheus retries 5xx with backoff).
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from anomaly_detection.receiver.decode import RequestError, decode
from anomaly_detection.receiver.metrics import ReceiverMetrics
from anomaly_detection.receiver.publish import Publisher, PublishError
from anomaly_detection.receiver.settings import ReceiverSettings

log = logging.getLogger(__name__)

WRITE_PATH = "/api/v1/write"
PROTOBUF = "application/x-protobuf"
WRITE_REQUEST_PROTO = "prometheus.WriteRequest"


def check_headers(content_type: str | None, content_encoding: str | None) -> None:
    if (content_encoding or "").strip().lower() != "snappy":
        raise RequestError(400, "Content-Encoding must be snappy")
    media, *params = [p.strip() for p in (content_type or "").split(";")]
    if media.lower() != PROTOBUF:
        raise RequestError(400, f"Content-Type must be {PROTOBUF}")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "proto" and value.strip() != WRITE_REQUEST_PROTO:
            raise RequestError(
                400, f"only remote write v1 ({WRITE_REQUEST_PROTO}) is accepted, not {value!r}"
            )


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, "Content-Length is not a number") from None
        if size > limit:
            raise RequestError(413, f"body of {size} bytes is larger than {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    settings: ReceiverSettings, publisher: Publisher, metrics: ReceiverMetrics | None = None
) -> FastAPI:
    m = metrics or ReceiverMetrics()
    app = FastAPI(
        title="anomaly_detection.receiver",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.metrics = m
    retry_after = str(settings.receiver_retry_after_s)

    @app.post(WRITE_PATH)
    async def write(request: Request) -> Response:
        try:
            check_headers(
                request.headers.get("content-type"), request.headers.get("content-encoding")
            )
            body = await read_body(request, settings.receiver_max_body_bytes)
            decoded = await run_in_threadpool(
                decode, body, settings.receiver_max_decompressed_bytes
            )
        except RequestError as e:
            m.requests.labels(str(e.status)).inc()
            log.warning("remote write refused with %d: %s", e.status, e)
            return PlainTextResponse(f"{e}\n", status_code=e.status)
        m.samples_received.inc(decoded.received)
        for reason, n in decoded.dropped.items():
            m.samples_dropped.labels(reason).inc(n)
        started = time.perf_counter()
        try:
            await run_in_threadpool(publisher.publish, decoded.records)
        except PublishError as e:
            m.requests.labels("503").inc()
            m.publish_failures.inc()
            log.warning("remote write answered 503 (Prometheus will retry): %s", e)
            return PlainTextResponse(
                f"{e}; retry later\n", status_code=503, headers={"Retry-After": retry_after}
            )
        m.publish_seconds.observe(time.perf_counter() - started)
        m.samples_published.inc(decoded.accepted)
        m.records_published.inc(len(decoded.records))
        m.requests.labels("204").inc()
        return Response(status_code=204)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    return app
