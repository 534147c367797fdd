"""The settings an explanation reads, shared by the services that explain: the SLA manager
(REST) and data_retrieval (gRPC ``Explain``) derive their settings from
:class:`ExplainSettings`, so each variable means the same in both."""

from __future__ import annotations

from pydantic import Field

from sla_common.prometheus import PrometheusClient
from sla_common.settings import CommonSettings


class ExplainSettings(CommonSettings):
    # Resource bounds of Prometheus queries (Prometheus' own are --query.timeout and
    # --query.max-samples).
    sla_prometheus_max_concurrent: int = Field(
        default=8, ge=1, le=1000, description="Prometheus queries in flight per process"
    )
    sla_prometheus_slot_wait_s: float = Field(
        default=1.0, ge=0, le=60, description="wait for a free query slot, then answer 503"
    )
    sla_prometheus_max_response_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="largest Prometheus answer read"
    )
    # Explanations: caps.
    sla_explain_max_series: int = Field(
        default=2000, ge=1, le=100_000, description="candidate series one explanation may fetch"
    )
    sla_explain_max_cells: int = Field(
        default=6_000_000,
        ge=1000,
        le=100_000_000,
        description="candidate series × points one explanation may fetch (~8 bytes each)",
    )

    def prometheus_client(self) -> PrometheusClient:
        """A client of PROMETHEUS_URL under these bounds (one per process; threads share it)."""
        return PrometheusClient(
            self.prometheus_url,
            self.prometheus_timeout_s,
            max_concurrent=self.sla_prometheus_max_concurrent,
            slot_wait_s=self.sla_prometheus_slot_wait_s,
            max_response_bytes=self.sla_prometheus_max_response_bytes,
        )
