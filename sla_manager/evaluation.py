"""Pure evaluation of SLI values against their allowed range: no I/O, numpy in, frozen out.

Rules (the REST API documents the same ones):

- A value is **outside** when ``value < min`` or ``value > max``; the bounds themselves are
  inside. NaN is neither inside nor outside ("undefined"): it is never a violation.
- **Violation intervals** of a range query: consecutive evaluation steps that are outside
  merge into one interval. Consecutive means adjacent in the query's step grid: a step for
  which Prometheus returned no value (no sample within its 5 min look-back) ends the run.
  ``start``/``end`` are the first and last violating evaluation timestamps and
  ``duration_s = end - start + step``: each violating evaluation stands for one step of
  time, so a single violating sample lasts one step and the durations of a series add up
  to ``violating samples × step``. ``worst`` is the sample farthest outside the range
  (the earliest one on ties). ``open_start``/``open_end`` say that the interval touches the
  first/last evaluation of the query, i.e. it may extend beyond the queried range.
- **Forecast points** leave the range by their point forecast (``point``), else by their
  80 % interval (``interval80``: ``lower80 < min`` or ``upper80 > max``), else by their
  95 % interval (``interval95``); the first that applies is the point's kind, and
  ``point`` > ``interval80`` > ``interval95`` in severity.
- **Breach probability** of a forecast: per point, the probability that the value is
  outside the range under the point's predictive distribution (``loc``/``scale``, normal or
  Student-t, censored at the domain's ``floor``, as the ETL stored them); over the horizon,
  the largest of them (:func:`sla_common.breach.breach_probability`: a lower bound of
  "leaves at least once", exact when the points' errors move together). A forecast stored
  without a distribution (an older ETL) is taken as normal around its point forecast with
  σ = (upper95 − lower95) / 3.92 (``distribution_source: interval95_fallback``). A series
  is a **predicted violation** in mode ``probability`` when that probability is at least
  the SLI's ``breach_probability_threshold``; in mode ``point`` / ``interval80`` /
  ``interval95`` when a point leaves the range by that kind or a more severe one.
- **Comparable forecasts**: a stored forecast is of what the ETL analysed: the values its
  selector returns (per-minute means of them), or, for a counter, its per-second
  ``rate()``. It is compared with the SLI's range only when that is the quantity the SLI
  evaluates: not for a counter the ETL forecast as a rate while the SLI's selector gives the
  raw counter (``counter_rate``), nor when the SLI's selector is an expression that keeps
  the series' name (``x offset 1h``, ``x > 0``, ``label_replace(x, ...)``) but is not the
  ETL's own selector text (``expression``): the stored forecast is of ``x``, not of it.
- **No data**: a series that has a value at some evaluation of a range query and none at a
  later one has *no data* there (a host that stopped reporting). Runs of evaluations
  without a value after the series' first value form its no-data intervals, the same
  shape as violation intervals (``duration_s = end - start + step``; ``open_end`` when the
  run reaches the last evaluation: the series is still gone). Evaluations before its
  first value are not counted: the series may not have existed yet. Whether no data is a
  violation is the SLI's choice (``missing_data_is_violation``); it is reported either way.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

from sla_common.breach import point_breach_probabilities
from sla_common.promql import parse_plain_selector

T = TypeVar("T")
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

State = Literal["inside", "below", "above", "undefined"]
Breach = Literal["point", "interval80", "interval95"]
SEVERITY: dict[Breach, int] = {"interval95": 1, "interval80": 2, "point": 3}
# What counts as a predicted violation (see the module doc).
PredictionMode = Literal["probability", "point", "interval80", "interval95"]
Distribution = Literal["normal", "student_t"]
DistributionSource = Literal["forecast", "interval95_fallback"]
DEFAULT_BREACH_PROBABILITY_THRESHOLD = 0.5
Z95 = 1.959963984540054  # the normal's 97.5 % quantile: a 95 % interval is ± Z95·σ

# A gap in the returned timestamps larger than this many steps ends a run. Timestamps of a
# range query are start + k·step rounded to milliseconds, so adjacent ones differ by
# step ± 1 ms; anything from 1.5 steps on is a missing evaluation.
_GAP_STEPS = 1.5

DURATION_PATTERN = r"^[1-9][0-9]{0,6}[smhdw]?$"
_DURATION = re.compile(r"^([1-9][0-9]{0,6})([smhdw]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> int:
    """``"90"``/``"90s"``, ``"15m"``, ``"1h"``, ``"1d"``, ``"1w"`` → seconds (ValueError if not)."""
    m = _DURATION.fullmatch(text)  # not .match: "$" also matches before a final newline
    if m is None:
        raise ValueError(
            f"{text!r} is not a duration: a positive whole number with an optional unit "
            "s, m, h, d or w, e.g. 30m, 1h, 12h"
        )
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity: such values are reported as null."""
    return value if math.isfinite(value) else None


