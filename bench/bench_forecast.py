"""Forecast calibration and predicted violations, replayed through the ETL's forecast code.

Data: the NAB subset under ``../shared/nab/data`` (28 labelled series: 17 AWS CloudWatch
metrics and 11 artificial ones, 5-minute spacing) and the deterministic demo history
(``sla_common.demo``: the 7 gauges, 15 s samples, with its memory leak, disk fill and
file-descriptor spike).

A *cycle* replays one ETL run at time ``t``: the last 12 h of samples (the ETL's default
window) go through ``prepare`` + ``forecast`` exactly as the ETL calls them (10-minute
horizon, 1-minute forecast step, 1 h season). On the demo the forecast is of per-minute
means, 10 points ahead; NAB's spacing is 5 minutes, so the forecast runs at that step and the
10-minute horizon is 2 points. The truth is the same quantity: the per-minute means (demo)
or the samples (NAB) of the 10 minutes after ``t``.

Methods, side by side on the same cycles:

- ``today``: the forecast as it was before issue 12 (ETS on the raw history, analytic
  intervals, no domain bounds), ``ForecastOptions.legacy()``;
- ``ours``: the default ``ForecastOptions()`` (Hampel-cleaned history, spread from the
  quantiles of the raw residuals, non-negative floor), with the breach probability of
  :func:`breach_probability`; and, for calibration and error only, two ablations: the
  spread measured against the cleaned values, and no Hampel filter;
- ``predict_linear``: Prometheus' ``predict_linear(x[10m], Δ)``, a least-squares line over
  the samples of the last 10 minutes extrapolated to each forecast point;
- ``last value``: the last sample stays.

Predicted violations: for each series, thresholds at its 0.95 and 0.99 quantiles (upper
bounds) and 0.05 and 0.01 quantiles (lower bounds). At each cycle and threshold, "breach
predicted" vs whether a truth value left the range in the next 10 minutes. Reported on two
sets of cycles: those whose last value is inside the range (a *new* breach to predict; the
last-value baseline never fires there), and all cycles.

Cycles are subsampled to keep the run within minutes (a 12 h ETS fit costs 20-200 ms):
per series, ``near`` cycles drawn from those with a breach in the next 10 minutes or in
the 30 minutes before one, and ``far`` from the rest, each cycle weighted by its stratum's
size over its sample size, so precision, recall and coverage estimate the full replay.
Lead time: for a correct alarm, the time from the cycle to the first out-of-range value.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from etl_data_pipeline.analyses import ForecastResult, forecast, prepare
from etl_data_pipeline.forecast import ForecastOptions
from sla_common.demo import generate

NAB = Path(__file__).resolve().parents[1] / ".." / "shared" / "nab" / "data"
WINDOW_S = 12 * 3600
HORIZON_S = 600
QUANTILES = (("upper", 0.95), ("upper", 0.99), ("lower", 0.05), ("lower", 0.01))
PROB_THRESHOLDS = (0.2, 0.35, 0.5, 0.7, 0.9)

Arr = np.ndarray[Any, Any]


@dataclass(frozen=True)
class Series:
    name: str
    ts: Arr  # raw samples, epoch s
    vs: Arr
    step_s: int  # the raw sampling step
    truth_ts: Arr  # the forecast's quantity: per-minute means (demo) or the samples (NAB)
    truth_vs: Arr


@dataclass
class Cycle:
    series: str
    t: int
    weight: float
    history: Arr  # the forecast-step history (for MASE and the baselines)
    history_ts: Arr
    future_ts: Arr
    future: Arr
    fc: dict[str, ForecastResult] = field(default_factory=dict)


def load_nab(root: Path = NAB) -> list[Series]:
    out = []
    for path in sorted(root.glob("*/*.csv")):
        df = pd.read_csv(path)
        ts = pd.to_datetime(df["timestamp"]).to_numpy().astype("datetime64[s]").astype(np.int64)
        vs = df["value"].to_numpy(dtype=np.float64)
        step = int(np.median(np.diff(ts)))
        name = f"nab/{path.parent.name}/{path.stem}"
        out.append(Series(name, ts, vs, step, ts, vs))
    return out


def load_demo(hours: float = 36.0) -> list[Series]:
    end = 1_767_225_600  # fixed: results do not depend on the day the bench runs
    out = []
    for s in generate(seed=42, end=end, hours=hours, step_s=15):
        if s.kind == "counter":
            continue
        m = pd.Series(s.values, pd.to_datetime(s.timestamps, unit="s"))  # naive UTC
        pm = m.resample("60s", label="right", closed="right").mean().dropna()
        pts = pm.index.to_numpy().astype("datetime64[s]").astype(np.int64)
        out.append(
            Series(f"demo/{s.key()}", s.timestamps, s.values, 15, pts, pm.to_numpy(np.float64))
        )
    return out


def _labels_any(s: Series, starts: Arr, thresholds: list[tuple[str, float]]) -> Arr:
    """Whether any threshold is breached in (t, t+horizon] or (t, t+horizon+30 min]."""
    hit = np.zeros(starts.size, dtype=bool)
    for side, thr in thresholds:
        out = s.truth_vs > thr if side == "upper" else s.truth_vs < thr
        idx = np.flatnonzero(out)
        if idx.size == 0:
            continue
        bt = s.truth_ts[idx]
        j = np.searchsorted(bt, starts, side="right")  # first breach after t
        ok = j < bt.size
        nxt = np.where(ok, bt[np.minimum(j, bt.size - 1)], np.iinfo(np.int64).max)
        hit |= nxt - starts <= HORIZON_S + 1800
    return hit


def thresholds_of(s: Series) -> list[tuple[str, float]]:
    return [(side, float(np.quantile(s.truth_vs, q))) for side, q in QUANTILES]


def sample_cycles(s: Series, near: int, far: int, rng: np.random.Generator) -> list[Cycle]:
    """Cycle times (a truth stamp with 12 h of history and 10 minutes of future)."""
    t0, t1 = s.truth_ts[0] + WINDOW_S, s.truth_ts[-1] - HORIZON_S
    starts = s.truth_ts[(s.truth_ts >= t0) & (s.truth_ts <= t1)]
    if starts.size == 0:
        return []
    is_near = _labels_any(s, starts, thresholds_of(s))
    cycles: list[Cycle] = []
    for mask, k in ((is_near, near), (~is_near, far)):
        pool = starts[mask]
        if pool.size == 0:
            continue
        pick = np.sort(rng.choice(pool, size=min(k, pool.size), replace=False))
        weight = pool.size / pick.size
        for t in pick:
            hsel = (s.truth_ts > t - WINDOW_S) & (s.truth_ts <= t)
            fsel = (s.truth_ts > t) & (s.truth_ts <= t + HORIZON_S)
            cycles.append(
                Cycle(
                    s.name,
                    int(t),
                    weight,
                    s.truth_vs[hsel],
                    s.truth_ts[hsel],
                    s.truth_ts[fsel],
                    s.truth_vs[fsel],
                )
            )
    return cycles


def run_forecasts(
    s: Series, cycles: list[Cycle], methods: dict[str, ForecastOptions], spent: dict[str, float]
) -> None:
    for c in cycles:
        sel = (s.ts > c.t - WINDOW_S) & (s.ts <= c.t)
        p = prepare(s.ts[sel], s.vs[sel], s.step_s)
        for name, opt in methods.items():
            t = time.perf_counter()
            r = forecast(p, HORIZON_S, 60, 3600, options=opt)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
            if isinstance(r, ForecastResult):
                c.fc[name] = r


def predict_linear(c: Cycle) -> Arr:
    """``predict_linear(x[10m], Δ)`` at each future stamp: least squares over (t-10m, t]."""
    sel = c.history_ts > c.t - 600
    x, y = c.history_ts[sel].astype(np.float64), c.history[sel]
    if x.size < 2:
        return np.full(c.future_ts.size, y[-1] if y.size else c.history[-1])
    slope, intercept = np.polyfit(x - c.t, y, 1)
    return np.asarray(intercept + slope * (c.future_ts - c.t), dtype=np.float64)


def mase(truth: Arr, pred: Arr, history: Arr) -> float:
    scale = float(np.mean(np.abs(np.diff(history))))
    err = float(np.mean(np.abs(truth - pred)))
    return err / scale if scale > 0 else (0.0 if err == 0 else math.inf)


def _wmedian(values: list[float], weights: list[float]) -> float | None:
    if not values:
        return None
    order = np.argsort(values)
    v, w = np.asarray(values)[order], np.asarray(weights)[order]
    cum = np.cumsum(w)
    return float(v[np.searchsorted(cum, cum[-1] / 2)])


def calibration(cycles: list[Cycle], method: str) -> dict[str, Any]:
    w80 = w95 = wtot = 0.0
    errs: list[float] = []
    wts: list[float] = []
    lo_neg = 0
    n = 0
    for c in cycles:
        f = c.fc.get(method)
        if f is None:
            continue
        k = min(c.future.size, f.mean.size)
        if k == 0:
            continue
        # match forecast stamps to truth stamps (NAB has gaps)
        idx = np.searchsorted(f.timestamps, c.future_ts[:k])
        idx = np.minimum(idx, f.mean.size - 1)
        y = c.future[:k]
        w80 += c.weight * float(np.sum((y >= f.lower80[idx]) & (y <= f.upper80[idx])))
        w95 += c.weight * float(np.sum((y >= f.lower95[idx]) & (y <= f.upper95[idx])))
        wtot += c.weight * k
        e = mase(y, f.mean[idx], c.history)
        if math.isfinite(e):
            errs.append(e)
            wts.append(c.weight)
        n += 1
        if bool(np.all(c.history >= 0)) and bool(np.any(f.lower95 < 0)):
            lo_neg += 1
    return {
        "cycles": n,
        "coverage80": w80 / wtot if wtot else None,
        "coverage95": w95 / wtot if wtot else None,
        "mase_median": _wmedian(errs, wts),
        "negative_lower_bound_on_nonnegative_series": lo_neg,
    }


Predictor = Callable[[Cycle, str, float], bool | None]


def _beyond(values: Arr, side: str, thr: float) -> bool:
    return bool(np.any(values > thr) if side == "upper" else np.any(values < thr))


def predictors() -> dict[str, Predictor]:
    def ours(p: float) -> Predictor:
        def fire(c: Cycle, side: str, thr: float) -> bool | None:
            f = c.fc.get("ours")
            if f is None:
                return None
            lo, hi = (None, thr) if side == "upper" else (thr, None)
            return f.breach_probability(lo, hi) >= p

        return fire

    def band(method: str, which: str) -> Predictor:
        def fire(c: Cycle, side: str, thr: float) -> bool | None:
            f = c.fc.get(method)
            if f is None:
                return None
            if which == "point":
                return _beyond(f.mean, side, thr)
            return _beyond(f.upper95 if side == "upper" else f.lower95, side, thr)

        return fire

    out: dict[str, Predictor] = {f"ours p>={p}": ours(p) for p in PROB_THRESHOLDS}
    out["today: 95% interval leaves"] = band("today", "95")
    out["today: point leaves"] = band("today", "point")
    out["predict_linear 10m"] = lambda c, side, thr: _beyond(predict_linear(c), side, thr)
    out["last value stays"] = lambda c, side, thr: _beyond(c.history[-1:], side, thr)
    return out


def violations(
    cycles: list[Cycle], thresholds: dict[str, list[tuple[str, float]]], inside_only: bool
) -> dict[str, dict[str, Any]]:
    res: dict[str, dict[str, Any]] = {}
    for name, fire in predictors().items():
        tp = fp = fn = tot = 0.0
        leads: list[float] = []
        lw: list[float] = []
        for c in cycles:
            if "ours" not in c.fc or "today" not in c.fc:
                continue  # same cycles for every predictor
            for side, thr in thresholds[c.series]:
                if inside_only and _beyond(c.history[-1:], side, thr):
                    continue
                out = c.future > thr if side == "upper" else c.future < thr
                actual = bool(np.any(out))
                pred = bool(fire(c, side, thr))
                tot += c.weight
                if pred and actual:
                    tp += c.weight
                    leads.append(float(c.future_ts[np.argmax(out)] - c.t))
                    lw.append(c.weight)
                elif pred:
                    fp += c.weight
                elif actual:
                    fn += c.weight
        res[name] = {
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
            "lead_time_median_s": _wmedian(leads, lw),
            "alarms_weighted": tp + fp,
            "breach_rate": (tp + fn) / tot if tot else None,
        }
    return res


def measure(near: int = 16, far: int = 16, seed: int = 1) -> dict[str, Any]:
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(seed)
    methods = {
        "today": ForecastOptions.legacy(),
        "ours": ForecastOptions(),
        # ablations, for calibration and error only: what each part of "ours" contributes
        "ours, spread vs cleaned values": ForecastOptions(residuals="cleaned"),
        "ours without the Hampel filter": ForecastOptions(hampel_k=math.inf),
    }
    groups: dict[str, list[Series]] = {"nab": load_nab(), "demo": load_demo()}
    result: dict[str, Any] = {"near": near, "far": far, "seed": seed}
    t0 = time.perf_counter()
    all_cycles: dict[str, list[Cycle]] = {}
    thresholds: dict[str, list[tuple[str, float]]] = {}
    fit_s: dict[str, float] = {}
    for g, series in groups.items():
        cs: list[Cycle] = []
        for s in series:
            thresholds[s.name] = thresholds_of(s)
            cyc = sample_cycles(s, near, far, rng)
            run_forecasts(s, cyc, methods, fit_s)
            cs.extend(cyc)
        all_cycles[g] = cs
    all_cycles["all"] = all_cycles["nab"] + all_cycles["demo"]
    for g, cs in all_cycles.items():
        result[g] = {
            "cycles": len(cs),
            "calibration": {m: calibration(cs, m) for m in methods},
            "violations_new": violations(cs, thresholds, inside_only=True),
            "violations_all": violations(cs, thresholds, inside_only=False),
        }
    result["wall_s"] = time.perf_counter() - t0
    n = len(all_cycles["all"])
    result["forecast_ms_per_cycle"] = {k: 1000 * v / n for k, v in fit_s.items()}
    return result


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None else format(x, fmt)


def summary(r: dict[str, Any]) -> str:
    lines = [
        f"forecast: {r['all']['cycles']} cycles (near {r['near']} + far {r['far']} per series), "
        f"{r['wall_s']:.0f} s; forecast ms per cycle: "
        + ", ".join(f"{k} {v:.0f}" for k, v in r["forecast_ms_per_cycle"].items())
    ]
    for g in ("nab", "demo", "all"):
        for m, c in r[g]["calibration"].items():
            lines.append(
                f"  {g:4} calibration {m:30}: 80% -> {_f(c['coverage80'], '.3f')}, 95% -> "
                f"{_f(c['coverage95'], '.3f')}, MASE median {_f(c['mase_median'], '.3f')}, "
                f"negative lower bound on a non-negative series: "
                f"{c['negative_lower_bound_on_nonnegative_series']}/{c['cycles']}"
            )
    for g in ("nab", "demo", "all"):
        for key, label in (("violations_new", "inside at t"), ("violations_all", "all cycles")):
            rate = next(iter(r[g][key].values()))["breach_rate"]
            lines.append(
                f"  {g} predicted violations ({label}; {_f(rate, '.3f')} of cycles x thresholds "
                "breach): precision / recall / lead"
            )
            for name, v in r[g][key].items():
                lead = v["lead_time_median_s"]
                lines.append(
                    f"    {name:28} {_f(v['precision'])} / {_f(v['recall'])} / "
                    f"{'—' if lead is None else f'{lead / 60:.0f} min'}"
                )
    return "\n".join(lines)
