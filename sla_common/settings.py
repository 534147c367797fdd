"""Settings shared by every service, read from the environment (pydantic-settings).

Each service subclasses :class:`CommonSettings` with the fields only it reads and creates
its settings once, at start-up, through :func:`load_settings`, which turns a validation
error into one clear line naming the offending environment variable.

Secrets (passwords, tokens) are typed :class:`~pydantic.SecretStr`: their repr is
``'**********'`` and a caller must ask for ``.get_secret_value()`` where it really needs one.
No error shows the input it refused (``hide_input_in_errors``), and :func:`load_settings`
echoes an input only for a field that is not a secret and never for a model-level check
(whose input is the whole environment); it also masks any secret value it can find in its
message, whatever a validator wrote.
"""

from __future__ import annotations

import logging
import os
import types
import typing
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
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

    model_config = SettingsConfigDict(
        extra="ignore", frozen=True, validate_default=True, hide_input_in_errors=True
    )

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
    mysql_password: SecretStr = SecretStr("")
    mysql_database: str = "sla_monitor"

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8001, ge=0, le=65535)


S = TypeVar("S", bound=BaseSettings)

MASK = "**********"


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        return any(_is_secret(a) for a in typing.get_args(annotation))
    return False


def secret_fields(cls: type[BaseSettings]) -> frozenset[str]:
    """The names of ``cls``' fields typed ``SecretStr`` (or ``SecretStr | None``)."""
    return frozenset(n for n, f in cls.model_fields.items() if _is_secret(f.annotation))


def _secret_inputs(cls: type[BaseSettings], overrides: dict[str, Any]) -> list[str]:
    """The raw values the secret fields may be built from (environment and overrides)."""
    prefix = str(cls.model_config.get("env_prefix") or "").lower()
    names = secret_fields(cls)
    values = [overrides.get(name) for name in names]
    # Names in the environment are matched without regard to case, as pydantic-settings does.
    values += [v for k, v in os.environ.items() if k.lower().removeprefix(prefix) in names]
    return sorted(
        {str(v.get_secret_value() if isinstance(v, SecretStr) else v) for v in values if v},
        key=len,
        reverse=True,
    )


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build ``cls`` from the environment, or raise :class:`SettingsError` naming the fields.

    The message shows the refused input of an ordinary field (``HTTP_PORT='abc'``), never the
    input of a secret field nor of a model-level check, and masks every secret value.
    """
    try:
        return cls(**overrides)
    except ValidationError as e:
        secrets = secret_fields(cls)
        problems = []
        for err in e.errors():
            loc = [str(p) for p in err["loc"]]
            if not loc:  # a model validator: its input is every setting, secrets included
                problems.append(err["msg"])
            elif loc[0] in secrets:
                problems.append(f"{'.'.join(loc).upper()}: {err['msg']}")
            else:
                problems.append(f"{'.'.join(loc).upper()}={err.get('input')!r}: {err['msg']}")
        message = "invalid settings: " + "; ".join(problems)
        for value in _secret_inputs(cls, overrides):
            message = message.replace(value, MASK)
        # `from None`: the ValidationError (with its inputs) must not follow in a traceback.
        raise SettingsError(message) from None