def narrow(
    items: Sequence[T],
    labels_of: Callable[[T], Mapping[str, str]],
    wanted: Mapping[str, str],
    limit: int,
) -> tuple[list[T], int]:
    """The items whose labels include every ``wanted`` label with exactly that value, in
    label-set order, at most ``limit`` of them; and how many matched in all."""
    kept = [i for i in items if all(labels_of(i).get(k) == v for k, v in wanted.items())]
    kept.sort(key=lambda i: sorted(labels_of(i).items()))
    return kept[:limit], len(kept)


@dataclass(frozen=True)
class Bounds:
    min: float | None
    max: float | None

    def __post_init__(self) -> None:
        if self.min is None and self.max is None:
            raise ValueError("an SLI range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")

    def below(self, values: FloatArray) -> BoolArray:
        if self.min is None:
            return np.zeros(values.shape, dtype=np.bool_)
        return np.asarray(values < self.min)  # NaN compares False: never a violation

    def above(self, values: FloatArray) -> BoolArray:
        if self.max is None:
            return np.zeros(values.shape, dtype=np.bool_)
        return np.asarray(values > self.max)

    def outside(self, values: FloatArray) -> BoolArray:
        return self.below(values) | self.above(values)

    def excess(self, values: FloatArray) -> FloatArray:
        """How far each value is outside the range (0 inside, and for NaN)."""
        out = np.zeros(values.shape, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            if self.min is not None:
                out = np.where(values < self.min, self.min - values, out)
            if self.max is not None:
                out = np.where(values > self.max, values - self.max, out)
        return out

    def state(self, value: float) -> State:
        if math.isnan(value):
            return "undefined"
        if self.min is not None and value < self.min:
            return "below"
        if self.max is not None and value > self.max:
            return "above"
        return "inside"


@dataclass(frozen=True)
class Interval:
    start: float
    end: float
    samples: int
    duration_s: float
    worst_value: float
    worst_at: float
    open_start: bool
    open_end: bool


@dataclass(frozen=True)
class SeriesViolations:
    evaluations: int
    violating: npt.NDArray[np.intp]  # indices of the violating samples
    intervals: tuple[Interval, ...]

    @property
    def time_outside_s(self) -> float:
        return sum(i.duration_s for i in self.intervals)


def last_evaluation(start: float, end: float, step: float) -> float:
    """The last timestamp a range query [start, end] at ``step`` evaluates (≤ end)."""
    return start + math.floor((end - start) / step + 1e-9) * step


def evaluation_count(start: float, end: float, step: float) -> int:
    """How many evaluations a range query makes per series: both ends included."""
    return math.floor((end - start) / step + 1e-9) + 1


def violations(
    timestamps: FloatArray,
    values: FloatArray,
    bounds: Bounds,
    step: float,
    query_start: float,
    query_end: float,
) -> SeriesViolations:
    """Violating samples and merged intervals of one series of a range query."""
    ts = np.asarray(timestamps, dtype=np.float64)
    vs = np.asarray(values, dtype=np.float64)
    mask = bounds.outside(vs)
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return SeriesViolations(len(ts), idx, ())
    excess = bounds.excess(vs)
    # A run breaks where the next violating sample is not the next sample, or where the
    # next sample is more than a step away (Prometheus returned nothing in between).
    breaks = (np.diff(idx) != 1) | (np.diff(ts[idx]) > _GAP_STEPS * step)
    starts = np.concatenate(([0], np.flatnonzero(breaks) + 1))
    ends = np.concatenate((starts[1:], [idx.size]))
    tolerance = 1e-3  # timestamps come back rounded to milliseconds
    first_eval, last_eval = query_start, last_evaluation(query_start, query_end, step)
    intervals = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        run = idx[a:b]
        worst = int(run[int(np.argmax(excess[run]))])
        t0, t1 = float(ts[run[0]]), float(ts[run[-1]])
        intervals.append(
            Interval(
                start=t0,
                end=t1,
                samples=int(run.size),
                duration_s=t1 - t0 + step,
                worst_value=float(vs[worst]),
                worst_at=float(ts[worst]),
                open_start=t0 <= first_eval + tolerance,
                open_end=t1 >= last_eval - tolerance,
            )
        )
    return SeriesViolations(len(ts), idx, tuple(intervals))


@dataclass(frozen=True)
class NoDataInterval:
    start: float  # first evaluation without a value
    end: float  # last one of the run
    evaluations: int
    duration_s: float
    open_end: bool


def no_data_intervals(
    timestamps: FloatArray, step: float, query_start: float, query_end: float
) -> tuple[NoDataInterval, ...]:
    """Runs of evaluations of ``[query_start, query_end]`` at ``step`` without a value, after
    the series' first value (``timestamps``: those with a value, ascending)."""
    ts = np.asarray(timestamps, dtype=np.float64)
    if ts.size == 0:
        return ()
    count = evaluation_count(query_start, query_end, step)
    # Timestamps come back rounded to milliseconds: round to the grid index.
    present = np.zeros(count, dtype=np.bool_)
    index = np.rint((ts - query_start) / step).astype(np.int64)
    present[index[(index >= 0) & (index < count)]] = True
    if not present.any():
        return ()
    first = int(np.argmax(present))
    missing = np.flatnonzero(~present[first:]) + first
    if missing.size == 0:
        return ()
    breaks = np.flatnonzero(np.diff(missing) != 1) + 1
    out = []
    for run in np.split(missing, breaks):
        a, b = int(run[0]), int(run[-1])
        out.append(
            NoDataInterval(
                start=query_start + a * step,
                end=query_start + b * step,
                evaluations=int(run.size),
                duration_s=(b - a + 1) * step,
                open_end=b == count - 1,
            )
        )
    return tuple(out)


Incomparable = Literal["counter_rate", "expression"]


def forecast_incomparable(
    sli_selector: str, stored_transform: str, stored_selector: str
) -> tuple[Incomparable, str] | None:
    """Why a stored forecast is not of the quantity the SLI evaluates (see the module doc),
    as a code and a sentence; None when it is. Only called for a series whose key found a
    stored forecast, i.e. a series the selector returned with a metric name, or a nameless
    one keyed by the SLI's selector text, which the ETL analysed under that same text."""
    if stored_transform == "rate":
        return (
            "counter_rate",
            "the ETL forecasts this counter as its per-second rate(); the SLI's selector "
            "gives the counter's raw value: select rate(...) in the SLI, or compare a bound "
            "on the rate",
        )
    same_text = sli_selector.strip() == stored_selector.strip()
    if not same_text and (
        parse_plain_selector(sli_selector) is None or parse_plain_selector(stored_selector) is None
    ):
        return (
            "expression",
            f"the stored forecast is of what the ETL's selector {stored_selector!r} returns; "
            "the SLI's selector is another expression over the same series",
        )
    return None


def forecast_breaches(
    bounds: Bounds,
    value: FloatArray,
    lower80: FloatArray,
    upper80: FloatArray,
    lower95: FloatArray,
    upper95: FloatArray,
) -> list[Breach | None]:
    """Per forecast point: how it leaves the range (see the module doc), or None."""
    point = bounds.outside(value)
    band80 = bounds.below(lower80) | bounds.above(upper80)
    band95 = bounds.below(lower95) | bounds.above(upper95)
    out: list[Breach | None] = []
    for p, b80, b95 in zip(point.tolist(), band80.tolist(), band95.tolist(), strict=True):
        if p:
            out.append("point")
        elif b80:
            out.append("interval80")
        elif b95:
            out.append("interval95")
        else:
            out.append(None)
    return out


def worst_breach(kinds: list[Breach | None]) -> Breach | None:
    best: Breach | None = None
    for k in kinds:
        if k is not None and (best is None or SEVERITY[k] > SEVERITY[best]):
            best = k
    return best


@dataclass(frozen=True)
class Predictive:
    """The predictive distribution of a forecast's points: ``max(floor, loc + scale·T)``."""

    loc: FloatArray
    scale: FloatArray
    distribution: Distribution
    df: float | None  # Student-t only
    floor: float | None
    source: DistributionSource


def predictive(
    value: FloatArray,
    lower95: FloatArray,
    upper95: FloatArray,
    loc: FloatArray,
    scale: FloatArray,
    distribution: str | None,
    df: float | None,
    floor: float | None,
) -> Predictive:
    """The stored distribution when the forecast has one for every point (``loc``/``scale``
    NaN where not stored), else :func:`interval95_normal` of its intervals."""
    stored = (
        distribution in ("normal", "student_t")
        and (distribution == "normal" or (df is not None and math.isfinite(df) and df > 0))
        and (floor is None or math.isfinite(floor))
        and loc.shape == value.shape == scale.shape
        and bool(np.all(np.isfinite(loc)))
        and bool(np.all(np.isfinite(scale) & (scale >= 0)))
    )
    if not stored:
        return interval95_normal(value, lower95, upper95)
    student = distribution == "student_t"
    return Predictive(
        loc=loc,
        scale=scale,
        distribution="student_t" if student else "normal",
        df=df if student else None,
        floor=floor,
        source="forecast",
    )


def interval95_normal(value: FloatArray, lower95: FloatArray, upper95: FloatArray) -> Predictive:
    """A normal around the point forecast whose 95 % interval is the stored one:
    σ = (upper95 − lower95) / (2 · 1.96); an empty, inverted or NaN interval: σ = 0."""
    with np.errstate(invalid="ignore"):
        sigma = (upper95 - lower95) / (2 * Z95)
        sigma = np.where(sigma > 0, sigma, 0.0)  # NaN compares False
    return Predictive(
        loc=value,
        scale=sigma,
        distribution="normal",
        df=None,
        floor=None,
        source="interval95_fallback",
    )


def point_probabilities(bounds: Bounds, dist: Predictive) -> FloatArray:
    """Per point, the probability that it is outside the range (0 for a NaN point)."""
    out = np.zeros(dist.loc.shape, dtype=np.float64)
    ok = np.isfinite(dist.loc) & np.isfinite(dist.scale)
    if ok.any():
        out[ok] = point_breach_probabilities(
            dist.loc[ok], dist.scale[ok], bounds.min, bounds.max, dist.floor, dist.df
        )
    return out


def predicted(
    mode: PredictionMode,
    threshold: float,
    probabilities: FloatArray,
    kinds: Sequence[Breach | None],
) -> list[bool]:
    """Per point, whether it counts as a predicted violation in ``mode``."""
    if mode == "probability":
        return [p >= threshold for p in probabilities.tolist()]
    least = SEVERITY[mode]
    return [k is not None and SEVERITY[k] >= least for k in kinds]
