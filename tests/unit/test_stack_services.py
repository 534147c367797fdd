"""`scripts/stack.py service`: the table of suite processes, MODULE:SUBCOMMAND names, their
ports (env-overridable, the scraped ones in prometheus.yml) and the log-line readiness of the
trainer, which has no port (issue 17: `make demo` starts the autoencoder's processes)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.scriptutil import load_script

stack = load_script("stack")
REPO = Path(__file__).resolve().parents[2]

EXECUTOR = "anomaly_detection.outliers:serve"
TRAINER = "anomaly_detection.outliers:trainer"
SCHEDULE = "anomaly_detection.outliers:schedule"


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    monkeypatch.setenv("STACK_DIR", str(tmp_path))
    monkeypatch.delenv("STACK_COMPONENTS", raising=False)
    for var in ("STACK_OUTLIERS_PORT", "STACK_OUTLIERS_SCHEDULE_PORT"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return stack.load_config()


@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("etl_data_pipeline", ("etl_data_pipeline",)),
        ("anomaly_detection.batch", ("anomaly_detection.batch",)),
        (TRAINER, ("anomaly_detection.outliers", "trainer")),
        (SCHEDULE, ("anomaly_detection.outliers", "schedule")),
    ],
)
def test_a_name_is_a_module_and_an_optional_subcommand(name: str, argv: tuple[str, ...]) -> None:
    assert stack.parse_service_name(name) == argv


@pytest.mark.parametrize(
    "name", ["", ":trainer", "anomaly_detection.outliers:", "a..b", "a:b:c", "a:--help", "1a"]
)
def test_a_malformed_name_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="service"):
        stack.parse_service_name(name)


def test_the_outliers_processes_default_ports_and_readiness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path, monkeypatch)
    procs = stack.suite_processes({**cfg.other_ports, **cfg.suite_ports})
    executor, trainer, schedule = procs[EXECUTOR], procs[TRAINER], procs[SCHEDULE]
    assert (executor.argv, executor.port, executor.ready_path) == (
        ("anomaly_detection.outliers", "serve"),
        8006,
        "/healthz",
    )
    assert (schedule.port, schedule.ready_path) == (8008, "/metrics")
    assert (trainer.port, trainer.ready_log) == (None, stack.TRAINER_READY_LOG)
    # The Spark batch schedule keeps 8007; no two processes share a port.
    assert procs["anomaly_detection.batch"].port == 8007
    ports = [p.port for p in procs.values() if p.port is not None]
    assert len(ports) == len(set(ports))
    # `down` stops each of them before the stack.
    assert {EXECUTOR, TRAINER, SCHEDULE} <= stack.suite_process_names()


def test_ports_are_env_overridable_and_only_metrics_ports_are_scraped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(
        tmp_path,
        monkeypatch,
        STACK_OUTLIERS_PORT="18006",
        STACK_OUTLIERS_SCHEDULE_PORT="18008",
    )
    facts = stack.write_facts(cfg, {}, None)
    assert facts["env"]["OUTLIERS_PORT"] == "18006"
    assert facts["env"]["OUTLIERS_SCHEDULE_PORT"] == "18008"
    procs = stack.facts_processes(facts)
    assert (procs[EXECUTOR].port, procs[SCHEDULE].port) == (18006, 18008)

    prom = yaml.safe_load(stack.prometheus_yml(cfg))
    suite = next(j for j in prom["scrape_configs"] if j["job_name"] == "sla-monitor")
    scraped = {c["labels"]["service"]: c["targets"] for c in suite["static_configs"]}
    assert scraped[SCHEDULE] == ["127.0.0.1:18008"]
    # The executor serves no /metrics: Prometheus would only see a target down.
    assert EXECUTOR not in scraped
    assert all("18006" not in t for targets in scraped.values() for t in targets)


def test_an_older_stack_json_without_other_ports_still_lists_the_scraped_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path, monkeypatch)
    facts = stack.write_facts(cfg, {}, None)
    del facts["other_ports"]
    procs = stack.facts_processes(facts)
    assert EXECUTOR not in procs
    assert procs[SCHEDULE].port == 8008


def test_service_refuses_an_unknown_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(tmp_path, monkeypatch)
    stack.write_facts(cfg, {}, None)
    with pytest.raises(stack.StackError, match=r"unknown service 'anomaly_detection\.outliers:x'"):
        stack.cmd_service(cfg, ["anomaly_detection.outliers:x"])


def test_the_trainer_is_ready_once_its_log_says_so_after_its_start(tmp_path: Path) -> None:
    spec = stack.SuiteProcess(TRAINER, ("m", "trainer"), None, None, stack.TRAINER_READY_LOG)
    log = tmp_path / "trainer.log"
    assert not stack._service_ready(spec, log, 0)  # no log yet
    log.write_text(f"an earlier run: {stack.TRAINER_READY_LOG} consuming outlier.jobs\n")
    offset = log.stat().st_size
    assert not stack._service_ready(spec, log, offset)  # an earlier run's line does not count
    with log.open("a") as f:
        f.write("starting\n")
    assert not stack._service_ready(spec, log, offset)
    with log.open("a") as f:
        f.write(f"INFO {stack.TRAINER_READY_LOG} consuming outlier.jobs as group g\n")
    assert stack._service_ready(spec, log, offset)


def test_the_trainer_logs_the_line_stack_waits_for() -> None:
    source = (REPO / "anomaly_detection/outliers/trainer.py").read_text()
    assert f'"{stack.TRAINER_READY_LOG} consuming' in source


# The settings class each suite process reads its HTTP_PORT from. The autoencoder's
# schedule shares the executor's class (the stack gives it its own port in its environment).
SETTINGS_OF = {
    "sla_manager": "sla_manager.settings:SlaSettings",
    "etl_data_pipeline": "etl_data_pipeline.settings:EtlSettings",
    "data_storage": "data_storage.settings:StorageSettings",
    "data_retrieval": "data_retrieval.settings:RetrievalSettings",
    "anomaly_detection.receiver": "anomaly_detection.receiver.settings:ReceiverSettings",
    "anomaly_detection": "anomaly_detection.settings:DetectorSettings",
    "anomaly_detection.batch": "anomaly_detection.batch.settings:BatchSettings",
    EXECUTOR: "anomaly_detection.outliers.settings:OutlierSettings",
}


def test_each_service_defaults_to_the_port_the_stack_gives_it() -> None:
    # So that two services started by hand without HTTP_PORT never clash (the batch
    # schedule defaulted to the executor's 8006).
    stack_ports = {name: port for name, _var, port in stack.SUITE_PORTS + stack.UNSCRAPED_PORTS}
    defaults = {}
    for name, where in SETTINGS_OF.items():
        module, cls = where.split(":")
        defaults[name] = (
            getattr(importlib.import_module(module), cls).model_fields["http_port"].default
        )
    assert defaults == {name: stack_ports[name] for name in SETTINGS_OF}
    assert defaults["anomaly_detection.batch"] == 8007


def test_a_subcommands_log_is_named_without_a_colon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _config(tmp_path, monkeypatch)
    assert cfg.log(TRAINER) == tmp_path / "logs" / "anomaly_detection.outliers-trainer.log"
    assert cfg.log("etl_data_pipeline").name == "etl_data_pipeline.log"
    names = [n for n, _v, _p in stack.SUITE_PORTS + stack.UNSCRAPED_PORTS] + [TRAINER]
    logs = {cfg.log(n).name for n in names}
    assert len(logs) == len(names) and not any(":" in n for n in logs)
