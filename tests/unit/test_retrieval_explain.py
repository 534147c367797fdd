"""The ``Explain`` RPC's pure parts: a request checked as ``POST /explanations`` checks its
body (one short INVALID_ARGUMENT line naming the message's field), the pipeline's answer as
its message, and what the client prints of it. The RPC against the real stack is in
tests/integration/test_retrieval_explain.py."""

from __future__ import annotations

from typing import cast

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval.client import render
from data_retrieval.client.api import interval
from data_retrieval.explain import request_of, response_of
from data_retrieval.settings import RetrievalSettings
from data_retrieval.validation import RequestError
from sla_common.prometheus import PrometheusClient
from sla_manager.explain.run import ExplainResponse, run_explanation
from sla_manager.settings import SlaSettings
from tests.unit.test_explain_route import END, HISTORY_START, fake_prometheus

SEL = '{job="x"}'


def iv(start: int, end: int, nanos: int = 0) -> pb.Interval:
    return pb.Interval(start=Timestamp(seconds=start, nanos=nanos), end=Timestamp(seconds=end))


def refusal(**fields: object) -> str:
    with pytest.raises(RequestError) as info:
        request_of(pb.ExplainRequest(**fields))  # type: ignore[arg-type]
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return info.value.message


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"anomalous": [iv(10, 20)]},
            'selector: give a PromQL selector of the candidates, e.g. {job="node"}',
        ),
        ({"selector": "  ", "anomalous": [iv(10, 20)]}, "selector: give a PromQL selector"),
        ({"selector": SEL}, "anomalous: give at least one interval"),
        ({"selector": SEL, "anomalous": [iv(20, 10)]}, "anomalous[0]: start must be before end"),
        (
            {"selector": SEL, "anomalous": [iv(10, 20), iv(30, 30)]},
            "anomalous[1]: start must be before end",
        ),
        (
            {"selector": SEL, "anomalous": [pb.Interval(end=Timestamp(seconds=5))]},
            "anomalous[0]: set both start and end",
        ),
        (
            {"selector": SEL, "anomalous": [iv(-10, 20)]},
            "anomalous[0].start: Input should be greater than or equal to 0",
        ),
        (
            {"selector": SEL, "anomalous": [iv(10, 20, nanos=-1)]},
            "anomalous[0].start.nanos=-1 must be in 0..999999999",
        ),
        (
            {"selector": SEL, "anomalous": [iv(10, 20)], "reference": iv(30, 5)},
            "reference: start must be before end",
        ),
        (
            {"selector": SEL, "anomalous": [iv(10, 20)], "reference": iv(5, 15)},
            "the reference overlaps an anomalous interval",
        ),
        (
            {"selector": SEL, "anomalous": [iv(10, 20)], "reference": iv(0, 99_999_999_999)},
            "reference.end: Input should be less than or equal to",
        ),
        (
            {"selector": SEL, "anomalous": [iv(10, 20)], "step_seconds": 7200},
            "step_seconds: Input should be less than or equal to 3600",
        ),
        (
            {"selector": SEL, "anomalous": [iv(10, 20)], "max_ranked": -1},
            "max_ranked: Input should be greater than or equal to 1",
        ),
        (
            {"selector": SEL, "anomalous": [iv(10, 20)] * 101},
            "anomalous: List should have at most 100 items",
        ),
        (
            {"selector": "x" * 5000, "anomalous": [iv(10, 20)]},
            "selector: String should have at most 4096 characters",
        ),
    ],
)
def test_bad_requests_are_refused_in_one_short_line(
    fields: dict[str, object], message: str
) -> None:
    got = refusal(**fields)
    assert got.startswith(message), got
    assert "\n" not in got and len(got) <= 300


def test_a_good_request_is_the_rest_request_with_its_defaults() -> None:
    req = request_of(pb.ExplainRequest(selector=SEL, anomalous=[iv(100, 200, nanos=500_000_000)]))
    assert req.anomalous == [(100.5, 200.0)]
    assert req.reference is None and req.step is None and req.max_ranked == 20
    req = request_of(
        pb.ExplainRequest(
            selector=SEL,
            anomalous=[iv(100, 200)],
            reference=iv(0, 50),
            step_seconds=30,
            max_ranked=3,
        )
    )
    assert req.reference == (0.0, 50.0) and req.step == 30.0 and req.max_ranked == 3
    assert req.values == 0
    req = request_of(pb.ExplainRequest(selector=SEL, anomalous=[iv(100, 200)], values=40))
    assert req.values == 40
    assert refusal(selector=SEL, anomalous=[iv(100, 200)], values=501).startswith("values: ")


