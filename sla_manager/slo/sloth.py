"""Sloth ``prometheus/v1`` specs in and out: a Sloth user moves their SLOs in one command.

Mapping (https://sloth.dev, ``pkg/prometheus/api/v1``):

- ``slos[].name`` → the SLO's name (a slug here); ``objective``, ``description`` as they are;
- ``slos[].sli.events.error_query`` / ``total_query`` → ``ratio.errors`` / ``ratio.total``
  (the same ``{{.window}}`` placeholder);
- ``service`` → the label ``service``; the spec's ``labels`` and the SLO's ``labels`` → the
  SLO's labels (the SLO's win on a clash, as in Sloth);
- the period: Sloth's specs have none (its CLI's ``--default-slo-period``, 30d by default):
  import takes it as an argument, export writes SLOs of one period per document.

Refused on import, each with its path and why: ``sli.raw`` (a bare error-ratio query has no
event counts: no low-traffic guard and no event-weighted long windows; rewrite it as
``events``), ``sli.plugin`` (Sloth's Go plugins), ``page_alert.disable`` /
``ticket_alert.disable`` (every SLO here has both), names that are not slugs, labels this
suite sets itself. Dropped with a warning: the rest of ``alerting`` (alert names, labels,
annotations: the generated alerts have their own, ``SloErrorBudgetBurn`` with ``severity``).
Threshold SLOs have no Sloth form and are refused by export.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sla_manager.slo import yamltext
from sla_manager.slo.model import SloCreate

log = logging.getLogger(__name__)

VERSION = "prometheus/v1"
SERVICE_LABEL = "service"
DEFAULT_PERIOD = "30d"
_SLO_KEYS = {"name", "objective", "description", "labels", "sli", "alerting"}
_TOP_KEYS = {"version", "service", "labels", "slos"}


class SlothError(ValueError):
    """The spec cannot be imported; ``problems`` says every reason, each with its path."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Imported:
    slos: list[SloCreate]
    warnings: list[str] = field(default_factory=list)


def _validation_text(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'slo'}: "
        + str(err["msg"]).removeprefix("Value error, ")
        for err in e.errors()
    )


def _import_alerting(path: str, alerting: Any, problems: list[str], warnings: list[str]) -> None:
    if alerting is None:
        return
    if not isinstance(alerting, Mapping):
        problems.append(f"{path}.alerting: must be a mapping")
        return
    for key in ("page_alert", "ticket_alert"):
        sub = alerting.get(key)
        if isinstance(sub, Mapping) and sub.get("disable"):
            problems.append(
                f"{path}.alerting.{key}.disable: every SLO here has both page and ticket "
                "alerts; route or silence the unwanted severity in Alertmanager instead"
            )
    dropped = sorted(k for k, v in alerting.items() if v not in (None, {}, "", False))
    dropped = [k for k in dropped if k not in ("page_alert", "ticket_alert")] + [
        k
        for k in ("page_alert", "ticket_alert")
        if isinstance(alerting.get(k), Mapping)
        and any(v for kk, v in alerting[k].items() if kk != "disable")
    ]
    if dropped:
        warnings.append(
            f"{path}.alerting: {', '.join(dropped)} dropped: the generated alerts are "
            "SloErrorBudgetBurn with severity page|ticket and the SLO's labels"
        )


def import_spec(document: Any, period: str = DEFAULT_PERIOD) -> Imported:
    """SLO definitions from a parsed Sloth ``prometheus/v1`` document (SlothError if any part
    of it cannot be represented: nothing is half-imported)."""
    problems: list[str] = []
    warnings: list[str] = []
    if not isinstance(document, Mapping):
        raise SlothError(["the document must be a mapping with version, service and slos"])
    if document.get("version") != VERSION:
        problems.append(f"version: {document.get('version')!r}; only {VERSION!r} is understood")
    for key in sorted(set(document) - _TOP_KEYS):
        problems.append(f"{key}: not a field of Sloth's {VERSION} spec")
    service = document.get("service")
    if not isinstance(service, str) or not service:
        problems.append("service: a non-empty string is required")
    common = document.get("labels") or {}
    if not isinstance(common, Mapping):
        problems.append("labels: must be a mapping")
        common = {}
    slos = document.get("slos")
    if not isinstance(slos, list) or not slos:
        problems.append("slos: a non-empty list is required")
        slos = []
    out: list[SloCreate] = []
    seen: set[str] = set()
    for i, item in enumerate(slos):
        path = f"slos[{i}]"
        if not isinstance(item, Mapping):
            problems.append(f"{path}: must be a mapping")
            continue
        path = f"slos[{i}] ({item.get('name')!s})"
        for key in sorted(set(item) - _SLO_KEYS):
            problems.append(f"{path}.{key}: not a field of Sloth's {VERSION} spec")
        sli = item.get("sli")
        ratio: dict[str, Any] | None = None
        if not isinstance(sli, Mapping):
            problems.append(f"{path}.sli: required")
        elif "plugin" in sli:
            problems.append(f"{path}.sli.plugin: Sloth's SLI plugins cannot be run here")
        elif "raw" in sli:
            problems.append(
                f"{path}.sli.raw: a bare error-ratio query has no event counts (no low-traffic "
                "guard, no event-weighted long windows); give sli.events error_query and "
                "total_query instead"
            )
        elif not isinstance(sli.get("events"), Mapping):
            problems.append(f"{path}.sli.events: required (error_query and total_query)")
        else:
            events = sli["events"]
            ratio = {"errors": events.get("error_query"), "total": events.get("total_query")}
            extra = sorted(set(events) - {"error_query", "total_query"})
            if extra:
                problems.append(f"{path}.sli.events: unknown {', '.join(extra)}")
        _import_alerting(path, item.get("alerting"), problems, warnings)
        labels = {**dict(common), **dict(item.get("labels") or {})}
        if isinstance(service, str) and service:
            labels.setdefault(SERVICE_LABEL, service)
        try:
            slo = SloCreate.model_validate(
                {
                    "name": item.get("name"),
                    "ratio": ratio,
                    "objective": item.get("objective"),
                    "period": period,
                    "description": item.get("description") or "",
                    "labels": {str(k): str(v) for k, v in labels.items()},
                },
                strict=False,
            )
        except ValidationError as e:
            if ratio is not None:
                problems.append(f"{path}: {_validation_text(e)}")
            continue
        if slo.name in seen:
            problems.append(f"{path}.name: {slo.name!r} appears twice")
        seen.add(slo.name)
        out.append(slo)
    if problems:
        raise SlothError(problems)
    return Imported(out, warnings)


