"""The demo host live (sla_common.demo's live exporter) plus the demo's live incident.

``serve`` is the stack's ``demo-exporter`` component (scripts/stack.py starts it): the demo
host's current gauges, and while a live incident is scheduled in ``--incident-file`` and
``start <= now < end``, that incident's series shifted by its ``shift``. The file is read at
every scrape, so ``schedule`` (run by scripts/demo) arms an exporter that is already
running. Without the file the exposition is exactly sla_common.demo's.

``schedule`` writes the ground truth (series, start, end, shift; Unix seconds) and prints it:

    python scripts/demo_live.py schedule --out FILE [--after-s 180] [--duration-s 180]

The incident: the demo host's allocated file descriptors jump by 6000 (normal ~3-5.5k:
+6000 is many learned standard deviations, an ERROR for the detector, yet stays under the
20k of the demo's fd-allocated SLI, so the SLI tables stay those of the backfilled history,
and over the 8k of its fd-normal SLI, whose 99.9 % SLO it pages: scripts/demo_report.py).
Deterministic: a step of a fixed size between two fixed instants.

Fresh noise: sla_common.demo's live values are the history's cycles plus a noise term that
is the same at every scrape (its draws depend on the series and the length of the
generated span only), so live, a series is a smooth curve and any detector learns a near-zero
spread from it: every slow drift becomes an ERROR. ``serve`` adds each gauge's history noise
level (measured once from a generated stretch without incidents: the spread of its
step-to-step changes / √2) times a standard normal drawn from (seed, series, 15 s step),
clipped at 3σ like the history's: still deterministic, and far from every demo threshold.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sla_common.demo import (
    BASE_LABELS,
    FILEFD,
    align_end,
    generate,
    live_exposition,
    serve_until_signalled,
)
from sla_common.series import series_key

log = logging.getLogger("demo_live")

INCIDENT_NAME = "live_fd_jump"
INCIDENT_SHIFT = 6000.0
DEFAULT_AFTER_S = 180
DEFAULT_DURATION_S = 180


@dataclass(frozen=True)
class LiveIncident:
    """One series shifted by ``shift`` for ``start <= t < end`` (Unix seconds)."""

    name: str
    key: str
    metric: str
    labels: dict[str, str]
    start: float
    end: float
    shift: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def load(cls, path: Path) -> LiveIncident | None:
        """The incident in ``path``; None when there is none (or it cannot be read)."""
        try:
            raw = json.loads(path.read_text())
            return cls(
                name=str(raw["name"]),
                key=str(raw["key"]),
                metric=str(raw["metric"]),
                labels={str(k): str(v) for k, v in raw["labels"].items()},
                start=float(raw["start"]),
                end=float(raw["end"]),
                shift=float(raw["shift"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring the live incident file %s: %s", path, exc)
            return None


def fd_jump(now: float, after_s: float, duration_s: float) -> LiveIncident:
    labels = dict(BASE_LABELS)
    return LiveIncident(
        name=INCIDENT_NAME,
        key=series_key(FILEFD, labels),
        metric=FILEFD,
        labels=labels,
        start=round(now + after_s),
        end=round(now + after_s + duration_s),
        shift=INCIDENT_SHIFT,
    )


STEP_S = 15
NOISE_SPAN_H = 0.4  # 24 min before "end": the generator's incidents lie further back


def noise_scales(seed: int, now: float) -> dict[str, float]:
    """Each gauge's noise level in the history: std of step-to-step changes / √2."""
    out = {}
    for s in generate(seed=seed, end=int(now), hours=NOISE_SPAN_H, step_s=STEP_S):
        if s.kind == "gauge":
            out[s.key()] = float(np.std(np.diff(s.values))) / math.sqrt(2)
    return out


def with_noise(text: str, seed: int, now: float, scales: dict[str, float]) -> str:
    """``text`` with each gauge moved by its scale times a clipped normal of (seed, key, step)."""
    step = align_end(int(now), STEP_S)
    lines = []
    for line in text.splitlines():
        key, sep, value = line.rpartition(" ")
        scale = scales.get(key, 0.0) if sep else 0.0
        if scale > 0:
            # free = avail + the root reserve, as in the history: one draw for both
            same = key.replace("node_filesystem_free_bytes", "node_filesystem_avail_bytes")
            rng = np.random.default_rng([seed, zlib.crc32(same.encode()), step])
            z = min(3.0, max(-3.0, float(rng.standard_normal())))
            lines.append(f"{key} {round(float(value) + scale * z)}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def with_incident(text: str, now: float, incident: LiveIncident | None) -> str:
    """``text`` (one ``key value`` per line) with the incident's series shifted while on."""
    if incident is None or not incident.start <= now < incident.end:
        return text
    lines = []
    for line in text.splitlines():
        key, sep, value = line.rpartition(" ")
        if sep and key == incident.key:
            lines.append(f"{key} {float(value) + incident.shift:.17g}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _cmd_serve(args: argparse.Namespace) -> int:
    path = Path(args.incident_file) if args.incident_file else None
    scales = noise_scales(args.seed, time.time())

    def exposition(seed: int, now: float) -> str:
        incident = LiveIncident.load(path) if path is not None else None
        return with_incident(
            with_noise(live_exposition(seed, now), seed, now, scales), now, incident
        )

    return serve_until_signalled(args.seed, args.host, args.port, exposition)


def _cmd_schedule(args: argparse.Namespace) -> int:
    incident = fd_jump(time.time(), args.after_s, args.duration_s)
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(incident.to_json())
    tmp.replace(out)  # the exporter never reads half a file
    hhmmss = "%H:%M:%S"
    sys.stdout.write(
        f"demo: live incident '{incident.name}': {incident.key} +{incident.shift:g} from "
        f"{time.strftime(hhmmss, time.gmtime(incident.start))} to "
        f"{time.strftime(hhmmss, time.gmtime(incident.end))} UTC "
        f"(in {args.after_s:g} s, for {args.duration_s:g} s; ground truth in {out})\n"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/demo_live.py", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the demo host live, with the scheduled incident")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9101)
    s.add_argument("--incident-file", default=None, help="read at every scrape (may be absent)")
    s.add_argument("--log-level", default="INFO")
    sc = sub.add_parser("schedule", help="write (and print) a live incident starting later")
    sc.add_argument("--out", required=True)
    sc.add_argument("--after-s", type=float, default=DEFAULT_AFTER_S)
    sc.add_argument("--duration-s", type=float, default=DEFAULT_DURATION_S)
    args = p.parse_args(argv)
    if args.command == "serve":
        from sla_common.logging import setup_logging  # noqa: PLC0415

        setup_logging(args.log_level)
        return _cmd_serve(args)
    if args.after_s < 0 or args.duration_s <= 0:
        p.error("--after-s must be >= 0 and --duration-s > 0")
    return _cmd_schedule(args)


if __name__ == "__main__":
    sys.exit(main())
