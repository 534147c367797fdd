"""Retrieval settings: the shared MySQL names plus what only the gRPC service reads."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from sla_common.mysql import MysqlSettings

DAY_S = 86_400


class RetrievalSettings(MysqlSettings):
    # Its own /metrics (prometheus_client), scraped by Prometheus as service "data_retrieval".
    http_port: int = Field(default=8003, ge=0, le=65535)

    grpc_host: str = Field(default="127.0.0.1", min_length=1)
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="0: any free port")
    # SIGTERM: health turns NOT_SERVING, the server keeps answering for DRAIN seconds (so a
    # load balancer watching health stops sending new calls), then stops accepting calls and
    # gives those in flight GRACE seconds to finish before cancelling them.
    grpc_shutdown_drain_s: float = Field(default=1.0, ge=0, le=60)
    grpc_shutdown_grace_s: float = Field(default=10.0, ge=0, le=300)

    # Items (points, lags, aggregates) per database page and per streamed message.
    retrieval_page_size: int = Field(default=2000, ge=1, le=20_000)
    # A request with both bounds set may span at most this much (a wider one is refused:
    # it is usually a unit mistake, e.g. milliseconds passed as seconds).
    retrieval_max_range_s: int = Field(default=31 * DAY_S, ge=1)
    # Threads (and so MySQL connections) serving database calls. Their Python work holds
    # the GIL, so more threads mostly add contention (measured: 2 beat 4 and 8 by 30-50 %
    # on GetDickeyFuller); more help only when MySQL is far away (queries wait on the wire).
    retrieval_db_threads: int = Field(default=2, ge=1, le=64)
    # Fetch a page of numeric rows as ONE row packed by MySQL (GROUP_CONCAT) instead of one
    # row per point: PyMySQL decodes rows in pure Python, ~7 µs each (see BENCHMARKS.md).
    # Doubles travel as exact integers (queries.exact_double). false: one row per point.
    retrieval_packed_pages: bool = True

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.http_port != 0 and self.http_port == self.grpc_port:
            raise ValueError("HTTP_PORT and GRPC_PORT must differ")
        return self
