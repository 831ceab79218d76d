"""Who is using the console: single sign-on, the session cookie, and the role.

    GET  /login          the sign-in page (one button: the identity provider)
    GET  /login/sso      starts the authorization request (state, nonce, PKCE in a cookie)
    GET  /auth/callback  the provider sends the browser back here with a code
    POST /logout         ends the session (CSRF-checked)
    GET  /logged-out     says so

The login cookie binds the `state` to the browser that started the sign-in, so a
callback URL made by someone else (login CSRF) finds no matching cookie and fails. The
role comes from the group claim of the verified ID token: a member of an admin group
is `admin`, of a viewer group `viewer`; anyone else is refused and gets no session.
After sign-in the browser goes to a path under /admin only (no open redirect).
"""

from __future__ import annotations

import hmac
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.console.csrf import CsrfRejected, CsrfTokens
from gateway.console.oidc import OidcClient, SignInFailed
from gateway.console.sessions import (
    BadCookie,
    LoginCookies,
    Role,
    Session,
    Sessions,
    read_secret_file,
)
from gateway.console.templating import render
from regate.errors import RegateError
from regate.middleware import request_id
from regate.settings import OidcSettings

log = structlog.get_logger("regate.console")

HOME = "/admin"
LOGIN_PATH = "/login"
CALLBACK_PATH = "/auth/callback"
ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")


@dataclass(frozen=True)
class ConsoleUser:
    """The signed-in person, as page handlers see it in `request.state.user`."""

    name: str
    role: Literal["admin", "viewer"]
    subject: str = ""  # the provider's stable `sub`

    @property
    def can_act(self) -> bool:
        """May approve, deny and revoke (admins); viewers only read."""
        return self.role == "admin"

    @property
    def actor(self) -> str:
        """Who acted, for the audit log."""
        return f"oidc:{self.name}"


# --- errors of the JSON API when used with the session cookie ----------------------


class SessionInvalid(RegateError):
    status = 401
    code = "session_invalid"


class CsrfFailed(RegateError):
    status = 403
    code = "csrf_failed"


class RoleForbidden(RegateError):
    status = 403
    code = "forbidden"


# --- pure rules -----------------------------------------------------------------------


def role_of(claims: Mapping[str, Any], settings: OidcSettings) -> Role | None:
    """`admin`, `viewer` or None (refused) from the group claim; admin wins over viewer."""
    groups = set(group_claim(claims, settings.groups_claim))
    if groups & set(settings.admin_groups):
        return "admin"
    if groups & set(settings.viewer_groups):
        return "viewer"
    return None


