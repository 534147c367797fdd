"""Every ETL metric the README documents moves when it should (fresh registry per test; a fake
Prometheus and a fake producer stand in for the services)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import etl_data_pipeline.pipeline as pipeline_mod
from etl_data_pipeline.metrics import EtlMetrics
from etl_data_pipeline.pipeline import Pipeline
from etl_data_pipeline.settings import EtlSettings
from sla_common.prometheus import PrometheusError, PrometheusUnavailable, RangeSeries
from tests.unit.promfake import AnsweringPrometheus

T0 = 1_760_000_000
STEP = 15
N = 400  # 100 minutes: every analysis but the decomposition (two hours) runs


def _series(name: str, n: int = N, **labels: str) -> RangeSeries:
    ts = T0 + STEP * np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(len(name) + n)
    vs = 100 + np.sin(np.arange(n) / 10) + rng.normal(0, 0.1, n)
    return RangeSeries({"__name__": name, **labels}, ts, vs)


class FakeFuture:
    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.is_done = True
        self.exception = None if ok else RuntimeError("not acknowledged")

    def succeeded(self) -> bool:
        return self.ok

    def failed(self) -> bool:
        return not self.ok


class FakeProducer:
    def __init__(self, ack: bool = True) -> None:
        self.ack = ack
        self.sent: list[bytes] = []

    def send(self, topic: str, key: bytes, value: bytes) -> FakeFuture:
        self.sent.append(key)
        return FakeFuture(self.ack)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


SELECTORS = ("a", "b", "empty", "bad")


def _answers() -> dict[str, Any]:
    return {
        "a": [_series("a", job="x"), _series("a", job="y")],
        "b": [_series("b", n=5)],  # too short for most analyses
        "empty": [],
        "bad": PrometheusError("bad_data", "parse error", 400),
    }


@pytest.fixture
def pipeline() -> Pipeline:
    p = Pipeline(EtlSettings(etl_selectors=SELECTORS), EtlMetrics(), clock=lambda: T0 + N * STEP)
    p.prometheus.close()
    p.prometheus = AnsweringPrometheus(_answers())
    p._producer = FakeProducer()
    return p


def value(p: Pipeline, name: str, **labels: str) -> float:
    v = p.metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_series_analysed_counts_every_series_that_made_a_message(pipeline: Pipeline) -> None:
    pipeline.run_cycle()
    assert value(pipeline, "sla_etl_series_analysed_total") == 3
    pipeline.run_cycle()
    assert value(pipeline, "sla_etl_series_analysed_total") == 6


def test_messages_published_counts_acknowledged_records_only(pipeline: Pipeline) -> None:
    pipeline.run_cycle()
    assert value(pipeline, "sla_etl_messages_published_total") == 3
    pipeline._producer = FakeProducer(ack=False)
    report = pipeline.run_cycle()
    assert not report.ok
    assert value(pipeline, "sla_etl_messages_published_total") == 3
    assert value(pipeline, "sla_etl_series_analysed_total") == 6  # analysed, not published


def test_cycles_count_success_and_failure(pipeline: Pipeline) -> None:
    pipeline.run_cycle()
    assert value(pipeline, "sla_etl_cycles_total", result="success") == 1
    assert value(pipeline, "sla_etl_cycles_total", result="failed") == 0
    pipeline.prometheus = AnsweringPrometheus({s: PrometheusUnavailable("down") for s in SELECTORS})
    pipeline.run_cycle()
    assert value(pipeline, "sla_etl_cycles_total", result="failed") == 1


def test_series_failed_counts_an_analysis_that_raised(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pipeline_mod.analyse_series

    def flaky(fs: Any, *args: Any) -> Any:
        if fs.ref.labels.get("job") == "y":
            raise RuntimeError("boom")
        return real(fs, *args)

    monkeypatch.setattr(pipeline_mod, "analyse_series", flaky)
    report = pipeline.run_cycle()
    assert report.ok and report.failed_series == 1
    assert value(pipeline, "sla_etl_series_failed_total") == 1
    assert value(pipeline, "sla_etl_series_analysed_total") == 2


def test_analyses_skipped_by_analysis_and_reason(pipeline: Pipeline) -> None:
    pipeline.run_cycle()
    # every series is shorter than the two seasons (hours) of the decomposition; "b" (5
    # points) is also shorter than ADF's 8
    too_short = value(
        pipeline, "sla_etl_analyses_skipped_total", analysis="decomposition", reason="too_short"
    )
    assert too_short == 3
    assert (
        value(pipeline, "sla_etl_analyses_skipped_total", analysis="adf", reason="too_short") == 1
    )


def test_selector_errors_count_rejected_selectors(pipeline: Pipeline) -> None:
    report = pipeline.run_cycle()
    assert value(pipeline, "sla_etl_selector_errors_total") == 1
    assert len(report.selector_errors) == 1 and "parse error" in report.selector_errors[0]


def test_selectors_empty_counts_each_configured_selector_that_matched_nothing(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    report = pipeline.run_cycle()
    pipeline.run_cycle()
    assert report.empty_selectors == ("empty",)
    assert value(pipeline, "sla_etl_selectors_empty_total", selector="empty") == 2
    assert value(pipeline, "sla_etl_selectors_empty_total", selector="a") == 0
    assert any(
        r.levelname == "WARNING" and "matched no series" in r.getMessage() for r in caplog.records
    )
    assert report.nothing_matched is None  # other selectors did publish


def test_a_cycle_where_nothing_matched_is_a_warning_with_the_reason(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline.s = EtlSettings(etl_selectors=("empty",))
    report = pipeline.run_cycle()
    assert report.ok and report.published == 0
    assert report.nothing_matched is not None and "no selector matched" in report.nothing_matched
    assert not any(" ok: " in r.getMessage() for r in caplog.records)
    assert any(
        r.levelname == "WARNING" and "no series published" in r.getMessage() for r in caplog.records
    )


ANALYSES = ("adf", "hp", "acf", "decomposition", "aggregates", "forecast")


@pytest.mark.parametrize("analysis", ANALYSES)
def test_analysis_duration_and_its_cycle_max_move_per_analysis(
    pipeline: Pipeline, analysis: str
) -> None:
    pipeline.run_cycle()
    assert value(pipeline, "sla_etl_analysis_duration_seconds_count", analysis=analysis) == 3
    assert value(pipeline, "sla_etl_analysis_cycle_max_seconds", analysis=analysis) > 0


def test_cycle_duration_and_last_cycle_duration_move_every_cycle(pipeline: Pipeline) -> None:
    pipeline.run_cycle()
    assert value(pipeline, "sla_etl_cycle_duration_seconds_count") == 1
    first = value(pipeline, "sla_etl_last_cycle_duration_seconds")
    assert first > 0
    pipeline.run_cycle()
    assert value(pipeline, "sla_etl_cycle_duration_seconds_count") == 2
    assert value(pipeline, "sla_etl_cycle_duration_seconds_sum") > first


@pytest.mark.parametrize("stage", ["fetch", "analyse_publish"])
def test_stage_duration_moves_per_stage(pipeline: Pipeline, stage: str) -> None:
    pipeline.run_cycle()
    assert value(pipeline, "sla_etl_stage_duration_seconds_count", stage=stage) == 1


def test_last_success_and_series_last_cycle_are_set_by_successful_cycles(
    pipeline: Pipeline,
) -> None:
    pipeline.run_cycle()
    assert value(pipeline, "sla_etl_last_success_timestamp_seconds") == T0 + N * STEP
    assert value(pipeline, "sla_etl_series_last_cycle") == 3
    pipeline.clock = lambda: T0 + N * STEP + 60
    pipeline._producer = FakeProducer(ack=False)
    assert not pipeline.run_cycle().ok
    # a failed cycle leaves both as the last success set them
    assert value(pipeline, "sla_etl_last_success_timestamp_seconds") == T0 + N * STEP
    assert value(pipeline, "sla_etl_series_last_cycle") == 3
