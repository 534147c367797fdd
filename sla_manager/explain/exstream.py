"""EXstream: which features (metric series) explain an anomalous interval.

The method of Zhang, Diao and Meliou, "EXstream: Explaining Anomalies in Event Stream
Monitoring" (EDBT 2017), on a matrix of series: one row per feature, one column per time
point. Pure: numpy arrays in, frozen results out, no I/O.

Definitions (one feature, the points of the anomalous interval(s) are class A, those of the
reference interval class R, ``n = |A| + |R|``; natural logarithms, the ratio does not depend
on the base):

- **class entropy** ``H_class = p_A·log(1/p_A) + p_R·log(1/p_R)``, ``p_X = |X| / n``;
- **segmentation entropy**: sort the ``n`` values; a run of consecutive points of one class
  is a segment, and a set of equal values that holds points of both classes is a **mixed**
  segment (its order is arbitrary). ``H_seg = Σ p_i·log(1/p_i)`` with ``p_i = |segment_i| / n``;
- **regularised**: a mixed segment is counted as if its points were in their *worst-case*
  order, the one that cuts it into the most segments: the minority's points one by one
  between runs of the majority as equal as possible (``a`` and ``r`` points, ``a <= r``:
  ``a`` singletons and ``a + 1`` runs, or ``2a`` singletons when ``a == r``). With ``m`` points
  in the mixed segment and ``H_w`` the entropy of that order within the segment, the segment
  contributes ``(m/n)·log(n/m) + (m/n)·H_w`` (the chain rule: exactly the entropy of the
  segments it is cut into). So overlapping values cost as much as the worst interleaving;
- **distance** ``D = H_class / H_seg+`` in ``(0, 1]``: the segments refine the two classes,
  so ``H_seg+ >= H_class``, with equality (``D = 1``) exactly when the feature separates
  the classes into two segments. Interleaved values give many segments and a small ``D``.

The pipeline (:func:`explain`):

1. rank every feature by ``D`` over its **chance level** (``rank_by="chance"``, the
   default; a stated refinement of the paper's ranking by ``D``, which ``rank_by="distance"``
   keeps): the median distance the feature gets between windows of the reference (the
   pairs the false-positive filter uses when no others are given, computed in any case), so
   a feature that separates any two stretches of ordinary time (a step-like, bursty, slowly
   wandering or low-cardinality series: often ``D = 1`` for several at once) does not
   outrank one that separates only the anomaly. A feature that escaped its reference (see
   ``false_positive_escape``) gets the lowest chance level of the features instead of its
   own: its move is not one ordinary time makes, whatever its smooth cycle separates.
   Scores equal to ``tie_decimals`` decimals are ties, and
   sharp incidents make many (every series the incident drags along separates perfectly):
   a tie goes to the larger gap between the two classes' value ranges relative to their
   joint span (the feature that moved furthest out, in its own terms), then to the one that
   left its reference range earlier before the anomaly (in the points between the
   reference and the anomaly);
2. **false-positive filtering**: a feature whose distance between *reference-only*
   intervals reaches ``false_positive_ratio`` of its own distance, or
   ``false_positive_distance`` at all, separates any two intervals, not this anomaly: it is
   dropped. The reference-only pairs: given by the caller (best: the same intervals one
   day earlier), else ``false_positive_windows`` windows of ``|A|`` reference points spread
   over the reference, each against the reference on its longer side past a gap as long as
   the one before the anomaly; a feature's reference distance is the
   ``false_positive_quantile`` (median) of its distances over the pairs, so that one
   unrelated burst in the reference does not condemn the series it moved.
   A feature whose median moved by less than ``min_relative_change`` of its magnitude in
   the reference (a few inodes of a filesystem's millions) is dropped as negligible: the
   distance does not see magnitudes, and such a move separates perfectly when the series
   is quantised and wanders slowly. Dropped features stay at the end of ``order``;
3. **reward-leap filtering**: of what remains, keep the features above the largest drop
   between consecutive scores (distances over the chance level; searched among the first
   ``leap_window + 1``);
4. **correlation clustering**: a kept feature whose values correlate with an earlier kept
   one at ``|r| >= correlation_threshold`` joins its group (it "moves with" it);
5. **the explanation**: one predicate per group representative (the first
   ``max_predicates``), ``feature < t`` or ``feature > t``, with the threshold that best
   separates the classes (balanced accuracy).

The defaults of :class:`ExplainConfig` were chosen on generated cases (BENCHMARKS.md):
``false_positive_ratio`` 0.3 and ``false_positive_distance`` 0.5 (a feature that separates
the reference-only pair at 30 % of its own distance, or at 0.5 at all, is dropped); give
the pair one day earlier where the history has it (daily patterns are the usual false
positives of SRE metrics). Without it (the default windows of the reference) the
thresholds are ``window_false_positive_ratio`` 0.7 and ``window_false_positive_distance``
0.8: windows of one reference separate more easily than two days (slow cycles), and the
stricter ones dropped real causes (60 % rank-1 on the tuning cases at 0.3 / 0.5, 65 %
anywhere from 0.5 to 0.7 / 0.7 to 1.1; the demo host's fd series, whose daily cycle
separates the windows at 0.4-0.5, is kept at 0.7).

**Refinements** to the paper's ranking, measured (BENCHMARKS.md): the *seasonal view*
(``seasonal``: a feature's distance is the smaller of the distances of its values and of
its values less the same time one day earlier) stops smooth daily cycles from separating;
``tie_break`` orders equal distances by the gap between the classes' ranges (``margin``,
the default), by the standardised shift (``shift``) or by the lead before the anomaly
(``lead``); the default measured best. ``seasonal_view="model"`` (the residual's distance
only where the day before fits the reference better than the reference's mean, else the
values') measured worse than the smaller of the two (BENCHMARKS.md, third pass). The *lead view*
(``lead_view="lead"``, the default; it needs the SLI's values, ``sli``): a feature that was
already out of its reference range in the points right before the anomaly (its lead, in
the gap after the reference) while the SLI was still inside its own reference range gets
the smaller of its distance and its distance with those points counted as reference. A
change that held its level while the SLI was fine (a batch job that started 20 minutes
earlier) then no longer separates the anomaly from the normal time before it, and stops
tying at ``D = 1`` with the cause; a change that kept growing into the anomaly (a ramp)
still separates, and a change the SLI was already responding to keeps its distance
(BENCHMARKS.md, sixth pass).

The false-positive filter runs before the leap rather than on the leap's survivors: it is
as cheap as the ranking here (the same sort), and filtering first keeps a real cause that
series drifting all the time would otherwise push below the leap.

Cost: one ``argsort`` per feature row plus linear counting, vectorised over rows (in chunks
to bound memory); the chance level adds one counting pass per window when the
false-positive pairs are given (else it is the filter's own figure).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

Direction = Literal["above", "below"]
Operator = Literal["<", ">"]

# Sort this many values at a time (rows x points): ~16 MB per array of float64.
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class ExplainConfig:
    """Knobs of :func:`explain` (defaults as measured in BENCHMARKS.md)."""

    false_positive_ratio: float = 0.3
    false_positive_distance: float = 0.5
    # the same two when the pairs are windows of the reference (no day before given)
    window_false_positive_ratio: float = 0.7
    window_false_positive_distance: float = 0.8
    false_positive_windows: int = 4
    false_positive_quantile: float = 0.5
    # a feature whose anomalous median lies beyond the reference range by this many reference
    # ranges is not a false positive however well it separates parts of the reference: a
    # smooth trend or cycle separates any two distant windows, but does not carry a series
    # that far out of everything the reference saw
    false_positive_escape: float = 1.0
    min_relative_change: float = 0.01
    correlation_threshold: float = 0.9
    leap_window: int = 100
    tie_decimals: int = 2
    tie_break: Literal["margin", "shift", "lead"] = "margin"
    # how the seasonal view combines with the plain one: "min" (the smaller distance) or
    # "model" (the residual's distance where the day before explains the reference better
    # than its mean does, i.e. the residual varies less there; else the values')
    seasonal_view: Literal["min", "model"] = "min"
    # "chance": rank by the distance over its chance level (the median distance the
    # feature gets between windows of the reference, as for the false-positive filter
    # without a day before), so that features that separate any two stretches of time
    # (steps, slow wanders, low cardinality) do not outrank the cause; "distance": the
    # paper's ranking by the distance alone
    rank_by: Literal["chance", "distance"] = "chance"
    # "lead" (when the SLI's values are given to explain): a feature that had already left
    # its reference range right before the anomaly gets the smaller of its distance and its
    # distance with those lead points counted as reference, where the SLI was still inside
    # its own reference range: a change that held while the SLI was fine does not separate
    # the anomaly from the normal time before it (a batch job that started earlier), while a
    # change that kept growing (a leak's ramp) still does, and a change the SLI was already
    # responding to (a disk filling at a steady write rate) keeps its distance; "none": the
    # lead points are not used
    lead_view: Literal["lead", "none"] = "lead"
    chance_floor: float = 1e-3
    min_distance: float = 0.0
    max_predicates: int | None = 3
    max_ranked: int = 100

    def __post_init__(self) -> None:
        if self.false_positive_ratio <= 0.0 or self.window_false_positive_ratio <= 0.0:
            raise ValueError("false_positive_ratio must be positive")
        if not 0.0 <= self.correlation_threshold <= 1.0:
            raise ValueError("correlation_threshold must be in [0, 1]")
        if not 0.0 <= self.false_positive_quantile <= 1.0:
            raise ValueError("false_positive_quantile must be in [0, 1]")
        if self.seasonal_view not in ("min", "model"):
            raise ValueError("seasonal_view must be 'min' or 'model'")
        if self.lead_view not in ("lead", "none"):
            raise ValueError("lead_view must be 'lead' or 'none'")
        if self.rank_by not in ("chance", "distance"):
            raise ValueError("rank_by must be 'chance' or 'distance'")
        if not self.chance_floor > 0.0:
            raise ValueError("chance_floor must be positive")
        if self.tie_break not in ("margin", "shift", "lead"):
            raise ValueError("tie_break must be 'margin', 'shift' or 'lead'")
        if self.tie_decimals < 0:
            raise ValueError("tie_decimals must not be negative")
        if self.min_relative_change < 0.0:
            raise ValueError("min_relative_change must not be negative")
        if self.false_positive_distance <= 0.0 or self.window_false_positive_distance <= 0.0:
            raise ValueError("false_positive_distance must be positive")
        if self.leap_window < 1 or self.max_ranked < 1 or self.false_positive_windows < 1:
            raise ValueError("leap_window, max_ranked and false_positive_windows must be >= 1")
        if not self.false_positive_escape > 0.0:
            raise ValueError("false_positive_escape must be positive (inf: never escapes)")
        if self.min_distance < 0.0:
            raise ValueError("min_distance must not be negative")
        if self.max_predicates is not None and self.max_predicates < 1:
            raise ValueError("max_predicates must be at least 1 (or None: no cap)")


@dataclass(frozen=True)
class Distances:
    """Per-feature arrays (one entry per row of the input), read-only."""

    distance: FloatArray
    class_entropy: FloatArray
    segmentation_entropy: FloatArray  # regularised
    mixed_points: IntArray  # points in mixed segments


@dataclass(frozen=True)
class FeatureScore:
    """One feature's place in the ranking; ``index`` is its row in the input."""

    index: int
    distance: float
    direction: Direction
    anomalous_range: tuple[float, float]
    reference_range: tuple[float, float]
    anomalous_median: float
    reference_median: float
    standardised_shift: float  # (median A - median R) / robust sd of R
    lead_points: int  # points right before the anomaly already out of the reference range
    margin: float  # gap between the classes' ranges / their joint span (< 0: overlap)
    mixed_points: int
    reference_distance: float  # D between the two reference-only intervals
    chance_distance: float  # median D between windows of the reference (its chance level)
    score: float  # what the ranking sorts by: distance / chance (or distance)
    plain_distance: float  # D of the values themselves
    seasonal_distance: float | None  # D of the values less the same points a season earlier


