"""``POST /explanations``: which series changed in the anomalous interval(s), EXstream style.

The candidates are the series a PromQL selector returns (counted first: at most
``MAX_CANDIDATE_SERIES``, and at most ``MAX_CELLS`` series x points), fetched with one
range query from the reference's start to the last anomalous interval's end at ``step``;
counters (``*_total``) become per-second rates over ``max(step, 60 s)``. Series with
samples at fewer than half of the intervals' points are left out (``sparse``); gaps in the
others are filled with the previous value. Then
:func:`sla_manager.explain.exstream.explain` ranks, filters, clusters and writes the
predicates. Reads are open, like the other evaluations.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Literal, Self

import numpy as np
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from sla_common.series import series_key
from sla_manager.deps import PrometheusDep
from sla_manager.errors import PROMQL, UNAVAILABLE, validation_error
from sla_manager.explain.exstream import ExplainConfig, FeatureScore, explain, predicate_text
from sla_manager.explain.features import counter_rates, to_matrix
from sla_manager.models import MAX_EPOCH_S

MAX_CANDIDATE_SERIES = 2000
MAX_POINTS = 11_000  # per series, over the whole fetched range
MAX_CELLS = 6_000_000  # series x points fetched in one request (~50 MB of floats)
DEFAULT_REFERENCE_S = 6 * 3600
DEFAULT_GAP_S = 3600
MIN_COVERAGE = 0.5
MIN_STEP_S = 15.0

router = APIRouter(tags=["explanations"], responses={**UNAVAILABLE, **PROMQL})

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
    ranked: list[RankedSeries]
    clusters: list[ClusterOut]
    explanation: list[str] = Field(description="the predicates, to be read joined by AND")
    predicates: list[PredicateOut]
    timings_ms: dict[str, float]


def _bad(field: str, msg: str, value: object) -> Exception:
    return validation_error(("body", field), msg, value)


@router.post(
    "/explanations",
    summary="Explain anomalous intervals: which series changed (EXstream)",
    responses={422: {"description": "bad intervals, no data, or too many series"}},
)
def post_explanation(body: ExplainRequest, prometheus: PrometheusDep) -> ExplainResponse:
    t0 = time.perf_counter()
    anomalous = sorted(body.anomalous)
    first = anomalous[0][0]
    reference = body.reference or (
        first - DEFAULT_GAP_S - DEFAULT_REFERENCE_S,
        first - DEFAULT_GAP_S,
    )
    start = min(reference[0], first)
    end = max(reference[1], *(e for _, e in anomalous))
    step = body.step or max(MIN_STEP_S, float(math.ceil((end - start) / (MAX_POINTS - 1))))
    start = math.floor(start / step) * step
    n_points = int((end - start) // step) + 1
    if n_points > MAX_POINTS:
        raise _bad(
            "step", f"{n_points} points per series: more than {MAX_POINTS}; use a larger step", step
        )

    counted = prometheus.query(f"count({body.selector})", end)
    matched = int(counted[0].value) if counted else 0
    if matched == 0:
        raise _bad("selector", "the selector matches no series at the end of the intervals", 0)
    if matched > MAX_CANDIDATE_SERIES:
        raise _bad(
            "selector",
            f"the selector matches {matched} series, more than the cap of "
            f"{MAX_CANDIDATE_SERIES}: narrow it",
            matched,
        )
    if matched * n_points > MAX_CELLS:
        raise _bad(
            "selector",
            f"{matched} series x {n_points} points is more than {MAX_CELLS}: narrow the "
            "selector, shorten the intervals or use a larger step",
            matched,
        )
    result = prometheus.query_range(body.selector, start, start + (n_points - 1) * step, step)
    if len(result) > MAX_CANDIDATE_SERIES:
        raise _bad(
            "selector",
            f"the selector returns {len(result)} series over the range, more than the cap of "
            f"{MAX_CANDIDATE_SERIES}: narrow it",
            len(result),
        )
    t_fetch = time.perf_counter()

    grid = start + step * np.arange(n_points)
    is_a = np.zeros(n_points, dtype=bool)
    for a, b in anomalous:
        is_a |= (grid >= a) & (grid <= b)
    is_r = (grid >= reference[0]) & (grid <= reference[1]) & ~is_a
    if not is_a.any() or not is_r.any():
        raise _bad("anomalous", f"an interval holds no point of the {step:g} s grid", anomalous)
    matrix, present = to_matrix([(s.timestamps, s.values) for s in result], grid)
    used = is_a | is_r
    coverage = present[:, used].mean(axis=1) if len(result) else np.zeros(0)
    keep = np.flatnonzero(
        (coverage >= MIN_COVERAGE) & present[:, is_a].any(axis=1) & present[:, is_r].any(axis=1)
    )
    if len(keep) == 0:
        raise _bad(
            "anomalous",
            "no series has data in both the anomalous and reference intervals",
            anomalous,
        )
    window = max(1, round(max(step, 60.0) / step))
    rows = []
    for i in keep:
        v = matrix[i]
        if (result[i].metric or "").endswith("_total"):
            v = counter_rates(v, step, window)
        rows.append(v)
    x = np.vstack(rows)
    t_align = time.perf_counter()

    try:
        e = explain(x, is_a, is_r, config=ExplainConfig(max_ranked=body.max_ranked))
    except ValueError as exc:
        raise _bad("anomalous", str(exc), None) from exc

    def labels_of(i: int) -> dict[str, str]:
        return {k: v for k, v in result[keep[i]].labels.items() if k != "__name__"}

    def key_of(i: int) -> str:
        return series_key(result[keep[i]].metric or "", labels_of(i))

    def ranked(s: FeatureScore) -> RankedSeries:
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
    return ExplainResponse(
        anomalous=anomalous,
        reference=reference,
        step=step,
        candidates=len(result),
        sparse=len(result) - len(keep),
        false_positives=len(e.false_positives),
        ranked=[ranked(s) for s in e.ranked],
        clusters=[
            ClusterOut(
                representative=key_of(c.representative),
                moves_with=[key_of(m) for m in c.moves_with],
            )
            for c in e.clusters
        ],
        explanation=[p.text for p in predicates],
        predicates=predicates,
        timings_ms={k: round(v, 3) for k, v in timings.items()},
    )
