"""Which series are counters, and the PromQL that asks Prometheus for their rates.

A counter is analysed as Prometheus' own ``rate(<selector>[w])`` evaluated at every step of
the range query: Prometheus sees the samples at their scrape times, handles resets and
extrapolates to the window's edges, which a difference of the range query's output (whose
timestamps are query steps, not scrapes) cannot do. ``rate()`` needs a plain vector selector,
so a configured selector that is an expression (``sum(...)``, ``x offset 5m``) is analysed as
Prometheus returns it.

The type of a series comes from Prometheus' ``/api/v1/metadata`` where it is known: a
counter family, and the ``_count``/``_sum``/``_bucket`` series of a histogram or summary,
are counters. Metadata comes from scrapes only (backfilled series have none), so the name's
suffix is the fallback: ``_total``, ``_count``, ``_sum`` and ``_bucket`` are counters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

# The selector parser is shared with the SLA manager; imported here for the pipeline.
from sla_common.promql import PlainSelector, parse_plain_selector

__all__ = [
    "COUNTER_SUFFIXES",
    "MetricType",
    "PlainSelector",
    "TypeSource",
    "classify",
    "metadata_names",
    "parse_plain_selector",
]

MetricType = Literal["counter", "gauge", "unknown"]
TypeSource = Literal["metadata", "suffix", "expression"]

COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")


def _family_type(name: str, metadata: Mapping[str, str]) -> MetricType | None:
    """The type metadata gives the series ``name`` (None when metadata does not say)."""
    exact = metadata.get(name)
    if exact == "counter":
        return "counter"
    if exact in ("gauge", "summary", "stateset", "info", "gaugehistogram"):
        # a summary's quantile series carry the family's own name
        return "gauge"
    for suffix in COUNTER_SUFFIXES:
        if not name.endswith(suffix):
            continue
        family = metadata.get(name[: -len(suffix)])
        if family == "counter" and suffix == "_total":
            return "counter"
        if family in ("histogram", "summary") and suffix in ("_count", "_sum"):
            return "counter"
        if family == "histogram" and suffix == "_bucket":
            return "counter"
        if family == "gaugehistogram":
            return "gauge"
    return None


def metadata_names(name: str) -> set[str]:
    """The metadata families that can type the series ``name``."""
    out = {name}
    out.update(name[: -len(s)] for s in COUNTER_SUFFIXES if name.endswith(s) and len(name) > len(s))
    return out


def classify(name: str, metadata: Mapping[str, str]) -> tuple[MetricType, TypeSource]:
    """Counter or gauge, and whether metadata or the name's suffix said so."""
    known = _family_type(name, metadata)
    if known is not None:
        return known, "metadata"
    return ("counter" if name.endswith(COUNTER_SUFFIXES) else "gauge"), "suffix"
