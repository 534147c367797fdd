"""The READMEs' examples, run as written against the test stack, so they cannot drift.

Every fenced block whose info string carries ``readme-test`` (```` ```sh readme-test ````) in
README.md, sla_manager/README.md and data_retrieval/README.md is run line by line in one
bash (``\\``-continued lines joined; comments and blank lines skipped), in the repository, with
the stack's addresses put in: ``.stack/stack.env`` becomes an env file that sources the test
stack's stack.env and points at the services started here, and ``http://127.0.0.1:8000`` the
SLA manager started here. The data: the stack's Prometheus with the demo history, a
database holding the ETL's analyses of the demo series (written by data_storage's writer),
and the SLIs `make demo` creates (scripts/demo_report.py's own code).

Each command must exit 0; each HTTP answer must be 2xx and of the kind the README shows (a
JSON object or list, 204 empty for DELETE, Prometheus text for /metrics); each gRPC client
command must print what it was asked about (JSON with ``--json``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from sla_common import demo
from tests.integration.retrievalutil import ServerProcess, TempDatabase, demo_messages
from tests.integration.slautil import AppProcess, app_env
from tests.integration.stackutil import REPO, Stack

READMES = ("README.md", "sla_manager/README.md", "data_retrieval/README.md")
MARK = "readme-test"
FENCE = re.compile(r"^```(\w+) ([^\n]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
README_API = "http://127.0.0.1:8000"
HTTP_MARK = "@@HTTP "
# The demo series the client examples read, analysed by the ETL's own code.
STORED = (demo.FILEFD, demo.MEM_FREE, demo.FS_AVAIL, demo.MEM_AVAIL)
COMMAND_TIMEOUT_S = 120


@dataclass(frozen=True)
class Command:
    readme: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.readme}:{self.line}: {self.text}"


def readme_blocks(path: Path) -> list[list[Command]]:
    """The marked blocks of one README, each a list of its commands."""
    text = path.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        if MARK not in m.group(2).split():
            continue
        first_line = text.count("\n", 0, m.start(3)) + 1
        commands: list[Command] = []
        pending: list[str] = []
        start = first_line
        for i, raw in enumerate(m.group(3).splitlines()):
            if not pending:
                start = first_line + i
                if not raw.strip() or raw.lstrip().startswith("#"):
                    continue
            pending.append(raw)  # bash joins a continued line itself
            if not raw.endswith("\\"):
                commands.append(Command(str(path.relative_to(REPO)), start, "\n".join(pending)))
                pending = []
        assert not pending, f"{path}: a block ends in a continued line"
        blocks.append(commands)
    return blocks


def all_blocks() -> list[list[Command]]:
    return [b for name in READMES for b in readme_blocks(REPO / name)]


def test_the_readmes_mark_their_examples() -> None:
    """Each README keeps marked blocks: a block that lost its mark would go untested."""
    counts = {name: len(readme_blocks(REPO / name)) for name in READMES}
    assert counts == {"README.md": 3, "sla_manager/README.md": 1, "data_retrieval/README.md": 1}
    text = " ".join(c.text for b in all_blocks() for c in b)
    assert "curl" in text and "data_retrieval.client" in text and "--end" in text


# --------------------------------------------------------------------------- the services


def demo_report() -> ModuleType:
    """scripts/demo_report.py, which `make demo` runs (a script, not a package module)."""
    spec = importlib.util.spec_from_file_location("demo_report", REPO / "scripts/demo_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def database(stack: Stack) -> Iterator[TempDatabase]:
    assert stack.demo_seed is not None and stack.demo_end is not None
    with TempDatabase(stack.mysql_settings(), prefix="sla_readme") as db:
        db.store(
            demo_messages(
                seed=stack.demo_seed,
                end=stack.demo_end,
                runs=[0],
                window_s=3 * 3600,
                names=STORED,
            )
        )
        yield db


@dataclass(frozen=True)
class Services:
    env_file: Path  # what `.stack/stack.env` is for the examples
    api: str  # what `http://127.0.0.1:8000` is


@pytest.fixture(scope="module")
def services(
    stack: Stack, database: TempDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    """What ``.stack/stack.env`` is for the examples: the test stack's, pointed at the
    services started here."""
    tmp = tmp_path_factory.mktemp("readme")
    sla_token = f"readme-sla-{uuid.uuid4().hex}"
    grpc_token = f"readme-grpc-{uuid.uuid4().hex}"
    app = AppProcess(
        app_env(
            stack.service_env(),
            MYSQL_DATABASE=database.name,
            SLA_API_TOKEN=sla_token,
            ENVIRONMENT="test",
        ),
        tmp / "sla.log",
    )
    try:
        app.wait_ready()
        # The SLIs `make demo` creates, so that an example colliding with them fails here too.
        created = demo_report().put_slis(app.base_url, sla_token, stack.prometheus_url)
        assert {s["name"] for s in created} >= {"fd-allocated", "memory-available"}
        with ServerProcess(database.settings, GRPC_API_TOKEN=grpc_token) as retrieval:
            exports = {
                "SLA_API_TOKEN": sla_token,
                "GRPC_TARGET": retrieval.target,
                "GRPC_API_TOKEN": grpc_token,
                "MYSQL_DATABASE": database.name,
                # The ETL examples: one demo selector, a topic of their own.
                "ETL_SELECTORS": 'node_filefd_allocated{job="host"}',
                "KAFKA_TOPIC": f"readme-{uuid.uuid4().hex[:8]}",
                "KAFKA_DLQ_TOPIC": f"readme-{uuid.uuid4().hex[:8]}.dlq",
                "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            }
            path = tmp / "stack.env"
            path.write_text(
                f"source {shlex.quote(str(stack.state_dir / 'stack.env'))}\n"
                + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items())
            )
            yield Services(path, app.base_url)
    finally:
        app.stop()


# --------------------------------------------------------------------------- running them


@dataclass(frozen=True)
class Outcome:
    command: Command
    code: int
    stdout: str
    stderr: str


def run_block(block: list[Command], services: Services, out_dir: Path) -> list[Outcome]:
    """One bash for the block (so `source` and variables carry over), one output file per
    command; curl reports each answer's status after its body."""
    lines = [
        f"cd {shlex.quote(str(REPO))}",
        f"curl() {{ command curl -w '\\n{HTTP_MARK}%{{http_code}}\\n' \"$@\"; }}",
    ]
    for i, cmd in enumerate(block):
        text = cmd.text.replace(".stack/stack.env", shlex.quote(str(services.env_file)))
        text = text.replace(README_API, services.api)
        out = shlex.quote(str(out_dir / f"{i}"))
        # The interactive menu reads a q (quit) from its stdin.
        lines.append(f"{{\n{text}\n}} >{out}.out 2>{out}.err <<<q; echo $? >{out}.rc")
    script = out_dir / "block.sh"
    script.write_text("\n".join(lines) + "\n")
    subprocess.run(
        ["bash", str(script)],
        timeout=COMMAND_TIMEOUT_S * len(block),
        check=False,
        stdin=subprocess.DEVNULL,
    )
    outcomes = []
    for i, cmd in enumerate(block):
        base = out_dir / f"{i}"
        assert base.with_suffix(".rc").exists(), f"never ran: {cmd}"
        outcomes.append(
            Outcome(
                cmd,
                int(base.with_suffix(".rc").read_text()),
                base.with_suffix(".out").read_text(errors="replace"),
                base.with_suffix(".err").read_text(errors="replace"),
            )
        )
    return outcomes


