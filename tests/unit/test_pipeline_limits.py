"""The ETL's publish limits agree end to end: settings, producer, compose and the consumer.

A 48 h ETL message is ≈ 1.06 MB of JSON, over Apache Kafka's default 1 MiB: it goes out
compressed (zstd by default) under one stated limit that the broker, the topics the ETL
creates, its producer and data_storage's fetches all share. The real round trips (tansu,
data_storage, MariaDB) are in tests/integration/test_etl.py and test_kafka_helpers.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

import data_storage.consumer as consumer_module
from data_storage.consumer import StorageConsumer
from data_storage.settings import StorageSettings
from etl_data_pipeline.settings import EtlSettings
from sla_common.kafka import DEFAULT_COMPRESSION, MAX_MESSAGE_BYTES, codec
from sla_common.settings import SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return doc


def test_compression_defaults_to_zstd_and_accepts_only_installed_codecs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert DEFAULT_COMPRESSION == "zstd"
    assert EtlSettings().kafka_compression == "zstd"
    for name in ("none", "gzip", "lz4", "zstd"):
        monkeypatch.setenv("KAFKA_COMPRESSION", name)
        assert load_settings(EtlSettings).kafka_compression == name
    assert (codec("none"), codec("zstd")) == (None, "zstd")
    # snappy's library is not a dependency: kafka-python would fail at the first producer
    monkeypatch.setenv("KAFKA_COMPRESSION", "snappy")
    with pytest.raises(SettingsError, match="KAFKA_COMPRESSION"):
        load_settings(EtlSettings)


def test_one_limit_for_the_etl_producer_the_topics_and_the_storage_consumer() -> None:
    assert MAX_MESSAGE_BYTES == 4 * 1024 * 1024
    assert EtlSettings().kafka_max_message_bytes == MAX_MESSAGE_BYTES
    assert StorageSettings().storage_max_message_bytes == MAX_MESSAGE_BYTES


def test_compose_states_the_limit_once_for_broker_topics_producer_and_consumer(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    limit = compose["x-kafka-max-message-bytes"]
    assert limit == str(MAX_MESSAGE_BYTES)
    # the broker: message.max.bytes, the max.message.bytes of topics that set none
    assert services["kafka"]["environment"]["KAFKA_MESSAGE_MAX_BYTES"] == limit
    etl = services["etl"]["environment"]
    assert etl["KAFKA_MAX_MESSAGE_BYTES"] == limit  # its producer and the topics it creates
    assert etl["KAFKA_COMPRESSION"] == "zstd"
    assert services["storage"]["environment"]["STORAGE_MAX_MESSAGE_BYTES"] == limit
    s = EtlSettings(kafka_max_message_bytes=int(limit), kafka_compression=etl["KAFKA_COMPRESSION"])
    assert s.kafka_max_message_bytes == int(limit)


class RecordingConsumer:
    """Stands in for KafkaConsumer: keeps the arguments, connects nowhere."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kwargs: Any) -> None:
        RecordingConsumer.made.append(kwargs)

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        pass


def test_the_storage_consumer_fetches_any_batch_the_broker_accepts(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = int(compose["x-kafka-max-message-bytes"])
    monkeypatch.setattr(consumer_module, "KafkaConsumer", RecordingConsumer)
    RecordingConsumer.made.clear()
    StorageConsumer(StorageSettings(storage_max_message_bytes=limit))._make_consumer()
    (kwargs,) = RecordingConsumer.made
    # a batch is at most the topic's max.message.bytes (compressed, so smaller still)
    assert kwargs["max_partition_fetch_bytes"] >= limit
    assert kwargs["fetch_max_bytes"] >= kwargs["max_partition_fetch_bytes"]
