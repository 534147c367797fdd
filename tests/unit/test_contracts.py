"""The message contract, the settings, the Prometheus response parsing and series keys."""

from __future__ import annotations

import json
import logging

import httpx
import numpy as np
import pytest
from pydantic import ValidationError

from etl_data_pipeline.analyses import analyse, prepare
from etl_data_pipeline.pipeline import analysis_config, build_message
from etl_data_pipeline.settings import DEFAULT_SELECTORS, EtlSettings
from sla_common.logging import RepeatFilter
from sla_common.messages import AnalysisMessage, SeriesRef
from sla_common.prometheus import (
    MAX_POINTS_PER_QUERY,
    PrometheusError,
    PrometheusUnavailable,
    merge_chunks,
    parse_matrix,
    parse_response,
    range_chunks,
)
from sla_common.series import series_key, shard_of
from sla_common.settings import SettingsError, load_settings

T0 = 1_760_000_000


def _message(n: int = 2880) -> AnalysisMessage:
    rng = np.random.default_rng(0)
    ts = T0 + 15 * np.arange(n)
    vs = 1e9 + 1e7 * np.sin(np.arange(n) / 40) + rng.normal(0, 1e5, n)
    end = int(ts[-1])
    result = analyse(prepare(ts, vs, 15), end, analysis_config(EtlSettings()))
    ref = SeriesRef(
        key=series_key("m", {"job": "host"}), metric="m", labels={"job": "host"}, selector="m"
    )
    return build_message("run1", end, ref, end - 43200, end, result, 600)


def test_message_round_trips_and_carries_every_analysis() -> None:
    msg = _message()
    raw = msg.to_bytes()
    back = AnalysisMessage.from_bytes(raw)
    assert back == msg
    doc = json.loads(raw)
    assert doc["schema_version"] == 2
    assert doc["adf"]["critical_values"].keys() == {"1%", "5%", "10%"}
    assert len(doc["hp"]["trend"]) == doc["grid"]["count"] == 2880
    assert [a["window"] for a in doc["aggregates"]] == ["1h", "3h", "12h"]
    assert len(doc["forecast"]["points"]) == 10
    assert doc["skipped"] == []
    assert msg.kafka_key() == b'm{job="host"}'
    assert len(raw) < 1024 * 1024  # fits Kafka's default max message size


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(schema_version=3), "schema_version"),
        (lambda d: d.pop("run_id"), "run_id"),
        (lambda d: d["adf"].update(pvalue="low"), "pvalue"),
        (lambda d: d["grid"].update(count=5), "grid.count"),
        (lambda d: d.update(produced_at=1_760_000_000_000), "produced_at"),  # milliseconds
        (lambda d: d.update(unexpected=1), "unexpected"),
    ],
)
def test_message_validation_rejects_malformed_documents(mutate, needle) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(_message(300).to_bytes())
    mutate(doc)
    with pytest.raises(ValidationError) as e:
        AnalysisMessage.from_bytes(json.dumps(doc).encode())
    assert needle in str(e.value)


def test_message_rejects_non_finite_numbers() -> None:
    raw = _message(300).to_bytes().replace(b'"statistic":', b'"statistic":NaN,"x":', 1)
    with pytest.raises(ValidationError):
        AnalysisMessage.from_bytes(raw)
    with pytest.raises(ValidationError):
        AnalysisMessage.from_bytes(b"not json")


def test_series_key_is_stable_and_sorted() -> None:
    a = series_key("up", {"job": "node", "instance": 'a"b'})
    assert a == 'up{instance="a\\"b",job="node"}'
    assert series_key("up", {"instance": 'a"b', "job": "node", "__name__": "up"}) == a
    counts = [0, 0, 0]
    for i in range(300):
        counts[shard_of(f"k{i}", 3)] += 1
    assert min(counts) > 60  # roughly balanced
    assert shard_of("k1", 3) == shard_of("k1", 3)