def test_the_client_sends_fractions_of_a_second() -> None:
    got = interval(100.25, 200)
    assert (got.start.seconds, got.start.nanos, got.end.seconds, got.end.nanos) == (
        100,
        250_000_000,
        200,
        0,
    )


def _pipeline_answer(values: int = 0) -> ExplainResponse:
    """The REST pipeline's answer for the fake's cause over the last 30 minutes."""
    return run_explanation(
        cast(PrometheusClient, fake_prometheus(HISTORY_START)),
        SlaSettings(),
        selector=SEL,
        anomalous=[(END - 1800, END)],
        reference=None,
        step=60,
        max_ranked=10,
        values=values,
    ).answer


def test_the_answer_is_the_pipelines_field_for_field() -> None:
    answer = _pipeline_answer()
    msg = response_of(answer)
    assert [(i.start.seconds, i.end.seconds) for i in msg.anomalous] == [(END - 1800, END)]
    assert (msg.reference.start.seconds, msg.reference.end.seconds) == answer.reference
    assert msg.step_seconds == 60 and msg.candidates == answer.candidates == 3
    assert (msg.sparse, msg.false_positives, msg.day_before, msg.seasonal_series) == (
        answer.sparse,
        answer.false_positives,
        True,
        3,
    )
    for got, want in zip(
        [*msg.ranked, *msg.false_positive_series],
        [*answer.ranked, *answer.false_positive_series],
        strict=True,
    ):
        assert got.series.key == want.series and got.series.metric == want.metric
        assert dict(got.series.labels) == want.labels
        assert (got.distance, got.direction) == (want.distance, want.direction)
        assert (got.anomalous.min, got.anomalous.max, got.anomalous.median) == (
            want.anomalous.min,
            want.anomalous.max,
            want.anomalous.median,
        )
        assert got.reference.median == want.reference.median
        assert got.reference_distance == want.reference_distance
        assert got.plain_distance == want.plain_distance
        assert got.HasField("seasonal_distance") == (want.seasonal_distance is not None)
        assert got.seasonal_distance == (want.seasonal_distance or 0.0)
    assert msg.ranked[0].series.key == 'cause{job="x"}'
    assert [(c.representative, list(c.moves_with)) for c in msg.clusters] == [
        (c.representative, c.moves_with) for c in answer.clusters
    ]
    assert list(msg.explanation) == answer.explanation and answer.explanation
    assert [(p.series, p.op, p.threshold, p.text) for p in msg.predicates] == [
        (p.series, p.op, p.threshold, p.text) for p in answer.predicates
    ]
    assert dict(msg.timings_ms) == answer.timings_ms

    text = render.explanation_block(msg)
    lines = text.splitlines()
    assert lines[0].startswith("Explanation of ") and "step 60 s" in lines[0]
    assert lines[1].startswith("3 candidate series, 0 sparse, ")
    assert lines[2] == "  " + answer.explanation[0]
    assert any(ln.split()[:2] == ["1", 'cause{job="x"}'] for ln in lines)


def test_the_ranked_series_values_are_the_pipelines() -> None:
    answer = _pipeline_answer(values=50)
    msg = response_of(answer)
    assert answer.values_step is not None and msg.values_step_seconds == answer.values_step
    for got, want in zip(msg.ranked, answer.ranked, strict=True):
        assert want.values is not None and len(got.values) == len(want.values) <= 50
        assert [p.ts.seconds for p in got.values] == [int(t) for t, _v in want.values]
        assert [p.value if p.HasField("value") else None for p in got.values] == [
            v for _t, v in want.values
        ]
    assert all(not s.values for s in msg.false_positive_series)


def test_an_answer_without_predicates_says_so() -> None:
    text = render.explanation_block(
        pb.ExplainResponse(anomalous=[iv(0, 60)], reference=iv(-3600, -60), candidates=2)
    )
    assert "no series separates the anomalous interval from the reference" in text
    assert "(no day before: windows of the reference)" in text


def test_the_caps_are_the_sla_managers_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLA_EXPLAIN_MAX_SERIES", "7")
    monkeypatch.setenv("SLA_EXPLAIN_MAX_CELLS", "5000")
    monkeypatch.setenv("RETRIEVAL_EXPLAIN_CONCURRENT", "3")
    for settings in (RetrievalSettings(), SlaSettings()):
        assert (settings.sla_explain_max_series, settings.sla_explain_max_cells) == (7, 5000)
    assert RetrievalSettings().retrieval_explain_concurrent == 3
