"""The anomaly record: round trip, idempotency key, and what it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from sla_common.anomalies import AnomalyRecord


def anomaly_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "detector": {"name": "sigma", "version": "1"},
        "series": {"key": "k1", "metric": "cpu", "labels": {"host": "a"}},
        "window": {"start": 1_700_000_000.0, "end": 1_700_000_000.5},
        "count": 3,
        "mean": 12.0,
        "std": 1.5,
        "normal": {"mean": 10.0, "std": 1.0, "source": "learned"},
        "deviation": 2.0,
        "status": "WARN",
    }
    doc.update(over)
    return doc


def test_round_trip_and_idempotency_key() -> None:
    rec = AnomalyRecord.model_validate(anomaly_doc())
    back = AnomalyRecord.from_bytes(rec.to_bytes())
    assert back == rec
    assert back.idempotency_key() == ("k1", "sigma", 1_700_000_000.0)
    assert back.kafka_key() == b"k1"
    window = json.loads(rec.to_bytes())["window"]
    assert window == {"start": 1_700_000_000.0, "end": 1_700_000_000.5}


@pytest.mark.parametrize(
    "over",
    [
        {"status": "OK"},
        {"mean": float("nan")},
        {"std": -1.0},
        {"count": 0},
        {"window": {"start": 10.0, "end": 10.0}},
        {"window": {"start": 1_700_000_000_000.0, "end": 1_700_000_000_500.0}},
        {"normal": {"mean": 0.0, "std": 0.0, "source": "none"}},  # WARN without a normal
        {"extra": 1},
        {"schema_version": 3},
        # period_s came with version 2: a version 1 record carrying it is refused
        {"normal": {"mean": 10.0, "std": 1.0, "source": "learned", "period_s": 0}},
    ],
)
def test_refuses_bad_records(over: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        AnomalyRecord.model_validate(anomaly_doc(**over))


def test_learning_record_without_normal_is_valid() -> None:
    rec = AnomalyRecord.model_validate(
        anomaly_doc(
            status="LEARNING", deviation=0.0, normal={"mean": 0, "std": 0, "source": "none"}
        )
    )
    assert rec.status == "LEARNING"


def test_nan_in_json_is_refused() -> None:
    raw = json.dumps(anomaly_doc(mean=float("nan"))).encode()
    with pytest.raises(ValidationError):
        AnomalyRecord.from_bytes(raw)
