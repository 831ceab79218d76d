"""The admin API's token (`gateway.admin.AdminToken`) and the settings that enable it."""

from __future__ import annotations

import contextlib
import hmac
from pathlib import Path
from typing import Any

import pytest

import gateway.admin
from gateway.admin import TOKEN_ACTOR, AdminToken
from gateway.errors import AdminTokenInvalid, AdminTokenMissing
from regate.settings import ConfigError, parse_settings

TOKEN = "k" * 20 + "Z" * 23


def test_the_right_token_names_the_actor() -> None:
    assert AdminToken(TOKEN).check(f"Bearer {TOKEN}") == TOKEN_ACTOR
    assert AdminToken(TOKEN).check(f"bearer {TOKEN}") == TOKEN_ACTOR  # the scheme is case-blind


@pytest.mark.parametrize(
    ("authorization", "error"),
    [
        (None, AdminTokenMissing),
        ("", AdminTokenMissing),
        ("Bearer", AdminTokenInvalid),
        (f"Basic {TOKEN}", AdminTokenInvalid),
        (f"Bearer {TOKEN[:-1]}", AdminTokenInvalid),
        (f"Bearer {TOKEN}x", AdminTokenInvalid),
        (f"Bearer {TOKEN.upper()}", AdminTokenInvalid),
        ("Bearer " + "x" * 10_000, AdminTokenInvalid),
    ],
)
def test_anything_else_is_401(authorization: str | None, error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        AdminToken(TOKEN).check(authorization)
    assert caught.value.status == 401  # type: ignore[attr-defined]
    assert caught.value.headers["WWW-Authenticate"].startswith('Bearer realm="regate-admin"')  # type: ignore[attr-defined]


def test_the_comparison_is_constant_time_over_fixed_length_digests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[Any, Any]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(gateway.admin.hmac, "compare_digest", spy)
    token = AdminToken(TOKEN)
    for presented in ("short", TOKEN, "y" * 500):
        with contextlib.suppress(AdminTokenInvalid):
            token.check(f"Bearer {presented}")
    # Every check went through compare_digest, always on two 32-byte digests, so
    # neither the content nor the length of a guess changes the time it takes.
    assert len(calls) == 3
    assert all(len(a) == len(b) == 32 for a, b in calls)


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 32 characters"):
        AdminToken("too-short")


def test_token_file_must_exist_and_be_private(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    with pytest.raises(ConfigError, match="never served without a token"):
        AdminToken.from_file(path)
    path.write_text(TOKEN + "\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        AdminToken.from_file(path)
    path.chmod(0o600)
    assert AdminToken.from_file(path).check(f"Bearer {TOKEN}") == TOKEN_ACTOR


# --- settings -------------------------------------------------------------------------


def raw(**sections: Any) -> dict[str, Any]:
    return {
        "gateway": {"state_dir": "state", "audience": "regate"},
        "opa": {"url": "127.0.0.1:8181"},
        "runner": {"url": "unix:r.sock", "listen": "unix:r.sock", "agents_dir": "agents"},
        "manifests": {"dir": "m", "publishers_jwks": "p.json"},
        "issuers": [{"issuer": "https://i", "jwks_file": "i.json", "algorithms": ["ES256"]}],
        **sections,
    }


def parse(config: dict[str, Any]) -> Any:
    return parse_settings(config, base=Path("/srv"), source=Path("/srv/regate.toml"))


def test_no_admin_section_means_no_admin_api() -> None:
    settings = parse(raw())
    assert settings.admin is None
    assert (settings.manifests.revoked_kids, settings.manifests.auto_approve) == ((), False)
    assert settings.manifests.reload_interval_s == 2.0


def test_admin_and_manifest_settings() -> None:
    settings = parse(
        raw(
            admin={"token_file": "keys/admin.token"},
            manifests={
                "dir": "m",
                "publishers_jwks": "p.json",
                "revoked_kids": ["old"],
                "auto_approve": True,
                "reload_interval_s": 0.5,
            },
        )
    )
    assert settings.admin.listen.port == 8081
    assert settings.admin.token_file == Path("/srv/keys/admin.token")
    assert settings.manifests.revoked_kids == ("old",)
    assert settings.manifests.auto_approve is True
    assert settings.manifests.reload_interval_s == 0.5


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"admin": {"listen": "127.0.0.1:8081"}}, "admin.token_file"),
        ({"admin": {"listen": "127.0.0.1:8081", "token_file": ""}}, "admin.token_file"),
        ({"admin": "on"}, "[admin]"),
        ({"admin": {"token_file": "t", "listen": "8081"}}, "admin.listen"),
        ({"manifests": {"dir": "m", "publishers_jwks": "p", "auto_approve": "yes"}}, "manifests.auto_approve"),
        ({"manifests": {"dir": "m", "publishers_jwks": "p", "revoked_kids": "old"}}, "manifests.revoked_kids"),
        ({"manifests": {"dir": "m", "publishers_jwks": "p", "revoked_kids": [""]}}, "manifests.revoked_kids"),
        ({"manifests": {"dir": "m", "publishers_jwks": "p", "reload_interval_s": 0}}, "manifests.reload_interval_s"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_key(sections: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(raw(**sections))
    assert key in str(caught.value)