def check_http(outcome: Outcome) -> int:
    """Each curl answer in the output: 2xx and the kind of body the README shows; how many."""
    parts = re.split(rf"\n?{re.escape(HTTP_MARK)}(\d{{3}})\n", outcome.stdout)
    bodies, codes = parts[0:-1:2], [int(c) for c in parts[1::2]]
    assert codes, f"{outcome.command}: no HTTP answer\n{outcome.stderr}"
    for body, code in zip(bodies, codes, strict=True):
        assert 200 <= code < 300, f"{outcome.command}: HTTP {code}\n{body[:2000]}"
        if code == 204:
            assert body.strip() == "", outcome.command
        elif "/metrics" in outcome.command.text and body.startswith("#"):
            assert "sla_manager_http_requests_total" in body, outcome.command
        else:
            doc = json.loads(body)
            assert isinstance(doc, dict | list), f"{outcome.command}: {body[:500]}"
            if isinstance(doc, dict) and "/slis/" in outcome.command.text:
                assert "detail" not in doc, f"{outcome.command}: {body[:500]}"
    return len(codes)


def check_client(outcome: Outcome) -> None:
    argv = shlex.split(outcome.command.text, comments=True)
    assert outcome.stdout.strip(), f"{outcome.command}: printed nothing\n{outcome.stderr}"
    if "--json" in argv:
        json.loads(outcome.stdout)
    for flag in ("--metric", "--key"):
        if flag in argv:
            wanted = argv[argv.index(flag) + 1]
            wanted = wanted.split("{")[0]  # the metric name of a series key
            assert wanted in outcome.stdout, f"{outcome.command}: no {wanted} in\n{outcome.stdout}"


