"""JSON-RPC 2.0 as MCP uses it: messages parsed from plain JSON, answers built as dicts.

MCP narrows JSON-RPC: request ids are strings or integers (never null), and
`params`, when present, is an object. Nothing here knows about HTTP or tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

RequestId = str | int


class RpcError(Exception):
    """A JSON-RPC error object: `code`, `message` and optional `data`."""

    def __init__(self, code: int, message: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = dict(data) if data else None

    def as_object(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass(frozen=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Notification:
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """A client's answer to a server request. Regate sends none, so these are ignored."""

    id: RequestId


@dataclass(frozen=True)
class Invalid:
    """Not a valid message: answered with `error`, under `id` when one could be read."""

    id: RequestId | None
    error: RpcError


Message = Request | Notification | Response | Invalid


def parse_body(value: Any) -> tuple[list[Message], bool]:
    """The messages of a parsed POST body, and whether it was a batch (a JSON array)."""
    if isinstance(value, list):
        if not value:
            raise RpcError(INVALID_REQUEST, "an empty JSON array is not a valid batch")
        return [parse_message(item) for item in value], True
    return [parse_message(value)], False


def parse_message(value: Any) -> Message:
    if not isinstance(value, dict):
        return Invalid(None, RpcError(INVALID_REQUEST, "a JSON-RPC message must be a JSON object"))
    raw_id = value.get("id")
    request_id = raw_id if _valid_id(raw_id) else None
    if value.get("jsonrpc") != "2.0":
        return Invalid(request_id, RpcError(INVALID_REQUEST, 'the message needs "jsonrpc": "2.0"'))
    if "method" in value:
        method = value["method"]
        if not isinstance(method, str) or not method:
            return Invalid(request_id, RpcError(INVALID_REQUEST, '"method" must be a string'))
        params = value.get("params", {})
        if not isinstance(params, dict):
            return Invalid(request_id, RpcError(INVALID_PARAMS, '"params" must be an object'))
        if "id" not in value:
            return Notification(method, params)
        if request_id is None:
            return Invalid(None, RpcError(INVALID_REQUEST, '"id" must be a string or an integer'))
        return Request(request_id, method, params)
    if ("result" in value or "error" in value) and request_id is not None:
        return Response(request_id)
    return Invalid(
        request_id,
        RpcError(
            INVALID_REQUEST, "the message is neither a request, a notification nor a response"
        ),
    )


def result(request_id: RequestId, value: Mapping[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": dict(value)}


def error(request_id: RequestId | None, exc: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": exc.as_object()}


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
