"""No secret setting ever shows in an error, a log line, a repr or a /metrics page (issue 11.9).

The secrets are found, not listed: every field typed ``SecretStr`` in the settings classes of
every entry point (a package with ``settings.py`` and ``__main__.py``: the services and the
gRPC client), so a token added later is covered too; and a field whose name says it is a
secret must be typed so.
Each test sets every secret to a distinctive value and provokes the settings' error paths:
a bad ordinary value, a wrong type (a secret among the bad input), a missing secret in
production, a model-level check, a bad secret itself; in process (``load_settings``, the
exception's text and its traceback) and as each service's entry point (exit code 2).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import secrets
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings

from sla_common.mysql import MysqlSettings
from sla_common.settings import CommonSettings, SettingsError, load_settings, secret_fields
from sla_manager.settings import SlaSettings
from tests.integration.slautil import ServerThread

REPO = Path(__file__).resolve().parents[2]
# Entry points with settings of their own: a package with settings.py and __main__.py
# (the services, and a client inside one of them).
ENTRY_POINTS = sorted(
    ".".join(p.parent.relative_to(REPO).parts)
    for p in [*REPO.glob("*/settings.py"), *REPO.glob("*/*/settings.py")]
    if (p.parent / "__main__.py").exists()
    and p.parts[len(REPO.parts)] not in {"sla_common", "tests", "bench", "scripts"}
    and not p.parts[len(REPO.parts)].startswith(".")
)
SECRET_NAME = re.compile(r"(token|password|passwd|secret|api_key|credential)", re.I)
EXIT_BAD_SETTINGS = 2


def _settings_classes(entry_point: str) -> list[type[CommonSettings]]:
    module = importlib.import_module(f"{entry_point}.settings")
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, CommonSettings) and obj.__module__ == module.__name__
    ]


CLASSES = [cls for entry_point in ENTRY_POINTS for cls in _settings_classes(entry_point)]
ALL_SECRET_FIELDS = sorted({name for cls in CLASSES for name in secret_fields(cls)})


def _distinctive() -> str:
    # Long and random enough for any production rule; nothing else in an output contains it.
    return "Zq" + secrets.token_hex(12)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A clean environment with every secret of every service set to a distinctive value."""
    for name in list(os.environ):
        field = name.lower()
        if field in CommonSettings.model_fields or any(field in c.model_fields for c in CLASSES):
            monkeypatch.delenv(name)
    values = {name.upper(): _distinctive() for name in ALL_SECRET_FIELDS}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield values


def _assert_hidden(text: str, values: dict[str, str] | list[str]) -> None:
    for value in values.values() if isinstance(values, dict) else values:
        assert value not in text, f"a secret appears in: {text}"


def _provoke(cls: type[BaseSettings], **overrides: Any) -> SettingsError:
    with pytest.raises(SettingsError) as e:
        load_settings(cls, **overrides)
    err = e.value
    assert err.__cause__ is None and err.__suppress_context__  # no ValidationError after it
    return err


def _exception_text(err: BaseException) -> str:
    return str(err) + repr(err) + "".join(traceback.format_exception(err))


# The error paths each class has, as (environment, overrides). Model-level checks of the
# services are provoked by their own rules; a missing secret by production mode.
MODEL_CHECKS: dict[str, list[dict[str, str]]] = {
    "EtlSettings": [{"ETL_SHARD_INDEX": "3", "ETL_SHARD_COUNT": "2"}],
    "StorageSettings": [
        {"KAFKA_HEARTBEAT_INTERVAL_MS": "3000"},
        {"KAFKA_DLQ_TOPIC": "prometheusdata"},
    ],
    "RetrievalSettings": [{"HTTP_PORT": "7001", "GRPC_PORT": "7001"}],
    "SlaSettings": [
        {"ENVIRONMENT": "production", "SLA_API_TOKEN": ""},
        {"SLA_ETL_MATCHERS": '{job="x"}'},
    ],
}


