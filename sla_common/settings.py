"""Settings shared by every service, read from the environment (pydantic-settings).

Each service subclasses :class:`CommonSettings` with the fields only it reads and creates
its settings once, at start-up, through :func:`load_settings`, which turns a validation
error into one clear line naming the offending environment variable.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

Environment = Literal["local", "test", "production"]


class SettingsError(SystemExit):
    """Raised at start-up for invalid settings; exits with status 2 and a readable message."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CommonSettings(BaseSettings):
    """Names every service understands. Unknown variables in the environment are ignored."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, validate_default=True)

    environment: Environment = "local"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    prometheus_url: str = "http://127.0.0.1:9090"
    prometheus_timeout_s: float = Field(default=10.0, gt=0)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = Field(default="prometheusdata", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    kafka_dlq_topic: str = Field(
        default="prometheusdata.dlq", min_length=1, pattern=r"^[A-Za-z0-9._-]+$"
    )

    mysql_host: str = "127.0.0.1"
    mysql_port: int = Field(default=3306, ge=1, le=65535)
    mysql_user: str = "root"
    mysql_password: str = ""
    mysql_database: str = "sla_monitor"

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8001, ge=0, le=65535)


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment, or raise :class:`SettingsError` naming the fields."""
    try:
        return cls(**overrides)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"]) or "?"
            problems.append(f"{field.upper()}={err.get('input')!r}: {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from e
