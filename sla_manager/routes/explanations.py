"""``POST /explanations`` and ``GET /slis/{name}/violations/explanation``: which series
changed in the anomalous interval(s), EXstream style. Thin routes over
:mod:`sla_manager.explain.run` (the pipeline, shared with the gRPC ``Explain`` RPC); what it
cannot explain is a 422 located at the request's field. Reads are open, like the other
evaluations.

The violation route finds the intervals itself: the SLI's selector at the explanation's
step over ``start..end``, the series (of the SLI's labels) outside its range longest there,
its violation intervals as the anomalous intervals; candidates: every series of that
series' ``instance`` (or the ``selector`` given), less the SLI's series and its exact affine
copies, which separate by construction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Self

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from sla_common.prometheus import RangeSeries
from sla_common.series import series_key
from sla_manager import evaluation as ev
from sla_manager.deps import PrometheusDep, SettingsDep, SliName, SliStoreDep, sli_or_404
from sla_manager.errors import NOT_FOUND, PROMQL, UNAVAILABLE, validation_error
from sla_manager.explain.run import (
    DEFAULT_GAP_S,
    DEFAULT_REFERENCE_S,
    MAX_POINTS,
    MAX_VALUE_POINTS,
    MIN_STEP_S,
    VALUES_DOC,
    Epoch,
    ExplainInputError,
    ExplainRequest,
    ExplainResponse,
    run_explanation,
)
from sla_manager.models import MAX_WINDOW_S
from sla_manager.routes.sli_series import check_range_size, narrow

router = APIRouter(tags=["explanations"], responses={**UNAVAILABLE, **PROMQL})


class ViolationExplanationQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Epoch = Field(description="where to look for the SLI's violations")
    end: Epoch
    step: float | None = Field(
        default=None, ge=1, le=3600, allow_inf_nan=False, description="as in POST /explanations"
    )
    selector: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="the candidates (default: every series of the violating series' instance)",
    )
    max_ranked: int = Field(default=20, ge=1, le=200)
    values: int = Field(default=0, ge=0, le=MAX_VALUE_POINTS, description=VALUES_DOC)

    @model_validator(mode="after")
    def _order(self) -> Self:
        if not self.start < self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        return self


class ViolationExplanationResponse(ExplainResponse):
    sli: str
    series: str = Field(description="the SLI's series explained: the one outside longest")
    selector: str = Field(description="the candidates' selector")
    excluded: list[str] = Field(description="the SLI's series and its affine copies")


def _bad(where: str, field: str, msg: str, value: object) -> Exception:
    return validation_error((where, field), msg, value)


@contextmanager
def _located(where: str) -> Iterator[None]:
    """:class:`ExplainInputError` as a 422 located at ``where`` (body or query)."""
    try:
        yield
    except ExplainInputError as e:
        raise _bad(where, e.field, e.message, e.value) from e


@router.post(
    "/explanations",
    summary="Explain anomalous intervals: which series changed (EXstream)",
    responses={422: {"description": "bad intervals, no data, or too many series"}},
)
def post_explanation(
    body: ExplainRequest, prometheus: PrometheusDep, settings: SettingsDep
) -> ExplainResponse:
    with _located("body"):
        return run_explanation(
            prometheus,
            settings,
            selector=body.selector,
            anomalous=list(body.anomalous),
            reference=body.reference,
            step=body.step,
            max_ranked=body.max_ranked,
            values=body.values,
        ).answer


@router.get(
    "/slis/{name}/violations/explanation",
    summary="Explain the SLI's violations between start and end (EXstream)",
    description=(
        "The SLI's selector is evaluated at the explanation's step over `start..end`; the "
        "series (of the SLI's labels) outside its range longest there is explained: its "
        "violation intervals are the anomalous intervals, the reference the 6 h ending 1 h "
        "before the first, the candidates every series of its `instance` label (or "
        "`selector`) less the series itself and its exact affine copies. As POST "
        "/explanations otherwise."
    ),
    responses={
        **NOT_FOUND,
        422: {"description": "bad interval, no data or no violation, or too many series"},
    },
)
def explain_violation(
    name: SliName,
    store: SliStoreDep,
    params: Annotated[ViolationExplanationQuery, Query()],
    prometheus: PrometheusDep,
    settings: SettingsDep,
) -> ViolationExplanationResponse:
    start, end = params.start, params.end
    if end - start > MAX_WINDOW_S:
        raise _bad("query", "start", f"start..end spans more than {MAX_WINDOW_S} s", start)
    sli = sli_or_404(store, name)
    span = end - start + DEFAULT_GAP_S + DEFAULT_REFERENCE_S
    step = params.step or max(MIN_STEP_S, float(math.ceil(span / (MAX_POINTS - 1))))
    first = math.floor(start / step) * step
    evaluations = ev.evaluation_count(first, end, step)
    check_range_size(prometheus, sli, end, evaluations, settings)
    found, _total = narrow(prometheus.query_range(sli.selector, first, end, step), sli, settings)
    if not found:
        raise _bad("query", "start", "the SLI's selector has no data between start and end", start)
    bounds = sli.bounds()
    worst: tuple[float, RangeSeries, ev.SeriesViolations] | None = None
    for rs in found:
        v = ev.violations(rs.timestamps, rs.values, bounds, step, first, end)
        if v.intervals and (worst is None or v.time_outside_s > worst[0]):
            worst = (v.time_outside_s, rs, v)
    if worst is None:
        raise _bad(
            "query",
            "start",
            "the SLI has no violation between start and end: nothing to explain",
            start,
        )
    _, series, violated = worst
    labels = {k: v for k, v in series.labels.items() if k != "__name__"}
    selector = params.selector
    if selector is None:
        instance = labels.get("instance")
        if instance is None:
            raise _bad(
                "query",
                "selector",
                "the violating series has no instance label: give the candidates' selector",
                None,
            )
        selector = series_key("", {"instance": instance})
    own = series_key(series.metric or "", labels)
    with _located("query"):
        res = run_explanation(
            prometheus,
            settings,
            selector=selector,
            anomalous=[(i.start, i.end) for i in violated.intervals],
            reference=None,
            step=step,
            max_ranked=params.max_ranked,
            exclude_copies_of=own,
            values=params.values,
        )
    return ViolationExplanationResponse(
        **res.answer.model_dump(),
        sli=sli.name,
        series=own,
        selector=selector,
        excluded=res.excluded,
    )
