"""SLOs, pure parts: the model's rules, budget and burn-rate arithmetic against hand-computed
cases, rule generation (golden files), the YAML writer, Sloth import/export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from sla_manager.models import Sli
from sla_manager.slo import budget, rules, sloth, yamltext
from sla_manager.slo.model import RatioSli, SloCreate, SloSpec
from sla_manager.slo.rules import RuleConfig, SloDefinition

GOLDEN = Path(__file__).parent / "golden"
ERRORS = 'sum(rate(http_requests_total{job="api",code=~"5.."}[{{.window}}]))'
TOTAL = 'sum(rate(http_requests_total{job="api"}[{{.window}}]))'


def _error(**data: Any) -> str:
    with pytest.raises(ValidationError) as e:
        SloCreate(**data)
    return str(e.value)


def fd_sli(**kw: Any) -> Sli:
    base: dict[str, Any] = {
        "name": "fd-allocated",
        "selector": 'node_filefd_allocated{job="demo"}',
        "min": None,
        "max": 5000.0,
        "description": "",
        "labels": {},
        "created_at": 0,
        "updated_at": 0,
    }
    return Sli(**{**base, **kw})


def threshold_slo() -> SloDefinition:
    spec = SloSpec(sli="fd-allocated", objective=99.5, period="30d", labels={"team": "infra"})
    return SloDefinition("fd-budget", spec, fd_sli(min=10.0, labels={"device": "/dev/sda1"}))


def ratio_slo() -> SloDefinition:
    spec = SloSpec(ratio=RatioSli(errors=ERRORS, total=TOTAL), objective=99.9, period="28d")
    return SloDefinition("api-availability", spec)


# --------------------------------------------------------------------------- model


def test_a_slo_needs_exactly_one_sli() -> None:
    assert "exactly one of `sli`" in _error(name="x", objective=99.0)
    ratio = {"errors": ERRORS, "total": TOTAL}
    assert "exactly one of `sli`" in _error(name="x", sli="a", ratio=ratio, objective=99.0)
    assert SloCreate(name="x", sli="a", objective=99).kind == "threshold"
    assert SloCreate(name="x", ratio=ratio, objective=99.9).kind == "ratio"


def test_ratio_queries_need_the_window_placeholder() -> None:
    assert "{{.window}} placeholder" in _error(
        name="x", ratio={"errors": "sum(rate(e[5m]))", "total": TOTAL}, objective=99.0
    )
    assert "only {{.window}} may be templated" in _error(
        name="x", ratio={"errors": ERRORS + " * {{.x}}", "total": TOTAL}, objective=99.0
    )


@pytest.mark.parametrize("objective", [0, 100, 100.5, -1, float("nan")])
def test_objective_is_a_percentage_strictly_between_0_and_100(objective: float) -> None:
    assert "objective" in _error(name="x", sli="a", objective=objective)


@pytest.mark.parametrize("period", ["12h", "366d", "30x", ""])
def test_period_between_1d_and_365d(period: str) -> None:
    assert "period" in _error(name="x", sli="a", objective=99.0, period=period)


def test_labels_the_rules_set_are_reserved() -> None:
    for name in ("slo", "severity", "__name__"):
        assert "is set by the generated rules" in _error(
            name="x", sli="a", objective=99.0, labels={name: "v"}
        )


def test_error_budget_is_rounded() -> None:
    assert SloSpec(sli="a", objective=99.5).error_budget == 0.005
    assert SloSpec(sli="a", objective=99.9).error_budget == 0.001


# --------------------------------------------------------------------------- budget


def test_threshold_budget_hand_computed() -> None:
    # 99.5 % over 30 d: budget 0.005 = 12 960 s (3.6 h) outside; 0.2 % outside so far.
    f = budget.figures(
        99.5,
        30 * 86_400,
        0.002,
        {"5m": 0.0, "1h": 0.05, "6h": 0.01},
        "1h",
        threshold=True,
    )
    assert f.compliance == pytest.approx(99.8)
    assert f.meets_objective is True
    assert f.budget.total == 0.005
    assert f.budget.consumed == pytest.approx(0.4)
    assert f.budget.remaining == pytest.approx(0.6)
    assert f.budget.total_s == pytest.approx(12_960)
    assert f.budget.consumed_s == pytest.approx(5_184)
    assert f.budget.total_events is None
    assert f.burn_rates == pytest.approx({"5m": 0.0, "1h": 10.0, "6h": 2.0})
    # 60 % of the budget at 10× the sustainable rate: 0.6 × 30 d / 10 = 43.2 h.
    assert f.exhaustion_s == pytest.approx(155_520)


def test_ratio_budget_overspent_hand_computed() -> None:
    # 99.9 % over 28 d at 10 req/s: 24 192 000 requests, 24 192 may fail; 0.15 % did.
    f = budget.figures(
        99.9, 28 * 86_400, 0.0015, {"1h": 0.0}, "1h", threshold=False, period_total_rate=10.0
    )
    assert f.compliance == pytest.approx(99.85)
    assert f.meets_objective is False
    assert f.budget.consumed == pytest.approx(1.5)
    assert f.budget.remaining == pytest.approx(-0.5)
    assert f.budget.total_events == pytest.approx(24_192)
    assert f.budget.consumed_events == pytest.approx(36_288)
    assert f.budget.total_s is None
    assert f.exhaustion_s == 0.0  # already spent, whatever the current rate


def test_no_data_and_no_burn() -> None:
    f = budget.figures(99.0, 7 * 86_400, None, {"1h": float("nan")}, "1h", threshold=True)
    assert f.compliance is None and f.meets_objective is None
    assert f.budget.consumed is None and f.budget.consumed_s is None
    assert f.burn_rates == {"1h": None}
    assert f.exhaustion_s is None
    assert budget.time_to_exhaustion(0.5, 0.0, 86_400) is None  # not burning: never
    assert budget.time_to_exhaustion(1.0, 1.0, 86_400) == 86_400  # 1× lasts one period


# --------------------------------------------------------------------------- YAML writer


def test_generated_documents_read_back_identically() -> None:
    rs = rules.rule_set([threshold_slo(), ratio_slo()], RuleConfig())
    assert yaml.safe_load(rs.yaml()) == rs.document


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)
_LEAF = st.one_of(
    _TEXT,
    st.text(alphabet="ab :#{}\n-'\"|>&*!%@`", max_size=20),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
_TREE = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, min_size=1, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(_TEXT, _TREE, max_size=4))
def test_yaml_writer_round_trips_any_tree(doc: dict[str, Any]) -> None:
    text = yamltext.dump(doc)
    assert yaml.safe_load(text) == (doc or {}), text


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("definition", "golden"),
    [(threshold_slo, "slo_threshold.rules.yml"), (ratio_slo, "slo_ratio.rules.yml")],
)
def test_rules_match_the_golden_files(definition: Any, golden: str) -> None:
    """Set UPDATE_GOLDEN=1 to rewrite them after an intended change (and review the diff)."""
    text = rules.rule_set([definition()], RuleConfig()).yaml()
    path = GOLDEN / golden
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_threshold_good_evaluation_expression() -> None:
    expr = rules.good_expr(fd_sli(min=10.0, labels={"device": "/dev/sda$1"}))
    selected = (
        '(node_filefd_allocated{job="demo"}) and on(device) '
        'label_replace(vector(1), "device", "/dev/sda$$1", "", "")'
    )
    assert expr == f"min((({selected}) >= bool 10) * (({selected}) <= bool 5000))"
    assert rules.good_expr(fd_sli()) == 'min(((node_filefd_allocated{job="demo"}) <= bool 5000))'


def test_alerts_have_severity_and_slo_labels_and_actionable_annotations() -> None:
    doc = rules.rule_set([threshold_slo(), ratio_slo()], RuleConfig()).document
    alerts = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    burn = [a for a in alerts if a["alert"] == rules.BURN_ALERT]
    assert {(a["labels"]["slo"], a["labels"]["severity"]) for a in burn} == {
        ("fd-budget", "page"),
        ("fd-budget", "ticket"),
        ("api-availability", "page"),
        ("api-availability", "ticket"),
    }
    for a in burn:
        assert "GET /slos/" in a["annotations"]["description"]
    ratio_page = next(
        a for a in burn if a["labels"] == {"severity": "page", "slo": "api-availability"}
    )
    assert 'slo:sli_total:rate1h{slo="api-availability"} * 3600 >= 50' in ratio_page["expr"]
    # The ratio query's {{.window}} is printed by the template, not run.
    assert '{{ "{{" }}.window}}' in ratio_page["annotations"]["description"]
    breach = [a for a in alerts if a["alert"] == rules.BREACH_ALERT]
    assert len(breach) == 1 and breach[0]["labels"]["sli"] == "fd-allocated"
    assert breach[0]["expr"] == (
        'max by (sli) (sla_sli_breach_probability{sli="fd-allocated"}) > 0.5'
    )
    assert breach[0]["for"] == "5m"


def test_configurable_windows_and_guard() -> None:
    config = RuleConfig(windows=rules.parse_windows("page:10:2h:10m, ticket:2:2d:4h"), min_events=7)
    assert config.windows_for("7d") == [
        "5m",
        "10m",
        "30m",
        "1h",
        "2h",
        "4h",
        "6h",
        "1d",
        "2d",
        "3d",
        "7d",
    ]
    doc = rules.rule_set([ratio_slo()], config).document
    page = next(
        r
        for g in doc["groups"]
        for r in g["rules"]
        if r.get("labels", {}).get("severity") == "page"
    )
    assert "/ 0.001 > 10" in page["expr"] and "* 7200 >= 7" in page["expr"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("page:14.4:1h", "severity:factor:long:short"),
        ("Page:14.4:1h:5m", "lower-case word"),
        ("page:x:1h:5m", "not a number"),
        ("page:-1:1h:5m", "must be positive"),
        ("page:14.4:5m:1h", "shorter than the long one"),
        ("page:14.4:1y:5m", "not a duration"),
        (" , ", "at least one"),
    ],
)
def test_bad_windows_are_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rules.parse_windows(text)


def test_a_threshold_slo_without_its_sli_is_skipped_and_said() -> None:
    orphan = SloDefinition("orphan", SloSpec(sli="gone", objective=99.0))
    rs = rules.rule_set([orphan, ratio_slo()], RuleConfig())
    assert rs.skipped == {"orphan": "its SLI 'gone' does not exist"}
    assert "# SLO 'orphan' has no rules: its SLI 'gone' does not exist" in rs.yaml()
    assert [g["name"] for g in rs.document["groups"]] == ["slo-api-availability"]


# --------------------------------------------------------------------------- Sloth

SLOTH_SPEC = """
version: "prometheus/v1"
service: "myservice"
labels:
  owner: "myteam"
