"""The local stack's Prometheus remote-writes the configured series to the receiver."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sla_common import demo
from tests.scriptutil import load_script

stack = load_script("stack")


def _config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> object:
    for name in ("STACK_REMOTE_WRITE_METRICS", "STACK_REMOTE_WRITE_JOB", "STACK_RECEIVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STACK_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return stack.load_config()


def test_default_remote_write_sends_the_demo_hosts_series_to_the_receiver_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = _config(monkeypatch, tmp_path, STACK_RECEIVER_PORT="18004")
    yml = stack.prometheus_yml(cfg)

    assert "  - url: http://127.0.0.1:18004/api/v1/write" in yml
    assert "        regex: 'host'" in yml
    assert f"        regex: '{'|'.join(stack.DEMO_METRICS)}'" in yml
    # the receiver's own /metrics is scraped like the other services'
    assert "service: anomaly_detection.receiver" in yml
    promtool = shutil.which("promtool")
    if promtool:
        (tmp_path / "p.yml").write_text(yml)
        check = subprocess.run(
            [promtool, "check", "config", str(tmp_path / "p.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert check.returncode == 0, check.stdout + check.stderr


def test_the_default_metrics_are_the_demo_hosts() -> None:
    assert set(stack.DEMO_METRICS) == {s.name for s in demo.generate(hours=0.1)}


def test_selectors_come_from_the_environment_and_empty_turns_remote_write_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chosen = _config(
        monkeypatch,
        tmp_path,
        STACK_REMOTE_WRITE_METRICS="up, node_load.*",
        STACK_REMOTE_WRITE_JOB="",
    )
    yml = stack.prometheus_yml(chosen)
    assert "        regex: 'up|node_load.*'" in yml and "        regex: '.*'" in yml

    off = _config(monkeypatch, tmp_path, STACK_REMOTE_WRITE_METRICS="")
    assert "remote_write" not in stack.prometheus_yml(off)


@pytest.mark.parametrize("bad", ["node_(", "a'b"])
def test_a_bad_selector_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bad: str
) -> None:
    with pytest.raises(stack.StackError, match="STACK_REMOTE_WRITE_METRICS"):
        _config(monkeypatch, tmp_path, STACK_REMOTE_WRITE_METRICS=bad)
