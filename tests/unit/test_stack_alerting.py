"""The local stack's alerting wiring: Prometheus loads the rules directory and sends to the
stack's Alertmanager, which routes to STACK_ALERT_WEBHOOK_URL (its config checked by
``amtool check-config``, shipped with prometheus-alertmanager)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_stack_files import stack


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: str) -> object:
    monkeypatch.setenv("STACK_DIR", str(tmp_path))
    monkeypatch.setenv("STACK_ALERTMANAGER_PORT", "19093")
    monkeypatch.setenv("STACK_ALERT_WEBHOOK_URL", hook)
    monkeypatch.delenv("STACK_COMPONENTS", raising=False)
    return stack.load_config()


def test_prometheus_loads_the_rules_dir_and_sends_to_alertmanager(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path, monkeypatch, "http://127.0.0.1:1/hook")
    prom = yaml.safe_load(stack.prometheus_yml(cfg))
    assert prom["rule_files"] == [f"{tmp_path}/rules/*.yml"]
    targets = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["127.0.0.1:19093"]
    env = stack.write_facts(cfg, {}, None)["env"]
    assert env["SLO_RULES_FILE"] == f"{tmp_path}/rules/slo.rules.yml"
    assert env["ALERTMANAGER_URL"] == "http://127.0.0.1:19093"


@pytest.mark.parametrize("hook", ["http://127.0.0.1:5001/alerts", ""])
def test_alertmanager_config_routes_to_the_webhook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hook: str
) -> None:
    cfg = _config(tmp_path, monkeypatch, hook)
    text = stack.alertmanager_yml(cfg)
    am = yaml.safe_load(text)
    receivers = {r["name"]: r for r in am["receivers"]}
    assert am["route"]["receiver"] in receivers
    if hook:
        assert receivers["webhook"]["webhook_configs"][0]["url"] == hook
    amtool = shutil.which("amtool")
    if amtool is not None:
        (tmp_path / "am.yml").write_text(text)
        check = subprocess.run(
            [amtool, "check-config", str(tmp_path / "am.yml")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr


def _inhibits(
    rules: list[dict[str, object]], source: dict[str, str], target: dict[str, str]
) -> bool:
    """Alertmanager's inhibition for equality matchers: a rule mutes ``target`` when
    ``source`` fires, both match their matchers and agree on the ``equal`` labels."""

    def matches(matchers: object, labels: dict[str, str]) -> bool:
        assert isinstance(matchers, list)
        pairs = [m.split("=", 1) for m in matchers]
        return all(labels.get(k) == v.strip('"') for k, v in pairs)

    return any(
        matches(r["source_matchers"], source)
        and matches(r["target_matchers"], target)
        and all(source.get(str(k)) == target.get(str(k)) for k in r["equal"])  # type: ignore[attr-defined]
        for r in rules
    )


def test_a_page_mutes_its_slos_burn_tickets_but_not_a_predicted_breach(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    command = "\n".join(compose["services"]["alertmanager"]["command"])
    am_compose = yaml.safe_load(command.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0])
    cfg = _config(tmp_path, monkeypatch, "http://127.0.0.1:5001/alerts")
    for am in (yaml.safe_load(stack.alertmanager_yml(cfg)), am_compose):
        rules = am["inhibit_rules"]
        page = {"alertname": "SloErrorBudgetBurn", "severity": "page", "slo": "a"}
        ticket = {"alertname": "SloErrorBudgetBurn", "severity": "ticket", "slo": "a"}
        predicted = {"alertname": "SliBreachPredicted", "severity": "ticket", "slo": "a"}
        assert _inhibits(rules, page, ticket)
        assert not _inhibits(rules, page, {**ticket, "slo": "b"})
        assert not _inhibits(rules, page, predicted)
