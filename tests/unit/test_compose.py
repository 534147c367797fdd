"""docker-compose.yml and the Dockerfile, validated offline (no Docker engine runs here).

`docker-compose config -q` (Debian's compose v1, installed by scripts/bootstrap) checks the
file; the rest checks it against this project: every service command is a real entry point
and every variable it sets is a setting that service reads.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[2]
# scripts/bootstrap installs it; a missing binary is a failure here, not a skip.
COMPOSE = shutil.which("docker-compose")

# Read by the official images or by compose itself, not by our settings classes.
NOT_OURS = {"TZ"}


def _env_file(tmp_path: Path, **values: str) -> Path:
    text = (REPO / ".env.example").read_text()
    for key, value in values.items():
        text = text.replace(f"{key}=\n", f"{key}={value}\n")
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def _compose(tmp_path: Path, env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None, "docker-compose missing: run scripts/bootstrap"
    return subprocess.run(
        [
            COMPOSE,
            "--project-directory",
            str(REPO),
            "-f",
            str(REPO / "docker-compose.yml"),
            "--env-file",
            str(env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    env = _env_file(
        tmp_path,
        MYSQL_ROOT_PASSWORD="r00t",
        MYSQL_PASSWORD="pw",
        SLA_API_TOKEN="tok",
        GRPC_API_TOKEN="gtok",
        ALERT_WEBHOOK_URL="http://hooks.example/alerts",
    )
    check = _compose(tmp_path, env, "config", "-q")
    assert check.returncode == 0, check.stderr
    full = _compose(tmp_path, env, "--profile", "client", "config")
    assert full.returncode == 0, full.stderr
    doc: dict[str, Any] = yaml.safe_load(full.stdout)
    return doc


def test_secrets_have_no_default(tmp_path: Path) -> None:
    for missing in ("MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD", "SLA_API_TOKEN", "GRPC_API_TOKEN"):
        values = {
            "MYSQL_ROOT_PASSWORD": "r",
            "MYSQL_PASSWORD": "p",
            "SLA_API_TOKEN": "t",
            "GRPC_API_TOKEN": "g",
            "ALERT_WEBHOOK_URL": "http://hooks.example/alerts",
        }
        del values[missing]
        proc = _compose(tmp_path, _env_file(tmp_path, **values), "config", "-q")
        assert proc.returncode != 0
        assert f"set {missing} in .env" in proc.stderr


def _settings_classes(module: str) -> list[type[BaseSettings]]:
    """The settings classes a service entry point reads: those of its package's modules."""
    package = module.split(".", maxsplit=1)[0]
    found: list[type[BaseSettings]] = []
    for name in dict.fromkeys((f"{package}.settings", module, f"{module}.settings")):
        try:
            if importlib.util.find_spec(name) is None:
                continue
        except ModuleNotFoundError:  # "module.settings" where module is not a package
            continue
        mod = importlib.import_module(name)
        found += [
            obj
            for _n, obj in inspect.getmembers(mod, inspect.isclass)
            if issubclass(obj, BaseSettings) and obj.__module__ == mod.__name__
        ]
    return found