@dataclass(frozen=True)
class Cluster:
    representative: int
    moves_with: tuple[int, ...]
    correlations: tuple[float, ...]  # of each moves_with member with the representative


@dataclass(frozen=True)
class Predicate:
    """``feature op threshold``; ``balanced_accuracy`` on the anomalous vs reference points."""

    index: int
    op: Operator
    threshold: float
    balanced_accuracy: float
    anomalous_coverage: float  # share of anomalous points where it holds
    reference_rate: float  # share of reference points where it holds

    def holds(self, values: npt.ArrayLike) -> BoolArray:
        v = np.asarray(values, dtype=np.float64)
        return np.asarray(v < self.threshold if self.op == "<" else v > self.threshold)


@dataclass(frozen=True)
class Explanation:
    ranked: tuple[FeatureScore, ...]  # best first, false positives left out (max_ranked)
    false_positives: tuple[FeatureScore, ...]  # dropped, best first (max_ranked)
    negligible: tuple[FeatureScore, ...]  # moved by less than min_relative_change
    kept: tuple[int, ...]  # above the reward leap, best first
    clusters: tuple[Cluster, ...]
    predicates: tuple[Predicate, ...]  # the explanation: their conjunction
    order: IntArray  # every row, best first; from demoted_from on the dropped ones
    demoted_from: int  # rows of order before this index passed both filters
    distances: Distances
    timings_ms: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def flags(self, values: npt.ArrayLike) -> BoolArray:
        """Where the explanation (the conjunction of its predicates) holds, per column of
        ``values`` (a features x points matrix with the same rows as the input)."""
        v = np.asarray(values, dtype=np.float64)
        out = np.ones(v.shape[1], dtype=np.bool_)
        for p in self.predicates:
            out &= p.holds(v[p.index])
        return out


