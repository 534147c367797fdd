"""The anomaly record contract (Kafka topic ``anomaly``, setting ``KAFKA_ANOMALY_TOPIC``).

The streaming detector (``python -m anomaly_detection``) emits one record per closed
tumbling window of a series; ``data_storage`` stores them. Key =
:func:`sla_common.series.series_key` of the series, so a series' windows keep their order.

Idempotence: a window result is identified by (``series.key``, ``detector.name``,
``window.start``) — :meth:`AnomalyRecord.idempotency_key`. The detector delivers at least
once (exactly-once is not available on the local broker), so a consumer must upsert on it.

Status (the reference's rule, multipliers ``m1`` = 1 and ``m2`` = 2 by default)::

    |mean - normal.mean| > m2 * normal.std  -> ERROR
    |mean - normal.mean| > m1 * normal.std  -> WARN
    otherwise                               -> SAFE
    too little history for a learned normal -> LEARNING

``deviation`` is ``(mean - normal.mean) / normal.std``: signed, in normal standard
deviations (vmanomaly's ``anomaly_score`` is its absolute value). Times are Unix seconds;
floats are allowed so sub-second windows (the reference's 500 ms) are exact.

Versioning (as :mod:`sla_common.messages`): ``schema_version`` is a literal; a change old
consumers cannot read bumps it, consumers reject versions they do not know. Version 2 added
``normal.period_s`` (which learned normal judged the window: 0 the plain one, else the
period in seconds of the series' cycle it followed): version 1 records still validate
(``period_s`` absent: unknown), a version 1 consumer refuses version 2 (``extra="forbid"``).
Upgrade consumers (data_storage) before producers (the detector).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

ANOMALY_SCHEMA_VERSION = 2
ANOMALY_SCHEMA_VERSIONS_READ = (1, 2)

Finite = Annotated[float, Field(allow_inf_nan=False)]
EpochS = Annotated[float, Field(ge=0, le=32_503_680_000, allow_inf_nan=False)]  # catches ms

Status = Literal["SAFE", "WARN", "ERROR", "LEARNING"]
STATUSES: tuple[Status, ...] = ("SAFE", "WARN", "ERROR", "LEARNING")
NormalSource = Literal["learned", "static", "none"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Detector(_Model):
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=32)


class AnomalySeries(_Model):
    key: str = Field(min_length=1, max_length=4096)
    metric: str = Field(min_length=1, max_length=4096)
    labels: dict[str, str]


class AnomalyWindow(_Model):
    start: EpochS
    end: EpochS

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("window.end must be after window.start")
        return self


class Normal(_Model):
    mean: Finite
    std: Finite = Field(ge=0)
    source: NormalSource = Field(
        description="learned (the series' own history), static (NORMAL_MEAN/NORMAL_STDDEV), "
        "or none (still LEARNING: no normal yet; mean/std are then 0)"
    )
    period_s: int | None = Field(
        default=None,
        ge=0,
        le=100 * 86_400,
        description="which learned normal judged the window: 0 the plain one (no cycle; also "
        "static and none), else the period in seconds of the series' cycle it followed (86400 "
        "a day, 604800 a week); absent (None) in version 1 records",
    )


class AnomalyRecord(_Model):
    schema_version: Literal[1, 2] = 2
    detector: Detector
    series: AnomalySeries
    window: AnomalyWindow
    count: int = Field(ge=1, description="samples in the window")
    mean: Finite
    std: Finite = Field(ge=0, description="population standard deviation of the window")
    normal: Normal
    deviation: Finite = Field(description="(mean - normal.mean) / normal.std; 0 when LEARNING")
    status: Status

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.status != "LEARNING" and self.normal.source == "none":
            raise ValueError("a SAFE/WARN/ERROR record needs a normal (source learned/static)")
        if self.schema_version < 2 and self.normal.period_s is not None:
            raise ValueError("normal.period_s needs schema_version 2")
        return self

    def idempotency_key(self) -> tuple[str, str, float]:
        """(series key, detector name, window start): one result per window and detector."""
        return (self.series.key, self.detector.name, self.window.start)

    def kafka_key(self) -> bytes:
        return self.series.key.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> AnomalyRecord:
        """Validate a raw Kafka value; raises ``pydantic.ValidationError`` on anything off."""
        return cls.model_validate_json(raw)