def export_spec(slos: Sequence[SloCreate], service: str | None = None) -> dict[str, Any]:
    """One Sloth document for these SLOs (ValueError naming the SLOs Sloth cannot hold).

    The service is ``service``, else the SLOs' common ``service`` label; that label is not
    repeated per SLO. All SLOs must share one period (Sloth's is per run, not per SLO).
    """
    problems = [
        f"{s.name}: a threshold SLI ({s.sli}) has no Sloth form; only ratio SLOs export"
        for s in slos
        if s.ratio is None
    ]
    periods = sorted({s.period for s in slos})
    if len(periods) > 1:
        problems.append(
            f"SLOs of different periods ({', '.join(periods)}): export one period at a time "
            "(Sloth's period is its --default-slo-period, not part of the spec)"
        )
    services = {s.labels.get(SERVICE_LABEL) for s in slos}
    if service is None:
        if len(services) != 1 or None in services:
            problems.append("give the service: the SLOs do not share one 'service' label")
        else:
            service = next(iter(services))
    if not slos:
        problems.append("no SLOs to export")
    if problems:
        raise SlothError(problems)
    items: list[dict[str, Any]] = []
    for s in slos:
        if s.ratio is None or service is None:  # refused above
            continue
        labels = {k: v for k, v in s.labels.items() if k != SERVICE_LABEL or v != service}
        item: dict[str, Any] = {"name": s.name, "objective": s.objective}
        if s.description:
            item["description"] = s.description
        if labels:
            item["labels"] = labels
        item["sli"] = {"events": {"error_query": s.ratio.errors, "total_query": s.ratio.total}}
        items.append(item)
    return {"version": VERSION, "service": service, "slos": items}


def export_yaml(slos: Sequence[SloCreate], service: str | None = None) -> str:
    period = slos[0].period if slos else DEFAULT_PERIOD
    header = f"# Sloth {VERSION} spec; sloth generate --default-slo-period={period}\n"
    return yamltext.dump(export_spec(slos, service), header)


def main(argv: list[str] | None = None) -> int:
    """``python -m sla_manager.slo.sloth import SPEC.yml [--period 30d]``: the POST /slos
    bodies, one JSON per line (pipe them to curl, or give ``--post URL`` with SLA_API_TOKEN)."""
    import os  # noqa: PLC0415

    import httpx  # noqa: PLC0415
    import yaml  # noqa: PLC0415  (a development dependency: this command runs from the source tree)

    parser = argparse.ArgumentParser(prog="python -m sla_manager.slo.sloth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="Sloth spec → SLO bodies (or POST them)")
    imp.add_argument("spec", type=Path)
    imp.add_argument("--period", default=DEFAULT_PERIOD)
    imp.add_argument("--post", metavar="URL", help="POST each to URL/slos with SLA_API_TOKEN")
    exp = sub.add_parser("export", help="the SLOs of URL/slos → a Sloth spec on stdout")
    exp.add_argument("url")
    exp.add_argument("--service")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.command == "import":
            result = import_spec(yaml.safe_load(args.spec.read_text()), args.period)
            for w in result.warnings:
                log.warning("%s", w)
            if args.post is None:
                for s in result.slos:
                    sys.stdout.write(json.dumps(s.model_dump(exclude_none=True)) + "\n")
                return 0
            token = os.environ.get("SLA_API_TOKEN", "")
            with httpx.Client(base_url=args.post, timeout=10.0) as client:
                failed = 0
                for s in result.slos:
                    r = client.post(
                        "/slos",
                        json=s.model_dump(exclude_none=True),
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    if r.status_code >= 300:
                        failed += 1
                        log.error("%s: HTTP %d %s", s.name, r.status_code, r.text)
                    else:
                        log.info("%s: created", s.name)
            return 1 if failed else 0
        with httpx.Client(base_url=args.url, timeout=10.0) as client:
            r = client.get("/slos", params={"limit": 1000})
            r.raise_for_status()
            fields = set(SloCreate.model_fields)
            slos = [
                SloCreate.model_validate({k: v for k, v in x.items() if k in fields}, strict=False)
                for x in r.json()
            ]
        sys.stdout.write(export_yaml(slos, args.service))
        return 0
    except SlothError as e:
        for p in e.problems:
            log.error("%s", p)
        return 1


if __name__ == "__main__":
    sys.exit(main())
