"""EXstream explanations (issue 15): quality on the demo host's incidents and on generated
cases against two baselines, and speed.

- **Incidents**: the three incidents of :mod:`demo.node_host` (seed 42, 213 series). The
  anomalous interval is the SLI's violation, the reference the 6 h ending 1 h before it
  (the explanation route's default). Candidates: every series but the SLI and its affine
  copies (``|r| >= 0.9999`` over the day: free bytes are avail bytes plus the reserve).
  Measured: where the first cause ranks, the explanation's size (conciseness), and its
  predicates applied to the whole day (prediction power: precision / recall / F1 of the
  points they flag against the violation's points).
- **Generated cases** (``CASES``): a quiet host of another seed each (no incidents, its own
  backups, cron and batch bursts), an anomalous window of 10-60 min at a random time with
  the same reference, and 1-3 random series of the 213 given an injected change in the
  window: a shift, a drift (a ramp from the window's start) or spikes (bursts over part of
  the window), of 1.5-6 robust standard deviations of the series in the reference, up or
  down. The SLI is a latency-like series that responds to the injected changes. Rankings
  compared in the same run: EXstream's (false positives dropped), the absolute standardised
  mean shift, and the absolute correlation with the SLI's series. Precision@3 and recall@3
  of the injected series, and how often the top-ranked series is an injected one.
- **Speed**: 100 / 1,000 / 10,000 series x 2,880 points (240 anomalous, 2,640 reference),
  CPU seconds of one :func:`explain` call, median of ``repeats``, without and with the
  seasonal view.

EXstream gets, where the 48 h history has them, the false-positive pair one day earlier
and the values one day earlier (``seasonal``: its distance is the smaller of the values'
and of the residuals'); ``seasonal=False`` and ``offset`` measure variants on other cases.
Variants are explored on the tuning cases (``TUNING_OFFSET``, ``python -m
bench.bench_explain tuning``), never on the reported ones (``CASE_OFFSET``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from demo.node_host import Features, HostIncident, generate_host
from sla_manager.explain.exstream import ExplainConfig, Explanation, explain, predicate_text

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

END = 1_760_000_000
HOUR = 3600
DAY = 86400
HISTORY_H = 48.0
REFERENCE_S = 6 * HOUR
GAP_S = 1 * HOUR
CASES = 120
# The configuration's defaults were chosen on cases 0-59, the chance-level ranking on cases
# 2000-2159 (TUNING_OFFSET); the figures reported are on cases 1000-1119, not used to choose.
CASE_OFFSET = 1000
# a second held-out set, never used before the sixth pass (the lead view)
NEW_CASE_OFFSET = 3000
TUNING_OFFSET = 2000
TUNING_CASES = 160
SIZES = (100, 1_000, 10_000)
TARGET_RANK1 = 0.9
SIZE_RANGE = (2.0, 20.0)  # robust standard deviations of the series in the reference
SLI_THRESHOLD = 130.0  # ms: the SLI's normal is 100 +- 3
TARGET_CPU_S_1000 = 1.0


def intervals(ts: npt.NDArray[np.int64], start: int, end: int) -> tuple[BoolArray, BoolArray]:
    """The anomalous mask [start, end] and the default reference: 6 h ending 1 h before."""
    a = (ts >= start) & (ts <= end)
    r = (ts >= start - GAP_S - REFERENCE_S) & (ts < start - GAP_S)
    return a, r


def affine_copies(values: FloatArray, row: int, threshold: float = 0.9999) -> BoolArray:
    """Rows that are (almost exactly) an affine function of ``values[row]`` over all points."""
    x = values - values.mean(axis=1, keepdims=True)
    norm = np.sqrt((x * x).sum(axis=1))
    z = np.divide(x, norm[:, None], out=np.zeros_like(x), where=norm[:, None] > 0)
    return np.asarray(np.abs(z @ z[row]) >= threshold)


def day_before(
    ts: npt.NDArray[np.int64], a: BoolArray, r: BoolArray
) -> list[tuple[BoolArray, BoolArray]]:
    """The false-positive pair one day earlier: (the reference, the anomalous window) 24 h
    before, when the history holds them; a daily pattern separates them as well."""
    step = int(ts[1] - ts[0])
    shift = DAY // step
    if np.flatnonzero(r)[0] < shift:
        return []
    return [(np.roll(r, -shift), np.roll(a, -shift))]


def day_earlier(values: FloatArray, ts: npt.NDArray[np.int64]) -> FloatArray:
    """Each column's values one day earlier (NaN where the history does not reach): the
    ``seasonal`` argument of :func:`explain`."""
    lag = DAY // int(ts[1] - ts[0])
    out = np.full(values.shape, np.nan)
    out[:, lag:] = values[:, :-lag]
    return out


def prediction_power(flags: BoolArray, truth: BoolArray) -> dict[str, float]:
    tp = int((flags & truth).sum())
    precision = tp / int(flags.sum()) if flags.any() else 0.0
    recall = tp / int(truth.sum()) if truth.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# --------------------------------------------------------------------------- incidents


def incident_quality(
    f: Features,
    inc: HostIncident,
    config: ExplainConfig | None = None,
    counters: frozenset[str] = frozenset(),
    seasonal: bool = True,
) -> dict[str, Any]:
    a, r = intervals(f.timestamps, inc.start, inc.end)
    sli = f.row(inc.sli)
    candidates = np.flatnonzero(~affine_copies(f.values, sli))
    x = f.values[candidates]
    pairs = day_before(f.timestamps, a, r)
    e = explain(
        x,
        a,
        r,
        false_positive_intervals=pairs or None,
        seasonal=day_earlier(x, f.timestamps) if seasonal else None,
        sli=f.values[sli],
        config=config,
    )
    keys = [f.keys[candidates[s.index]] for s in e.ranked]

    def role(key: str) -> str:
        if key in inc.causes:
            return "cause"
        return "follower" if key in inc.followers else "unrelated"

    first_cause = next((i + 1 for i, k in enumerate(keys) if k in inc.causes), None)
    explained = [f.keys[candidates[c.representative]] for c in e.clusters]
    members = [f.keys[candidates[m]] for c in e.clusters for m in (c.representative, *c.moves_with)]
    lines = []
    for c, p in zip(e.clusters, e.predicates, strict=False):
        row = candidates[p.index]
        more = f" (moves with {len(c.moves_with)} more)" if c.moves_with else ""
        text = predicate_text(f.keys[row], f.metrics[row], p, "1m", f.keys[row] in counters)
        lines.append(text + more)
    return {
        "incident": inc.name,
        "anomalous_points": int(a.sum()),
        "candidates": len(candidates),
        "first_cause_rank": first_cause,
        "rank1_role": role(keys[0]) if keys else None,
        "first_cluster_has_cause": bool(
            e.clusters
            and any(
                f.keys[candidates[m]] in inc.causes
                for m in (e.clusters[0].representative, *e.clusters[0].moves_with)
            )
        ),
        "predicates": len(e.predicates),
        "features_in_explanation": len(members),
        "explanation_roles": [role(k) for k in explained],
        "explanation": lines,
        "false_positives_dropped": len(e.false_positives),
        "prediction_power": prediction_power(
            e.flags(x), (f.timestamps >= inc.start) & (f.timestamps <= inc.end)
        ),
        "timings_ms": dict(e.timings_ms),
    }


# --------------------------------------------------------------------------- generated cases


@dataclass(frozen=True)
class Case:
    values: FloatArray
    anomalous: BoolArray
    reference: BoolArray
    injected: tuple[int, ...]
    kinds: tuple[str, ...]
    sizes: tuple[float, ...]
    sli: FloatArray
    fp_pairs: list[tuple[BoolArray, BoolArray]]
    seasonal: FloatArray


def _robust_sd(v: FloatArray) -> float:
    q75, q25 = np.percentile(v, [75, 25])
    sd = float((q75 - q25) / 1.349)
    if sd <= 0:
        sd = float(np.std(v))
    if sd <= 0:
        sd = max(abs(float(np.median(v))) * 0.01, 1e-9)
    return sd


def make_case(i: int) -> Case:
    """A quiet 48 h host, a change window of 10-60 min in its last day where 1-3 series get
    an injected change, and the SLI that responds to them: the anomalous points are where
    the SLI violates its threshold (as an SLI's violation intervals are), the reference the
    6 h ending 1 h before the first of them."""
    rng = np.random.default_rng([2026, i])
    host = generate_host(
        1000 + i, END + int(rng.integers(0, 86400)), hours=HISTORY_H, with_incidents=False
    )
    f = host.features()
    ts = f.timestamps
    step = int(ts[1] - ts[0])
    length = int(rng.integers(10, 61)) * 60
    first = int(ts[0]) + DAY + REFERENCE_S + GAP_S  # the day before holds the twin pair
    w_start = first + int(rng.integers(0, int(ts[-1]) - first - length))
    w_start -= w_start % step
    window = (ts >= w_start) & (ts < w_start + length)
    _, before = intervals(ts, w_start, w_start)
    x = f.values.copy()
    movable = np.flatnonzero(x[:, before].std(axis=1) > 0)
    k = int(rng.integers(1, 4))
    chosen = rng.choice(movable, size=k, replace=False)
    load = np.zeros(len(ts))
    kinds, sizes = [], []
    n_w = int(window.sum())
    for j, row in enumerate(chosen):
        sd = _robust_sd(x[row, before])
        size = float(np.exp(rng.uniform(np.log(SIZE_RANGE[0]), np.log(SIZE_RANGE[1]))))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        kind = str(rng.choice(["shift", "drift", "spike"]))
        if sign < 0 and np.percentile(x[row, before], 1) - 1.5 * size * sd < 0 <= x[row].min():
            sign = 1.0  # no room below for a fall of that size: node metrics are not negative
        shape = np.zeros(n_w)
        if kind == "shift":
            shape[:] = 1.0
        elif kind == "drift":
            shape[:] = np.linspace(1.0 / n_w, 1.5, n_w)  # a ramp from the window's start
        else:  # bursts of 1-3 minutes over 30-60 % of the window
            target = n_w * rng.uniform(0.3, 0.6)
            while shape.sum() < target:
                run = int(rng.integers(4, 13))
                at = int(rng.integers(0, max(1, n_w - run)))
                shape[at : at + run] = 1.5
        effect = np.zeros(len(ts))
        effect[window] = sign * size * sd * shape
        # node-exporter values are never negative: a fall stops at zero
        x[row] = np.maximum(x[row] + effect, 0.0) if x[row].min() >= 0 else x[row] + effect
        load += (1.0 + j) ** -0.5 * np.abs(effect) / sd
        kinds.append(kind)
        sizes.append(round(size, 2))
    noise = np.convolve(rng.standard_normal(len(ts)), np.ones(8) / 8, mode="same")
    sli = 100.0 + 10.0 * load + 3.0 * noise  # latency-like, ms
    a = window & (sli > SLI_THRESHOLD)
    if a.sum() < 4:  # a change too small to violate: explain the whole window
        a = window.copy()
    _, r = intervals(ts, int(ts[np.flatnonzero(a)[0]]), 0)
    return Case(
        x, a, r, tuple(int(c) for c in chosen), tuple(kinds), tuple(sizes), sli,
        day_before(ts, a, r), day_earlier(x, ts),
    )  # fmt: skip


def baseline_shift(x: FloatArray, a: BoolArray, r: BoolArray) -> npt.NDArray[np.int64]:
    sd = x[:, r].std(axis=1)
    shift = np.abs(x[:, a].mean(axis=1) - x[:, r].mean(axis=1))
    z = np.divide(shift, sd, out=np.where(shift > 0, np.inf, 0.0), where=sd > 0)
    return np.asarray(np.argsort(-z, kind="stable"))


def baseline_correlation(
    x: FloatArray, sli: FloatArray, a: BoolArray, r: BoolArray
) -> npt.NDArray[np.int64]:
    used = a | r
    xs = x[:, used] - x[:, used].mean(axis=1, keepdims=True)
    s = sli[used] - sli[used].mean()
    denom = np.sqrt((xs * xs).sum(axis=1) * (s * s).sum())
    corr = np.divide(np.abs(xs @ s), denom, out=np.zeros(len(x)), where=denom > 0)
    return np.asarray(np.argsort(-corr, kind="stable"))


def _at3(order: npt.NDArray[np.int64], injected: set[int]) -> tuple[float, float, bool]:
    top = [int(i) for i in order[:3]]
    hits = len(injected.intersection(top))
    return hits / 3, hits / len(injected), bool(top and top[0] in injected)


def generated_quality(
    cases: int = CASES,
    config: ExplainConfig | None = None,
    offset: int = CASE_OFFSET,
    seasonal: bool = True,
) -> dict[str, Any]:
    rows: dict[str, list[tuple[float, float, bool]]] = {
        "exstream": [],
        "mean_shift": [],
        "sli_correlation": [],
    }
    predicates, explained_precision, power, cpu = [], [], [], []
    misses = []
    by_kind: dict[str, list[bool]] = {}
    by_size: dict[str, list[bool]] = {}
    by_count: dict[str, list[bool]] = {}
    for i in range(offset, offset + cases):
        c = make_case(i)
        injected = set(c.injected)
        fp = c.fp_pairs or None
        t0 = time.process_time()
        e: Explanation = explain(
            c.values,
            c.anomalous,
            c.reference,
            false_positive_intervals=fp,
            seasonal=c.seasonal if seasonal else None,
            sli=c.sli,
            config=config,
        )
        cpu.append(time.process_time() - t0)
        rows["exstream"].append(_at3(e.order, injected))
        rows["mean_shift"].append(
            _at3(baseline_shift(c.values, c.anomalous, c.reference), injected)
        )
        rows["sli_correlation"].append(
            _at3(baseline_correlation(c.values, c.sli, c.anomalous, c.reference), injected)
        )
        hit = rows["exstream"][-1][2]
        biggest = int(np.argmax(c.sizes))
        bucket = "2-5" if c.sizes[biggest] < 5 else "5-10" if c.sizes[biggest] < 10 else "10-20"
        by_kind.setdefault(c.kinds[biggest], []).append(hit)
        by_size.setdefault(bucket, []).append(hit)
        by_count.setdefault(str(len(c.injected)), []).append(hit)
        predicates.append(len(e.predicates))
        reps = [p.index for p in e.predicates]
        explained_precision.append(len(injected.intersection(reps)) / len(reps) if reps else 0.0)
        power.append(prediction_power(e.flags(c.values), c.anomalous)["f1"])
        if not rows["exstream"][-1][2]:
            misses.append(
                {
                    "case": i,
                    "kinds": c.kinds,
                    "sizes": c.sizes,
                    "rank1": int(e.order[0]) if len(e.order) else None,
                    "injected_ranks": [
                        int(np.flatnonzero(e.order == j)[0]) + 1 if j in e.order else None
                        for j in c.injected
                    ],
                }
            )
    out: dict[str, Any] = {"cases": cases, "series_per_case": int(c.values.shape[0])}
    for name, vals in rows.items():
        out[name] = {
            "precision_at_3": statistics.fmean(v[0] for v in vals),
            "recall_at_3": statistics.fmean(v[1] for v in vals),
            "rank1_injected": statistics.fmean(float(v[2]) for v in vals),
        }
    out["exstream"].update(
        {
            "predicates_median": statistics.median(predicates),
            "predicates_max": max(predicates),
            "explanation_precision": statistics.fmean(explained_precision),
            "prediction_f1_median": statistics.median(power),
            "cpu_s_median": statistics.median(cpu),
        }
    )
    out["exstream_rank1_by"] = {
        name: {k: [round(statistics.fmean(v), 3), len(v)] for k, v in sorted(groups.items())}
        for name, groups in (
            ("kind_of_largest", by_kind),
            ("largest_size_sd", by_size),
            ("injected_series", by_count),
        )
    }
    out["misses"] = misses[:20]
    return out


def smoothed(values: FloatArray, points: int = 5) -> FloatArray:
    """Each row's centred moving mean over ``points`` points (NaN spreads to its window)."""
    kernel = np.ones(points) / points
    return np.asarray(np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, values))


