"""Console cookies (gateway/console/sessions.py): signed, purpose-bound, and expiring."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from gateway.console.sessions import BadCookie, LoginCookies, Sessions, read_secret_file
from regate.settings import ConfigError

SECRET = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(clock: Clock) -> Sessions:
    return Sessions(SECRET, idle_s=600, max_s=3600, now=clock)


def test_a_session_round_trips(sessions: Sessions) -> None:
    session, value = sessions.issue(sub="u-1", name="alice", role="admin")
    assert sessions.load(value) == session
    assert session.role == "admin"
    assert len(session.sid) >= 32


@pytest.mark.parametrize(
    "change",
    [
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),
        lambda v: "x" + v,
        lambda v: v.split(".")[0],
        lambda v: "",
    ],
)
def test_an_altered_session_cookie_is_refused(sessions: Sessions, change) -> None:  # type: ignore[no-untyped-def]
    _, value = sessions.issue(sub="u-1", name="alice", role="viewer")
    with pytest.raises(BadCookie):
        sessions.load(change(value))


def test_a_viewer_cannot_make_itself_admin(sessions: Sessions) -> None:
    _, value = sessions.issue(sub="u-1", name="victor", role="viewer")
    body, mac = value.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(BadCookie, match="signature"):
        sessions.load(f"{forged}.{mac}")


def test_another_secret_does_not_verify(sessions: Sessions, clock: Clock) -> None:
    _, value = Sessions(b"z" * 32, idle_s=600, max_s=3600, now=clock).issue(
        sub="u", name="a", role="admin"
    )
    with pytest.raises(BadCookie):
        sessions.load(value)


def test_a_login_cookie_never_passes_for_a_session(sessions: Sessions, clock: Clock) -> None:
    login = LoginCookies(SECRET, now=clock).make(
        state="s", nonce="n", code_verifier="v", next_path="/admin"
    )
    with pytest.raises(BadCookie):
        sessions.load(login)


def test_idle_expiry_and_refresh(sessions: Sessions, clock: Clock) -> None:
    session, value = sessions.issue(sub="u", name="a", role="admin")
    clock.t += 30
    assert sessions.refreshed(session) is None  # too recent to re-issue
    clock.t += 500
    refreshed = sessions.refreshed(sessions.load(value))
    assert refreshed is not None
    clock.t += 500  # 1030 s after sign-in, 500 s after the refresh
    sessions.load(refreshed)
    with pytest.raises(BadCookie, match="idle") as caught:
        sessions.load(value)
    assert caught.value.expired


def test_absolute_expiry_even_when_active(sessions: Sessions, clock: Clock) -> None:
    _session, value = sessions.issue(sub="u", name="a", role="admin")
    for _ in range(6):
        clock.t += 550
        value = sessions.refreshed(sessions.load(value)) or value
    clock.t += 400  # 3700 s after sign-in, 400 s after the last refresh
    with pytest.raises(BadCookie, match="maximum lifetime"):
        sessions.load(value)


def test_a_revoked_session_stays_revoked(sessions: Sessions) -> None:
    session, value = sessions.issue(sub="u", name="a", role="admin")
    sessions.revoke(session)
    with pytest.raises(BadCookie, match="signed out"):
        sessions.load(value)
    other, other_value = sessions.issue(sub="u", name="a", role="admin")
    assert sessions.load(other_value) == other


def test_login_cookie_round_trip_and_expiry(clock: Clock) -> None:
    logins = LoginCookies(SECRET, ttl_s=600, now=clock)
    value = logins.make(state="st", nonce="no", code_verifier="ve", next_path="/admin/agents")
    assert logins.load(value) == {
        "state": "st",
        "nonce": "no",
        "verifier": "ve",
        "next": "/admin/agents",
    }
    clock.t += 601
    with pytest.raises(BadCookie, match="too long"):
        logins.load(value)


def test_secret_file_rules(tmp_path: Path) -> None:
    path = tmp_path / "cookie"
    path.write_text("a" * 40 + "\n")
    path.chmod(0o600)
    assert read_secret_file(path, "k", min_bytes=32) == b"a" * 40
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret_file(path, "k")
    path.chmod(0o600)
    path.write_text("short")
    with pytest.raises(ConfigError, match="at least 32"):
        read_secret_file(path, "k", min_bytes=32)
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret_file(tmp_path / "absent", "k")
    assert os.path.exists(path)
