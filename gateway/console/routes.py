"""The console's routes on the admin listener, each page behind the auth guard.

    /login, /login/sso, /auth/callback, /logout, /logged-out   gateway/console/auth.py
    /admin/static/...                                          console.css, console.js
    /admin...                                                  gateway/console/pages.py

The guard runs before every page handler: no valid session sends the browser to sign
in (and back, to the same page, afterwards); a POST, PUT or DELETE must carry the
session's CSRF token and come from an admin. The handler then finds the user in
`request.state.user` and the token for its forms in `request.state.csrf_token`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.console import auth
from gateway.console.csrf import SAFE_METHODS, CsrfRejected
from gateway.console.pages import PAGE_ROUTES
from gateway.console.sessions import BadCookie

log = structlog.get_logger("regate.console")

STATIC_DIR = Path(__file__).parent / "static"
Endpoint = Callable[[Request], Awaitable[Response]]


def console_routes() -> list[BaseRoute]:
    return [
        Route("/login", auth.login_page, methods=["GET"]),
        Route("/login/sso", auth.login_start, methods=["GET"]),
        Route(auth.CALLBACK_PATH, auth.callback, methods=["GET"]),
        Route("/logout", auth.logout, methods=["POST"]),
        Route("/logged-out", auth.logged_out, methods=["GET"]),
        Mount("/admin/static", StaticFiles(directory=STATIC_DIR, check_dir=False)),
        *(guarded_route(route) for route in PAGE_ROUTES),
    ]


def guarded_route(route: Route) -> Route:
    return Route(
        route.path,
        guard(route.endpoint),
        methods=sorted(route.methods or ["GET"]),
        name=route.name,
    )


def guard(page: Endpoint) -> Endpoint:
    """Reading needs a session; changing anything needs the CSRF token and the admin role."""

    async def endpoint(request: Request) -> Response:
        console = auth.console_of(request)
        try:
            session = console.session_of(request)
        except BadCookie as exc:
            return to_login(request, expired=exc.expired)
        user = console.user(session)
        request.state.user = user
        request.state.csrf_token = console.csrf.token(session.sid)
        if request.method not in SAFE_METHODS:
            try:
                await console.csrf.check(request, session.sid)
            except CsrfRejected as exc:
                log.warning("console_csrf_refused", reason=exc.reason, path=request.url.path)
                return auth.csrf_refused(request)
            if not user.can_act:
                log.warning("console_role_refused", user=user.name, path=request.url.path)
                return auth.viewer_refused(request, user)
        response = await page(request)
        console.refresh(response, session)
        return response

    return endpoint


def to_login(request: Request, *, expired: bool) -> Response:
    """To the sign-in page, coming back here afterwards (a GET; a POST goes home)."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = {"next": here if request.method in SAFE_METHODS else auth.HOME}
    if expired:
        query["reason"] = "expired"
    response = RedirectResponse(f"{auth.LOGIN_PATH}?{urllib.parse.urlencode(query)}", 303)
    if expired:
        auth.console_of(request).clear_session_cookie(response)
    return response
