"""Per-request plumbing shared by the gateway and the runner.

A request id generated here (never taken from the client) is bound to every log
line, returned as `X-Request-Id`, and put in every error body. One canonical log
line per request. Anything unexpected becomes a 500 envelope that says nothing
internal; the traceback goes to the log under the request id.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import structlog
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regate.canonical import canonical_json
from regate.errors import error_body

log = structlog.get_logger("regate.http")


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @classmethod
    def as_middleware(cls) -> Middleware:
        return Middleware(cls)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 0}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled_error")
            if status["code"] == 0:
                await _send_500(send_with_id, rid)
            else:
                raise
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status["code"],
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )


async def _send_500(send: Send, rid: str) -> None:
    body = canonical_json(
        error_body("internal_error", "internal error; quote the request id when reporting it", rid)
    )
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