# Third pass (issue 15's rank-1 target): two changes of the seasonal view, decided a priori
# (no thresholds chosen on the cases), measured on the unseen cases in one run.
SEASONAL_VARIANTS: dict[str, tuple[ExplainConfig, bool]] = {
    "min (default)": (ExplainConfig(), False),
    "model": (ExplainConfig(seasonal_view="model"), False),
    "min, day before smoothed": (ExplainConfig(), True),
    "model, day before smoothed": (ExplainConfig(seasonal_view="model"), True),
}


def seasonal_variants(cases: int = CASES, offset: int = CASE_OFFSET) -> dict[str, Any]:
    """Rank-1 rate of an injected series per variant of the seasonal view (same cases):
    ``model`` takes the residual's distance only where the day before fits the reference
    better than its mean does (else the values'), instead of the smaller of the two;
    *smoothed* subtracts the day before's 1-minute moving mean (5 points) instead of its
    single values, so that the residual does not add the day before's noise."""
    hits: dict[str, list[bool]] = {name: [] for name in SEASONAL_VARIANTS}
    for i in range(offset, offset + cases):
        c = make_case(i)
        injected = set(c.injected)
        smooth = smoothed(c.seasonal)
        for name, (config, smoothing) in SEASONAL_VARIANTS.items():
            e = explain(
                c.values,
                c.anomalous,
                c.reference,
                false_positive_intervals=c.fp_pairs or None,
                seasonal=smooth if smoothing else c.seasonal,
                config=config,
            )
            hits[name].append(bool(len(e.order)) and int(e.order[0]) in injected)
    return {
        "cases": cases,
        "offset": offset,
        "rank1_injected": {k: statistics.fmean(map(float, v)) for k, v in hits.items()},
    }


