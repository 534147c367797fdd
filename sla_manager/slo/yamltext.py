"""A small YAML writer for the documents this package generates (rule files, Sloth specs).

PyYAML is a development dependency only, and the service must write rule files; the
documents here are plain trees of mappings, lists, strings, numbers and booleans, which
this writes readably: multi-line strings (PromQL) as ``|-`` literal blocks, other strings
plain when that is unambiguous, else double-quoted (JSON's escapes are YAML's too).
A unit test reads every generated document back with PyYAML and compares.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

# A plain scalar YAML reads back as this very string: no indicator at the start, no ": "
# or " #" inside, not a number, boolean or null of YAML 1.1 / 1.2.
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_ .:/()\-]*$")
_DURATION = re.compile(r"^[1-9][0-9]*[smhdwy]$")  # 5m, 30d: strings in YAML 1.1 and 1.2
_SPECIAL = re.compile(
    r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"
    r"|null|Null|NULL|~|\.inf|\.Inf|\.INF|\.nan|\.NaN|\.NAN)$"
)

Node = Mapping[str, "Node"] | Sequence["Node"] | str | int | float | bool | None


def _scalar(value: str | int | float | bool | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no place in a generated document")
        text = repr(value)
        if "e" in text and "." not in text:
            # YAML 1.1 (PyYAML) reads 1e-05 as a string: it wants a dot in a float.
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    if _DURATION.fullmatch(value):
        return value
    if (
        _PLAIN.fullmatch(value)
        and not _SPECIAL.fullmatch(value)
        and ": " not in value
        and not value.endswith((" ", ":"))
    ):
        return value
    return json.dumps(value, ensure_ascii=False)


def _block(text: str, indent: str) -> list[str]:
    """A ``|-`` literal block, when the text can be one (else None is signalled by [])."""
    lines = text.split("\n")
    if text != text.strip("\n") or lines[0][:1] in (" ", "\t") or "\r" in text:
        return []
    if any(line.rstrip() != line for line in lines):
        return []  # trailing blanks would survive, but are invisible: quote instead
    return [f"{indent}{line}" if line else "" for line in lines]


def _emit(node: Node, indent: int, out: list[str], prefix: str) -> None:
    pad = " " * indent
    if isinstance(node, Mapping):
        if not node:
            out.append(f"{prefix}{{}}")
            return
        first = True
        for key, value in node.items():
            lead = prefix if first else pad
            first = False
            k = _scalar(str(key))
            if isinstance(value, Mapping) and value:
                out.append(f"{lead}{k}:")
                _emit(value, indent + 2, out, " " * (indent + 2))
            elif isinstance(value, Sequence) and not isinstance(value, str) and value:
                out.append(f"{lead}{k}:")
                _emit(value, indent, out, pad)
            elif (
                isinstance(value, str)
                and ("\n" in value or _scalar(value).startswith('"'))
                and (block := _block(value, pad + "  "))
            ):
                # PromQL and annotations read better unescaped, even on one line.
                out.append(f"{lead}{k}: |-")
                out.extend(block)
            else:
                out.append(f"{lead}{k}: {_inline(value)}")
        return
    if isinstance(node, Sequence) and not isinstance(node, str):
        if not node:
            out.append(f"{prefix}[]")
            return
        for i, item in enumerate(node):
            lead = prefix if i == 0 else pad
            nested = isinstance(item, Sequence) and not isinstance(item, str)
            if (isinstance(item, Mapping) or nested) and item:
                _emit(item, indent + 2, out, f"{lead}- ")
            else:
                out.append(f"{lead}- {_inline(item)}")
        return
    out.append(f"{prefix}{_inline(node)}")


def _inline(value: Node) -> str:
    if isinstance(value, Mapping):
        if value:
            raise ValueError("a non-empty mapping is never written inline")
        return "{}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        if value:
            raise ValueError("a non-empty list is never written inline")
        return "[]"
    return _scalar(value)


def dump(document: Mapping[str, Node], header: str = "") -> str:
    """The document as YAML text, after ``header`` (comment lines, written as given)."""
    out: list[str] = []
    _emit(document, 0, out, "")
    return header + "\n".join(out) + "\n"
