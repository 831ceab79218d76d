"""canonical_json's fast path (the stdlib encoder) must write rfc8785's bytes exactly."""

from __future__ import annotations

import enum
import random
from typing import Any

import pytest
import rfc8785

from regate.canonical import _fast_path_holds, canonical_json

# Characters where JSON encoders tend to differ: escapes, controls, DEL, the line
# separators, a lone surrogate, BMP characters above the surrogates (which sort after
# astral characters in UTF-16 order but before them by code point), astral ones.
AWKWARD = ['"', "\\", "/", "\b", "\f", "\n", "\r", "\t", "\x00", "\x1f", "\x7f",
           "\u2028", "\u2029", "\ud800", "\ue000", "\uffff", "\U0001f600", "é", "a", "Z", "0"]  # fmt: skip


def rfc8785_or_error(value: Any) -> bytes | type[Exception]:
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return ValueError


def ours_or_error(value: Any) -> bytes | type[Exception]:
    try:
        return canonical_json(value)
    except ValueError:
        return ValueError


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(AWKWARD) for _ in range(rng.randint(0, 4)))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 4 and roll < 0.25:
        return {random_text(rng): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if depth < 4 and roll < 0.4:
        items = [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        return tuple(items) if rng.random() < 0.2 else items
    return rng.choice(
        [
            None, True, False, 0, -1, 2**53 - 1, -(2**53) + 1, 2**53, -(2**53),
            0.0, -0.0, 1.0, 1.5, 1e16, 1e21, 1e-7, 5e-324, float("inf"), float("nan"),
            0.1, 1e-4, 0.00012, 9.999e-5, -123.456, 1e15 + 0.5, 9007199254740993.0,
            rng.uniform(-1e6, 1e6), round(rng.uniform(0, 50), 3), rng.uniform(-1e-3, 1e-3),
            rng.uniform(1e15, 1e17), 10 ** rng.uniform(-8, 22),
            random_text(rng), random_text(rng),
        ]
    )  # fmt: skip


def test_random_values_match_rfc8785_byte_for_byte_or_both_refuse() -> None:
    rng = random.Random(8785)  # noqa: S311 - a reproducible corpus, not a secret
    fast = 0
    for _ in range(5000):
        value = random_value(rng)
        fast += _fast_path_holds(value)
        assert ours_or_error(value) == rfc8785_or_error(value), repr(value)
    assert fast > 1000  # the fast path was exercised, not only the fallback


@pytest.mark.parametrize(
    "value",
    [
        {"\ue000": 1, "\U0001f600": 2},  # UTF-16 order puts the astral key first
        {"b": 1.0, "a": [1e21, 1e-7]},  # ECMAScript number forms
        {"a": "\ud800"},  # lone surrogate: refused
        {1: "x"},  # non-string key: refused
        {"a": 2**53},  # beyond a double's exact integers: refused
        {"a": {"b": [None, True, "\u2028\x7f\x1f"]}},
    ],
)
def test_edge_values_match_rfc8785(value: Any) -> None:
    assert ours_or_error(value) == rfc8785_or_error(value)


def test_types_json_would_coerce_are_left_to_rfc8785() -> None:
    class Color(enum.StrEnum):
        RED = "red"

    class Count(int):
        pass

    for value in [{"c": Color.RED}, {"n": Count(3)}, {"t": (1, "x")}]:
        assert ours_or_error(value) == rfc8785_or_error(value)
    assert not _fast_path_holds({"c": Color.RED})
    assert not _fast_path_holds(1.0)  # Python writes 1.0, RFC 8785 writes 1
    assert _fast_path_holds({"stages_ms": {"opa": 0.731}})
    assert not _fast_path_holds({"é": 1})


def test_floats_on_the_fast_path_are_written_as_rfc8785_writes_them() -> None:
    rng = random.Random(754)  # noqa: S311 - a reproducible corpus, not a secret
    checked = 0
    for _ in range(20000):
        value = rng.choice(
            [
                rng.uniform(-1e6, 1e6),
                10 ** rng.uniform(-10, 20) * rng.choice([1, -1]),
                round(rng.uniform(0, 100), rng.randint(0, 6)),  # timings in ms
                rng.getrandbits(60) / 2 ** rng.randint(0, 60),
            ]
        )
        checked += _fast_path_holds(value)
        assert canonical_json(value) == rfc8785.dumps(value), value
    assert checked > 10000  # most took the fast path
