"""CSRF checks (gateway/console/csrf.py) on requests built in memory."""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest
from starlette.requests import Request

from gateway.console.csrf import CsrfRejected, CsrfTokens

ORIGIN = "https://admin.example.com"
TOKENS = CsrfTokens(b"s" * 32, origin=ORIGIN)
SID = "session-1"
TOKEN = TOKENS.token(SID)


def request(method: str, headers: dict[str, str], body: bytes = b"") -> Request:
    scope = {
        "type": "http",
        "method": method,
        "path": "/admin/agents/x/approve",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "query_string": b"",
    }
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def check(req: Request, sid: str = SID) -> None:
    asyncio.run(TOKENS.check(req, sid))


FORM = {"content-type": "application/x-www-form-urlencoded"}


def form(**fields: str) -> bytes:
    return urllib.parse.urlencode(fields).encode()


def test_tokens_are_bound_to_the_session() -> None:
    assert TOKENS.token(SID) == TOKEN
    assert TOKENS.token("session-2") != TOKEN
    assert CsrfTokens(b"t" * 32, origin=ORIGIN).token(SID) != TOKEN


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_safe_methods_need_no_token(method: str) -> None:
    check(request(method, {}))


def test_form_field_and_header_are_accepted() -> None:
    check(request("POST", FORM, form(csrf_token=TOKEN, reason="ok")))
    check(request("POST", {"x-csrf-token": TOKEN, "content-type": "application/json"}, b"{}"))
    check(request("DELETE", {"x-csrf-token": TOKEN, "origin": ORIGIN}))


REFUSED = [
    pytest.param("POST", FORM, form(reason="no token"), "no CSRF token", id="form-without-token"),
    pytest.param("POST", FORM, form(csrf_token=""), "no CSRF token", id="empty-token"),
    pytest.param("POST", FORM, form(csrf_token=TOKENS.token("other")), "does not belong", id="another-sessions-token"),
    pytest.param("PUT", {"content-type": "application/json"}, b'{"csrf_token": "%s"}' % TOKEN.encode(), "no CSRF token", id="token-in-json-body-does-not-count"),
    pytest.param("POST", {"x-csrf-token": TOKEN, "origin": "https://evil.example"}, b"", "Origin", id="foreign-origin"),
    pytest.param("POST", {"x-csrf-token": TOKEN, "origin": "null"}, b"", "Origin", id="null-origin"),
    pytest.param("POST", {"x-csrf-token": TOKEN, "sec-fetch-site": "cross-site"}, b"", "cross-site", id="cross-site-fetch"),
    pytest.param("POST", {"content-type": "text/plain"}, b"csrf_token=" + TOKEN.encode(), "no CSRF token", id="text-plain-form"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "headers", "body", "why"), REFUSED)
def test_refused(method: str, headers: dict[str, str], body: bytes, why: str) -> None:
    with pytest.raises(CsrfRejected, match=why):
        check(request(method, headers, body))
