"""The front door: one canonical path, a known Host, a bounded header count.

Runs before routing, so the path the router matches, the path sent to policy and
the path logged are one string, checked once. The rule is deliberately narrow —
Regate's routes are plain ASCII — so nothing needs canonicalizing: a path is `/`
followed by segments of `A-Z a-z 0-9 _ - .` (no segment `.` or `..`, no empty
segment). Everything else is refused with 400 before anything sees it: percent
escapes (so no encoded dots, slashes or NULs, single or double), backslashes, `;`
parameters, control and non-ASCII bytes, fragments, absolute-form targets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from regate.canonical import canonical_json
from regate.errors import error_body

log = structlog.get_logger("regate.front_door")
SEGMENT = re.compile(rb"[A-Za-z0-9_.\-]+")
MAX_HEADERS = 100
# h11 caps only a head that arrives in pieces; one that arrives whole is checked here.
MAX_TARGET_BYTES = 4096
MAX_HEADER_BYTES = 16 * 1024


class FrontDoor:
    def __init__(
        self, app: ASGIApp, *, allowed_hosts: Iterable[str] = (), max_headers: int = MAX_HEADERS
    ) -> None:
        self.app = app
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        self.max_headers = max_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                status, code, message = refusal
                log.info("request_refused", code=code, status=status, message=message)
                await _send_error(scope, send, status, code, message)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        raw_path = scope.get("raw_path") or b""
        if len(raw_path) + len(scope.get("query_string") or b"") > MAX_TARGET_BYTES:
            return 414, "uri_too_long", f"the request target is over {MAX_TARGET_BYTES} bytes"
        problem = path_problem(raw_path, scope["path"])
        if problem:
            return 400, "bad_path", f"request path refused: {problem}"
        headers = scope["headers"]
        if len(headers) > self.max_headers:
            return 431, "too_many_headers", f"send at most {self.max_headers} header fields"
        if sum(len(name) + len(value) + 4 for name, value in headers) > MAX_HEADER_BYTES:
            return 431, "headers_too_large", f"headers are over {MAX_HEADER_BYTES} bytes in all"
        names = [name for name, _ in headers]
        if b"transfer-encoding" in names and b"content-length" in names:
            # h11 lets Transfer-Encoding win (RFC 9112 §6.1); a proxy in front may
            # not. Refuse the ambiguity and close, so nothing after it is read.
            return 400, "ambiguous_length", "send Content-Length or Transfer-Encoding, never both"
        hosts = [value for name, value in headers if name == b"host"]
        if len(hosts) > 1:
            return 400, "bad_host", "send exactly one Host header"
        if self.allowed_hosts:
            host = hosts[0].decode("latin-1").lower() if hosts else ""
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.allowed_hosts:
                return 400, "unknown_host", "this gateway does not serve that Host"
        return None


def path_problem(raw_path: bytes, path: str) -> str:
    """Why `raw_path` is not a canonical Regate path, or '' if it is."""
    if not raw_path.startswith(b"/"):
        return "the target must be a path starting with '/' (no absolute-form URLs)"
    if raw_path == b"/":
        return ""
    segments = raw_path[1:].split(b"/")
    if segments[-1] == b"":
        segments = segments[:-1]  # one trailing slash is the router's business
    for segment in segments:
        if segment in (b".", b".."):
            return "dot segments ('.', '..') are not allowed"
        if not SEGMENT.fullmatch(segment):
            return (
                "only letters, digits, '_', '-' and '.' may appear in a path segment"
                " (no percent escapes, backslashes, ';', empty segments or control bytes)"
            )
    if path.encode("ascii", "replace") != raw_path:
        return "the path changed when decoded"  # unreachable with the rule above
    return ""


async def _send_error(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    rid = str(scope.get("state", {}).get("request_id", ""))
    body = canonical_json(error_body(code, message, rid))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
