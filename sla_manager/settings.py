"""SLA manager settings: the shared names plus what only the REST service reads.

Like ``backend/app/core/config.py`` of full-stack-fastapi-template: one class, built once at
start-up, that refuses to run in production without a real secret.

The write token (``SLA_API_TOKEN``):

- ``ENVIRONMENT=production``: required, at least 16 characters, not a placeholder; the
  service does not start otherwise (exit 2, naming the variable). A placeholder
  (``changethis``...) is refused in ``test`` too and only warned about in ``local``.
- ``local`` / ``test``: optional. Without it the service still serves every read, and
  refuses every write with 403 and a message saying how to set it. There is deliberately
  no built-in default token: a default would be a well-known password on any instance that
  forgot to set one, whereas "no token, no writes" fails safe.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from sla_common.mysql import MysqlSettings
from sla_manager.explain.settings import ExplainSettings
from sla_manager.slo.rules import RuleConfig, parse_windows

log = logging.getLogger(__name__)

PLACEHOLDER_TOKENS = frozenset({"changethis", "changeme", "secret", "token", "password"})
MIN_PRODUCTION_TOKEN_CHARS = 16


class SlaSettings(MysqlSettings, ExplainSettings):
    http_port: int = Field(default=8000, ge=0, le=65535)

    # A REST request waits for these, so they are shorter than the batch services' defaults.
    mysql_connect_timeout_s: float = Field(default=3.0, gt=0)
    mysql_read_timeout_s: float = Field(default=10.0, gt=0)
    mysql_write_timeout_s: float = Field(default=10.0, gt=0)

    sla_api_token: SecretStr | None = Field(
        default=None, description="bearer token for POST/PUT/PATCH/DELETE /slis"
    )
    sla_violation_step_s: int = Field(
        default=60, ge=1, le=86_400, description="default step of /violations range queries"
    )
    # The ETL's cycle: a stored forecast older than two cycles is flagged as stale.
    etl_interval_s: float = Field(default=60.0, gt=0)
    sla_retry_after_s: int = Field(
        default=5, ge=1, le=3600, description="Retry-After of 503 answers"
    )
    sla_startup_wait_s: float = Field(
        default=60.0, gt=0, description="how long to wait for MySQL at start before giving up"
    )
    sla_mysql_pool_size: int = Field(default=10, ge=1, le=500)
    sla_max_series: int = Field(
        default=500, ge=1, le=100_000, description="series reported per SLI and request"
    )
    # Resource bounds (Prometheus' own are --query.timeout and --query.max-samples).
    sla_max_points: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="evaluations × series a /violations range query may fetch",
    )
    # SLA_PROMETHEUS_MAX_CONCURRENT, _SLOT_WAIT_S, _MAX_RESPONSE_BYTES: in ExplainSettings.
    sla_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest request body (413 beyond)"
    )
    # Label matchers that select the ETL's own metrics as Prometheus scrapes them.
    sla_etl_matchers: str = Field(
        default='job="sla-monitor",service="etl_data_pipeline"', max_length=1000
    )
    sla_access_log: bool = False
    # Explanations' caps (SLA_EXPLAIN_MAX_SERIES, SLA_EXPLAIN_MAX_CELLS): in ExplainSettings.

    @field_validator("sla_api_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        # `SLA_API_TOKEN=` in an env file means "not set", not "the empty token".
        if isinstance(v, str) and not v.strip():
            return None
        return v

    @field_validator("sla_etl_matchers")
    @classmethod
    def _no_braces(cls, v: str) -> str:
        if any(c in v for c in "{}"):
            raise ValueError('label matchers without braces, e.g. job="sla-monitor"')
        return v

    @model_validator(mode="after")
    def _token_policy(self) -> Self:
        token = self.sla_api_token.get_secret_value() if self.sla_api_token else None
        if self.environment == "production" and token is None:
            raise ValueError(
                "SLA_API_TOKEN must be set when ENVIRONMENT=production "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if token is not None and token.lower() in PLACEHOLDER_TOKENS:
            # As the template's _check_default_secret: a warning on a laptop, an error anywhere
            # else.
            if self.environment != "local":
                raise ValueError(
                    "SLA_API_TOKEN is a placeholder: use a random one outside ENVIRONMENT=local"
                )
            log.warning("SLA_API_TOKEN is a placeholder: refused outside local use")
        if (
            self.environment == "production"
            and token is not None
            and len(token) < MIN_PRODUCTION_TOKEN_CHARS
        ):
            raise ValueError(
                f"SLA_API_TOKEN is shorter than {MIN_PRODUCTION_TOKEN_CHARS} characters; "
                "use a random one in production"
            )
        return self

    @property
    def stale_after_s(self) -> float:
        """A forecast older than this (two ETL cycles) is reported as stale."""
        return 2 * self.etl_interval_s

    def api_token(self) -> str | None:
        return self.sla_api_token.get_secret_value() if self.sla_api_token else None

    # ------------------------------------------------------------------ SLOs (issue 14)
    # Where the generated rules go (Prometheus loads them: scripts/up and compose wire it);
    # unset: GET /rules still answers, nothing is written.
    slo_rules_file: Path | None = None
    slo_prometheus_reload: bool = Field(
        default=True, description="POST PROMETHEUS_URL/-/reload after writing the rules"
    )
    slo_windows: str = Field(
        default="page:14.4:1h:5m,page:6:6h:30m,ticket:3:1d:2h,ticket:1:3d:6h",
        max_length=1000,
        description="burn-rate alerts: severity:factor:long:short, comma-separated",
    )
    slo_min_events: int = Field(
        default=50, ge=0, le=10**9, description="ratio SLOs: events in the long window to alert"
    )
    slo_breach_probability: float = Field(default=0.5, gt=0, lt=1)
    slo_breach_for: str = Field(default="5m", pattern=r"^[1-9][0-9]{0,6}[smh]$")
    slo_breach_severity: str = Field(default="ticket", pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    slo_burn_rate_window: Literal["5m", "30m", "1h", "2h", "6h", "1d", "3d"] = Field(
        default="1h", description="the window of the current burn rate (time to exhaustion)"
    )

    slo_breach_horizon_s: int = Field(
        default=600, ge=60, le=86_400, description="sla_sli_breach_probability looks this far"
    )
    slo_breach_refresh_s: float = Field(
        default=30.0, gt=0, description="how often /metrics recomputes the SLI probabilities"
    )

    @field_validator("slo_windows")
    @classmethod
    def _burn_windows(cls, v: str) -> str:
        parse_windows(v)  # its ValueError says what is wrong
        return v

    def slo_rule_config(self) -> RuleConfig:
        return RuleConfig(
            windows=parse_windows(self.slo_windows),
            min_events=self.slo_min_events,
            breach_probability=self.slo_breach_probability,
            breach_for=self.slo_breach_for,
            breach_severity=self.slo_breach_severity,
        )
