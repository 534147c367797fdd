"""NAB's file layouts: data (``<category>/<name>.csv``: timestamp,value), labels (JSON
windows), results (``<model>/<category>/<model>_<name>.csv``)."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class Series:
    """One data file as read: the timestamp texts as given, parsed (NaT when unparseable)."""

    rel: str  # "<category>/<name>.csv"
    stamps: list[str]
    times: npt.NDArray[np.datetime64]
    values: npt.NDArray[np.float64]  # NaN where missing or not a number


def parse_times(texts: list[str]) -> npt.NDArray[np.datetime64]:
    """ISO-like timestamps (NAB's ``YYYY-MM-DD HH:MM:SS[.ffffff]``, epoch seconds too), NaT else."""
    s = pd.Series(texts, dtype="object")
    out = pd.to_datetime(s, errors="coerce", format="mixed", utc=True)
    bad = out.isna() & s.notna()
    if bad.any():  # epoch seconds
        num = pd.to_numeric(s[bad], errors="coerce")
        out[bad] = pd.to_datetime(num, unit="s", errors="coerce", utc=True)
    return out.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def _float(text: str | None) -> float:
    try:
        x = float(text) if text is not None else math.nan
    except ValueError:
        return math.nan
    return x if math.isfinite(x) else math.nan


def read_series(path: Path, rel: str) -> Series:
    """A data file; rows without a timestamp column are kept (NaT), values may be missing."""
    stamps: list[str] = []
    values: list[float] = []
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        cols = [h.strip().lower() for h in header]
        ti = cols.index("timestamp") if "timestamp" in cols else 0
        vi = cols.index("value") if "value" in cols else min(1, max(len(cols) - 1, 0))
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            stamps.append(row[ti].strip() if ti < len(row) else "")
            values.append(_float(row[vi]) if vi < len(row) else math.nan)
    return Series(rel, stamps, parse_times(stamps), np.asarray(values, dtype=np.float64))


def data_files(data_dir: Path) -> list[tuple[str, Path]]:
    """``(category/name.csv, path)`` of every CSV one level below ``data_dir``, sorted."""
    out = []
    for p in sorted(data_dir.glob("*/*.csv")):
        if p.is_file():
            out.append((f"{p.parent.name}/{p.name}", p))
    return out


def read_windows(path: Path) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
    """``combined_windows.json`` (``[[start, end], ...]`` per file) or
    ``combined_labels.json`` (``[t, ...]``: a point is the window ``[t, t]``).

    Raises ValueError on anything else (not JSON, wrong shapes).
    """
    raw = json.loads(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not an object of file -> windows")
    out: dict[str, list[tuple[np.datetime64, np.datetime64]]] = {}
    for rel, spans in raw.items():
        if not isinstance(spans, list):
            raise ValueError(f"{path}: {rel}: not a list")
        flat: list[str] = []
        for span in spans:
            if isinstance(span, list) and len(span) == 2:
                flat += [str(span[0]), str(span[1])]
            elif isinstance(span, str):
                flat += [span, span]
            else:
                raise ValueError(f"{path}: {rel}: {span!r} is not [start, end] or a time")
        times = parse_times(flat)
        out[rel] = [(times[2 * k], times[2 * k + 1]) for k in range(len(flat) // 2)]
    return out


def label_column(
    times: npt.NDArray[np.datetime64], spans: list[tuple[np.datetime64, np.datetime64]]
) -> npt.NDArray[np.int64]:
    lab = np.zeros(len(times), dtype=np.int64)
    for a, b in spans:
        lab[(times >= a) & (times <= b)] = 1
    return lab


def result_path(results_dir: Path, model: str, rel: str) -> Path:
    cat, name = rel.split("/", 1)
    return results_dir / model / cat / f"{model}_{name}"


def write_result(
    path: Path,
    s: Series,
    scores: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score", "label"])
        for stamp, v, sc, lab in zip(s.stamps, s.values, scores, labels, strict=True):
            w.writerow([stamp, "" if math.isnan(v) else repr(float(v)), f"{sc:.6f}", int(lab)])
    tmp.replace(path)


def read_result(path: Path) -> tuple[npt.NDArray[np.datetime64], npt.NDArray[np.float64]]:
    """A results file's (timestamps, anomaly scores)."""
    stamps: list[str] = []
    scores: list[float] = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            stamps.append(row.get("timestamp") or "")
            x = _float(row.get("anomaly_score"))
            scores.append(0.0 if math.isnan(x) else x)
    return parse_times(stamps), np.asarray(scores, dtype=np.float64)


def result_files(model_dir: Path) -> list[tuple[str, Path]]:
    """``(category/name.csv, path)`` of a model's results (its name prefix stripped)."""
    prefix = model_dir.name + "_"
    out = []
    for p in sorted(model_dir.glob("*/*.csv")):
        name = p.name[len(prefix) :] if p.name.startswith(prefix) else p.name
        out.append((f"{p.parent.name}/{name}", p))
    return out
