"""Strict JSON request bodies (`regate.jsonbody.parse_json`)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from regate.errors import BadRequest
from regate.jsonbody import MAX_DEPTH, parse_json


def nested_arrays(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


REFUSED: list[Any] = [
    pytest.param(b'{"a": NaN}', "NaN is not valid JSON", id="nan"),
    pytest.param(b'{"a": Infinity}', "Infinity is not valid JSON", id="infinity"),
    pytest.param(b'{"a": [-Infinity]}', "-Infinity is not valid JSON", id="minus-infinity"),
    pytest.param(b"NaN", "NaN is not valid JSON", id="bare-nan"),
    pytest.param(b'{"a": 1, "a": 2}', "duplicate JSON key 'a'", id="duplicate-key"),
    pytest.param(b'{"arguments": {"path": "/tmp", "path": "/etc"}}', "duplicate JSON key 'path'", id="duplicate-key-nested"),
    pytest.param(b'[{"x": {"y": 1, "y": 1}}]', "duplicate JSON key 'y'", id="duplicate-key-in-array-same-value"),
    pytest.param(b'{"a": "\xff"}', "not valid UTF-8", id="invalid-utf8"),
    pytest.param(b'{"a": "\xed\xa0\x80"}', "not valid UTF-8", id="utf8-encoded-surrogate"),
    pytest.param(b'{"a": "\xc0\xaf"}', "not valid UTF-8", id="overlong-utf8"),
    pytest.param(nested_arrays(MAX_DEPTH + 2), f"deeper than {MAX_DEPTH} levels", id="nesting-past-max-depth"),
    pytest.param(b'{"a":' * (MAX_DEPTH + 2) + b"1" + b"}" * (MAX_DEPTH + 2), f"deeper than {MAX_DEPTH} levels", id="nested-objects"),
    pytest.param(nested_arrays(100_000), f"deeper than {MAX_DEPTH} levels", id="nesting-past-recursion-limit"),
    pytest.param(b'{"a": 1} x', "not valid JSON", id="trailing-garbage"),
    pytest.param(b'{"a": 1}{"b": 2}', "not valid JSON", id="two-documents"),
    pytest.param(b'{"a": 1,}', "not valid JSON", id="trailing-comma"),
    pytest.param(b"{'a': 1}", "not valid JSON", id="single-quotes"),
    pytest.param(b"", "not valid JSON", id="empty"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "fragment"), REFUSED)
def test_refused(raw: bytes, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_json(raw)
    assert fragment in caught.value.message
    assert caught.value.status == 400


VALID: list[Any] = [
    pytest.param({"arguments": {"a": 1, "b": 2.5}}, id="object"),
    pytest.param([1, "two", None, True, False, {"x": []}], id="array"),
    pytest.param("NaN", id="nan-as-string"),
    pytest.param({"big": 2**63 - 1, "neg": -1e-300, "exp": 1.5e300}, id="numbers"),
    pytest.param({"text": "héllo ✓ 😀 \u0000 \n"}, id="unicode"),
    pytest.param({"a": {"a": {"a": 1}}}, id="same-key-at-different-levels"),
    pytest.param({}, id="empty-object"),
    pytest.param(None, id="null"),
]


@pytest.mark.parametrize("value", VALID)
@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["ascii", "utf8"])
def test_valid_documents_pass_unchanged(value: Any, ensure_ascii: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ensure_ascii).encode()
    assert parse_json(raw) == value


def test_nesting_up_to_max_depth_passes() -> None:
    assert parse_json(nested_arrays(MAX_DEPTH)) is not None


@pytest.mark.parametrize("escape", [rb"\ud800", rb"\udfff", rb"x\udc00y"])
def test_lone_surrogate_escape_is_refused(escape: bytes) -> None:
    with pytest.raises(BadRequest, match=r"surrogate|not valid"):
        parse_json(b'{"arguments": {"text": "' + escape + b'"}}')
