"""``python -m anomaly_detection.nab DATA_DIR RESULTS_DIR --model iforest|sigma|random|null``
runs a model over a NAB-like data directory; ``python -m anomaly_detection.nab score
RESULTS_DIR --windows combined_windows.json`` scores results with NAB's rules."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from anomaly_detection.models import MODELS
from anomaly_detection.nab import io
from anomaly_detection.nab.runner import run
from anomaly_detection.nab.score import model_dirs, score_model

log = logging.getLogger("anomaly_detection.nab")


def _run(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m anomaly_detection.nab")
    p.add_argument("data_dir", type=Path, help="NAB-like data: <category>/<name>.csv")
    p.add_argument("results_dir", type=Path)
    p.add_argument("--model", choices=sorted(MODELS), default="iforest")
    p.add_argument("--labels", type=Path, help="windows JSON for the label column (else 0)")
    a = p.parse_args(argv)
    if not a.data_dir.is_dir():
        p.error(f"{a.data_dir} is not a directory")
    if a.labels is not None and not a.labels.is_file():
        p.error(f"{a.labels} is not a file")
    try:
        st = run(a.data_dir, a.results_dir, a.model, a.labels)
    except ValueError as e:  # a labels file that is not windows or points
        p.error(str(e))
    log.info(
        "%s: %d files, %d rows in %.1f s (slowest file %.2f s), %d failed",
        a.model,
        st.files,
        st.rows,
        st.seconds,
        st.slowest_s,
        st.failed,
    )
    if st.files == 0:
        log.error("no <category>/<name>.csv under %s", a.data_dir)
        return 2
    return 1 if st.failed else 0


def _score(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m anomaly_detection.nab score")
    p.add_argument("results_dir", type=Path, help="<model>/<category>/<model>_<name>.csv")
    p.add_argument("--windows", type=Path, required=True, help="combined_windows.json")
    p.add_argument("--threshold", type=float, help="fixed threshold (default: the model's)")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    a = p.parse_args(argv)
    if not a.results_dir.is_dir():
        p.error(f"{a.results_dir} is not a directory")
    if not a.windows.is_file():
        p.error(f"{a.windows} is not a file")
    try:
        windows = io.read_windows(a.windows)
    except ValueError as e:
        p.error(str(e))
    rows = []
    for d in model_dirs(a.results_dir):
        rows += score_model(d, windows, a.threshold)
    if a.json:
        sys.stdout.write(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
        return 0
    head = (
        f"{'model':10s} {'profile':20s} {'files':>5s} {'thr':>8s} {'score':>7s} "
        f"{'fixed thr':>9s} {'score':>7s}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r.model:10s} {r.profile:20s} {r.files:5d} {r.threshold:8.4f} {r.score:7.1f} "
            f"{r.fixed_threshold:9.3f} {r.fixed_score:7.1f}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if argv and argv[0] == "score":
        return _score(argv[1:])
    return _run(argv)


if __name__ == "__main__":
    sys.exit(main())
