"""Strict JSON request bodies: size-capped while reading, no NaN, no duplicate keys."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request

from regate.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

MAX_DEPTH = 64
# Integers beyond 64 bits and floats beyond double range would reach policy as
# other values than the client sent (or as infinity): refuse them.
MAX_INT = 2**63


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest(f"duplicate JSON key {key!r}; send each key once")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise BadRequest(f"{name} is not valid JSON; send a finite number")


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) >= MAX_INT:
        raise BadRequest(f"integer {text[:24]}... is out of range; send at most 64-bit integers")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadRequest(f"number {text[:24]} overflows a double; send a finite number")
    return value


def _check(value: Any, level: int = 0) -> None:
    """Nesting within MAX_DEPTH, and every string encodable as UTF-8."""
    if level > MAX_DEPTH:
        raise BadRequest(f"JSON nesting is deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check(item, level + 1)
    elif isinstance(value, list):
        for item in value:
            _check(item, level + 1)
    elif isinstance(value, str):
        _check_text(value)


def _check_text(text: str) -> None:
    # json.loads accepts "\ud800", a lone surrogate no UTF-8 encoder (OPA's
    # request, the audit record) can write: refuse it here, once.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest("a JSON string holds a lone UTF-16 surrogate escape") from exc


def parse_json(raw: bytes, what: str = "request body") -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{what} is not valid UTF-8") from exc
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except RecursionError as exc:
        raise BadRequest(f"JSON nesting is deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from exc
    _check(value)
    return value


async def read_capped(request: Request, max_bytes: int, timeout_s: float = 10.0) -> bytes:
    """The body, refused as soon as it grows past `max_bytes` or takes over `timeout_s`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body is over the {max_bytes}-byte limit")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"request body is over the {max_bytes}-byte limit")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise RequestTimeout(f"the request body did not arrive within {timeout_s:g} s") from exc
    return b"".join(chunks)


async def read_json_object(
    request: Request, max_bytes: int, timeout_s: float = 10.0
) -> dict[str, Any]:
    """Read and parse a JSON object body (size- and time-capped, strict JSON)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType("send the body as JSON with 'Content-Type: application/json'")
    value = parse_json(await read_capped(request, max_bytes, timeout_s))
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object")
    return value
