"""scripts/slo_backfill.py: the generated rules split into dependency levels, so promtool
backfills each level from series Prometheus already has."""

from __future__ import annotations

from sla_manager.slo import rules
from sla_manager.slo.rules import RuleConfig
from tests.scriptutil import load_script
from tests.unit.test_slo import ratio_slo, threshold_slo


def test_recording_rules_split_by_what_they_read() -> None:
    doc = rules.rule_set([threshold_slo(), ratio_slo()], RuleConfig()).document
    levels = load_script("slo_backfill").levels(doc)
    names = [{r["record"] for g in lv["groups"] for r in g["rules"]} for lv in levels]
    assert len(names) == 3
    # Level 0 reads only raw series (and constants); alerts are never backfilled.
    assert {"slo:sli_good:bool", "slo:sli_errors:rate5m", "slo:sli_total:rate5m"} <= names[0]
    assert "slo:objective:ratio" in names[0]
    assert {"slo:sli_error:ratio_rate5m", "slo:sli_error:ratio_rate30d"} <= names[1]
    assert "slo:sli_error:ratio_rate1h" in names[0]  # a ratio SLO's short windows: raw rates
    assert {"slo:current_burn_rate:ratio", "slo:period_error_budget_remaining:ratio"} <= names[2]
    every = [r for g in doc["groups"] for r in g["rules"] if "record" in r]
    assert sum(len(g["rules"]) for lv in levels for g in lv["groups"]) == len(every)
