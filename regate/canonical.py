"""Canonical JSON (RFC 8785) and the digests Regate computes over it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import rfc8785

# RFC 8785 numbers are IEEE doubles: integers beyond 2^53 - 1 have no exact form.
_INT_MAX = 2**53 - 1

# For values made only of dicts with ASCII keys, lists, strings, safe integers,
# booleans, null and "plain" floats, the stdlib's C encoder writes exactly RFC 8785's
# bytes: the same escapes (", \ and control characters, short forms for \b \f \n \r
# \t, lowercase \u00xx otherwise); ASCII keys sort the same by code point as by
# UTF-16 unit; and a float that is not integral with 1e-4 <= |f| < 1e16 has the same
# shortest round-trip digits in fixed notation in Python's repr and in ECMAScript's
# Number::toString (timings such as 0.123 ms). Other floats (1.0 vs 1, exponents),
# non-ASCII keys (UTF-16 order) and any other type go to rfc8785. `_fast_path_holds`
# decides; tests compare the two on hostile values.
_encode_plain = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), check_circular=False
).encode


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value that signatures and hashes cover."""
    try:
        if _fast_path_holds(value):
            return _encode_plain(value).encode()  # lone surrogates: UnicodeEncodeError
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"value cannot be canonicalized as JSON: {exc}") from exc


def _fast_path_holds(value: Any) -> bool:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_INT_MAX <= value <= _INT_MAX)
    if kind is float:
        return bool(1e-4 <= abs(value) < 1e16 and not value.is_integer())
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not key.isascii() or not _fast_path_holds(item):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:  # noqa: SIM110 - a loop: all() over a generator is slower here
            if not _fast_path_holds(item):
                return False
        return True
    return False


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of `value`, hex."""
    return sha256_hex(canonical_json(value))