def test_settings_parse_selectors_and_name_the_bad_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETL_SELECTORS", 'up{job="a",instance="b"}; node_load1\nfoo')
    s = load_settings(EtlSettings)
    assert s.etl_selectors == ('up{job="a",instance="b"}', "node_load1", "foo")
    monkeypatch.setenv("ETL_SELECTORS", '["x{a=\\"1\\"}", "y"]')
    assert load_settings(EtlSettings).etl_selectors == ('x{a="1"}', "y")
    monkeypatch.delenv("ETL_SELECTORS")
    assert load_settings(EtlSettings).etl_selectors == DEFAULT_SELECTORS

    monkeypatch.setenv("ETL_INTERVAL_S", "-3")
    with pytest.raises(SettingsError) as e:
        load_settings(EtlSettings)
    assert "ETL_INTERVAL_S" in str(e.value) and e.value.code == 2
    monkeypatch.delenv("ETL_INTERVAL_S")
    monkeypatch.setenv("ETL_SHARD_INDEX", "3")
    with pytest.raises(SettingsError, match="ETL_SHARD_INDEX"):
        load_settings(EtlSettings)


def test_parse_response_splits_client_errors_from_outages() -> None:
    bad = httpx.Response(
        400,
        json={"status": "error", "errorType": "bad_data", "error": "parse error at char 5"},
    )
    with pytest.raises(PrometheusError) as e:
        parse_response(bad)
    assert e.value.error_type == "bad_data" and "parse error" in e.value.message
    with pytest.raises(PrometheusUnavailable):
        parse_response(httpx.Response(503, text="overloaded"))


def test_parse_matrix_and_chunking() -> None:
    data = {
        "resultType": "matrix",
        "result": [
            {"metric": {"__name__": "m", "a": "1"}, "values": [[T0, "1.5"], [T0 + 15, "NaN"]]}
        ],
    }
    (s,) = parse_matrix(data)
    assert s.metric == "m" and s.labels == {"__name__": "m", "a": "1"}
    assert s.timestamps.tolist() == [T0, T0 + 15] and s.values[0] == 1.5
    assert np.isnan(s.values[1])

    chunks = range_chunks(0, 15 * 30_000, 15)
    assert chunks[0] == (0, 15 * (MAX_POINTS_PER_QUERY - 1))
    assert chunks[-1][1] == 15 * 30_000
    assert all(b - a <= 15 * (MAX_POINTS_PER_QUERY - 1) for a, b in chunks)
    assert all(chunks[i + 1][0] == chunks[i][1] + 15 for i in range(len(chunks) - 1))

    parts = [
        parse_matrix(data),
        parse_matrix(
            {
                **data,
                "result": [{"metric": {"a": "1", "__name__": "m"}, "values": [[T0 + 30, "2"]]}],
            }
        ),
    ]
    (merged,) = merge_chunks(parts)
    assert merged.timestamps.tolist() == [T0, T0 + 15, T0 + 30]


def test_repeat_filter_lets_one_record_per_interval_through() -> None:
    f = RepeatFilter(interval_s=30)

    def rec(msg: str, at: float) -> logging.LogRecord:
        r = logging.LogRecord("kafka.conn", logging.ERROR, __file__, 1, msg, None, None)
        r.created = at
        return r

    assert [f.filter(rec("down %s", t)) for t in (0, 1, 29, 31, 32)] == [
        True,
        False,
        False,
        True,
        False,
    ]
    assert f.filter(rec("other %s", 2))  # a different message is not held back


def test_a_version_1_message_without_the_version_2_fields_still_validates() -> None:
    doc = json.loads(_message().to_bytes())
    doc["schema_version"] = 1
    for part, fields in _V2_FIELDS.items():
        for field in fields:
            doc[part].pop(field, None)
    for point in doc["forecast"]["points"]:
        point.pop("loc", None)
        point.pop("scale", None)
    back = AnalysisMessage.from_bytes(json.dumps(doc).encode())
    assert back.schema_version == 1
    assert back.forecast is not None and back.forecast.points[0].loc is None


_V2_FIELDS = {
    "series": ("metric_type", "type_source", "rate_window_s"),
    "adf": ("regression",),
    "hp": ("cutoff_period_s",),
    "forecast": ("distribution", "df", "floor"),
}
