"""The committed gRPC stubs are exactly what `make protos` generates, and the API's shape."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from data_retrieval import protogen
from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["RetrievalService"]
STREAMS = {
    "ListSeries",
    "ListHodrickPrescott",
    "ListDecomposition",
    "ListAutocorrelation",
    "ListAggregates",
    "ListForecast",
    "ListAnomalies",
}


def test_committed_stubs_match_a_fresh_generation() -> None:
    problems = protogen.differences()

    assert problems == [], "stale stubs, run `make protos`: " + "; ".join(problems)


def test_generated_imports_point_inside_the_package() -> None:
    grpc_stub = protogen.PACKAGE_DIR / "sla_monitor/retrieval/v1/retrieval_pb2_grpc.py"
    text = grpc_stub.read_text()

    assert "from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2" in text
    assert "\nfrom sla_monitor" not in text
    # descriptors keep the proto's own names (what reflection and other languages see)
    assert "'/sla_monitor.retrieval.v1.RetrievalService/ListSeries'" in text
    assert pb.DESCRIPTOR.name == "sla_monitor/retrieval/v1/retrieval.proto"
    assert pb.DESCRIPTOR.package == "sla_monitor.retrieval.v1"


def test_service_has_the_rpcs_with_their_streaming_kind() -> None:
    methods = {m.name: m for m in SERVICE.methods}

    assert set(methods) == STREAMS | {"GetDickeyFuller", "Explain"}
    for name, m in methods.items():
        assert m.server_streaming == (name in STREAMS), name
        assert not m.client_streaming, name
    assert methods["GetDickeyFuller"].output_type.name == "DickeyFuller"
    assert methods["Explain"].input_type.name == "ExplainRequest"
    assert methods["Explain"].output_type.name == "ExplainResponse"


@pytest.mark.parametrize("name", sorted(STREAMS - {"ListSeries", "ListAnomalies"}))
def test_stream_requests_are_typed_selector_range_limit_token(name: str) -> None:
    request = pb.DESCRIPTOR.message_types_by_name[f"{name}Request"]
    fields = {f.name: f for f in request.fields}

    assert set(fields) == {"selector", "time_range", "limit", "page_token"}
    assert fields["selector"].message_type is not None
    assert fields["selector"].message_type.name == "SeriesSelector"
    assert fields["time_range"].message_type is not None
    assert fields["time_range"].message_type.name == "TimeRange"
    assert fields["limit"].type == FieldDescriptor.TYPE_INT32
    assert fields["page_token"].type == FieldDescriptor.TYPE_STRING
    response = pb.DESCRIPTOR.message_types_by_name[f"{name}Response"]
    assert "next_page_token" in {f.name for f in response.fields}


def test_times_are_timestamps_and_numbers_are_numbers() -> None:
    timeish = ("time", "start", "end", "at", "first_seen", "last_seen", "produced_at")
    numeric = {"trend", "cycle", "seasonal", "resid", "value", "statistic", "p_value", "max"}
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        for f in message.fields:
            if f.name in timeish or f.name.endswith(("_start", "_end")):
                assert f.message_type is not None, f"{message.name}.{f.name}"
                assert f.message_type.full_name == "google.protobuf.Timestamp", f.full_name
            if f.name in numeric:
                assert f.type == FieldDescriptor.TYPE_DOUBLE, f.full_name


def test_list_anomalies_filters_by_detector_and_status_with_range_limit_token() -> None:
    request = pb.DESCRIPTOR.message_types_by_name["ListAnomaliesRequest"]
    fields = {f.name: f for f in request.fields}
    assert set(fields) == {
        "selector",
        "detectors",
        "statuses",
        "time_range",
        "limit",
        "page_token",
    }
    assert fields["statuses"].enum_type is not None
    assert fields["statuses"].enum_type.name == "AnomalyStatus"
    assert [v.name for v in fields["statuses"].enum_type.values][1:] == [
        f"ANOMALY_STATUS_{s}" for s in ("SAFE", "WARN", "ERROR", "LEARNING")
    ]
    response = pb.DESCRIPTOR.message_types_by_name["ListAnomaliesResponse"]
    assert {f.name for f in response.fields} == {"anomalies", "next_page_token"}