def test_the_services_and_their_secrets_are_found() -> None:
    assert set(ENTRY_POINTS) >= {
        "etl_data_pipeline",
        "data_storage",
        "data_retrieval",
        "data_retrieval.client",
        "sla_manager",
    }
    assert {c.__name__ for c in CLASSES} >= set(MODEL_CHECKS)
    assert {"mysql_password", "sla_api_token"} <= set(ALL_SECRET_FIELDS)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_secret_like_setting_is_a_secretstr(cls: type[BaseSettings]) -> None:
    named_like_secrets = {n for n in cls.model_fields if SECRET_NAME.search(n)}
    assert named_like_secrets <= secret_fields(cls), (
        f"{cls.__name__}: type {sorted(named_like_secrets - secret_fields(cls))} as SecretStr"
    )


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_no_settings_error_shows_a_secret(
    cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[SettingsError] = []
    # An ordinary value that is invalid (its input is echoed: it is not a secret).
    monkeypatch.setenv("HTTP_PORT", "not-a-port")
    errors.append(_provoke(cls))
    assert "HTTP_PORT='not-a-port'" in str(errors[-1])
    monkeypatch.delenv("HTTP_PORT")
    # Wrong types, with secrets inside the refused input.
    errors.append(_provoke(cls, http_port=[env["MYSQL_PASSWORD"]], mysql_port={"x": 1}))
    for field in secret_fields(cls):
        value = env[field.upper()]
        errors.append(_provoke(cls, **{field: {"nested": value}}))
        errors.append(_provoke(cls, **{field: [value, value]}, http_port="bad"))
        assert field.upper() in str(errors[-1]) and "HTTP_PORT='bad'" in str(errors[-1])
    # A secret missing in production: the model-level check's input is every setting.
    monkeypatch.setenv("ENVIRONMENT", "production")
    if issubclass(cls, MysqlSettings):
        monkeypatch.setenv("MYSQL_PASSWORD", "")
        errors.append(_provoke(cls))
        assert "MYSQL_PASSWORD must be set" in str(errors[-1])
        monkeypatch.setenv("MYSQL_PASSWORD", env["MYSQL_PASSWORD"])
    monkeypatch.delenv("ENVIRONMENT")
    # The class' own model-level checks.
    for case in MODEL_CHECKS.get(cls.__name__, []):
        with monkeypatch.context() as m:
            for name, value in case.items():
                m.setenv(name, value)
            errors.append(_provoke(cls))
    assert errors
    for err in errors:
        _assert_hidden(_exception_text(err), env)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_a_bad_secret_is_not_shown_either(
    cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a secret's own checks refuse (too short, a placeholder, blank, odd
    characters, in production or not), the error does not repeat it."""
    candidates = ["Qz7", "CHANGETHIS", "Changeme", " \t", "Zq\u00e9\u2603 line\nbreak", "Zq" * 600]
    shown: list[str] = []
    for field in secret_fields(cls):
        for environment in ("production", "test", "local"):
            for value in candidates:
                with monkeypatch.context() as m:
                    m.setenv("ENVIRONMENT", environment)
                    m.setenv(field.upper(), value)
                    m.setenv("HTTP_PORT", "-5")  # so that there is always an error
                    err = _provoke(cls)
                text = _exception_text(err).lower()
                if value.strip() and value.lower() in text:
                    shown.append(f"{field}={value!r} ({environment}): {err}")
    assert not shown


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_a_validation_error_itself_hides_its_input(
    cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code that builds the class directly (tests, an app factory) gets a ValidationError
    whose text, traceback included, shows no input."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("MYSQL_PASSWORD", "")
    with pytest.raises(ValidationError) as e:
        cls(http_port=env["SLA_API_TOKEN"])
    _assert_hidden(_exception_text(e.value), env)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_valid_settings_do_not_show_their_secrets(
    cls: type[BaseSettings], env: dict[str, str]
) -> None:
    s = load_settings(cls)
    for field in secret_fields(cls):
        secret = getattr(s, field)
        assert isinstance(secret, SecretStr)
        assert secret.get_secret_value() == env[field.upper()]
    assert isinstance(s, BaseModel)
    _assert_hidden(repr(s) + str(s) + s.model_dump_json() + str(s.model_dump()), env)


def test_a_placeholder_token_is_only_warned_about_locally_and_not_logged(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SLA_API_TOKEN", "CHANGETHIS")
    with caplog.at_level("DEBUG"):
        assert load_settings(SlaSettings).api_token() == "CHANGETHIS"
    assert "placeholder" in caplog.text
    assert "changethis" not in caplog.text.lower()


def _entry_point_cases(entry_point: str, secrets_env: dict[str, str]) -> list[dict[str, str]]:
    bad_value = {**secrets_env, "HTTP_PORT": "not-a-port"}
    in_production = {**secrets_env, "ENVIRONMENT": "production", "HTTP_PORT": "99999"}
    cases = [bad_value, in_production]
    if any(issubclass(c, MysqlSettings) for c in _settings_classes(entry_point)):
        cases.append({**secrets_env, "ENVIRONMENT": "production", "MYSQL_PASSWORD": ""})
    return cases


def test_entry_points_exit_2_without_showing_a_secret(tmp_path: Path) -> None:
    """``python -m <entry point>`` with bad settings: exit code 2, one line, no secret."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in CommonSettings.model_fields
        and not any(k.lower() in c.model_fields for c in CLASSES)
    }
    secrets_env = {name.upper(): _distinctive() for name in ALL_SECRET_FIELDS}
    procs: list[tuple[str, dict[str, str], subprocess.Popen[str]]] = []
    for service in ENTRY_POINTS:
        for case in _entry_point_cases(service, secrets_env):
            proc = subprocess.Popen(
                [sys.executable, "-m", service],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                env={**base, **case},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append((service, case, proc))
    failures = []
    for service, _case, proc in procs:
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        if proc.returncode != EXIT_BAD_SETTINGS or "invalid settings" not in err:
            failures.append(f"{service} exit {proc.returncode}: {err[-500:]}")
        for name, value in secrets_env.items():
            if value and value in out + err:
                failures.append(f"{service} shows {name}: {err[-500:]}")
    assert not failures, "\n".join(failures)


def test_the_sla_metrics_page_has_no_secret(env: dict[str, str]) -> None:
    settings = SlaSettings(
        environment="test", prometheus_url="http://127.0.0.1:9", mysql_port=9, http_port=0
    )
    token = env["SLA_API_TOKEN"]
    with ServerThread(settings) as server, httpx.Client(base_url=server.base_url) as c:
        c.post("/slis", headers={"Authorization": f"Bearer {token}"}, json={"name": "x"})
        c.post("/slis", headers={"Authorization": f"Bearer {token}-wrong"}, json={})
        page = c.get("/metrics").text
    assert "sla_" in page or "http_" in page
    _assert_hidden(page, env)
