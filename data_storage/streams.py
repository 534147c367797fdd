"""What the storage consumer stores: one :class:`Stream` per topic it reads.

A stream names its topic, dead-letter topic and consumer group, how a raw record is
checked (the message, or a :class:`~data_storage.validate.Rejected` reason), how many rows
a message becomes (batch sizing), and its sink (the writer). The loop itself
(:class:`data_storage.consumer.StorageConsumer`), the dead letters and the offset commits
are the same for every stream; each stream has its own consumer, so a slow or failing
table never holds back the other topic's commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from data_storage import anomalies, rows, validate
from data_storage.settings import StorageSettings
from data_storage.writer import Sink, Writer

FULL_MESSAGE_ROWS = 5_900  # a 12 h × 15 s message: 2 × 2,881 grid points + ACF + the rest


@dataclass(frozen=True)
class Stream:
    name: str  # "analyses" / "anomaly": STORAGE_STREAMS, and the metrics' prefix
    topic: str
    dlq_topic: str
    group_id: str
    check: Callable[..., Any]  # (key, value, max_bytes, *, not_after) -> message | Rejected
    row_count: Callable[[Any], int]
    make_writer: Callable[[StorageSettings], Sink[Any]]
    tables: tuple[str, ...]
    # Rows per message assumed before any arrived: a first poll of large messages must not
    # bring hundreds of them into memory at once.
    first_rows_per_message: float


def analyses(s: StorageSettings) -> Stream:
    return Stream(
        name="analyses",
        topic=s.kafka_topic,
        dlq_topic=s.kafka_dlq_topic,
        group_id=s.kafka_group_id,
        check=validate.check,
        row_count=rows.row_count,
        make_writer=Writer,
        tables=tuple(t.name for t in rows.TABLES),
        first_rows_per_message=float(FULL_MESSAGE_ROWS),
    )


def anomaly(s: StorageSettings) -> Stream:
    return Stream(
        name="anomaly",
        topic=s.kafka_anomaly_topic,
        dlq_topic=s.kafka_anomaly_dlq_topic,
        group_id=s.anomaly_group_id,
        check=anomalies.check,
        row_count=anomalies.row_count,
        make_writer=anomalies.AnomalyWriter,
        tables=(anomalies.ANOMALIES.name,),
        first_rows_per_message=1.0,
    )


BY_NAME: dict[str, Callable[[StorageSettings], Stream]] = {"analyses": analyses, "anomaly": anomaly}


def configured(s: StorageSettings) -> list[Stream]:
    """The streams STORAGE_STREAMS names, in its order."""
    return [BY_NAME[name](s) for name in s.storage_streams]