# --------------------------------------------------------------------------- speed


def speed(repeats: int = 3, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    host = generate_host(7, END, hours=13.0, with_incidents=False)
    base = host.features().values  # 213 x 3121
    n_t = base.shape[1]
    a = np.zeros(n_t, dtype=bool)
    a[-240:] = True
    r = np.zeros(n_t, dtype=bool)
    r[: n_t - 240 - 241] = True  # 2,640 reference points, then a 1 h gap
    assert int((a | r).sum()) == 2880
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"points": 2880}
    for n in sizes:
        reps = -(-n // len(base))
        x = np.tile(base, (reps, 1))[:n]
        x = x * (1 + 1e-3 * rng.standard_normal((n, 1)))  # not identical copies
        cpu, wall = [], []
        for _ in range(repeats):
            t0, w0 = time.process_time(), time.perf_counter()
            e = explain(x, a, r)
            cpu.append(time.process_time() - t0)
            wall.append(time.perf_counter() - w0)
        # with the seasonal view (the day before given): one more sort per row
        earlier = x * (1 + 1e-3 * rng.standard_normal(x.shape))
        cpu_s = []
        for _ in range(repeats):
            t0 = time.process_time()
            explain(x, a, r, seasonal=earlier)
            cpu_s.append(time.process_time() - t0)
        # and with a false-positive pair given too (the routes' case with a day of history):
        # the chance level's windows are then counted on top of the pair
        fp_r, fp_a = np.zeros(n_t, dtype=bool), np.zeros(n_t, dtype=bool)
        fp_r[:2000] = True  # reference-only: 2,000 points, then 240 after a 400-point gap
        fp_a[2400:2640] = True
        pair = [(fp_r, fp_a)]
        cpu_p = []
        for _ in range(repeats):
            t0 = time.process_time()
            explain(x, a, r, seasonal=earlier, false_positive_intervals=pair)
            cpu_p.append(time.process_time() - t0)
        out[str(n)] = {
            "cpu_s_median": statistics.median(cpu),
            "wall_s_median": statistics.median(wall),
            "seasonal_cpu_s_median": statistics.median(cpu_s),
            "seasonal_pair_cpu_s_median": statistics.median(cpu_p),
            "timings_ms_last": dict(e.timings_ms),
        }
    return out


SpeedCalls = dict[str, dict[str, Any]]


def speed_inputs(n: int) -> tuple[FloatArray, BoolArray, BoolArray, FloatArray, SpeedCalls]:
    """The speed benches' input: ``n`` series x 2,880 points (a generated host's series
    tiled, each scaled by its own small factor), the last 4 h anomalous, the reference up to
    4 h before, an SLI (the host's first series), and the keyword arguments of the three
    calls timed: the default windows, the day before, and the day before with a
    false-positive pair."""
    base = generate_host(7, END, hours=13.0, with_incidents=False).features().values
    n_t = base.shape[1]
    a = np.zeros(n_t, dtype=bool)
    a[-240:] = True
    r = np.zeros(n_t, dtype=bool)
    r[: n_t - 240 - 241] = True
    rng = np.random.default_rng(0)
    x = np.tile(base, (-(-n // len(base)), 1))[:n] * (1 + 1e-3 * rng.standard_normal((n, 1)))
    earlier = x * (1 + 1e-3 * rng.standard_normal(x.shape))
    fp_r, fp_a = np.zeros(n_t, dtype=bool), np.zeros(n_t, dtype=bool)
    fp_r[:2000] = True
    fp_a[2400:2640] = True
    calls: SpeedCalls = {
        "windows": {},
        "seasonal": {"seasonal": earlier},
        "seasonal_pair": {"seasonal": earlier, "false_positive_intervals": [(fp_r, fp_a)]},
    }
    return x, a, r, base[0], calls


def speed_rankings(n: int = 1000, repeats: int = 3) -> dict[str, dict[str, float]]:
    """CPU-s of one explain of ``n`` series x 2,880 points per ranking (``rank_by``), the
    rankings alternated call by call in one process (the load of a shared machine hits both
    alike); median of ``repeats``, for the three calls of :func:`speed`."""
    x, a, r, _sli, calls = speed_inputs(n)
    cpu: dict[str, list[float]] = {}
    for _ in range(repeats):
        for call, kw in calls.items():
            for rank_by in ("chance", "distance"):
                cfg = ExplainConfig(rank_by=rank_by)
                t0 = time.process_time()
                explain(x, a, r, config=cfg, **kw)
                cpu.setdefault(f"{call} {rank_by}", []).append(time.process_time() - t0)
    return {k: {"cpu_s_median": statistics.median(v)} for k, v in cpu.items()}


def measure(repeats: int = 3) -> dict[str, Any]:
    host = generate_host(42, END, hours=HISTORY_H)
    f = host.features()
    return {
        "incidents": [incident_quality(f, inc, counters=host.counters) for inc in host.incidents],
        "generated": generated_quality(),
        "speed": speed(repeats),
    }


def summary(res: dict[str, Any]) -> str:
    lines = []
    for q in res["incidents"]:
        pp = q["prediction_power"]
        lines.append(
            f"explain {q['incident']}: first cause at rank {q['first_cause_rank']} "
            f"(rank 1: {q['rank1_role']}), {q['predicates']} predicates, prediction "
            f"P={pp['precision']:.2f} R={pp['recall']:.2f} F1={pp['f1']:.2f}"
        )
        lines.extend(f"    {t}" for t in q["explanation"])
    g = res["generated"]
    for name in ("exstream", "mean_shift", "sli_correlation"):
        m = g[name]
        lines.append(
            f"explain generated ({g['cases']} cases) {name}: P@3 {m['precision_at_3']:.3f} "
            f"R@3 {m['recall_at_3']:.3f} rank-1 injected {100 * m['rank1_injected']:.0f}%"
        )
    ex = g["exstream"]
    lines.append(f"explain generated, EXstream rank-1 by [rate, cases]: {g['exstream_rank1_by']}")
    lines.append(
        f"explain generated: predicates median {ex['predicates_median']} (max "
        f"{ex['predicates_max']}), explanation precision {ex['explanation_precision']:.2f}, "
        f"prediction F1 median {ex['prediction_f1_median']:.2f}"
    )
    sp = res["speed"]
    lines.append(
        "explain speed (CPU s, 2,880 points; with the day before; and a false-positive pair): "
        + ", ".join(
            f"{n} series {sp[str(n)]['cpu_s_median']:.3f}; "
            f"{sp[str(n)]['seasonal_cpu_s_median']:.3f}; "
            f"{sp[str(n)]['seasonal_pair_cpu_s_median']:.3f}"
            for n in SIZES
            if str(n) in sp
        )
    )
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which == "generated":
        print(json.dumps(generated_quality(), indent=1))
    elif which == "tuning":  # the tuning cases, ranked over the chance level and by D alone
        print(
            json.dumps(
                {
                    rank_by: generated_quality(
                        TUNING_CASES, ExplainConfig(rank_by=rank_by), TUNING_OFFSET
                    )
                    for rank_by in ("chance", "distance")
                },
                indent=1,
            )
        )
    elif which == "speed-rankings":  # 1,000 series, the chance level against D alone
        print(json.dumps(speed_rankings(), indent=1))
    elif which == "seasonal-variants":
        print(json.dumps(seasonal_variants(), indent=1))
    else:
        print(summary(measure()))
