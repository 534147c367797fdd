"""The explanation pipeline shared by ``POST /explanations``, ``GET
/slis/{name}/violations/explanation`` (sla_manager) and the gRPC ``Explain`` RPC
(data_retrieval): which series changed in the anomalous interval(s), EXstream style.

No web framework here: a request that cannot be explained raises :class:`ExplainInputError`
(the field and a short reason), which the REST routes turn into a 422 and the gRPC service
into INVALID_ARGUMENT. The caps come from :class:`ExplainSettings` (both services' settings
derive from it, so the variables mean the same in each).

The candidates are the series a PromQL selector returns (counted first: at most
``SLA_EXPLAIN_MAX_SERIES``, and at most ``SLA_EXPLAIN_MAX_CELLS`` series x points, the day
before included), fetched with one range query from the reference's start to the last
anomalous interval's end at ``step``; counters (``*_total``) become per-second rates over
``max(step, 60 s)``. Series with samples at fewer than half of the intervals' points are
left out (``sparse``); gaps in the others are filled with the previous value.

**The day before**: the same range 24 h earlier is fetched too (a second range query,
when the cells cap allows it). Where a series has it (half of the points at least), it
gives (1) the seasonal view: the series' distance is the smaller of its distance on its
values and on its values less the same time the day before, so that a smooth daily cycle
stops separating two distant windows; (2) the false-positive pair: the reference and the
anomalous intervals one day earlier, which a series that separates them as well does not
explain this anomaly (used when at least half of the kept series have the day before;
the others are then constant there, which separates nothing). Without it the filter uses
windows of the reference (``day_before: false`` in the answer). Then
:func:`sla_manager.explain.exstream.explain` ranks, filters, clusters and writes the
predicates.

``exclude_copies_of`` (the violation route): the SLI's series and its exact affine copies
(``|r| >= 0.9999`` over the intervals: a free-bytes series is avail bytes plus a reserve)
are left out of the candidates, since they separate by construction; the SLI's values go
to ``explain`` for its lead view (a series already out of its range before the violation
while the SLI was still fine does not explain it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from sla_common.prometheus import PrometheusClient, RangeSeries, merge_chunks
from sla_common.series import series_key
from sla_manager.explain.exstream import ExplainConfig, FeatureScore, explain, predicate_text
from sla_manager.explain.features import bucket_means, counter_rates, to_matrix
from sla_manager.explain.settings import ExplainSettings
from sla_manager.models import MAX_EPOCH_S

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MAX_POINTS = 11_000  # per series, over the whole fetched range
DEFAULT_REFERENCE_S = 6 * 3600
DEFAULT_GAP_S = 3600
MIN_COVERAGE = 0.5
MIN_STEP_S = 15.0
DAY_S = 86_400
AFFINE_COPY = 0.9999
# A point of a range answer in Prometheus' JSON, `[1760000000.123,"123456.789"],`, at most:
# a wide selector's range is fetched in time slices under SLA_PROMETHEUS_MAX_RESPONSE_BYTES.
JSON_BYTES_PER_POINT = 48
SHOWN_FALSE_POSITIVES = 5
# ``values``: at most this many points per ranked series (a small plot beside each).
MAX_VALUE_POINTS = 500

VALUES_DOC = (
    "points of each ranked series' values over the fetched range (the reference's start "
    "to the last anomalous interval's end), as the means of that many equal buckets "
    f"(at most {MAX_VALUE_POINTS}); 0: no values"
)

Epoch = Annotated[float, Field(ge=0, le=MAX_EPOCH_S, allow_inf_nan=False)]
Interval = tuple[Epoch, Epoch]


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    selector: StrictStr = Field(
        min_length=1,
        max_length=4096,
        description='PromQL selecting the candidate series, e.g. `{instance="host:9100"}`',
        examples=['{job="host"}'],
    )
    anomalous: list[Interval] = Field(
        min_length=1,
        max_length=100,
        description="the anomalous intervals, `[start, end]` in Unix seconds, start < end",
    )
    reference: Interval | None = Field(
        default=None,
        description="the reference interval (default: the 6 h ending 1 h before the first "
        "anomalous interval)",
    )
    step: float | None = Field(
        default=None,
        ge=1,
        le=3600,
        allow_inf_nan=False,
        description="seconds between points (default: 15, coarser when the range needs it)",
    )
    max_ranked: int = Field(default=20, ge=1, le=200, description="how many ranked series")
    values: int = Field(default=0, ge=0, le=MAX_VALUE_POINTS, description=VALUES_DOC)

    @model_validator(mode="after")
    def _intervals(self) -> Self:
        for i, (a, b) in enumerate(self.anomalous):
            if not a < b:
                raise ValueError(f"anomalous[{i}]: start must be before end")
        if self.reference is not None:
            a, b = self.reference
            if not a < b:
                raise ValueError("reference: start must be before end")
            if any(s < b and a < e for s, e in self.anomalous):
                raise ValueError("the reference overlaps an anomalous interval")
        return self


class ValueRange(BaseModel):
    min: float
    max: float
    median: float


class RankedSeries(BaseModel):
    series: str
    metric: str | None
    labels: dict[str, str]
    distance: float = Field(description="EXstream's distance in [0, 1]: 1 separates perfectly")
    direction: Literal["above", "below"]
    anomalous: ValueRange
    reference: ValueRange
    reference_distance: float = Field(description="its distance between reference-only parts")
    chance_distance: float = Field(
        description="its median distance between windows of the reference (chance level); "
        "the ranking is by distance over it"
    )
    plain_distance: float = Field(description="its distance on its values")
    seasonal_distance: float | None = Field(
        description="its distance on its values less the day before (null: no day before)"
    )
    values: list[tuple[float, float | None]] | None = Field(
        default=None,
        description="`[t, mean]` per bucket of `values_step` seconds from t (counters as "
        "rates; null: no sample in it), when asked for with `values`",
    )


class ClusterOut(BaseModel):
    representative: str
    moves_with: list[str]


class PredicateOut(BaseModel):
    series: str
    op: Literal["<", ">"]
    threshold: float
    text: str
    balanced_accuracy: float


class ExplainResponse(BaseModel):
    anomalous: list[Interval]
    reference: Interval
    step: float
    candidates: int = Field(description="series the selector returned")
    sparse: int = Field(description="left out: samples at under half of the points")
    false_positives: int = Field(description="dropped: they separate reference-only parts too")
    false_positive_series: list[RankedSeries] = Field(
        description=f"the first {SHOWN_FALSE_POSITIVES} of them, best distance first"
    )
    ranked: list[RankedSeries]
    clusters: list[ClusterOut]
    explanation: list[str] = Field(description="the predicates, to be read joined by AND")
    predicates: list[PredicateOut]
    day_before: bool = Field(
        description="the false-positive pair is the intervals one day earlier (else windows "
        "of the reference)"
    )
    seasonal: int = Field(description="series that had the day before (the seasonal view)")
    values_step: float | None = Field(
        default=None, description="seconds per bucket of the ranked series' `values`"
    )
    timings_ms: dict[str, float]


class ExplainInputError(ValueError):
    """A request that cannot be explained: ``field`` (of the request) and ``message`` (what
    to fix, one sentence); ``value`` is what was refused."""

    def __init__(self, field: str, message: str, value: object = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.value = value


@dataclass(frozen=True)
class ExplainResult:
    answer: ExplainResponse
    excluded: list[str]  # the series left out as copies of ``exclude_copies_of``


def _count(prometheus: PrometheusClient, selector: str, at: float) -> int:
    counted = prometheus.query(f"count({selector})", at)
    return int(counted[0].value) if counted else 0


def _fetch(
    prometheus: PrometheusClient,
    selector: str,
    start: float,
    end: float,
    step: float,
    series: int,
    settings: ExplainSettings,
) -> list[RangeSeries]:
    """The range query in time slices whose answers stay under the response cap for
    ``series`` series (Prometheus' JSON for a thousand series of a day at 15 s is ~250 MB)."""
    per_slice = settings.sla_prometheus_max_response_bytes // (
        JSON_BYTES_PER_POINT * max(1, series)
    )
    span = max(1, per_slice) * step  # points per series per slice, minus one, times step
    parts = []
    t = start
    while t <= end:
        stop = min(end, t + span - step)
        parts.append(prometheus.query_range(selector, t, stop, step))
        t = stop + step
    return parts[0] if len(parts) == 1 else merge_chunks(parts)


