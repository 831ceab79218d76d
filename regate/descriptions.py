"""Tool descriptions checked for hidden instructions before an LLM ever reads them.

A tool's description and the strings of its input schema go, word for word, into
the prompt of any agent that lists the tool over MCP. Text a human reviewer cannot
see there is how "tool poisoning" hides instructions: zero-width and bidirectional
control characters, Unicode tag characters (invisible ASCII), other control and
format characters, and descriptions too long for anyone to read. Each finding is a
`Flag`; a tool with flags is not offered to agents (docs/mcp.md, "Flagged tools").
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

MAX_DESCRIPTION_CHARS = 1024

ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u180e")
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
# Not control or format characters, yet they render as nothing or as blank space.
INVISIBLE = frozenset("\u034f\u115f\u1160\u3164\uffa0\u2800")
ALLOWED_CONTROLS = frozenset("\t\n")


@dataclass(frozen=True)
class Flag:
    code: str  # zero_width, bidi_control, tag_character, control_character, invisible, too_long
    message: str


def check_tool_text(description: str, input_schema: Mapping[str, Any]) -> tuple[Flag, ...]:
    """Every flag for a tool's description and the strings inside its input schema."""
    flags = list(check_text("description", description))
    for where, text in _schema_strings(input_schema, "input_schema"):
        flags.extend(check_text(where, text))
    return tuple(flags)


def check_text(where: str, text: str) -> Iterator[Flag]:
    """Flags for one string: hidden characters by kind, then its length."""
    found: dict[str, list[tuple[int, str]]] = {}
    for offset, char in enumerate(text):
        kind = _kind(char)
        if kind is not None:
            found.setdefault(kind, []).append((offset, char))
    for kind, hits in found.items():
        offset, char = hits[0]
        yield Flag(
            kind,
            f"{where} has {len(hits)} {_LABELS[kind]}{'s' if len(hits) > 1 else ''}"
            f" (first U+{ord(char):04X} at offset {offset})",
        )
    if len(text) > MAX_DESCRIPTION_CHARS:
        yield Flag(
            "too_long",
            f"{where} is {len(text)} characters long, over the {MAX_DESCRIPTION_CHARS} limit",
        )


_LABELS = {
    "zero_width": "zero-width character",
    "bidi_control": "bidirectional control character",
    "tag_character": "Unicode tag character",
    "control_character": "control character",
    "invisible": "invisible character",
}


def _kind(char: str) -> str | None:
    if char in ZERO_WIDTH:
        return "zero_width"
    if char in BIDI_CONTROLS:
        return "bidi_control"
    if "\U000e0000" <= char <= "\U000e007f":
        return "tag_character"
    if char in INVISIBLE or "\U000e0100" <= char <= "\U000e01ef":
        return "invisible"
    if char in ALLOWED_CONTROLS:
        return None
    # Cc: C0/C1 controls (ESC, CR, ...); Cf: other format characters (soft hyphen,
    # ...); Co: private use; Cs: lone surrogates; Zl/Zp: line and paragraph separators.
    if unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs", "Zl", "Zp"):
        return "control_character"
    return None


def _schema_strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON Schema (keys and values), with a JSON pointer to it."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield f"{where} key {key!r}", str(key)
            yield from _schema_strings(item, f"{where}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _schema_strings(item, f"{where}/{index}")