def group_claim(claims: Mapping[str, Any], path: str) -> list[str]:
    """The strings at a dotted claim path (e.g. `realm_access.roles`); [] if absent."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def display_name(claims: Mapping[str, Any]) -> str:
    for key in ("preferred_username", "email", "name", "sub"):
        value = claims.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[:200]
    return "unknown"


def safe_next(value: str | None) -> str:
    """A local path under /admin to return to after sign-in; anything else is /admin."""
    if not value or len(value) > 2000 or "\\" in value or not value.isprintable():
        return HOME
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        return HOME
    if parts.path != HOME and not parts.path.startswith(HOME + "/"):
        return HOME
    if "/../" in parts.path + "/" or "/./" in parts.path + "/":
        return HOME
    return value


# --- the console's sign-in machinery ----------------------------------------------------


class Console:
    """Everything the console's auth needs, built once when the admin app starts."""

    def __init__(self, settings: OidcSettings, oidc: OidcClient, cookie_secret: bytes) -> None:
        self.settings = settings
        self.oidc = oidc
        self.sessions = Sessions(
            cookie_secret, idle_s=settings.session_idle_s, max_s=settings.session_max_s
        )
        self.logins = LoginCookies(cookie_secret)
        self.csrf = CsrfTokens(cookie_secret, origin=settings.console_url)
        secure = settings.secure_cookies
        # __Host- cookies are refused by browsers unless Secure, Path=/ and no Domain.
        self.session_cookie = "__Host-regate_session" if secure else "regate_session"
        self.login_cookie = "__Secure-regate_login" if secure else "regate_login"

    @classmethod
    def from_settings(cls, settings: OidcSettings) -> Console:
        """Read both secrets now, so a bad file stops the start with a clear message."""
        client_secret = read_secret_file(
            settings.client_secret_file, "admin.oidc.client_secret_file"
        )
        cookie_secret = read_secret_file(
            settings.cookie_secret_file, "admin.oidc.cookie_secret_file", min_bytes=32
        )
        return cls(settings, OidcClient(settings, client_secret.decode()), cookie_secret)

    async def aclose(self) -> None:
        await self.oidc.aclose()

    # -- sessions

    def has_session_cookie(self, request: Request) -> bool:
        return self.session_cookie in request.cookies

    def session_of(self, request: Request) -> Session:
        value = request.cookies.get(self.session_cookie)
        if not value:
            raise BadCookie("no session cookie")
        return self.sessions.load(value)

    def set_session_cookie(self, response: Response, value: str) -> None:
        response.set_cookie(
            self.session_cookie,
            value,
            max_age=self.settings.session_max_s,
            path="/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )

    def refresh(self, response: Response, session: Session) -> None:
        value = self.sessions.refreshed(session)
        if value is not None:
            self.set_session_cookie(response, value)

    def clear_session_cookie(self, response: Response) -> None:
        response.delete_cookie(
            self.session_cookie,
            path="/",
            secure=self.settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )

    @staticmethod
    def user(session: Session) -> ConsoleUser:
        return ConsoleUser(name=session.name, role=session.role, subject=session.sub)

    async def api_user(self, request: Request, *, needs_admin: bool) -> ConsoleUser:
        """The JSON API with the session cookie: the same checks as the pages."""
        try:
            session = self.session_of(request)
        except BadCookie as exc:
            log.warning("console_api_session_refused", reason=exc.reason, path=request.url.path)
            raise SessionInvalid(
                "the session is missing, expired or signed out; sign in again at /login,"
                " or send the admin token as 'Authorization: Bearer <token>'"
            ) from exc
        try:
            await self.csrf.check(request, session.sid)
        except CsrfRejected as exc:
            log.warning("console_csrf_refused", reason=exc.reason, path=request.url.path)
            raise CsrfFailed(
                "send the page's CSRF token as 'X-CSRF-Token' with every POST, PUT or DELETE"
            ) from exc
        user = self.user(session)
        if needs_admin and not user.can_act:
            log.warning("console_role_refused", user=user.name, path=request.url.path)
            raise RoleForbidden(f"{user.name} is a viewer; only admins may change anything")
        return user


# --- the endpoints ------------------------------------------------------------------------


def console_of(request: Request) -> Console:
    console: Console = request.state.console
    return console


async def login_page(request: Request) -> Response:
    console = console_of(request)
    next_path = safe_next(request.query_params.get("next"))
    try:
        console.session_of(request)
        return RedirectResponse(next_path, status_code=303)
    except BadCookie:
        pass
    notice = {
        "expired": "Your session has ended. Sign in again to continue.",
        "signed_out": "You are signed out.",
    }.get(request.query_params.get("reason", ""))
    return render(
        request,
        "login.html",
        {"next": next_path, "notice": notice, "error": None, "issuer": console.settings.issuer},
    )


async def login_start(request: Request) -> Response:
    console = console_of(request)
    next_path = safe_next(request.query_params.get("next"))
    try:
        start = await console.oidc.begin()
    except SignInFailed as exc:
        return sign_in_error(request, exc)
    response = RedirectResponse(start.url, status_code=303)
    response.set_cookie(
        console.login_cookie,
        console.logins.make(
            state=start.state,
            nonce=start.nonce,
            code_verifier=start.code_verifier,
            next_path=next_path,
        ),
        max_age=console.logins.ttl_s,
        path=CALLBACK_PATH,
        secure=console.settings.secure_cookies,
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back to us
    )
    return response


async def callback(request: Request) -> Response:
    console = console_of(request)
    params = request.query_params
    try:
        login = console.logins.load(request.cookies.get(console.login_cookie) or "")
    except BadCookie as exc:
        return sign_in_error(request, SignInFailed(f"login cookie: {exc.reason}"), restart=True)
    if params.get("error"):
        error = params["error"] if ERROR_CODE.match(params["error"]) else "error"
        return sign_in_error(
            request, SignInFailed(f"the provider answered error={error}", status=403)
        )
    if not hmac.compare_digest(params.get("state", "").encode(), login["state"].encode()):
        return sign_in_error(
            request, SignInFailed("state does not match this browser's sign-in"), restart=True
        )
    # RFC 9207: a provider that names itself must be the one we asked (mix-up attacks).
    if "iss" in params and params["iss"] != console.settings.issuer:
        return sign_in_error(request, SignInFailed(f"callback from issuer {params['iss']!r}"))
    code = params.get("code")
    if not code:
        return sign_in_error(request, SignInFailed("callback without a code"))
    try:
        claims = await console.oidc.finish(
            code, nonce=login["nonce"], code_verifier=login["verifier"]
        )
    except SignInFailed as exc:
        return sign_in_error(request, exc)

    name, sub = display_name(claims), str(claims["sub"])
    role = role_of(claims, console.settings)
    if role is None:
        groups = group_claim(claims, console.settings.groups_claim)
        log.warning("console_sign_in_refused", sub=sub, user=name, groups=groups)
        response = render(
            request,
            "refused.html",
            {
                "title": "No access to the Regate console",
                "message": (
                    f"You signed in as {name}, but you are not in a group that may use the"
                    " console. Ask an administrator to add you to one of the console's"
                    " admin or viewer groups, then sign in again."
                ),
                "show_login": True,
            },
            status=403,
        )
    else:
        session, value = console.sessions.issue(sub=sub, name=name, role=role)
        log.info("console_signed_in", sub=sub, user=name, role=role, sid_prefix=session.sid[:6])
        response = RedirectResponse(login["next"], status_code=303)
        console.set_session_cookie(response, value)
    response.delete_cookie(console.login_cookie, path=CALLBACK_PATH)
    return response


async def logout(request: Request) -> Response:
    console = console_of(request)
    try:
        session = console.session_of(request)
    except BadCookie:
        session = None
    if session is not None:
        try:
            await console.csrf.check(request, session.sid)
        except CsrfRejected as exc:
            log.warning("console_csrf_refused", reason=exc.reason, path=request.url.path)
            return csrf_refused(request)
        console.sessions.revoke(session)
        log.info("console_signed_out", sub=session.sub, user=session.name)
    response = RedirectResponse("/logged-out", status_code=303)
    console.clear_session_cookie(response)
    return response


async def logged_out(request: Request) -> Response:
    response = render(request, "logged_out.html")
    console_of(request).clear_session_cookie(response)
    return response


# --- pages that say no ------------------------------------------------------------------


def sign_in_error(request: Request, exc: SignInFailed, *, restart: bool = False) -> Response:
    log.warning("console_sign_in_failed", reason=exc.reason, status=exc.status)
    if restart:
        message = (
            "This sign-in was not started in this browser, or took too long."
            " Start again from the sign-in button."
        )
    elif exc.status == 503:
        message = "The identity provider cannot be reached right now. Try again in a minute."
    else:
        message = (
            "Sign-in did not complete. Try again; if it keeps failing, give your operator"
            f" the request id {request_id(request)}."
        )
    return render(
        request,
        "login.html",
        {
            "next": HOME,
            "notice": None,
            "error": message,
            "issuer": console_of(request).settings.issuer,
        },
        status=400 if restart else exc.status,
    )


def csrf_refused(request: Request) -> Response:
    return render(
        request,
        "refused.html",
        {
            "title": "Request refused",
            "message": (
                "This form was not sent from a page of this console (its CSRF token is"
                " missing or wrong). Reload the page and try again."
            ),
            "show_login": False,
        },
        status=403,
    )


def viewer_refused(request: Request, user: ConsoleUser) -> Response:
    return render(
        request,
        "refused.html",
        {
            "title": "Only admins can do this",
            "message": (
                f"You are signed in as {user.name} with the viewer role: you can read"
                " everything, but approving, denying and revoking need the admin role."
            ),
            "show_login": False,
        },
        status=403,
    )
