"""Client settings: where the service is (flags override them)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator

from sla_common.settings import CommonSettings
from sla_common.tokens import blank_is_unset, readable_file


class ClientSettings(CommonSettings):
    """``python -m data_retrieval.client``: where the service is (flags override these)."""

    grpc_target: str = Field(default="127.0.0.1:50051", min_length=1)
    grpc_timeout_s: float = Field(default=30.0, gt=0, description="deadline of each call")
    grpc_api_token: SecretStr | None = Field(
        default=None, description="the server's bearer token (the local stack's: stack.env)"
    )
    grpc_tls: bool = Field(default=False, description="TLS, trusting the system's roots")
    grpc_tls_ca_file: Path | None = Field(default=None, description="TLS, trusting this CA")

    @field_validator("grpc_api_token", "grpc_tls_ca_file", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        return blank_is_unset(v)

    @model_validator(mode="after")
    def _check(self) -> Self:
        readable_file("GRPC_TLS_CA_FILE", self.grpc_tls_ca_file)
        return self

    def api_token(self) -> str | None:
        return self.grpc_api_token.get_secret_value() if self.grpc_api_token else None
