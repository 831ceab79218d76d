"""The console's pure sign-in rules: role from groups, display name, where to go after."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import Response

from gateway.console.auth import (
    Console,
    ConsoleUser,
    display_name,
    group_claim,
    role_of,
    safe_next,
)
from gateway.console.oidc import OidcClient
from regate.settings import OidcSettings

SETTINGS = OidcSettings(
    issuer="https://login.example.com",
    client_id="c",
    client_secret_file=Path("/x"),
    console_url="https://admin.example.com",
    cookie_secret_file=Path("/y"),
    admin_groups=("regate-admins",),
    viewer_groups=("regate-viewers", "auditors"),
)


@pytest.mark.parametrize(
    ("claims", "role"),
    [
        ({"groups": ["regate-admins"]}, "admin"),
        ({"groups": ["regate-viewers"]}, "viewer"),
        ({"groups": ["auditors", "staff"]}, "viewer"),
        ({"groups": ["regate-viewers", "regate-admins"]}, "admin"),
        ({"groups": "regate-admins"}, "admin"),
        ({"groups": ["staff"]}, None),
        ({"groups": []}, None),
        ({}, None),
        ({"groups": None}, None),
        ({"groups": [["regate-admins"]]}, None),
        ({"groups": ["Regate-Admins"]}, None),  # group names are compared exactly
        ({"groups": {"regate-admins": True}}, None),
        ({"roles": ["regate-admins"]}, None),  # another claim than the configured one
    ],
)
def test_role_from_the_group_claim(claims: dict[str, Any], role: str | None) -> None:
    assert role_of(claims, SETTINGS) == role


def test_nested_group_claim_path() -> None:
    claims = {"realm_access": {"roles": ["regate-admins"]}}
    assert group_claim(claims, "realm_access.roles") == ["regate-admins"]
    assert group_claim(claims, "realm_access.missing") == []
    assert group_claim({"realm_access": "x"}, "realm_access.roles") == []


def test_display_name_prefers_the_username() -> None:
    assert display_name({"sub": "1", "email": "a@x", "preferred_username": "alice"}) == "alice"
    assert display_name({"sub": "1", "email": "a@x"}) == "a@x"
    assert display_name({"sub": "1", "preferred_username": "  "}) == "1"


def test_only_admins_can_act() -> None:
    assert ConsoleUser("a", "admin").can_act
    assert not ConsoleUser("v", "viewer").can_act
    assert ConsoleUser("alice", "admin").actor == "oidc:alice"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/admin", "/admin"),
        ("/admin/decisions?caller=x&outcome=deny", "/admin/decisions?caller=x&outcome=deny"),
        ("/admin/agents/calc#tools", "/admin/agents/calc#tools"),
        (None, "/admin"),
        ("", "/admin"),
        ("https://evil.example/admin", "/admin"),
        ("//evil.example/admin", "/admin"),
        ("///evil.example", "/admin"),
        ("/\\evil.example", "/admin"),
        ("\\\\evil.example", "/admin"),
        ("javascript:alert(1)", "/admin"),
        ("/admin\r\nLocation: https://evil.example", "/admin"),
        ("/administrator", "/admin"),
        ("/login", "/admin"),
        ("/admin/../login", "/admin"),
        ("/admin/./x", "/admin"),
        ("http:/admin", "/admin"),
        ("/admin" + "x" * 3000, "/admin"),
    ],
)
def test_safe_next_never_leaves_the_console(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


@pytest.mark.parametrize(
    ("console_url", "name", "secure"),
    [
        ("https://admin.example.com", "__Host-regate_session", True),
        ("http://127.0.0.1:8081", "regate_session", False),
    ],
)
def test_session_cookie_flags(console_url: str, name: str, secure: bool) -> None:
    settings = dataclasses.replace(SETTINGS, console_url=console_url)
    console = Console(settings, OidcClient(settings, "client-secret"), b"k" * 32)
    try:
        response = Response()
        console.set_session_cookie(response, "value")
        header = response.headers["set-cookie"]
        assert header.startswith(f"{name}=value;")
        flags = {part.strip().split("=")[0].lower() for part in header.split(";")[1:]}
        assert {"httponly", "path", "samesite", "max-age"} <= flags
        assert "samesite=lax" in header.lower()
        assert ("secure" in flags) is secure
        assert "domain" not in flags  # a __Host- cookie must not name a domain
    finally:
        asyncio.run(console.aclose())