slos:
  - name: "requests-availability"
    objective: 99.9
    description: "Common SLO based on availability for HTTP request responses."
    labels:
      category: availability
    sli:
      events:
        error_query: sum(rate(http_request_duration_seconds_count{code=~"(5..|429)"}[{{.window}}]))
        total_query: sum(rate(http_request_duration_seconds_count{job="myservice"}[{{.window}}]))
    alerting:
      name: MyServiceHighErrorRate
      labels:
        category: "availability"
      page_alert:
        labels:
          severity: pageteam
"""


def test_sloth_import() -> None:
    result = sloth.import_spec(yaml.safe_load(SLOTH_SPEC), period="28d")
    [slo] = result.slos
    assert slo.name == "requests-availability" and slo.period == "28d"
    assert slo.objective == 99.9
    assert slo.labels == {"owner": "myteam", "category": "availability", "service": "myservice"}
    assert slo.ratio is not None and slo.ratio.errors.endswith("[{{.window}}]))")
    assert len(result.warnings) == 1 and "labels, name, page_alert dropped" in result.warnings[0]


def test_sloth_round_trip() -> None:
    first = sloth.import_spec(yaml.safe_load(SLOTH_SPEC))
    exported = sloth.export_yaml(first.slos)
    again = sloth.import_spec(yaml.safe_load(exported))
    assert again.slos == first.slos
    assert again.warnings == []


def test_sloth_import_refuses_what_it_cannot_represent_saying_what() -> None:
    doc = yaml.safe_load(SLOTH_SPEC)
    doc["slos"][0]["alerting"]["ticket_alert"] = {"disable": True}
    doc["slos"].append(
        {"name": "raw", "objective": 99.0, "sli": {"raw": {"error_ratio_query": "x"}}}
    )
    doc["slos"].append({"name": "plug", "objective": 99.0, "sli": {"plugin": {"id": "p"}}})
    doc["slos"].append({"name": "Bad_Name", "objective": 99.0, "sli": doc["slos"][0]["sli"]})
    doc["extra"] = 1
    with pytest.raises(sloth.SlothError) as e:
        sloth.import_spec(doc)
    text = "\n".join(e.value.problems)
    assert "extra: not a field" in text
    assert "slos[0] (requests-availability).alerting.ticket_alert.disable" in text
    assert "slos[1] (raw).sli.raw: a bare error-ratio query" in text
    assert "slos[2] (plug).sli.plugin" in text
    assert "slos[3] (Bad_Name): name: 'Bad_Name' is not a valid name" in text
    with pytest.raises(sloth.SlothError, match="only 'prometheus/v1'"):
        sloth.import_spec({**yaml.safe_load(SLOTH_SPEC), "version": "prometheus/v2"})


def test_sloth_export_refuses_threshold_slos_and_mixed_periods() -> None:
    threshold = SloCreate(name="fd", sli="fd-allocated", objective=99.0)
    ratio = SloCreate(
        name="api", ratio=RatioSli(errors=ERRORS, total=TOTAL), objective=99.0, period="7d"
    )
    with pytest.raises(sloth.SlothError) as e:
        sloth.export_spec([threshold, ratio], service="svc")
    assert "fd: a threshold SLI (fd-allocated) has no Sloth form" in e.value.problems[0]
    assert any("different periods" in p for p in e.value.problems)
    with pytest.raises(sloth.SlothError, match="give the service"):
        sloth.export_spec([ratio])


def test_sloth_import_command_prints_the_bodies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "slos.yml"
    spec.write_text(SLOTH_SPEC)
    assert sloth.main(["import", str(spec), "--period", "28d"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    body = SloCreate.model_validate_json(line)
    assert body.name == "requests-availability" and body.period == "28d"
    spec.write_text(SLOTH_SPEC.replace("prometheus/v1", "prometheus/v2"))
    assert sloth.main(["import", str(spec)]) == 1