# --------------------------------------------------------------------------- entropies


def class_entropy(n_anomalous: npt.ArrayLike, n_reference: npt.ArrayLike) -> FloatArray:
    """``p_A·log(1/p_A) + p_R·log(1/p_R)`` (0 when a class is empty)."""
    a = np.asarray(n_anomalous, dtype=np.float64)
    r = np.asarray(n_reference, dtype=np.float64)
    n = a + r
    with np.errstate(divide="ignore", invalid="ignore"):
        pa = np.where(n > 0, a / n, 0.0)
        pr = np.where(n > 0, r / n, 0.0)
        h = np.where(pa > 0, -pa * np.log(np.where(pa > 0, pa, 1.0)), 0.0) + np.where(
            pr > 0, -pr * np.log(np.where(pr > 0, pr, 1.0)), 0.0
        )
    return np.asarray(h, dtype=np.float64)


def worst_case_entropy(a: npt.ArrayLike, r: npt.ArrayLike) -> FloatArray:
    """Entropy, within the segment, of the worst-case order of a mixed segment holding ``a``
    points of one class and ``r`` of the other (``a, r >= 1``): the minority one by one
    between runs of the majority as equal as possible."""
    a_ = np.asarray(a, dtype=np.int64)
    r_ = np.asarray(r, dtype=np.int64)
    small = np.minimum(a_, r_)
    big = np.maximum(a_, r_)
    m = (small + big).astype(np.float64)
    runs = small + 1
    q = big // np.maximum(runs, 1)
    rem = big - q * runs
    qf = np.maximum(q, 1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logm = np.log(np.maximum(m, 1.0))
        unequal = (
            small * logm / np.maximum(m, 1.0)
            + rem * (qf + 1) / m * np.log(m / (qf + 1))
            + (runs - rem) * qf / m * np.log(m / qf)
        )
    h = np.where(small == big, logm, unequal)
    return np.asarray(np.where(small > 0, h, 0.0), dtype=np.float64)


def segmentation_entropy(
    sorted_values: npt.ArrayLike, sorted_is_anomalous: npt.ArrayLike
) -> tuple[FloatArray, IntArray]:
    """Regularised segmentation entropy of each row of value-sorted points and the number
    of points in its mixed segments. Rows: features; ``sorted_is_anomalous`` the class of
    each sorted point."""
    sv = np.atleast_2d(np.asarray(sorted_values, dtype=np.float64))
    sa = np.atleast_2d(np.asarray(sorted_is_anomalous, dtype=np.bool_))
    if sv.shape != sa.shape:
        raise ValueError("values and classes must have the same shape")
    f, n = sv.shape
    if n == 0:
        return np.zeros(f, dtype=np.float64), np.zeros(f, dtype=np.int64)
    new_group = np.empty((f, n), dtype=np.bool_)
    new_group[:, 0] = True
    np.not_equal(sv[:, 1:], sv[:, :-1], out=new_group[:, 1:])
    starts = np.flatnonzero(new_group)  # groups of equal values, row-major
    sizes = np.diff(starts, append=f * n)
    a = np.add.reduceat(sa.ravel(), starts, dtype=np.int64)
    r = sizes - a
    kind = np.where(a == 0, 0, np.where(r == 0, 1, 2))  # 0 pure R, 1 pure A, 2 mixed
    row = starts // n
    seg_start = np.ones(len(starts), dtype=np.bool_)
    seg_start[1:] = (row[1:] != row[:-1]) | (kind[1:] != kind[:-1]) | (kind[1:] == 2)
    seg = np.flatnonzero(seg_start)
    seg_sizes = np.add.reduceat(sizes, seg)
    seg_row = row[seg]
    mixed = kind[seg] == 2
    p = seg_sizes / n
    term = -p * np.log(p)
    term[mixed] += p[mixed] * worst_case_entropy(a[seg][mixed], r[seg][mixed])
    h = np.bincount(seg_row, weights=term, minlength=f).astype(np.float64)
    mixed_points = np.bincount(seg_row[mixed], weights=seg_sizes[mixed], minlength=f)
    return h, mixed_points.astype(np.int64)


def distances(values: npt.ArrayLike, is_anomalous: npt.ArrayLike) -> Distances:
    """``D = H_class / H_seg+`` of each row of ``values`` (features x points), the points'
    classes in ``is_anomalous`` (one per column, both classes present)."""
    x = np.atleast_2d(np.asarray(values, dtype=np.float64))
    cls = np.asarray(is_anomalous, dtype=np.bool_)
    if cls.shape != (x.shape[1],):
        raise ValueError("one class per column")
    n_a = int(cls.sum())
    if n_a == 0 or n_a == len(cls):
        raise ValueError("both classes need at least one point")
    order = np.argsort(x, axis=1)
    sv = np.take_along_axis(x, order, axis=1)
    h_seg, mixed = segmentation_entropy(sv, cls[order])
    h_class = np.full(x.shape[0], float(class_entropy(n_a, len(cls) - n_a)))
    return _freeze(
        Distances(
            distance=np.minimum(h_class / h_seg, 1.0),
            class_entropy=h_class,
            segmentation_entropy=h_seg,
            mixed_points=mixed,
        )
    )


def _freeze(d: Distances) -> Distances:
    for arr in (d.distance, d.class_entropy, d.segmentation_entropy, d.mixed_points):
        arr.setflags(write=False)
    return d


# --------------------------------------------------------------------------- filters


def reward_leap(sorted_distances: npt.ArrayLike, window: int = 30) -> int:
    """How many of the (descending) distances lie above the largest drop between two
    consecutive ones among the first ``window + 1`` (and, when that is all of them, the drop
    from the last one to 0)."""
    d = np.asarray(sorted_distances, dtype=np.float64)
    if len(d) <= 1:
        return len(d)
    head = d[: window + 1]
    if len(d) <= window + 1:
        head = np.append(head, 0.0)  # the drop after the last one counts: [1, 1] keeps both
    gaps = head[:-1] - head[1:]
    return int(np.argmax(gaps)) + 1


def correlation_clusters(
    values: npt.ArrayLike, threshold: float
) -> tuple[tuple[int, tuple[int, ...], tuple[float, ...]], ...]:
    """Greedy clusters of the rows of ``values`` (in the given order, best first): a row joins
    the first earlier representative it correlates with at ``|r| >= threshold``, else it
    becomes a representative. Returns (representative, members, their correlations) with
    positions into ``values``. A constant row correlates with nothing."""
    x = np.atleast_2d(np.asarray(values, dtype=np.float64))
    k = x.shape[0]
    centred = x - x.mean(axis=1, keepdims=True)
    norm = np.sqrt((centred * centred).sum(axis=1))
    z = np.divide(centred, norm[:, None], out=np.zeros_like(centred), where=norm[:, None] > 0)
    corr = z @ z.T
    reps: list[int] = []
    members: dict[int, list[tuple[int, float]]] = {}
    for i in range(k):
        home = next((rep for rep in reps if abs(corr[i, rep]) >= threshold), None)
        if home is None:
            reps.append(i)
            members[i] = []
        else:
            members[home].append((i, float(corr[i, home])))
    return tuple(
        (rep, tuple(m for m, _ in members[rep]), tuple(c for _, c in members[rep])) for rep in reps
    )


def best_predicate(
    values: npt.ArrayLike, is_anomalous: npt.ArrayLike
) -> tuple[Operator, float, float]:
    """The one-feature predicate (``< t`` or ``> t``, ``t`` halfway between two consecutive
    distinct values) with the highest balanced accuracy on the classes: (op, t, accuracy).
    A constant feature gets ``('>', value, 0.5)``."""
    v = np.asarray(values, dtype=np.float64)
    cls = np.asarray(is_anomalous, dtype=np.bool_)
    order = np.argsort(v, kind="stable")
    sv, sa = v[order], cls[order]
    n_a = int(sa.sum())
    n_r = len(sa) - n_a
    if n_a == 0 or n_r == 0:
        raise ValueError("both classes need at least one point")
    cut = np.flatnonzero(sv[1:] != sv[:-1]) + 1  # split before position cut: first cut points
    if len(cut) == 0:
        return ">", float(sv[0]), 0.5
    a_below = np.cumsum(sa)[cut - 1]
    r_below = cut - a_below
    youden_below = a_below / n_a - r_below / n_r  # TPR - FPR of "x < t"
    best = int(np.argmax(np.abs(youden_below)))
    j = float(youden_below[best])
    t = float((sv[cut[best] - 1] + sv[cut[best]]) / 2)
    op: Operator = "<" if j >= 0 else ">"
    return op, t, 0.5 + abs(j) / 2


# --------------------------------------------------------------------------- pipeline


def _lead(
    x: FloatArray, gap_cols: IntArray, above: BoolArray, r_min: FloatArray, r_max: FloatArray
) -> IntArray:
    """How many points right before the anomaly (in the gap after the reference) each
    feature had already left its reference range, in the anomaly's direction."""
    if len(gap_cols) == 0:
        return np.zeros(x.shape[0], dtype=np.int64)
    g = x[:, gap_cols]
    out_of_range = np.where(above[:, None], g > r_max[:, None], g < r_min[:, None])
    inside = ~out_of_range[:, ::-1]  # scan backwards from the anomaly's start
    run = np.where(inside.any(axis=1), np.argmax(inside, axis=1), len(gap_cols))
    return np.asarray(run, dtype=np.int64)


def _lead_distances(
    x: FloatArray,
    main_cols: IntArray,
    a_main: BoolArray,
    gap_cols: IntArray,
    calm: BoolArray,
    lead: IntArray,
    dist: FloatArray,
) -> FloatArray:
    """Each feature's distance with its lead points (the last ``lead`` gap columns before the
    anomaly) where ``calm`` (the SLI inside its reference range) counted as reference;
    ``dist`` (its plain distance) where it has none."""
    out = dist.copy()
    rows = np.flatnonzero(lead > 0)
    for n in np.unique(lead[rows]):
        tail = len(gap_cols) - int(n)
        extra = gap_cols[tail:][calm[tail:]]
        if len(extra) == 0:
            continue
        same = rows[lead[rows] == n]
        cols = np.concatenate([main_cols, extra])
        cls = np.concatenate([a_main, np.zeros(len(extra), dtype=np.bool_)])
        out[same] = distances(x[same][:, cols], cls).distance
    return out


def _default_pairs(
    ref_cols: IntArray, n_a: int, gap: int, t: int, windows: int
) -> list[tuple[BoolArray, BoolArray]]:
    """Reference-only pairs with the anomaly's geometry: a window of ``n_a`` reference points
    (anomaly-like) and, past a gap of ``gap`` points, the reference on the longer side of it
    (reference-like), for ``windows`` window positions spread over the reference."""
    n_r = len(ref_cols)
    head = max(1, min(n_a, n_r // 2))
    skip = min(gap, max(0, n_r - 2 * head))
    starts = np.unique(np.linspace(0, n_r - head, max(1, windows)).round().astype(np.int64))
    pairs = []
    for p in starts:
        before = ref_cols[: max(0, p - skip)]
        after = ref_cols[p + head + skip :]
        side = before if len(before) >= len(after) else after
        if len(side) < head:
            continue
        anom_like = np.zeros(t, dtype=np.bool_)
        anom_like[ref_cols[p : p + head]] = True
        ref_like = np.zeros(t, dtype=np.bool_)
        ref_like[side] = True
        pairs.append((ref_like, anom_like))
    if not pairs:  # a short reference: its two halves
        first, second = np.zeros(t, dtype=np.bool_), np.zeros(t, dtype=np.bool_)
        first[ref_cols[: n_r // 2]] = True
        second[ref_cols[n_r // 2 :]] = True
        pairs.append((first, second))
    return pairs


def _mask(mask: npt.ArrayLike, n: int, what: str) -> BoolArray:
    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.shape != (n,):
        raise ValueError(f"{what} must be a boolean mask with one entry per column ({n})")
    return m


PairClasses = tuple[npt.NDArray[np.int8], int, float]


def _pair_classes(
    pairs: Sequence[tuple[BoolArray, BoolArray]], cols: IntArray
) -> list[PairClasses]:
    """Per reference-only pair (reference-like, anomaly-like): the class of each used column
    (0, 1, or -1 outside the pair), the pair's size and its class entropy."""
    out = []
    for fp_r, fp_a in pairs:
        cls = np.where(fp_r[cols], 0, np.where(fp_a[cols], 1, -1)).astype(np.int8)
        nr, na = int(fp_r.sum()), int(fp_a.sum())
        out.append((cls, nr + na, float(class_entropy(nr, na))))
    return out


def _pair_distances(sv: FloatArray, order: IntArray, pairs: Sequence[PairClasses]) -> FloatArray:
    """Distances (pairs x rows) of the value-sorted rows ``sv`` (``order``: the sort of the
    used columns) between the two sides of each pair."""
    rows = sv.shape[0]
    out = np.empty((len(pairs), rows))
    for k, (cls, size, hc) in enumerate(pairs):
        fc = cls[order]
        keep = fc >= 0
        hf, _ = segmentation_entropy(
            sv[keep].reshape(rows, size), (fc[keep] == 1).reshape(rows, size)
        )
        out[k] = np.minimum(hc / hf, 1.0)
    return out


def explain(
    values: npt.ArrayLike,
    anomalous: npt.ArrayLike,
    reference: npt.ArrayLike,
    *,
    false_positive_intervals: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]] | None = None,
    seasonal: npt.ArrayLike | None = None,
    sli: npt.ArrayLike | None = None,
    config: ExplainConfig | None = None,
) -> Explanation:
    """Explain the anomalous columns of ``values`` (features x time points, finite on every
    column used) against the reference columns. Masks are boolean, one entry per column.
    ``false_positive_intervals``: pairs of disjoint reference-only masks, (reference-like,
    anomaly-like); a feature's reference distance is its largest over the pairs. Default:
    two pairs with the anomaly's geometry (a window of ``|A|`` points, a gap as long as the
    one between the reference and the anomaly, the rest of the reference): the window at the
    start of the reference (mirrored) and at its end (shifted back).

    ``seasonal``: the same features one season (a day) earlier, column for column
    (``seasonal[:, j]`` is the value one day before ``values[:, j]``; only the anomalous and
    reference columns are read). A feature's distance is then the smaller of its distance on
    the values and on the residuals ``values - seasonal``: a smooth daily cycle separates two
    distant windows of the values perfectly but not of the residuals, while a change of this
    day separates both. A row whose seasonal values are not all finite keeps its plain
    distance. The false-positive filter compares with the plain distance.

    ``sli``: the SLI's values (one per column, NaN where unknown) for the lead view
    (``ExplainConfig.lead_view``): a feature's lead points (out of its reference range right
    before the anomaly) where the SLI was inside its reference range count as reference
    too, and its distance is the smaller of the two. Without it the lead points are not
    used."""
    cfg = config or ExplainConfig()
    t0 = time.perf_counter()
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError("values must be a non-empty features x points matrix")
    f, t = x.shape
    is_a = _mask(anomalous, t, "anomalous")
    is_r = _mask(reference, t, "reference")
    if not is_a.any() or not is_r.any():
        raise ValueError("the anomalous and the reference intervals both need points")
    if (is_a & is_r).any():
        raise ValueError("the anomalous and reference intervals overlap")
    a_cols = np.flatnonzero(is_a)
    before = np.flatnonzero(is_r[: a_cols[0]])
    # columns between the end of a reference that precedes the anomaly and its start
    gap_cols = np.arange(before[-1] + 1, a_cols[0]) if len(before) else np.arange(0)
    pairs: list[tuple[BoolArray, BoolArray]] = []
    ref_cols = np.flatnonzero(is_r)
    # windows of the reference: the false-positive pairs when no others are given, and the
    # chance level of each feature's distance (rank_by="chance") in any case
    windows = (
        _default_pairs(ref_cols, len(a_cols), len(gap_cols), t, cfg.false_positive_windows)
        if len(ref_cols) >= 2
        else []
    )
    if false_positive_intervals is None:
        if not windows:
            raise ValueError("the reference needs at least two points to split")
        pairs = windows
    else:
        for ref_like, anom_like in false_positive_intervals:
            fp_r = _mask(ref_like, t, "false-positive interval")
            fp_a = _mask(anom_like, t, "false-positive interval")
            if not fp_r.any() or not fp_a.any():
                raise ValueError("both false-positive intervals need points")
            if (fp_r & fp_a).any() or ((fp_r | fp_a) & is_a).any():
                raise ValueError("false-positive intervals must be disjoint and reference-only")
            pairs.append((fp_r, fp_a))
        if not pairs:
            raise ValueError("give at least one pair of false-positive intervals")

    s_x: FloatArray | None = None
    if seasonal is not None:
        s_x = np.asarray(seasonal, dtype=np.float64)
        if s_x.shape != x.shape:
            raise ValueError("seasonal must have the shape of values")
    used = is_a | is_r
    for fp_r, fp_a in pairs:
        used |= fp_r | fp_a
    cols = np.flatnonzero(used)
    main_cls = np.where(is_a[cols], 1, np.where(is_r[cols], 0, -1)).astype(np.int8)
    fp_pairs = _pair_classes(pairs, cols)
    # the chance level: from the windows, computed again only when they are not the pairs
    own_chance = cfg.rank_by == "chance" and false_positive_intervals is not None and windows
    chance_pairs = _pair_classes(windows, cols) if own_chance else []
    n_a, n_r = int(is_a.sum()), int(is_r.sum())
    all_main = bool((main_cls >= 0).all())
    main_cols = cols[main_cls >= 0]
    a_main = is_a[main_cols]
    h_class = float(class_entropy(n_a, n_r))

    dist = np.empty(f)
    dist_season = np.ones(f)
    seasonal_fits = np.zeros(f, dtype=np.bool_)
    h_seg = np.empty(f)
    mixed = np.empty(f, dtype=np.int64)
    dist_fp = np.empty(f)
    chance = np.empty(f)
    a_min, a_max, a_med = np.empty(f), np.empty(f), np.empty(f)
    r_min, r_max, r_med, r_iqr = np.empty(f), np.empty(f), np.empty(f), np.empty(f)
    rows_per_chunk = max(1, _CHUNK_CELLS // len(cols))
    for lo in range(0, f, rows_per_chunk):
        hi = min(f, lo + rows_per_chunk)
        xc = x[lo:hi][:, cols]
        if not np.isfinite(xc).all():
            bad = lo + int(np.flatnonzero(~np.isfinite(xc).all(axis=1))[0])
            raise ValueError(f"feature {bad} has a non-finite value in the intervals")
        order = np.argsort(xc, axis=1)
        sv = np.take_along_axis(xc, order, axis=1)
        mc = main_cls[order]
        if all_main:
            smv, sma = sv, mc == 1
        else:
            keep = mc >= 0
            smv = sv[keep].reshape(hi - lo, n_a + n_r)
            sma = (mc[keep] == 1).reshape(hi - lo, n_a + n_r)
        h, mx = segmentation_entropy(smv, sma)
        h_seg[lo:hi] = h
        mixed[lo:hi] = mx
        dist[lo:hi] = np.minimum(h_class / h, 1.0)
        if s_x is not None:
            resid = x[lo:hi][:, main_cols] - s_x[lo:hi][:, main_cols]
            finite = np.isfinite(resid).all(axis=1)
            resid[~finite] = 0.0
            s_order = np.argsort(resid, axis=1)
            hs, _ = segmentation_entropy(
                np.take_along_axis(resid, s_order, axis=1), a_main[s_order]
            )
            dist_season[lo:hi] = np.where(finite, np.minimum(h_class / hs, 1.0), 1.0)
            ref = ~a_main
            plain_var = x[lo:hi][:, main_cols][:, ref].var(axis=1)
            seasonal_fits[lo:hi] = finite & (resid[:, ref].var(axis=1) < plain_var)
        fp_d = _pair_distances(sv, order, fp_pairs)
        dist_fp[lo:hi] = np.quantile(fp_d, cfg.false_positive_quantile, axis=0)
        if chance_pairs:
            chance[lo:hi] = np.median(_pair_distances(sv, order, chance_pairs), axis=0)
        elif false_positive_intervals is None:  # the windows are the pairs: counted once
            chance[lo:hi] = np.median(fp_d, axis=0)
        else:  # no windows (a one-point reference) or ranking by the distance alone
            chance[lo:hi] = 1.0
        av = smv[sma].reshape(hi - lo, n_a)
        rv = smv[~sma].reshape(hi - lo, n_r)
        a_min[lo:hi], a_max[lo:hi], a_med[lo:hi] = av[:, 0], av[:, -1], av[:, n_a // 2]
        r_min[lo:hi], r_max[lo:hi], r_med[lo:hi] = rv[:, 0], rv[:, -1], rv[:, n_r // 2]
        r_iqr[lo:hi] = rv[:, (3 * n_r) // 4] - rv[:, n_r // 4]
    t_rank = time.perf_counter()

    scale = r_iqr / 1.349
    floor = 1e-9 * np.maximum(np.abs(r_med), 1.0)
    shift = (a_med - r_med) / np.maximum(scale, floor)
    above = a_med >= r_med
    span = np.maximum(a_max, r_max) - np.minimum(a_min, r_min)
    margin = np.divide(
        np.where(above, a_min - r_max, r_min - a_max), span, out=np.zeros(f), where=span > 0
    )
    lead = _lead(x, gap_cols, above, r_min, r_max)
    if cfg.seasonal_view == "model":
        combined = np.where(seasonal_fits, dist_season, dist)
    else:
        combined = np.minimum(dist, dist_season)
    if cfg.lead_view == "lead" and sli is not None and len(gap_cols):
        s_v = np.asarray(sli, dtype=np.float64)
        if s_v.shape != (t,):
            raise ValueError("sli must have one value per column")
        s_r = s_v[is_r]
        s_r = s_r[np.isfinite(s_r)]
        if len(s_r):
            s_g = s_v[gap_cols]
            calm = np.isfinite(s_g) & (s_g >= s_r.min()) & (s_g <= s_r.max())
            combined = np.minimum(
                combined, _lead_distances(x, main_cols, a_main, gap_cols, calm, lead, dist)
            )
    r_range = r_max - r_min
    beyond = np.where(above, a_med - r_max, r_min - a_med)
    escaped = (beyond > 0) & (beyond >= cfg.false_positive_escape * r_range)
    if cfg.rank_by == "chance":
        # a feature that left everything the reference saw (escaped, as for the false-positive
        # filter) moved in a way windows of ordinary time do not: it gets the lowest chance
        # level of the features, not its own (a smooth cycle's, however high)
        level = np.maximum(chance, cfg.chance_floor)
        if escaped.any():
            level = np.where(escaped, np.minimum(level, level.min()), level)
        score_ = combined / level
    else:
        score_ = combined
    key = np.round(score_, cfg.tie_decimals)
    if cfg.tie_break == "lead":
        full_order = np.lexsort((-margin, -lead, -key))
    else:
        second = margin if cfg.tie_break == "margin" else np.abs(shift)
        full_order = np.lexsort((-lead, -second, -key))
    if false_positive_intervals is None:
        fp_ratio, fp_distance = cfg.window_false_positive_ratio, cfg.window_false_positive_distance
    else:
        fp_ratio, fp_distance = cfg.false_positive_ratio, cfg.false_positive_distance
    false_pos = ((dist_fp >= fp_ratio * dist) | (dist_fp >= fp_distance)) & ~escaped
    level = np.maximum(np.abs(r_min), np.abs(r_max))
    negligible = ~false_pos & (np.abs(a_med - r_med) < cfg.min_relative_change * level)
    demoted = false_pos | negligible
    order = full_order[~demoted[full_order]]
    fp_order = full_order[false_pos[full_order]]
    negligible_order = full_order[negligible[full_order]]
    full = np.concatenate([order, full_order[demoted[full_order]]])
    t_fp = time.perf_counter()

    eligible = order[combined[order] >= cfg.min_distance]
    kept = eligible[: reward_leap(score_[eligible], cfg.leap_window)]
    t_leap = time.perf_counter()

    groups = (
        correlation_clusters(x[kept][:, main_cols], cfg.correlation_threshold) if len(kept) else ()
    )
    clusters = tuple(
        Cluster(int(kept[rep]), tuple(int(kept[m]) for m in ms), tuple(round(c, 4) for c in cs))
        for rep, ms, cs in groups
    )
    t_clusters = time.perf_counter()

    reps = [c.representative for c in clusters]
    if cfg.max_predicates is not None:
        reps = reps[: cfg.max_predicates]
    predicates = []
    for i in reps:
        row = x[i, main_cols]
        op, thr, acc = best_predicate(row, a_main)
        holds = row < thr if op == "<" else row > thr
        predicates.append(
            Predicate(
                index=i,
                op=op,
                threshold=thr,
                balanced_accuracy=acc,
                anomalous_coverage=float(holds[a_main].mean()),
                reference_rate=float(holds[~a_main].mean()),
            )
        )
    t_pred = time.perf_counter()

    def score(i: int) -> FeatureScore:
        return FeatureScore(
            index=i,
            distance=float(combined[i]),
            direction="above" if above[i] else "below",
            anomalous_range=(float(a_min[i]), float(a_max[i])),
            reference_range=(float(r_min[i]), float(r_max[i])),
            anomalous_median=float(a_med[i]),
            reference_median=float(r_med[i]),
            standardised_shift=float(shift[i]),
            lead_points=int(lead[i]),
            margin=float(margin[i]),
            mixed_points=int(mixed[i]),
            reference_distance=float(dist_fp[i]),
            chance_distance=float(chance[i]),
            score=float(score_[i]),
            plain_distance=float(dist[i]),
            seasonal_distance=float(dist_season[i]) if s_x is not None else None,
        )

    ranked = tuple(score(int(i)) for i in order[: cfg.max_ranked])
    fps = tuple(score(int(i)) for i in fp_order[: cfg.max_ranked])
    small = tuple(score(int(i)) for i in negligible_order[: cfg.max_ranked])
    full.setflags(write=False)
    h_class_arr = np.full(f, h_class)
    timings = {
        "rank": (t_rank - t0) * 1e3,
        "false_positives": (t_fp - t_rank) * 1e3,
        "leap": (t_leap - t_fp) * 1e3,
        "clusters": (t_clusters - t_leap) * 1e3,
        "predicates": (t_pred - t_clusters) * 1e3,
    }
    return Explanation(
        ranked=ranked,
        false_positives=fps,
        negligible=small,
        kept=tuple(int(i) for i in kept),
        clusters=clusters,
        predicates=tuple(predicates),
        order=full,
        demoted_from=len(order),
        distances=_freeze(Distances(combined, h_class_arr, h_seg, mixed)),
        timings_ms=MappingProxyType({k: round(v, 3) for k, v in timings.items()}),
    )


# --------------------------------------------------------------------------- predicate text

_BINARY = (("TiB", 2.0**40), ("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10))


def _sig3(v: float) -> str:
    """Three significant digits, no exponent, trailing zeros dropped."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if a >= 1000:
        digits = math.floor(math.log10(a)) + 1
        return str(round(round(v, 3 - digits)))  # 41234.5 -> 41200
    decimals = max(0, 2 - math.floor(math.log10(a)))
    text = f"{v:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def unit_of(metric: str, counter: bool | None = None) -> str:
    """The unit a feature's values are in, from the Prometheus naming conventions; counters
    (``_total``, or ``counter=True`` for node-exporter's untyped ones such as
    ``node_vmstat_pgfault``) are explained by their per-second rate."""
    is_counter = metric.endswith("_total") if counter is None else counter
    base = metric.removesuffix("_total")
    if base.endswith("_bytes"):
        return "bytes/s" if is_counter else "bytes"
    if base.endswith("_seconds"):
        return "s/s" if is_counter else "seconds"
    return "/s" if is_counter else ""


def format_value(value: float, unit: str) -> str:
    """``2040109465.6, "bytes"`` -> ``1.9 GiB``; binary prefixes for bytes, ms/s for seconds."""
    if unit in {"bytes", "bytes/s"}:
        suffix = "/s" if unit == "bytes/s" else ""
        for name, size in _BINARY:
            if abs(value) >= size:
                return f"{_sig3(value / size)} {name}{suffix}"
        return f"{_sig3(value)} B{suffix}"
    if unit == "seconds":
        if 0 < abs(value) < 1:
            return f"{_sig3(value * 1000)} ms"
        return f"{_sig3(value)} s"
    if unit == "/s":
        return f"{_sig3(value)}/s"
    return _sig3(value)


def predicate_text(
    series: str,
    metric: str,
    predicate: Predicate,
    rate_window: str = "5m",
    counter: bool | None = None,
) -> str:
    """``node_memory_MemAvailable_bytes{instance="demo-host:9100"} < 1.9 GiB``; a counter is
    written as its rate: ``rate(node_disk_written_bytes_total{...}[5m]) > 12 MiB/s``."""
    is_counter = metric.endswith("_total") if counter is None else counter
    expr = f"rate({series}[{rate_window}])" if is_counter else series
    value = format_value(predicate.threshold, unit_of(metric, is_counter))
    return f"{expr} {predicate.op} {value}"
