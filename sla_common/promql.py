"""The shape of a PromQL selector: a plain vector selector, or any other expression.

Shared by the ETL (``rate()`` needs a plain vector selector, so only those counters are
analysed as rates) and the SLA manager (a stored forecast is of what the ETL's selector
returns; an SLI whose selector is an expression evaluates something else).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# The five seed metrics: the default selectors of the ETL and of the batch anomaly job.
SEED_SELECTORS = (
    "node_memory_MemFree_bytes",
    "node_memory_MemAvailable_bytes",
    "node_filesystem_free_bytes",
    "node_filesystem_avail_bytes",
    "node_filefd_allocated",
)

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


_MATCHER = re.compile(
    r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!=|!~|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*(?:,|$)""",
    re.S,
)
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body)


def equality_selector(text: str) -> tuple[str | None, dict[str, str]]:
    """The metric name and label values of a plain selector whose matchers are all ``=``.

    For lookups in stored series (what PromQL would select among them): ``up{job="node"}``
    gives ``("up", {"job": "node"})``; ``{__name__="up"}`` names the metric too. ValueError
    (with a message for the user) for anything else: ``=~``, ``!=``, ``!~``, an expression.
    """
    sel = parse_plain_selector(text)
    if sel is None:
        raise ValueError('not a plain vector selector such as metric{label="value"}')
    labels: dict[str, str] = {}
    rest = sel.matchers
    while rest.strip():
        m = _MATCHER.match(rest)
        if m is None:
            raise ValueError(f"cannot read the label matchers {sel.matchers[:200]!r}")
        name, op, literal = m.group(1), m.group(2), m.group(3)
        if op != "=":
            raise ValueError(f"only equality matchers (=) are supported here, not {op!r}")
        if name in labels:
            raise ValueError(f"label {name!r} matched twice")
        labels[name] = _unquote(literal)
        rest = rest[m.end() :]
    metric = sel.name
    named = labels.pop("__name__", None)
    if named is not None:
        if metric is not None and metric != named:
            raise ValueError("the metric name is given twice, differently")
        metric = named
    return metric, labels


def split_selectors(v: object) -> object:
    """A settings value that lists PromQL selectors: a JSON list, or selectors separated by
    ";" or new lines (commas cannot separate them: they occur inside label matchers).
    Empty items are dropped; ValueError when none is left. Other types are returned as they
    are (for pydantic to refuse)."""
    if isinstance(v, str):
        text = v.strip()
        if text.startswith("["):
            v = json.loads(text)
        else:
            v = [s for s in text.replace("\n", ";").split(";")]
    if isinstance(v, list | tuple):
        items = tuple(str(s).strip() for s in v if str(s).strip())
        if not items:
            raise ValueError("at least one PromQL selector is needed")
        return items
    return v
