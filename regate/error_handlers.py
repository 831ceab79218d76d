"""The exception handlers every Regate app installs: one envelope for every error.

Our own `RegateError`s carry their status and code; Starlette's routing errors (no
such path, wrong method) are put in the same envelope with a hint of where to go.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from regate.errors import RegateError, error_body, error_response
from regate.middleware import request_id

Handler = Callable[[Request, Exception], Awaitable[Response]]
log = structlog.get_logger("regate.http")


def exception_handlers(*, event: str, not_found_hint: str) -> dict[Any, Handler]:
    """Handlers logging refusals as `event`; a 404 says `not_found_hint`."""

    async def regate_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RegateError)
        log.info(event, code=exc.code, status=exc.status, message=exc.message)
        return error_response(exc, request_id(request))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {
            404: f"no such endpoint; {not_found_hint}",
            405: "method not allowed on this endpoint",
        }.get(exc.status_code, str(exc.detail))
        return JSONResponse(
            error_body(code, message, request_id(request)),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    return {RegateError: regate_error, HTTPException: http_error}
