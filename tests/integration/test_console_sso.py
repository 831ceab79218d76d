"""Console sign-in against a real OpenID Connect provider (panva's oidc-provider on
loopback), with httpx playing the browser: every redirect is followed by hand so each
hop of the authorization code flow can be checked and attacked."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator

import httpx
import pytest
from oidc_provider import ALICE, NOBODY, VICTOR, ConsoleStack, User, console_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cs() -> Iterator[ConsoleStack]:
    with console_stack("regate-sso-") as running:
        yield running


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        yield client


def start_sign_in(browser: httpx.Client, cs: ConsoleStack, next_path: str = "/admin") -> str:
    """Click "Sign in with SSO", sign in at the provider; the callback URL it sends us to."""
    response = browser.get(f"{cs.console_url}/login/sso", params={"next": next_path})
    assert response.status_code == 303
    return response.headers["location"]


def at_provider(browser: httpx.Client, cs: ConsoleStack, auth_url: str, user: User) -> str:
    response = browser.get(auth_url)
    while response.status_code in (302, 303) and not _is_callback(response, cs):
        response = browser.get(urllib.parse.urljoin(cs.issuer, response.headers["location"]))
    assert response.status_code == 200, response.text
    action = re.search(r'action="([^"]+)"', response.text)
    assert action is not None, response.text
    response = browser.post(
        urllib.parse.urljoin(cs.issuer, action.group(1)),
        data={"login": user.login, "password": user.password},
    )
    while not _is_callback(response, cs):
        assert response.status_code in (302, 303), response.text
        response = browser.get(urllib.parse.urljoin(cs.issuer, response.headers["location"]))
    return response.headers["location"]


def _is_callback(response: httpx.Response, cs: ConsoleStack) -> bool:
    location = response.headers.get("location", "")
    return location.startswith(f"{cs.console_url}/auth/callback?")


def sign_in(
    browser: httpx.Client, cs: ConsoleStack, user: User, next_path: str = "/admin"
) -> httpx.Response:
    callback = at_provider(browser, cs, start_sign_in(browser, cs, next_path), user)
    return browser.get(callback)


def csrf_token(browser: httpx.Client, cs: ConsoleStack) -> str:
    page = browser.get(f"{cs.console_url}/admin")
    assert page.status_code == 200, page.text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert match is not None
    return match.group(1)


def session_cookie_header(response: httpx.Response) -> str:
    headers = [
        h for h in response.headers.get_list("set-cookie") if h.startswith("regate_session=")
    ]
    assert len(headers) == 1, response.headers.get_list("set-cookie")
    return headers[0]


def test_authorization_request_carries_pkce_state_and_nonce(
    browser: httpx.Client, cs: ConsoleStack
) -> None:
    url = start_sign_in(browser, cs)
    assert url.startswith(f"{cs.issuer}/auth?")
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 32
    assert len(query["nonce"][0]) >= 32
    assert query["redirect_uri"] == [f"{cs.console_url}/auth/callback"]
    assert "openid" in query["scope"][0].split()
    login_cookie = [h for h in browser.cookies.jar if h.name == "regate_login"]
    assert len(login_cookie) == 1
    assert login_cookie[0].path == "/auth/callback"


def test_admin_signs_in_with_a_locked_down_session_cookie(
    browser: httpx.Client, cs: ConsoleStack
) -> None:
    response = sign_in(browser, cs, ALICE, next_path="/admin?tab=x")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin?tab=x"
    cookie = session_cookie_header(response).lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/" in cookie
    assert "secure" not in cookie  # http://127.0.0.1: Secure only when the console is https
    page = browser.get(f"{cs.console_url}/admin")
    assert page.status_code == 200
    assert "alice" in page.text
    assert "admin" in page.text
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "same-origin"


def test_user_in_no_console_group_is_refused_and_gets_no_session(
    browser: httpx.Client, cs: ConsoleStack
) -> None:
    response = sign_in(browser, cs, NOBODY)
    assert response.status_code == 403
    assert "not in a group that may use the console" in response.text
    assert not [
        h for h in response.headers.get_list("set-cookie") if h.startswith("regate_session=")
    ]
    again = browser.get(f"{cs.console_url}/admin")
    assert again.status_code == 303
    assert again.headers["location"].startswith("/login?")


def test_callback_in_a_browser_that_did_not_start_the_sign_in_is_refused(cs: ConsoleStack) -> None:
    # Login CSRF: the attacker signs in as themselves and sends the victim the callback URL.
    with httpx.Client(timeout=30) as attacker, httpx.Client(timeout=30) as victim:
        callback = at_provider(attacker, cs, start_sign_in(attacker, cs), ALICE)
        response = victim.get(callback)
    assert response.status_code == 400
    assert "not started in this browser" in response.text
    assert "regate_session" not in response.headers.get("set-cookie", "")


def test_callback_with_another_state_is_refused(browser: httpx.Client, cs: ConsoleStack) -> None:
    callback = at_provider(browser, cs, start_sign_in(browser, cs), ALICE)
    forged = re.sub(r"state=[^&]+", "state=forged-state-value", callback)
    response = browser.get(forged)
    assert response.status_code == 400
    assert "regate_session" not in response.headers.get("set-cookie", "")


def test_callback_replayed_after_sign_in_is_refused(
    browser: httpx.Client, cs: ConsoleStack
) -> None:
    callback = at_provider(browser, cs, start_sign_in(browser, cs), ALICE)
    assert browser.get(callback).status_code == 303
    browser.cookies.delete("regate_session")
    assert browser.get(callback).status_code == 400  # the login cookie went with the first use


@pytest.mark.parametrize(
    "next_path",
    [
        "https://evil.example/",
        "//evil.example/admin",
        "/\\evil.example",
        "/other",
        "/admin/../login",
    ],
)
def test_no_open_redirect_after_sign_in(
    browser: httpx.Client, cs: ConsoleStack, next_path: str
) -> None:
    response = sign_in(browser, cs, ALICE, next_path=next_path)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin"


def test_viewer_reads_but_may_not_change_anything(browser: httpx.Client, cs: ConsoleStack) -> None:
    assert sign_in(browser, cs, VICTOR).status_code == 303
    token = csrf_token(browser, cs)
    agents = browser.get(f"{cs.console_url}/admin/api/agents")
    assert agents.status_code == 200
    assert agents.json()["agents"]
    refused = browser.post(
        f"{cs.console_url}/admin/api/agents/calculator/revoke",
        json={"reason": "viewer tries"},
        headers={"X-CSRF-Token": token},
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert (
        browser.get(f"{cs.console_url}/admin/api/agents/calculator").json()["state"] == "approved"
    )


def test_api_with_the_session_needs_the_csrf_token(browser: httpx.Client, cs: ConsoleStack) -> None:
    assert sign_in(browser, cs, ALICE).status_code == 303
    token = csrf_token(browser, cs)
    url = f"{cs.console_url}/admin/api/agents/sleepy/revoke"
    missing = browser.post(url, json={"reason": "no token"})
    assert missing.status_code == 403
    assert missing.json()["error"]["code"] == "csrf_failed"
    wrong = browser.post(url, json={}, headers={"X-CSRF-Token": token[:-2] + "xx"})
    assert wrong.status_code == 403
    cross_site = browser.post(
        url, json={}, headers={"X-CSRF-Token": token, "Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403
    assert browser.get(f"{cs.console_url}/admin/api/agents/sleepy").json()["state"] == "approved"

    revoked = browser.post(
        url,
        json={"reason": "from the console"},
        headers={"X-CSRF-Token": token, "Origin": cs.console_url},
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["agent"]["revocation"]["by"] == "oidc:alice"
    approved = browser.post(
        f"{cs.console_url}/admin/api/agents/sleepy/approve",
        json={},
        headers={"X-CSRF-Token": token},
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["agent"]["state"] == "approved"
    assert approved.json()["agent"]["approval"]["by"] == "oidc:alice"


def test_scripts_keep_using_the_admin_token(cs: ConsoleStack) -> None:
    with httpx.Client(base_url=cs.console_url, timeout=30) as client:
        assert client.get("/admin/api/agents").status_code == 401
        ok = client.get("/admin/api/agents", headers={"Authorization": f"Bearer {cs.admin_token}"})
        assert ok.status_code == 200


def test_logout_needs_the_token_and_ends_the_session_for_good(
    browser: httpx.Client, cs: ConsoleStack
) -> None:
    assert sign_in(browser, cs, ALICE).status_code == 303
    session_value = browser.cookies["regate_session"]
    token = csrf_token(browser, cs)
    forged = browser.post(f"{cs.console_url}/logout", data={})
    assert forged.status_code == 403
    out = browser.post(f"{cs.console_url}/logout", data={"csrf_token": token})
    assert out.status_code == 303
    assert out.headers["location"] == "/logged-out"
    assert "regate_session" not in browser.cookies
    # The old cookie value, replayed, no longer opens the console or the API.
    with httpx.Client(timeout=30, cookies={"regate_session": session_value}) as replay:
        page = replay.get(f"{cs.console_url}/admin", follow_redirects=False)
        assert page.status_code == 303
        assert "reason=expired" in page.headers["location"]
        api = replay.get(f"{cs.console_url}/admin/api/agents")
        assert api.status_code == 401
        assert api.json()["error"]["code"] == "session_invalid"
