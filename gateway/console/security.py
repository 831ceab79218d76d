"""Security headers on every response of the admin listener (pages and JSON alike).

No inline script or style can run (`script-src 'self'`, no 'unsafe-inline'), so an
agent-supplied string that slipped past escaping still could not execute; no site can
frame the console (`frame-ancestors 'none'`, clickjacking); forms post only to the
console itself; nothing is cached, since every page shows live, access-controlled data.
Static files (console.css, console.js) may be cached briefly: they hold nothing private.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
    # No URL (whose query may hold filters on callers) leaves for another site; same-origin
    # keeps the Origin header on our own form posts ("no-referrer" would make it "null").
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
STATIC_PREFIX = "/admin/static/"


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith(STATIC_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                headers["Cache-Control"] = "private, max-age=300" if static else "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
