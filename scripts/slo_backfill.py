"""Backfill the SLO recording rules over the demo history: ``promtool tsdb create-blocks-from
rules``, level by level, into the local stack's Prometheus.

    .venv/bin/python scripts/slo_backfill.py --start EPOCH [--end EPOCH]

Recording rules only evaluate from the moment Prometheus loads them, so without this the
demo's SLOs would have no past. promtool evaluates each rule with range queries against the
running Prometheus, so a rule that reads another recorded series (the windows read
``slo:sli_good:bool``, the burn rates read the windows) needs that series in Prometheus
first: the rules are split into levels (a rule's level is one more than the highest level of
the recorded series its expression names), and each level's blocks are moved into the data
directory and Prometheus restarted (a running server notices new blocks only at its next
periodic reload, a restart at once) before the next level is computed. Uses the stack's
stack.json (STACK_DIR) and its rule file (SLO_RULES_FILE).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def levels(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The rule file split into documents of recording rules, one per dependency level."""
    records = [
        (g["name"], r) for g in document.get("groups", []) for r in g["rules"] if "record" in r
    ]
    names = {r["record"] for _g, r in records}
    level: dict[int, int] = {}
    for _ in range(len(records) + 1):  # a fixpoint; rules form no cycles
        changed = False
        for i, (_g, r) in enumerate(records):
            deps = [
                level.get(j, 0)
                for j, (_g2, r2) in enumerate(records)
                if r2["record"] in names and r2["record"] in r["expr"] and j != i
                and r2["record"] != r["record"]
            ]  # fmt: skip
            new = 1 + max(deps) if deps else 0
            if level.get(i) != new:
                level[i], changed = new, True
        if not changed:
            break
    out: list[dict[str, Any]] = []
    for lv in range(max(level.values(), default=-1) + 1):
        groups: dict[str, list[dict[str, Any]]] = {}
        for i, (g, r) in enumerate(records):
            if level[i] == lv:
                groups.setdefault(g, []).append(r)
        out.append({"groups": [{"name": g, "rules": rs} for g, rs in groups.items()]})
    return out


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def backfill(state: Path, start: int, end: int) -> int:
    facts: dict[str, Any] = json.loads((state / "stack.json").read_text())
    rules_file = Path(facts["env"]["SLO_RULES_FILE"])
    prom = facts["prometheus"]["url"]
    data = state / "data" / "prometheus"
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    docs = levels(yaml.safe_load(rules_file.read_text()) or {})
    env = {**os.environ, "STACK_DIR": str(state)}
    for i, doc in enumerate(docs):
        with tempfile.TemporaryDirectory(prefix="slo-backfill-") as tmp:
            path = Path(tmp) / f"level{i}.yml"
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
            out = Path(tmp) / "blocks"
            _run(
                [promtool, "tsdb", "create-blocks-from", "rules", "--quiet",
                 f"--start={start}", f"--end={end}", f"--url={prom}",
                 "--eval-interval=60s", f"--output-dir={out}", str(path)]
            )  # fmt: skip
            moved = 0
            for block in out.iterdir() if out.exists() else []:
                shutil.move(str(block), data / block.name)
                moved += 1
        stack = [sys.executable, str(REPO / "scripts" / "stack.py")]
        _run([*stack, "down", "--only", "prometheus"], env)
        _run([*stack, "up"], env)
        print(f"  SLO rules, level {i}: {moved} blocks backfilled", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", type=int, required=True, help="unix seconds")
    parser.add_argument("--end", type=int, default=None, help="unix seconds (default now - 60)")
    args = parser.parse_args()
    state = Path(os.environ.get("STACK_DIR") or REPO / ".stack")
    end = args.end if args.end is not None else int(time.time()) - 60
    return backfill(state, args.start, end)


if __name__ == "__main__":
    sys.exit(main())
