"""The local stack's state files that hold the write token are private (issue 11.10).

``stack.env``, ``stack.json`` and ``sla_api_token`` are created 0600: with a umask that lets
everything through, over a world-readable file an older ``up`` left, and over a stale
temporary file. tests/integration/test_stack.py checks the files a real ``up`` wrote.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.scriptutil import load_script

PRIVATE_FILES = ("stack.env", "stack.json", "sla_api_token")


stack = load_script("stack")


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # whatever the file gets, it gets from its creation, not the umask
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_facts_and_token_are_written_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_umask: None
) -> None:
    monkeypatch.setenv("STACK_DIR", str(tmp_path))
    # What an older version left: world-readable files and a stale temporary one.
    for name in ("stack.env", "stack.json", "stack.env.tmp", "stack.json.tmp"):
        (tmp_path / name).write_text("old\n")
        (tmp_path / name).chmod(0o666)
    cfg = stack.load_config()
    facts = stack.write_facts(cfg, {}, None)
    token = facts["env"]["SLA_API_TOKEN"]
    assert len(token) >= 16
    for name in PRIVATE_FILES:
        path = tmp_path / name
        assert _mode(path) == 0o600, f"{name} is {oct(_mode(path))}"
    assert token in (tmp_path / "stack.env").read_text()
    assert token in (tmp_path / "stack.json").read_text()
    assert not list(tmp_path.glob("*.tmp"))
    # A second write keeps the token and the modes.
    assert stack.write_facts(cfg, {}, None)["env"]["SLA_API_TOKEN"] == token
    assert all(_mode(tmp_path / name) == 0o600 for name in PRIVATE_FILES)


def test_the_writer_refuses_to_follow_a_planted_link(tmp_path: Path, open_umask: None) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not yours\n")
    target = tmp_path / "stack.env"
    (tmp_path / "stack.env.tmp").symlink_to(elsewhere)
    stack._atomic_write(target, "export X=1\n")  # the link is removed, not written through
    assert elsewhere.read_text() == "not yours\n"
    assert target.read_text() == "export X=1\n" and _mode(target) == 0o600
