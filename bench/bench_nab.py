"""NAB accuracy (issues 16, 17): the models of anomaly_detection.models run over
../shared/nab/data as a stream sees them, scored with our NAB scorer (all three profiles,
optimised and fixed thresholds). Files alternate between a tuning half (even positions in
sorted order; parameters were chosen on it) and a held-out half (odd positions); each
NAB category is reported on its own too."""

from __future__ import annotations

import functools
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from anomaly_detection.models.iforest import iforest_scores
from anomaly_detection.nab import io
from anomaly_detection.nab.runner import run
from anomaly_detection.nab.score import score_model

NAB = Path(__file__).resolve().parent.parent.parent / "shared" / "nab"
log = logging.getLogger(__name__)
MODELS = ("autoencoder", "mlp", "iforest", "sigma", "random", "null")


def _subsets(nab: Path) -> tuple[dict[str, Any], list[str], dict[str, set[str]]]:
    windows = io.read_windows(nab / "combined_windows.json")
    rels = [rel for rel, _ in io.data_files(nab / "data") if rel in windows]
    subsets = {"all": set(rels), "tune": set(rels[0::2]), "held_out": set(rels[1::2])}
    for cat in sorted({rel.split("/", 1)[0] for rel in rels}):
        subsets[cat] = {rel for rel in rels if rel.startswith(cat + "/")}
    return windows, rels, subsets


def _measure_one(
    nab: Path, tmp: Path, model: str, windows: Any, subsets: dict[str, set[str]], fn: Any = None
) -> dict[str, Any]:
    st = run(nab / "data", tmp, model, fn=fn)
    res: dict[str, Any] = {
        "run_s": round(st.seconds, 2),
        "rows": st.rows,
        "slowest_file_s": round(st.slowest_s, 2),
    }
    for sub, only in subsets.items():
        res[sub] = {
            s.profile: {
                "score": round(s.score, 1),
                "threshold": round(s.threshold, 4),
                "fixed_threshold": s.fixed_threshold,
                "fixed_score": round(s.fixed_score, 1),
            }
            for s in score_model(tmp / model, windows, only=only)
        }
    return res


def measure(nab: Path = NAB, models: tuple[str, ...] = MODELS) -> dict[str, Any]:
    windows, rels, subsets = _subsets(nab)
    out: dict[str, Any] = {"files": len(rels), "tune_files": sorted(subsets["tune"]), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            out["models"][model] = _measure_one(nab, Path(tmp), model, windows, subsets)
    return out


def measure_trees(
    nab: Path = NAB, trees: tuple[int, ...] = (100, 300), seed_offsets: tuple[int, ...] = (0, 7)
) -> dict[str, Any]:
    """Issue 16 follow-up: the isolation forest with ``trees`` trees per forest, each with
    the per-file seeds CRC-32 + ``seed_offsets`` (0 = the default), in one run; the
    variants are named ``iforest-t<trees>-s<offset>``."""
    return _measure_variants(
        nab,
        {
            f"iforest-t{n}-s{off}": functools.partial(iforest_scores, n_trees=n, seed_offset=off)
            for n in trees
            for off in seed_offsets
        },
    )


def measure_shingles(
    nab: Path = NAB,
    shingles: tuple[int, ...] = (16, 32),
    seed_offsets: tuple[int, ...] = (0, 7, 13),
) -> dict[str, Any]:
    """Issue 16 follow-up 3: the isolation forest with a shingle of ``shingles`` first
    differences (the default :data:`~anomaly_detection.models.iforest.SHINGLE`), each with the
    per-file seeds CRC-32 + ``seed_offsets``; the variants are named ``iforest-sh<n>-s<offset>``."""
    return _measure_variants(
        nab,
        {
            f"iforest-sh{k}-s{off}": functools.partial(iforest_scores, shingle=k, seed_offset=off)
            for k in shingles
            for off in seed_offsets
        },
    )


def _measure_variants(nab: Path, variants: dict[str, Any]) -> dict[str, Any]:
    """Each named scoring function over ``nab`` in turn, in one run; each variant's full
    results are logged as soon as it finishes (a run stopped half-way keeps them)."""
    windows, rels, subsets = _subsets(nab)
    out: dict[str, Any] = {"files": len(rels), "tune_files": sorted(subsets["tune"]), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in variants.items():
            res = out["models"][name] = _measure_one(nab, Path(tmp), name, windows, subsets, fn)
            log.info("%s done in %s s: %s", name, res["run_s"], json.dumps(res))
    return out


def summary(r: dict[str, Any]) -> str:
    lines = [f"nab: {r['files']} files; score (threshold) per profile, optimised | fixed"]
    for model, res in r["models"].items():
        for sub in (k for k in res if isinstance(res[k], dict)):
            cells = "  ".join(
                f"{p} {v['score']:.1f} ({v['threshold']:.3f}) | {v['fixed_score']:.1f}"
                for p, v in res[sub].items()
            )
            lines.append(f"  {model:8s} {sub:8s} {cells}")
        lines.append(
            f"  {model:8s} run {res['run_s']:.1f} s, slowest file {res['slowest_file_s']} s"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["trees"]:  # python -m bench.bench_nab trees 100,300 0,7
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        logging.getLogger("anomaly_detection").setLevel(logging.WARNING)
        args = sys.argv[2:] + ["100,300", "0,7"][len(sys.argv[2:]) :]
        r = measure_trees(
            trees=tuple(int(t) for t in args[0].split(",")),
            seed_offsets=tuple(int(o) for o in args[1].split(",")),
        )
    elif sys.argv[1:2] == ["shingle"]:  # python -m bench.bench_nab shingle 16,32 0,7,13
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        logging.getLogger("anomaly_detection").setLevel(logging.WARNING)
        args = sys.argv[2:] + ["16,32", "0,7,13"][len(sys.argv[2:]) :]
        r = measure_shingles(
            shingles=tuple(int(k) for k in args[0].split(",")),
            seed_offsets=tuple(int(o) for o in args[1].split(",")),
        )
    else:
        r = measure(models=tuple(sys.argv[1:]) or MODELS)
    print(summary(r), file=sys.stderr)
    print(json.dumps(r, indent=1))
