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

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

MetricType = Literal["counter", "gauge", "unknown"]
TypeSource = Literal["metadata", "suffix", "expression"]

COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_QUOTES = "\"'`"


@dataclass(frozen=True)
class PlainSelector:
    """A vector selector: an optional metric name and the text between its braces."""

    name: str | None
    matchers: str

    def for_metric(self, metric: str) -> str:
        """The same selector restricted to the series named ``metric``."""
        if self.name is not None:
            return f"{self.name}{{{self.matchers}}}"
        inner = f'__name__="{metric}"' + (f", {self.matchers}" if self.matchers else "")
        return f"{{{inner}}}"

    def rate(self, metric: str, window_s: int) -> str:
        return f"rate({self.for_metric(metric)}[{window_s}s])"


def _skip_string(text: str, i: int) -> int:
    """Index just past the string literal opening at ``text[i]`` (-1 if unterminated)."""
    quote = text[i]
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "`":
            i += 2
            continue
        if c == quote:
            return i + 1
        i += 1
    return -1


def parse_plain_selector(text: str) -> PlainSelector | None:
    """``name``, ``name{...}`` or ``{...}`` with nothing else around; None for any other PromQL.

    Only the shape is checked (Prometheus checks the matchers): braces inside quoted label
    values are skipped, and anything after the closing brace (``offset``, ``@``, an
    operator) makes the text an expression.
    """
    s = text.strip()
    name: str | None = None
    m = _NAME.match(s)
    rest = s
    if m:
        name = m.group(0)
        rest = s[m.end() :].lstrip()
        if not rest:
            return PlainSelector(name, "")
    if not rest.startswith("{"):
        return None
    i = 1
    while i < len(rest):
        c = rest[i]
        if c in _QUOTES:
            i = _skip_string(rest, i)
            if i < 0:
                return None
            continue
        if c in "{}[]()":
            if c == "}" and not rest[i + 1 :].strip():
                matchers = rest[1:i].strip()
                return PlainSelector(name, matchers) if name or matchers else None
            return None
        i += 1
    return None


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
