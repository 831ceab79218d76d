"""CSRF protection for every state-changing request made with the session cookie.

The token is an HMAC of the session id under its own subkey of the cookie secret: it
is bound to one session, changes at each sign-in, and needs no server-side storage.
Pages put it in a hidden `csrf_token` form field; scripts using the session against
the JSON API send it as `X-CSRF-Token`. A request whose `Origin` (or, lacking it,
`Sec-Fetch-Site: cross-site`) says it comes from another site is refused before the
token is even looked at. Requests with the admin bearer token carry no ambient
credential, so they need no CSRF token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from starlette.requests import Request

from gateway.console.sessions import subkey

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_FIELD = "csrf_token"
HEADER = "x-csrf-token"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class CsrfRejected(Exception):
    """The request is not proven to come from our own pages; `reason` is for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfTokens:
    def __init__(self, secret: bytes, origin: str) -> None:
        self._key = subkey(secret, "csrf")
        self.origin = origin  # the console's own scheme://host[:port]

    def token(self, sid: str) -> str:
        mac = hmac.new(self._key, sid.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    async def check(self, request: Request, sid: str) -> None:
        """Return if `request` is safe or carries this session's token; else raise."""
        if request.method in SAFE_METHODS:
            return
        origin = request.headers.get("origin")
        if origin is not None and origin != self.origin:
            raise CsrfRejected(f"Origin {origin!r} is not the console's {self.origin!r}")
        if origin is None and request.headers.get("sec-fetch-site") == "cross-site":
            raise CsrfRejected("a cross-site request (Sec-Fetch-Site)")
        presented = request.headers.get(HEADER)
        if presented is None and _is_form(request):
            form = await request.form()
            value = form.get(FORM_FIELD)
            presented = value if isinstance(value, str) else None
        if not presented:
            raise CsrfRejected("no CSRF token (form field csrf_token or header X-CSRF-Token)")
        if not hmac.compare_digest(presented.encode(), self.token(sid).encode()):
            raise CsrfRejected("the CSRF token does not belong to this session")


def _is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type in FORM_TYPES
