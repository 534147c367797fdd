"""Retrieval settings: the shared MySQL names, the explanations' (the ``Explain`` RPC reads
Prometheus: PROMETHEUS_URL and :class:`~sla_manager.explain.settings.ExplainSettings`), plus
what only the gRPC service reads.

``GRPC_API_TOKEN``: every call but health checking needs ``authorization: Bearer <token>``
metadata. Required in production (at least 16 characters, not a placeholder: the service
does not start otherwise); elsewhere optional, and without it calls are not authenticated
(the local stack makes one, as it does SLA_API_TOKEN). ``GRPC_TLS_CERT_FILE`` and
``GRPC_TLS_KEY_FILE`` (PEM, both or neither) serve TLS instead of plaintext.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator

from sla_common.mysql import MysqlSettings
from sla_common.tokens import blank_is_unset, check_token, readable_file
from sla_manager.explain.settings import ExplainSettings

DAY_S = 86_400


class RetrievalSettings(MysqlSettings, ExplainSettings):
    # Its own /metrics (prometheus_client), scraped by Prometheus as service "data_retrieval".
    http_port: int = Field(default=8003, ge=0, le=65535)

    grpc_host: str = Field(default="127.0.0.1", min_length=1)
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="0: any free port")
    # SIGTERM: health turns NOT_SERVING, the server keeps answering for DRAIN seconds (so a
    # load balancer watching health stops sending new calls), then stops accepting calls and
    # gives those in flight GRACE seconds to finish before cancelling them.
    grpc_shutdown_drain_s: float = Field(default=1.0, ge=0, le=60)
    grpc_shutdown_grace_s: float = Field(default=10.0, ge=0, le=300)

    grpc_api_token: SecretStr | None = Field(
        default=None, description="bearer token every call but health checking must carry"
    )
    grpc_tls_cert_file: Path | None = Field(default=None, description="PEM certificate chain")
    grpc_tls_key_file: Path | None = Field(default=None, description="PEM private key")

    # Items (points, lags, aggregates) per database page and per streamed message.
    retrieval_page_size: int = Field(default=2000, ge=1, le=20_000)
    # A request with both bounds set may span at most this much (a wider one is refused:
    # it is usually a unit mistake, e.g. milliseconds passed as seconds).
    # A bound left unset is set this far from the other one; with neither, each series is
    # read over this much up to its newest item. Never unbounded, whatever the request says.
    retrieval_max_range_s: int = Field(default=31 * DAY_S, ge=1)
    # The most items (points, lags, aggregates, series) one call returns; a request's
    # limit=0 (or none) means this, a larger limit is lowered to it. More items: the last
    # message's next_page_token resumes.
    retrieval_max_limit: int = Field(default=100_000, ge=1, le=10_000_000)
    # Threads (and so MySQL connections) serving database calls. Their Python work holds
    # the GIL, so more threads mostly add contention (measured: 2 beat 4 and 8 by 30-50 %
    # on GetDickeyFuller); more help only when MySQL is far away (queries wait on the wire).
    retrieval_db_threads: int = Field(default=2, ge=1, le=64)
    # Fetch a page of numeric rows as ONE row packed by MySQL (GROUP_CONCAT) instead of one
    # row per point: PyMySQL decodes rows in pure Python, ~7 µs each (see BENCHMARKS.md).
    # Doubles travel as exact integers (queries.exact_double). false: one row per point.
    retrieval_packed_pages: bool = True
    # Explain (Prometheus, not MySQL): explanations computed at once (each in a thread,
    # sorting and counting under the GIL in part); more calls wait for a turn, up to their
    # deadline. Its caps and Prometheus bounds are the SLA manager's variables
    # (SLA_EXPLAIN_MAX_SERIES, SLA_EXPLAIN_MAX_CELLS, SLA_PROMETHEUS_*: ExplainSettings).
    retrieval_explain_concurrent: int = Field(default=2, ge=1, le=64)

    @field_validator("grpc_api_token", "grpc_tls_cert_file", "grpc_tls_key_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        return blank_is_unset(v)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.http_port != 0 and self.http_port == self.grpc_port:
            raise ValueError("HTTP_PORT and GRPC_PORT must differ")
        if self.retrieval_max_limit < self.retrieval_page_size:
            raise ValueError("RETRIEVAL_MAX_LIMIT must be at least RETRIEVAL_PAGE_SIZE")
        if (self.grpc_tls_cert_file is None) != (self.grpc_tls_key_file is None):
            raise ValueError("set both GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE, or neither")
        readable_file("GRPC_TLS_CERT_FILE", self.grpc_tls_cert_file)
        readable_file("GRPC_TLS_KEY_FILE", self.grpc_tls_key_file)
        check_token("GRPC_API_TOKEN", self.grpc_api_token, self.environment)
        return self

    @property
    def tls(self) -> bool:
        return self.grpc_tls_cert_file is not None

    def api_token(self) -> str | None:
        return self.grpc_api_token.get_secret_value() if self.grpc_api_token else None
