"""NAB accuracy (issues 16, 17): the models of anomaly_detection.models run over
../shared/nab/data as a stream sees them, scored with our NAB scorer (all three profiles,
optimised and fixed thresholds). Files alternate between a tuning half (even positions in
sorted order; parameters were chosen on it) and a held-out half (odd positions); each
NAB category is reported on its own too."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from anomaly_detection.nab import io
from anomaly_detection.nab.runner import run
from anomaly_detection.nab.score import score_model

NAB = Path(__file__).resolve().parent.parent.parent / "shared" / "nab"
MODELS = ("autoencoder", "mlp", "iforest", "sigma", "random", "null")


def measure(nab: Path = NAB, models: tuple[str, ...] = MODELS) -> dict[str, Any]:
    windows = io.read_windows(nab / "combined_windows.json")
    rels = [rel for rel, _ in io.data_files(nab / "data") if rel in windows]
    subsets = {"all": set(rels), "tune": set(rels[0::2]), "held_out": set(rels[1::2])}
    for cat in sorted({rel.split("/", 1)[0] for rel in rels}):
        subsets[cat] = {rel for rel in rels if rel.startswith(cat + "/")}
    out: dict[str, Any] = {"files": len(rels), "tune_files": sorted(subsets["tune"]), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            st = run(nab / "data", Path(tmp), model)
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
                    for s in score_model(Path(tmp) / model, windows, only=only)
                }
            out["models"][model] = res
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
    import json
    import sys

    print(json.dumps(measure(models=tuple(sys.argv[1:]) or MODELS), indent=1))
