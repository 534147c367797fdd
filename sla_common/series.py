"""Identity of a series: metric name + label set (the "partition")."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def series_key(metric: str, labels: Mapping[str, str]) -> str:
    """Stable text key, Prometheus exposition style with sorted labels.

    ``series_key("up", {"job": "node", "instance": "a:9100"})`` is
    ``up{instance="a:9100",job="node"}``. It is the Kafka message key, so every message of
    one series lands in the same partition, and the natural key of the series in storage.
    """
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{metric}{{{inner}}}"


def exact_selector(labels: Mapping[str, str]) -> str:
    """A PromQL selector with one ``=`` matcher per label (``__name__`` included): it
    selects the series with exactly ``labels`` and any with more labels besides."""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{{{inner}}}"


def shard_of(key: str, shards: int) -> int:
    """Which of ``shards`` workers owns a series: a stable hash (not Python's salted hash())."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards
