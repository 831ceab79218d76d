"""MCP's errors: refusals at the HTTP layer of `/mcp`, and Regate errors in JSON-RPC.

A refusal before any message is handled (token, session, headers) is an HTTP
status with a JSON-RPC error body (`id: null`). A refusal of one message (unknown
method, bad params, a denied or failed tool call) is a JSON-RPC error whose `data`
carries Regate's stable `code`, the `request_id` and, for tool calls, the
`decision_id` (docs/mcp.md, "Errors").
"""

from __future__ import annotations

from gateway.mcp_jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, RpcError
from regate.errors import RegateError

# Regate's codes, in JSON-RPC's implementation-defined band (-32000..-32019). The
# MCP SDKs keep -32000 and -32001 for their own use; these stay clear of them.
DENIED = -32003
APPROVAL_PENDING = -32004
RATE_LIMITED = -32005


class SessionRequired(RegateError):
    status = 400
    code = "session_required"


class SessionNotFound(RegateError):
    status = 404
    code = "session_not_found"


class SessionForbidden(RegateError):
    status = 403
    code = "session_forbidden"


class UnsupportedProtocolVersion(RegateError):
    status = 400
    code = "unsupported_protocol_version"


class NotAcceptable(RegateError):
    status = 406
    code = "not_acceptable"


class OriginRefused(RegateError):
    status = 403
    code = "origin_refused"


class MethodNotAllowed(RegateError):
    status = 405
    code = "method_not_allowed"


def rpc_error(exc: RegateError, request_id: str) -> RpcError:
    """The JSON-RPC error for a Regate error raised while handling one message."""
    return RpcError(
        rpc_code(exc), exc.message, {"code": exc.code, "request_id": request_id, **exc.details}
    )


def rpc_code(exc: RegateError) -> int:
    # Parked, or replayed before an admin decided: wait for the approval.
    if exc.details.get("approval_required") or exc.status == 202 or exc.code == "approval_pending":
        return APPROVAL_PENDING
    if exc.status == 429:
        return RATE_LIMITED
    if exc.status == 403:
        return DENIED
    if 400 <= exc.status < 500:
        # The call's own fault: bad params, unknown or withheld tool, invalid arguments.
        return INVALID_PARAMS
    return INTERNAL_ERROR
