"""Ordering manifest versions, so that an agent's version never goes backwards.

Two forms can be ordered: Semantic Versioning 2.0.0 (`1.4.2`, `2.0.0-rc.1`,
build metadata after `+` ignored) and plain dotted numbers (`3`, `2024.6`,
`1.10.0.1`, compared number by number, missing parts counting as 0). A version
in neither form cannot be ordered, and `compare_versions` says so: a manifest
whose version cannot be ordered against the highest one seen is refused rather
than guessed about.
"""

from __future__ import annotations

import re
from itertools import zip_longest

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$"
)
_DOTTED = re.compile(r"^\d{1,18}(?:\.\d{1,18}){0,7}$")


class UnorderableVersion(ValueError):
    """Neither version form applies to both sides: they cannot be compared."""


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as `a` is lower than, equal to (in precedence) or higher than `b`."""
    sa, sb = _SEMVER.match(a), _SEMVER.match(b)
    if sa and sb:
        core_a = tuple(int(sa.group(i)) for i in (1, 2, 3))
        core_b = tuple(int(sb.group(i)) for i in (1, 2, 3))
        if core_a != core_b:
            return -1 if core_a < core_b else 1
        return _compare_prerelease(sa.group(4), sb.group(4))
    if _DOTTED.match(a) and _DOTTED.match(b):
        for x, y in zip_longest(_numbers(a), _numbers(b), fillvalue=0):
            if x != y:
                return -1 if x < y else 1
        return 0
    raise UnorderableVersion(
        f"versions {a!r} and {b!r} cannot be ordered; use semantic versions (e.g. 1.4.2)"
        " or dotted numbers"
    )


def _numbers(version: str) -> list[int]:
    return [int(part) for part in version.split(".")]


def _compare_prerelease(a: str | None, b: str | None) -> int:
    """SemVer §11: a version without a pre-release is higher than one with it."""
    if a == b:
        return 0
    if a is None:
        return 1
    if b is None:
        return -1
    for x, y in zip_longest(a.split("."), b.split(".")):
        if x is None:
            return -1  # fewer identifiers, all equal so far: lower
        if y is None:
            return 1
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1  # numeric identifiers are lower
        return -1 if x < y else 1
    return 0