def _runnable(module: str) -> bool:
    """``python -m module`` works: a module, or a package with a __main__."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return False
    if spec is None:
        return False
    if spec.submodule_search_locations is None:
        return True
    return importlib.util.find_spec(f"{module}.__main__") is not None


def test_every_service_runs_a_real_entry_point_with_settings_it_reads(
    config: dict[str, Any],
) -> None:
    ours = {n: s for n, s in config["services"].items() if s.get("image") == "sla-monitor:latest"}
    assert {"etl", "storage", "retrieval", "sla-manager", "client", "migrate"} <= set(ours)
    for name, svc in ours.items():
        command = svc["command"]
        assert command[:2] == ["python", "-m"], (name, command)
        module = command[2]
        assert _runnable(module), f"{name}: {module} is not an entry point of this project"
        classes = _settings_classes(module)
        assert classes, f"{name}: no settings class found for {module}"
        readable = {f.upper() for cls in classes for f in cls.model_fields}
        unknown = set(svc.get("environment", {})) - readable - NOT_OURS
        assert not unknown, f"{name} sets {sorted(unknown)}, which {module} does not read"


def test_dependencies_wait_for_health_and_data_is_on_named_volumes(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in ("etl", "storage", "retrieval", "sla-manager"):
        deps = dict(services[name]["depends_on"])
        # The schema's one owner ran to completion first; the services only check it.
        assert deps.pop("migrate")["condition"] == "service_completed_successfully", name
        assert all(d["condition"] == "service_healthy" for d in deps.values()), name
        assert "healthcheck" in services[name], name
    for infra in ("prometheus", "kafka", "mysql"):
        assert "healthcheck" in services[infra], infra
    assert {"prometheus-data", "kafka-data", "mysql-data"} <= set(config["volumes"])
    # The detector needs Kafka only; its checkpointed state survives a new container.
    detector = services["detector"]
    assert detector["command"] == ["python", "-m", "anomaly_detection"]
    assert dict(detector["depends_on"]) == {"kafka": {"condition": "service_healthy"}}
    state = detector["environment"]["ANOMALY_STATE_DIR"]
    mounts = dict(reversed(v.split(":")[:2]) for v in detector["volumes"])  # source:target
    assert mounts[state] == "anomaly-state" and "anomaly-state" in config["volumes"]
    assert services["client"]["profiles"] == ["client"]


def test_one_migrate_service_owns_the_schema_on_the_tested_database(
    config: dict[str, Any],
) -> None:
    services = config["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["python", "-m", "sla_common.migrate"]
    assert migrate["depends_on"]["mysql"]["condition"] == "service_healthy"
    assert migrate.get("restart", "no") == "no"  # one-shot: it exits 0 and stays down
    # The database the tests run against (scripts/up starts MariaDB 10.11), and no init
    # script: the migrate service is the only thing that creates tables.
    assert services["mysql"]["image"] == "mariadb:10.11"
    volumes = [str(v) for v in services["mysql"]["volumes"]]
    assert not [v for v in volumes if "docker-entrypoint-initdb.d" in v]
    env = services["mysql"]["environment"]
    assert {"MARIADB_ROOT_PASSWORD", "MARIADB_USER", "MARIADB_PASSWORD", "MARIADB_DATABASE"} <= set(
        env
    )
    # The migrations ship in the package (so in the wheel and the image), not in db/.
    assert (REPO / "sla_common" / "migrations" / "0001_initial.sql").is_file()
    assert "COPY sla_common ./sla_common" in (REPO / "Dockerfile").read_text()


def test_dockerfile_is_slim_non_root_and_locked() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "uv sync --frozen --no-dev" in text
    users = [line for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(maxsplit=1)[1] not in {"root", "0"}


# What may be published to every interface: the REST API and the gRPC API (issue 11.11).
# Anything else (Prometheus, Kafka, MySQL, node-exporter, the services' /metrics) is not
# published, or only on the host's loopback.
PUBLIC_APIS = {"sla-manager": "HTTP_PORT", "retrieval": "GRPC_PORT"}
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (what compose binds a port without an address to)


def _published(port: str | int | dict[str, Any]) -> tuple[str, int]:
    """(host address, container port) of one `ports:` entry, short or long syntax."""
    if isinstance(port, dict):
        return str(port.get("host_ip") or ALL_INTERFACES), int(str(port["target"]).split("/")[0])
    parts = str(port).split("/")[0].rsplit(":", 2)
    host = parts[0] if len(parts) == 3 else ALL_INTERFACES
    return host.strip("[]"), int(parts[-1].split("-")[0])


def test_published_port_parser() -> None:
    assert _published("127.0.0.1:9090:9090/tcp") == ("127.0.0.1", 9090)
    assert _published("9090:9090") == (ALL_INTERFACES, 9090)
    assert _published("9090") == (ALL_INTERFACES, 9090)  # a random host port, on all interfaces
    assert _published({"published": 8000, "target": 8000}) == (ALL_INTERFACES, 8000)
    assert _published({"host_ip": "127.0.0.1", "target": 1}) == ("127.0.0.1", 1)


def test_only_the_apis_are_published_to_all_interfaces(config: dict[str, Any]) -> None:
    exposed = []
    for name, svc in config["services"].items():
        assert svc.get("network_mode") != "host", f"{name} shares the host's network"
        api_var = PUBLIC_APIS.get(name)
        api_port = int(svc["environment"][api_var]) if api_var else None
        for entry in svc.get("ports", []):
            host, target = _published(entry)
            if host not in LOOPBACK and target != api_port:
                exposed.append(f"{name}: {entry}")
    assert not exposed, f"published to every interface: {exposed}"
    published = {n for n, s in config["services"].items() if s.get("ports")}
    assert set(PUBLIC_APIS) <= published


def test_prometheus_with_lifecycle_is_not_reachable_from_outside(config: dict[str, Any]) -> None:
    prometheus = config["services"]["prometheus"]
    if "--web.enable-lifecycle" in prometheus["command"]:  # POST /-/quit, /-/reload
        hosts = {_published(p)[0] for p in prometheus.get("ports", [])}
        assert hosts <= LOOPBACK, f"Prometheus (lifecycle API on) is published on {hosts}"


def test_alerts_reach_the_users_webhook_and_rules_reach_prometheus(
    tmp_path: Path, config: dict[str, Any]
) -> None:
    """Alertmanager (the official image) routes to ALERT_WEBHOOK_URL, which has no default;
    Prometheus loads the rules the SLA manager writes, from a volume they share."""
    services = config["services"]
    am = services["alertmanager"]
    assert am["image"].startswith("prom/alertmanager:")
    assert 'url: "http://hooks.example/alerts"' in am["command"][0]
    assert "--cluster.listen-address=" in am["command"][0]
    assert "healthcheck" in am
    rules_file = services["sla-manager"]["environment"]["SLO_RULES_FILE"]
    [shared] = [str(v) for v in services["sla-manager"]["volumes"] if "slo-rules" in str(v)]
    assert rules_file.startswith(shared.split(":")[1] + "/")  # slo-rules:/var/lib/...:rw
    [prom_volume] = [str(v) for v in services["prometheus"]["volumes"] if "slo-rules" in str(v)]
    _name, prom_target, mode = prom_volume.split(":")
    assert mode == "ro"
    prom = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    assert prom["rule_files"] == [f"{prom_target}/*.yml"]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    values = {
        "MYSQL_ROOT_PASSWORD": "r",
        "MYSQL_PASSWORD": "p",
        "SLA_API_TOKEN": "t",
        "GRPC_API_TOKEN": "g",
    }
    proc = _compose(tmp_path, _env_file(tmp_path, **values), "config", "-q")
    assert proc.returncode != 0
    assert "set ALERT_WEBHOOK_URL in .env" in proc.stderr


def test_spark_cluster_and_batch_job_match_the_pyspark_pin(config: dict[str, Any]) -> None:
    """The master and the worker run the official image at the pyspark version of
    pyproject.toml (a driver and a cluster of different Spark versions do not talk); the
    job is a real entry point whose variables are settings it reads."""
    pin = next(
        line.split("==")[1].strip('",')
        for line in (REPO / "pyproject.toml").read_text().splitlines()
        if line.strip().startswith('"pyspark==')
    )
    services = config["services"]
    assert services["spark-master"]["image"] == f"apache/spark:{pin}"
    assert f"FROM apache/spark:{pin} AS spark-worker" in (REPO / "Dockerfile").read_text()
    assert services["spark-worker"]["build"]["target"] == "spark-worker"
    # The services' image leaves pyspark out (a default group, for development and CI).
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.count("uv sync --frozen --no-dev --no-group spark") == 2
    job = services["anomaly-batch"]
    assert job["build"]["target"] == "batch"
    assert job["command"] == ["python", "-m", "anomaly_detection.batch", "schedule"]
    readable = {
        f.upper() for cls in _settings_classes("anomaly_detection.batch") for f in cls.model_fields
    }
    assert not set(job["environment"]) - readable - NOT_OURS
    assert job["environment"]["SPARK_MASTER"] == "spark://spark-master:7077"
    assert dict(job["depends_on"])["migrate"]["condition"] == "service_completed_successfully"


def test_prometheus_scrapes_every_service_that_serves_metrics(config: dict[str, Any]) -> None:
    """Each of our services whose healthcheck reads its own /metrics is a scrape target of
    the compose Prometheus at that port (a gauge nobody scrapes cannot page anyone)."""
    prom = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    targets = {
        target
        for job in prom["scrape_configs"]
        for group in job.get("static_configs", [])
        for target in group["targets"]
    }
    served = {}
    for name, service in config["services"].items():
        check = " ".join(str(part) for part in service.get("healthcheck", {}).get("test", []))
        if "urllib" in check and "/metrics" in check:
            port = check.split("127.0.0.1:")[1].split("/")[0]
            served[name] = f"{name}:{port}"
    assert len(served) >= 7  # etl, storage, retrieval, receiver, detector, batch, schedule
    assert set(served.values()) <= targets, sorted(set(served.values()) - targets)
