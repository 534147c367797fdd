"""The generated rules under Prometheus' own tools: ``promtool check rules`` on every
generated file, ``promtool test rules`` scenarios (input series, alerts expected at given
times). Needs only the promtool binary (Debian's prometheus 2.42 package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sla_manager.models import Sli
from sla_manager.slo import rules, yamltext
from sla_manager.slo.model import RatioSli, SloSpec
from sla_manager.slo.rules import RuleConfig, SloDefinition

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian: prometheus) missing")

GOLDEN = Path(__file__).parent / "golden"
BURNING = 'count by (severity) (ALERTS{alertname="SloErrorBudgetBurn",alertstate="firing"})'
HISTORY_MIN = 7 * 60  # good history before each incident: more than the 6 h window


def _sli() -> Sli:
    # The device filter matters: /dev/sdb is always outside the range and must not count.
    return Sli(
        name="fd-allocated",
        selector='node_filefd_allocated{job="demo"}',
        min=None,
        max=5000.0,
        description="",
        labels={"device": "/dev/sda1"},
        created_at=0,
        updated_at=0,
    )


def _definitions() -> list[SloDefinition]:
    ratio = RatioSli(
        errors='sum(rate(http_requests_total{job="api",code=~"5.."}[{{.window}}]))',
        total='sum(rate(http_requests_total{job="api"}[{{.window}}]))',
    )
    return [
        SloDefinition("fd-budget", SloSpec(sli="fd-allocated", objective=99.5), _sli()),
        SloDefinition("api", SloSpec(ratio=ratio, objective=99.9, period="30d")),
    ]


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _series(name: str, values: list[float]) -> dict[str, str]:
    return {"series": name, "values": " ".join(f"{v:g}" for v in values)}


def _counter(per_minute: list[float]) -> list[float]:
    out, total = [], 0.0
    for inc in per_minute:
        out.append(total)
        total += inc
    return out


def _burning(at: str, *severities: str, slo: str) -> dict[str, Any]:
    return {
        "expr": BURNING.replace('alertstate="firing"', f'alertstate="firing",slo="{slo}"'),
        "eval_time": at,
        "exp_samples": [{"labels": f'{{severity="{s}"}}', "value": 1} for s in severities],
    }


def _never_paged(until: str, slo: str) -> dict[str, Any]:
    return {
        "expr": f'max_over_time(ALERTS{{alertname="SloErrorBudgetBurn",severity="page",'
        f'slo="{slo}"}}[{until}])',
        "eval_time": until,
        "exp_samples": [],
    }


def _page_only(at: str, slo: str, paged: bool) -> dict[str, Any]:
    expr = BURNING.replace(
        'alertstate="firing"', f'alertstate="firing",severity="page",slo="{slo}"'
    )
    samples = [{"labels": '{severity="page"}', "value": 1}] if paged else []
    return {"expr": expr, "eval_time": at, "exp_samples": samples}


def scenarios() -> dict[str, dict[str, Any]]:
    """name → one promtool test group."""
    h = HISTORY_MIN
    fd = 'node_filefd_allocated{job="demo",device="/dev/sda1"}'
    other = 'node_filefd_allocated{job="demo",device="/dev/sdb"}'
    api_ok = 'http_requests_total{job="api",code="200"}'
    api_err = 'http_requests_total{job="api",code="500"}'
    slow = [9000.0 if i % 40 == 39 else 100.0 for i in range(8 * 60)]
    return {
        # 99.5 %: page at 14.4 × 0.005 = 7.2 % bad over 1 h (61 evaluations: the 5th bad one,
        # 5/61 = 8.2 %, 4/61 = 6.6 %) and over 5 m.
        "threshold_fast_burn_pages_at_4m": {
            "interval": "1m",
            "input_series": [
                _series(fd, [100.0] * h + [9000.0] * 30),
                _series(other, [9000.0] * (h + 30)),
            ],
            "promql_expr_test": [
                _page_only("7h3m", "fd-budget", paged=False),
                _page_only("7h4m", "fd-budget", paged=True),
                _page_only("7h20m", "fd-budget", paged=True),
            ],
        },
        # 1 evaluation in 40 outside (2.5 %): 3× (1.5 %) over 1 d and 2 h, never 6× (3 %)
        # over 6 h nor 14.4× over 1 h.
        "threshold_slow_burn_tickets_not_pages": {
            "interval": "1m",
            "input_series": [_series(fd, slow), _series(other, [9000.0] * len(slow))],
            "promql_expr_test": [
                _burning("38m", slo="fd-budget"),
                _burning("39m", "ticket", slo="fd-budget"),
                _burning("7h59m", "ticket", slo="fd-budget"),
                _never_paged("7h59m", "fd-budget"),
            ],
        },
        # 10 req/s, then 2 errors/s on top from 7 h: the 1 h error ratio 120j / (36000 + 120j)
        # passes 14.4 × 0.1 % = 1.44 % at j = 5 minutes (1.64 %; 1.32 % at j = 4).
        "ratio_fast_burn_pages_at_5m": {
            "interval": "1m",
            "input_series": [
                _series(api_ok, _counter([600.0] * (h + 30))),
                _series(api_err, _counter([0.0] * h + [120.0] * 30)),
            ],
            "promql_expr_test": [
                _page_only("7h4m", "api", paged=False),
                _page_only("7h5m", "api", paged=True),
            ],
        },
        # No traffic, then three requests, all failing: a 100 % error ratio over 5 m and 1 h,
        # but 3 events < SLO_MIN_EVENTS: no page.
        "ratio_low_traffic_blip_does_not_page": {
            "interval": "1m",
            "input_series": [
                _series(api_ok, [0.0] * (h + 60)),
                _series(api_err, _counter([0.0] * h + [1.0] * 3 + [0.0] * 57)),
            ],
            "promql_expr_test": [
                _page_only("7h4m", "api", paged=False),
                _never_paged("7h59m", "api"),
            ],
        },
        # The forecast's breach probability: 0.1, then 0.9 from 10 m; pending for 5 m.
        "predicted_breach_fires_after_its_for": {
            "interval": "1m",
            "input_series": [
                _series(
                    'sla_sli_breach_probability{job="sla-manager",sli="fd-allocated"}',
                    [0.1] * 10 + [0.9] * 20,
                ),
                _series(fd, [100.0] * 30),
            ],
            "alert_rule_test": [
                {"eval_time": "14m", "alertname": rules.BREACH_ALERT, "exp_alerts": []},
                {
                    "eval_time": "15m",
                    "alertname": rules.BREACH_ALERT,
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "ticket",
                                "slo": "fd-budget",
                                "sli": "fd-allocated",
                            },
                            "exp_annotations": {
                                "summary": "SLI fd-allocated is forecast to leave its range "
                                "(probability 90%)",
                                "description": _breach_description(),
                            },
                        }
                    ],
                },
            ],
        },
    }


def _breach_description() -> str:
    return (
        "The stored forecast gives SLI fd-allocated a breach probability above 0.5 for 5m; "
        "it has not necessarily left its range yet. It feeds SLO fd-budget. Look at GET "
        "/slis/fd-allocated/forecast-violations for when and by how much, and at GET "
        "/slis/fd-allocated/status for now. SLI: threshold SLI fd-allocated: "
        'node_filefd_allocated{job="demo"} in [-inf, 5000].'
    )


def _write(tmp_path: Path, config: RuleConfig, names: list[str]) -> Path:
    (tmp_path / "slo.rules.yml").write_text(rules.rule_set(_definitions(), config).yaml())
    all_scenarios = scenarios()
    doc: dict[str, Any] = {
        "rule_files": ["slo.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [all_scenarios[n] for n in names],
    }
    path = tmp_path / "slo.test.yml"
    path.write_text(yamltext.dump(doc))
    return path


@pytest.mark.parametrize("golden", sorted(p.name for p in GOLDEN.glob("*.rules.yml")))
def test_golden_files_pass_promtool_check(golden: str) -> None:
    result = _promtool("check", "rules", golden, cwd=GOLDEN)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_generated_file_passes_promtool_check(tmp_path: Path) -> None:
    (tmp_path / "r.yml").write_text(rules.rule_set(_definitions(), RuleConfig()).yaml())
    result = _promtool("check", "rules", "r.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("name", sorted(scenarios()))
def test_promtool_scenario(tmp_path: Path, name: str) -> None:
    _write(tmp_path, RuleConfig(), [name])
    result = _promtool("test", "rules", "slo.test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_the_low_traffic_guard_the_blip_pages(tmp_path: Path) -> None:
    """The guard is what keeps the blip quiet: with SLO_MIN_EVENTS=1 the scenario fails."""
    _write(tmp_path, RuleConfig(min_events=1), ["ratio_low_traffic_blip_does_not_page"])
    result = _promtool("test", "rules", "slo.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert 'severity="page"' in result.stdout + result.stderr