@pytest.mark.parametrize(
    "index", range(len(all_blocks())), ids=lambda i: f"{all_blocks()[i][0].readme}-{i}"
)
def test_readme_examples_run_as_written(index: int, services: Services, tmp_path: Path) -> None:
    block = all_blocks()[index]
    answers = 0
    for outcome in run_block(block, services, tmp_path):
        detail = (
            f"{outcome.command}\nexit {outcome.code}\n"
            f"{outcome.stdout[-3000:]}\n{outcome.stderr[-3000:]}"
        )
        assert outcome.code == 0, detail
        if re.search(r"\bcurl\s", outcome.command.text):
            answers += check_http(outcome)
        elif "data_retrieval.client" in outcome.command.text:
            check_client(outcome)
        elif "etl_data_pipeline --once" in outcome.command.text:
            # A cycle that publishes nothing exits 3; this one publishes the demo's series.
            assert re.search(r"ok: window end \d+, [1-9]\d* series published", detail), detail
    assert answers or not any("curl" in c.text for c in block)


# --------------------------------------------------------------------------- printed links

# The Prometheus pages the scripts print for people (not the API calls they make).
PRINTED_LINK = re.compile(
    r"\{(?:cfg\.prometheus_url|prom|url)\}(/(?:classic/)?(?:targets|graph)\b)"
)


@pytest.mark.parametrize("script", ["scripts/stack.py", "scripts/demo_report.py"])
def test_the_prometheus_pages_the_demo_links_exist(stack: Stack, script: str) -> None:
    """Debian's Prometheus 2.42 serves only the classic UI (/classic/...): /targets is the
    React UI's, which Debian does not package (404), and /graph only redirects."""
    paths = set(PRINTED_LINK.findall((REPO / script).read_text()))
    assert "/classic/targets" in paths
    for path in sorted(paths):
        r = httpx.get(f"{stack.prometheus_url}{path}", timeout=10)
        assert r.status_code == 200, (path, r.status_code)
        assert "<html" in r.text.lower(), path


def test_no_file_cites_a_design_document_the_repository_lacks() -> None:
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30
        )
        .stdout.decode()
        .split("\0")
    )
    if (REPO / "DESIGN.md").exists():
        return
    citing = [
        name
        for name in tracked
        if name.endswith((".py", ".md", ".toml", ".yml", ".yaml", ".sh", ".sql", "Makefile"))
        and name != "tests/integration/test_readme.py"
        and "DESIGN.md" in (REPO / name).read_text(errors="replace")
    ]
    assert citing == []
