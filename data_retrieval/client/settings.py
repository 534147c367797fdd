"""Client settings: where the service is (flags override them)."""

from __future__ import annotations

from pydantic import Field

from sla_common.settings import CommonSettings


class ClientSettings(CommonSettings):
    """``python -m data_retrieval.client``: where the service is (flags override these)."""

    grpc_target: str = Field(default="127.0.0.1:50051", min_length=1)
    grpc_timeout_s: float = Field(default=30.0, gt=0, description="deadline of each call")
