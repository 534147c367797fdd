"""Counter typing and the rate() queries the ETL asks Prometheus (pure parts, and fetch with a
fake Prometheus; the real one is in tests/integration/test_etl_counters.py)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from etl_data_pipeline.analyses import analyse, hp_lambda_for_cutoff, prepare
from etl_data_pipeline.counters import classify, metadata_names, parse_plain_selector
from etl_data_pipeline.metrics import EtlMetrics
from etl_data_pipeline.pipeline import Pipeline, analysis_config, build_message
from etl_data_pipeline.settings import EtlSettings
from sla_common.messages import AnalysisMessage, SeriesRef
from sla_common.prometheus import PrometheusClient, RangeSeries
from tests.unit.promfake import AnsweringPrometheus


@pytest.mark.parametrize(
    ("text", "name", "matchers"),
    [
        ("node_cpu_seconds_total", "node_cpu_seconds_total", ""),
        (
            'http_requests_total{job="api", code=~"5.."}',
            "http_requests_total",
            'job="api", code=~"5.."',
        ),
        ('  x_count {a="}"}  ', "x_count", 'a="}"'),
        ('{__name__=~"foo_.*", job="x"}', None, '__name__=~"foo_.*", job="x"'),
        ("x{a='b\\'}'}", "x", "a='b\\'}'"),
    ],
)
def test_plain_selectors_are_recognised(text: str, name: str | None, matchers: str) -> None:
    sel = parse_plain_selector(text)
    assert sel is not None and (sel.name, sel.matchers) == (name, matchers)


@pytest.mark.parametrize(
    "text",
    [
        "sum(rate(x_total[5m]))",
        "x_total offset 5m",
        'x_total{a="b"} > 3',
        'x{a="}"} or y{b="c"}',
        "x[5m]",
        "{}",
        'x{a="unterminated}',
    ],
)
def test_expressions_are_not_plain_selectors(text: str) -> None:
    assert parse_plain_selector(text) is None


def test_rate_queries_restrict_the_selector_to_one_metric() -> None:
    named = parse_plain_selector('x_total{job="a"}')
    assert named is not None and named.rate("x_total", 240) == 'rate(x_total{job="a"}[240s])'
    bare = parse_plain_selector('{__name__=~"x_.*", job="a"}')
    assert bare is not None
    assert bare.rate("x_total", 60) == 'rate({__name__="x_total", __name__=~"x_.*", job="a"}[60s])'
    assert parse_plain_selector("x_total") is not None


@pytest.mark.parametrize(
    ("name", "metadata", "expected"),
    [
        # metadata wins over the name
        ("jobs_count", {"jobs_count": "gauge"}, ("gauge", "metadata")),
        ("requests_total", {"requests_total": "counter"}, ("counter", "metadata")),  # text format
        ("requests_total", {"requests": "counter"}, ("counter", "metadata")),  # OpenMetrics
        ("latency_seconds_bucket", {"latency_seconds": "histogram"}, ("counter", "metadata")),
        ("latency_seconds_count", {"latency_seconds": "histogram"}, ("counter", "metadata")),
        ("latency_seconds_sum", {"latency_seconds": "summary"}, ("counter", "metadata")),
        ("latency_seconds", {"latency_seconds": "summary"}, ("gauge", "metadata")),  # quantiles
        ("queue_bucket", {"queue": "gaugehistogram"}, ("gauge", "metadata")),
        ("temperature", {"temperature": "gauge"}, ("gauge", "metadata")),
        # no metadata (backfilled, remote-written, "unknown"): the suffix decides
        ("requests_total", {}, ("counter", "suffix")),
        ("jobs_count", {}, ("counter", "suffix")),
        ("bytes_sum", {}, ("counter", "suffix")),
        ("latency_bucket", {}, ("counter", "suffix")),
        ("temperature", {"temperature": "unknown"}, ("gauge", "suffix")),
        ("node_filefd_allocated", {}, ("gauge", "suffix")),
    ],
)
def test_classify(name: str, metadata: dict[str, str], expected: tuple[str, str]) -> None:
    assert classify(name, metadata) == expected


def test_metadata_names_cover_the_family_of_a_suffixed_series() -> None:
    assert metadata_names("a_bucket") == {"a_bucket", "a"}
    assert metadata_names("gauge") == {"gauge"}


# --------------------------------------------------------------------- fetch with a fake


T0 = 1_760_000_000


def _series(labels: dict[str, str], values: list[float], step: int = 15) -> RangeSeries:
    ts = T0 + step * np.arange(len(values), dtype=np.float64)
    return RangeSeries(labels, ts, np.asarray(values, dtype=np.float64))


def _pipeline(fake: AnsweringPrometheus, **settings: object) -> Pipeline:
    s = EtlSettings(**settings)  # type: ignore[arg-type]
    p = Pipeline(s, EtlMetrics())
    p.prometheus.close()
    p.prometheus = fake
    return p


def test_counters_are_fetched_as_prometheus_rate_and_gauges_as_stored() -> None:
    raw_counter = [0.0, 0.0, 60.0, 60.0, 120.0]  # a 2/s counter scraped every 30 s, 15 s step
    fake = AnsweringPrometheus(
        {
            'jobs_total{job="a"}': [_series({"__name__": "jobs_total", "job": "a"}, raw_counter)],
            'rate(jobs_total{job="a"}[240s])': [_series({"job": "a"}, [2.0] * 5)],
            "queue_count": [_series({"__name__": "queue_count", "job": "a"}, [3.0, 1.0, 2.0])],
        },
        metadata={"queue_count": "gauge"},
    )
    p = _pipeline(fake, etl_selectors=('jobs_total{job="a"}', "queue_count"))
    series, errors = p.fetch(T0, T0 + 60)
    assert errors == []
    by_metric = {fs.ref.metric: fs for fs in series}
    counter = by_metric["jobs_total"]
    assert counter.values.tolist() == [2.0] * 5  # not the [0, 4, 0, 4] of differencing
    assert (counter.ref.transform, counter.ref.metric_type, counter.ref.type_source) == (
        "rate",
        "counter",
        "suffix",
    )
    assert counter.ref.rate_window_s == 240
    gauge = by_metric["queue_count"]  # *_count, but Prometheus' metadata says gauge
    assert (gauge.ref.transform, gauge.ref.metric_type, gauge.ref.type_source) == (
        "none",
        "gauge",
        "metadata",
    )
    assert gauge.values.tolist() == [3.0, 1.0, 2.0]
    assert "rate(queue_count[240s])" not in fake.queries


def test_rate_window_is_at_least_four_steps_and_raw_mode_keeps_counters() -> None:
    assert EtlSettings(etl_step_s=120).rate_window_s == 480
    assert EtlSettings().rate_window_s == 240
    fake = AnsweringPrometheus({"jobs_total": [_series({"__name__": "jobs_total"}, [1.0, 2.0])]})
    p = _pipeline(fake, etl_selectors=("jobs_total",), etl_counter_mode="raw")
    (fs,), _ = p.fetch(T0, T0 + 15)
    assert fs.ref.transform == "none" and fs.ref.metric_type == "counter"
    assert fake.queries == ["jobs_total"]


def test_an_expression_is_analysed_as_returned() -> None:
    q = "sum(rate(jobs_total[5m]))"
    fake = AnsweringPrometheus({q: [_series({}, [1.0, 2.0])]})
    (fs,), _ = _pipeline(fake, etl_selectors=(q,)).fetch(T0, T0 + 15)
    assert (fs.ref.transform, fs.ref.metric_type, fs.ref.type_source) == (
        "none",
        "unknown",
        "expression",
    )


# --------------------------------------------------------------------- settings -> message


def test_hp_and_adf_settings_reach_the_message() -> None:
    s = EtlSettings()
    cfg = analysis_config(s)
    assert cfg.hp_lambda == pytest.approx(2.129e6, rel=1e-3)  # one hour at 15 s
    assert cfg.adf_regression == "ct"
    assert analysis_config(EtlSettings(etl_hp_lambda=1600)).hp_lambda == 1600
    assert analysis_config(EtlSettings(etl_hp_cutoff_s=600)).hp_lambda == pytest.approx(
        hp_lambda_for_cutoff(40)
    )
    with pytest.raises(ValidationError, match="ETL_HP_CUTOFF_S"):
        EtlSettings(etl_hp_cutoff_s=30)
    values = np.sin(np.arange(300) / 7.0) + np.arange(300) / 100.0
    ts = T0 + 15 * np.arange(300)
    ref = SeriesRef(key="x", metric="x", labels={}, selector="x")
    cfg = analysis_config(EtlSettings(etl_adf_regression="c"))
    msg = build_message(
        "r", T0, ref, T0, int(ts[-1]), analyse(prepare(ts, values, 15), 0, cfg), 600
    )
    assert msg.adf is not None and msg.adf.regression == "c"
    assert msg.hp is not None and msg.hp.lamb == cfg.hp_lambda
    assert msg.hp.cutoff_period_s == pytest.approx(3600)
    again = AnalysisMessage.from_bytes(msg.to_bytes())
    assert again.hp is not None and again.hp.cutoff_period_s == pytest.approx(3600)


def test_metadata_client_reads_types_and_leaves_out_conflicts() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        data = {
            "a": [{"type": "counter", "help": "", "unit": ""}],
            "b": [{"type": "gauge", "help": "", "unit": ""}, {"type": "counter", "help": ""}],
        }
        return httpx.Response(200, json={"status": "success", "data": data})

    client = PrometheusClient("http://prometheus.invalid")
    client._http = httpx.Client(base_url=client.base_url, transport=httpx.MockTransport(answer))
    with client:
        assert client.metadata("a") == {"a": "counter"}
    assert seen[0].method == "GET" and seen[0].url.params["metric"] == "a"