def _key(s: RangeSeries) -> str:
    return series_key(s.metric or "", s.labels)


def _rows(
    result: list[RangeSeries], grid: npt.ArrayLike, step: float, window: int
) -> tuple[FloatArray, BoolArray]:
    """The series on ``grid`` (counters as rates) and where they had samples."""
    matrix, present = to_matrix([(s.timestamps, s.values) for s in result], grid)
    for i, s in enumerate(result):
        if (s.metric or "").endswith("_total") and present[i].any():
            matrix[i] = counter_rates(matrix[i], step, window)
    return matrix, present


def run_explanation(
    prometheus: PrometheusClient,
    settings: ExplainSettings,
    *,
    selector: str,
    anomalous: list[tuple[float, float]],
    reference: tuple[float, float] | None,
    step: float | None,
    max_ranked: int,
    exclude_copies_of: str | None = None,
    values: int = 0,
) -> ExplainResult:
    """Fetch, align and explain (see the module doc); :class:`ExplainInputError` for a
    request that cannot be explained."""
    t0 = time.perf_counter()
    anomalous = sorted(anomalous)
    first = anomalous[0][0]
    reference = reference or (first - DEFAULT_GAP_S - DEFAULT_REFERENCE_S, first - DEFAULT_GAP_S)
    start = min(reference[0], first)
    end = max(reference[1], *(e for _, e in anomalous))
    step = step or max(MIN_STEP_S, float(math.ceil((end - start) / (MAX_POINTS - 1))))
    start = math.floor(start / step) * step
    n_points = int((end - start) // step) + 1
    if n_points > MAX_POINTS:
        raise ExplainInputError(
            "step",
            f"{n_points} points per series: more than {MAX_POINTS}; use a larger step",
            step,
        )
    cap, cells = settings.sla_explain_max_series, settings.sla_explain_max_cells
    matched = _count(prometheus, selector, end)
    if matched == 0:
        raise ExplainInputError(
            "selector", "the selector matches no series at the end of the intervals", 0
        )
    if matched > cap:
        raise ExplainInputError(
            "selector",
            f"the selector matches {matched} series, more than the cap of {cap} "
            "(SLA_EXPLAIN_MAX_SERIES): narrow it",
            matched,
        )
    if matched * n_points > cells:
        raise ExplainInputError(
            "selector",
            f"{matched} series x {n_points} points is more than {cells} "
            "(SLA_EXPLAIN_MAX_CELLS): narrow the selector, shorten the intervals or use a "
            "larger step",
            matched,
        )
    last = start + (n_points - 1) * step
    result = _fetch(prometheus, selector, start, last, step, matched, settings)
    if len(result) > cap:
        raise ExplainInputError(
            "selector",
            f"the selector returns {len(result)} series over the range, more than the cap of "
            f"{cap} (SLA_EXPLAIN_MAX_SERIES): narrow it",
            len(result),
        )
    # the day before, when the history and the cells cap allow it
    earlier: list[RangeSeries] = []
    matched_before = 0
    if (len(result) + matched) * n_points <= cells:
        matched_before = _count(prometheus, selector, end - DAY_S)
    if 0 < matched_before <= cap and (len(result) + matched_before) * n_points <= cells:
        earlier = _fetch(
            prometheus, selector, start - DAY_S, last - DAY_S, step, matched_before, settings
        )
        if len(result) + len(earlier) > 2 * cap or (len(result) + len(earlier)) * n_points > cells:
            earlier = []
    t_fetch = time.perf_counter()

    grid = start + step * np.arange(n_points)
    is_a = np.zeros(n_points, dtype=bool)
    for a, b in anomalous:
        is_a |= (grid >= a) & (grid <= b)
    is_r = (grid >= reference[0]) & (grid <= reference[1]) & ~is_a
    if not is_a.any() or not is_r.any():
        raise ExplainInputError(
            "anomalous", f"an interval holds no point of the {step:g} s grid", anomalous
        )
    window = max(1, round(max(step, 60.0) / step))
    matrix, present = _rows(result, grid, step, window)
    used = is_a | is_r
    coverage = present[:, used].mean(axis=1) if len(result) else np.zeros(0)
    keep = np.flatnonzero(
        (coverage >= MIN_COVERAGE) & present[:, is_a].any(axis=1) & present[:, is_r].any(axis=1)
    )
    excluded: list[str] = []
    sli: FloatArray | None = None  # the SLI's values, for the lead view
    if exclude_copies_of is not None and len(keep):
        own = [j for j, i in enumerate(keep) if _key(result[i]) == exclude_copies_of]
        if own:
            sli = np.where(present[keep[own[0]]], matrix[keep[own[0]]], np.nan)
            z = matrix[keep][:, used]
            z = z - z.mean(axis=1, keepdims=True)
            norm = np.sqrt((z * z).sum(axis=1))
            z = np.divide(z, norm[:, None], out=np.zeros_like(z), where=norm[:, None] > 0)
            copy = np.abs(z @ z[own[0]]) >= AFFINE_COPY
            copy[own[0]] = True
            excluded = [_key(result[i]) for i in keep[copy]]
            keep = keep[~copy]
    if len(keep) == 0:
        raise ExplainInputError(
            "anomalous",
            "no series has data in both the anomalous and reference intervals",
            anomalous,
        )
    x = matrix[keep]
    is_a2, is_r2 = is_a, is_r
    seasonal: FloatArray | None = None
    pairs: list[tuple[BoolArray, BoolArray]] | None = None
    has_day = np.zeros(len(keep), dtype=bool)
    e_rows = np.full(x.shape, np.nan)
    if earlier:
        before, b_present = _rows(earlier, grid - DAY_S, step, window)
        row_of = {_key(s): j for j, s in enumerate(earlier)}
        for j, i in enumerate(keep):
            row = row_of.get(_key(result[i]))
            if row is not None and b_present[row, used].mean() >= MIN_COVERAGE:
                e_rows[j] = before[row]
                has_day[j] = True
    if has_day.any():
        # columns: the day before, then the intervals; without a day before a series is
        # constant there (its reference median), which separates nothing
        fill = np.median(x[:, is_r], axis=1)
        e_filled = np.where(has_day[:, None], e_rows, fill[:, None])
        x = np.hstack([e_filled, x])
        seasonal = np.hstack([np.full(e_rows.shape, np.nan), e_rows])
        none = np.zeros(n_points, dtype=bool)
        is_a2, is_r2 = np.concatenate([none, is_a]), np.concatenate([none, is_r])
        if sli is not None:
            sli = np.concatenate([np.full(n_points, np.nan), sli])
        if has_day.mean() >= 0.5:
            pairs = [(np.concatenate([is_r, none]), np.concatenate([is_a, none]))]
    t_align = time.perf_counter()

    try:
        e = explain(
            x,
            is_a2,
            is_r2,
            false_positive_intervals=pairs,
            seasonal=seasonal,
            sli=sli,
            config=ExplainConfig(max_ranked=max_ranked),
        )
    except ValueError as exc:
        raise ExplainInputError("anomalous", str(exc), None) from exc

    def labels_of(i: int) -> dict[str, str]:
        return {k: v for k, v in result[keep[i]].labels.items() if k != "__name__"}

    def key_of(i: int) -> str:
        return series_key(result[keep[i]].metric or "", labels_of(i))

    def ranked(s: FeatureScore, with_values: bool = False) -> RankedSeries:
        points = None
        if with_values and values:
            i = keep[s.index]
            _, points = bucket_means(grid, matrix[i], present[i], values)
        return RankedSeries(
            series=key_of(s.index),
            metric=result[keep[s.index]].metric,
            labels=labels_of(s.index),
            distance=round(s.distance, 6),
            direction=s.direction,
            anomalous=ValueRange(
                min=s.anomalous_range[0], max=s.anomalous_range[1], median=s.anomalous_median
            ),
            reference=ValueRange(
                min=s.reference_range[0], max=s.reference_range[1], median=s.reference_median
            ),
            reference_distance=round(s.reference_distance, 6),
            chance_distance=round(s.chance_distance, 6),
            plain_distance=round(s.plain_distance, 6),
            seasonal_distance=(
                round(s.seasonal_distance, 6)
                if s.seasonal_distance is not None and has_day[s.index]
                else None
            ),
            values=points,
        )

    predicates = [
        PredicateOut(
            series=key_of(p.index),
            op=p.op,
            threshold=p.threshold,
            text=predicate_text(
                key_of(p.index), result[keep[p.index]].metric or "", p, f"{window * step:g}s"
            ),
            balanced_accuracy=round(p.balanced_accuracy, 4),
        )
        for p in e.predicates
    ]
    t_done = time.perf_counter()
    timings = {
        "fetch": (t_fetch - t0) * 1e3,
        "align": (t_align - t_fetch) * 1e3,
        **e.timings_ms,
        "total": (t_done - t0) * 1e3,
    }
    answer = ExplainResponse(
        anomalous=anomalous,
        reference=reference,
        step=step,
        candidates=len(result),
        sparse=len(result) - len(keep) - len(excluded),
        false_positives=len(e.false_positives),
        false_positive_series=[ranked(s) for s in e.false_positives[:SHOWN_FALSE_POSITIVES]],
        ranked=[ranked(s, with_values=True) for s in e.ranked],
        clusters=[
            ClusterOut(
                representative=key_of(c.representative),
                moves_with=[key_of(m) for m in c.moves_with],
            )
            for c in e.clusters
        ],
        explanation=[p.text for p in predicates],
        predicates=predicates,
        day_before=pairs is not None,
        seasonal=int(has_day.sum()),
        values_step=-(-n_points // values) * step if values else None,
        timings_ms={k: round(v, 3) for k, v in timings.items()},
    )
    return ExplainResult(answer, excluded)
