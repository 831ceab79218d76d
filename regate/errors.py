"""The one error shape every Regate HTTP service answers with."""

from __future__ import annotations

from typing import Any, ClassVar

from starlette.responses import JSONResponse


class RegateError(Exception):
    """An error with an HTTP status, a stable `code` and an actionable message."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(
        self, message: str, *, headers: dict[str, str] | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.details = details


class BadRequest(RegateError):
    status = 400
    code = "bad_request"


class RequestTimeout(RegateError):
    status = 408
    code = "request_timeout"


class PayloadTooLarge(RegateError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RegateError):
    status = 415
    code = "unsupported_media_type"


class NotFound(RegateError):
    status = 404
    code = "not_found"


class InternalError(RegateError):
    status = 500
    code = "internal_error"


def error_body(code: str, message: str, request_id: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": request_id, **details}}


def error_response(exc: RegateError, request_id: str) -> JSONResponse:
    body = error_body(exc.code, exc.message, request_id, **exc.details)
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)
