"""SLA manager settings: the token policy and the defaults of the names the issue fixes."""

from __future__ import annotations

import logging

import pytest

from sla_common.settings import SettingsError, load_settings
from sla_manager.settings import SlaSettings

TOKEN_VARS = ("SLA_API_TOKEN", "ENVIRONMENT", "HTTP_PORT", "ETL_INTERVAL_S", "MYSQL_PASSWORD")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TOKEN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = SlaSettings()
    assert s.http_port == 8000
    assert s.sla_violation_step_s == 60
    assert s.etl_interval_s == 60
    assert s.stale_after_s == 120
    assert s.sla_api_token is None and s.api_token() is None


def test_production_refuses_to_start_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("MYSQL_PASSWORD", "a-real-password")
    with pytest.raises(SettingsError) as e:
        load_settings(SlaSettings)
    assert "SLA_API_TOKEN must be set" in str(e.value)


@pytest.mark.parametrize("token", ["changethis", "short-token", "   "])
def test_production_refuses_weak_or_blank_tokens(
    monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("MYSQL_PASSWORD", "a-real-password")
    monkeypatch.setenv("SLA_API_TOKEN", token)
    with pytest.raises(SettingsError, match="SLA_API_TOKEN"):
        load_settings(SlaSettings)


def test_production_accepts_a_random_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("MYSQL_PASSWORD", "a-real-password")
    monkeypatch.setenv("SLA_API_TOKEN", "Zk3v9Qm2L8x4Tt7Rr1Yy")
    s = load_settings(SlaSettings)
    assert s.api_token() == "Zk3v9Qm2L8x4Tt7Rr1Yy"
    assert "Zk3v9" not in repr(s)  # a SecretStr: never in logs or tracebacks


def test_local_blank_token_means_unset_and_placeholder_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SLA_API_TOKEN", "")
    assert SlaSettings().api_token() is None
    monkeypatch.setenv("SLA_API_TOKEN", "changethis")
    with caplog.at_level(logging.WARNING):
        assert SlaSettings().api_token() == "changethis"
    assert "placeholder" in caplog.text
    monkeypatch.setenv("ENVIRONMENT", "test")
    with pytest.raises(SettingsError, match="placeholder"):
        load_settings(SlaSettings)


def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_INTERVAL_S", "-1")
    with pytest.raises(SettingsError, match="ETL_INTERVAL_S"):
        load_settings(SlaSettings)


def test_etl_matchers_are_matchers_not_a_selector() -> None:
    with pytest.raises(ValueError, match="without braces"):
        SlaSettings(sla_etl_matchers='{job="x"}')


def test_the_missing_password_error_does_not_show_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The case issue 11.9 found: the model-level check's input is the whole environment."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("SLA_API_TOKEN", "Zk3v9Qm2L8x4Tt7Rr1Yy")
    with pytest.raises(SettingsError) as e:
        load_settings(SlaSettings)
    assert "MYSQL_PASSWORD must be set" in str(e.value)
    assert "Zk3v9" not in str(e.value)
