"""[admin.oidc] settings: a valid table with its defaults, and bad ones that name their key."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regate.settings import ConfigError, parse_settings

Raw = dict[str, Any]
BASE = Path("/srv/regate")


def config(**oidc: Any) -> Raw:
    table = {
        "issuer": "https://login.example.com/realms/ops/",
        "client_id": "regate-console",
        "client_secret_file": "secrets/oidc-client",
        "cookie_secret_file": "secrets/cookie",
        "console_url": "https://regate-admin.example.com",
        "admin_groups": ["regate-admins"],
        "viewer_groups": ["regate-viewers"],
    } | oidc
    return {
        "gateway": {"state_dir": "state", "audience": "regate"},
        "opa": {"url": "127.0.0.1:8181"},
        "runner": {"url": "unix:r.sock", "listen": "unix:r.sock", "agents_dir": "agents"},
        "manifests": {"dir": "m", "publishers_jwks": "p.json"},
        "admin": {"listen": "127.0.0.1:8081", "token_file": "admin.token", "oidc": table},
        "issuers": [{"issuer": "https://i.test", "jwks_file": "k.json", "algorithms": ["ES256"]}],
    }


def parse(raw: Raw) -> Any:
    return parse_settings(raw, base=BASE, source=BASE / "regate.toml")


def test_valid_table_with_defaults() -> None:
    oidc = parse(config()).admin.oidc
    assert oidc.issuer == "https://login.example.com/realms/ops"  # trailing slash dropped
    assert oidc.redirect_uri == "https://regate-admin.example.com/auth/callback"
    assert oidc.secure_cookies is True
    assert oidc.client_secret_file == BASE / "secrets/oidc-client"
    assert oidc.groups_claim == "groups"
    assert oidc.scopes == ("openid", "profile", "email", "groups")
    assert oidc.id_token_algorithms == ("RS256", "ES256")
    assert (oidc.session_idle_s, oidc.session_max_s) == (1800, 8 * 3600)


def test_no_oidc_table_means_no_console() -> None:
    raw = config()
    del raw["admin"]["oidc"]
    assert parse(raw).admin.oidc is None


def test_console_url_defaults_to_the_listener_on_loopback() -> None:
    raw = config(issuer="http://127.0.0.1:9000", allow_http_loopback=True)
    del raw["admin"]["oidc"]["console_url"]
    oidc = parse(raw).admin.oidc
    assert oidc.console_url == "http://127.0.0.1:8081"
    assert oidc.secure_cookies is False


def edit(change: Callable[[Raw], Any]) -> Raw:
    raw = copy.deepcopy(config())
    change(raw["admin"]["oidc"])
    return raw


BAD = [
    pytest.param(edit(lambda t: t.update(issuer="http://login.example.com")), "admin.oidc.issuer", id="issuer-plain-http"),
    pytest.param(edit(lambda t: t.update(issuer="http://127.0.0.1:9000")), "allow_http_loopback", id="loopback-http-not-allowed"),
    pytest.param(edit(lambda t: t.update(issuer="https://login.example.com?x=1")), "admin.oidc.issuer", id="issuer-with-query"),
    pytest.param(edit(lambda t: t.pop("issuer")), "admin.oidc.issuer", id="issuer-missing"),
    pytest.param(edit(lambda t: t.pop("client_id")), "admin.oidc.client_id", id="client-id-missing"),
    pytest.param(edit(lambda t: t.pop("client_secret_file")), "admin.oidc.client_secret_file", id="client-secret-missing"),
    pytest.param(edit(lambda t: t.pop("cookie_secret_file")), "admin.oidc.cookie_secret_file", id="cookie-secret-missing"),
    pytest.param(edit(lambda t: t.update(console_url="https://admin.example.com/console")), "give the origin only", id="console-url-with-path"),
    pytest.param(edit(lambda t: t.update(console_url="http://admin.example.com")), "admin.oidc.console_url", id="console-url-plain-http"),
    pytest.param(edit(lambda t: t.update(admin_groups=[], viewer_groups=[])), "never means everyone", id="no-groups-at-all"),
    pytest.param(edit(lambda t: t.update(admin_groups="regate-admins")), "admin.oidc.admin_groups", id="groups-not-a-list"),
    pytest.param(edit(lambda t: t.update(scopes=["profile"])), "must include 'openid'", id="scopes-without-openid"),
    pytest.param(edit(lambda t: t.update(id_token_algorithms=["HS256"])), "admin.oidc.id_token_algorithms", id="alg-hs256"),
    pytest.param(edit(lambda t: t.update(id_token_algorithms=["none"])), "admin.oidc.id_token_algorithms", id="alg-none"),
    pytest.param(edit(lambda t: t.update(session_idle_s=10)), "admin.oidc.session_idle_s", id="idle-too-short"),
    pytest.param(edit(lambda t: t.update(session_idle_s=7200, session_max_s=3600)), "must not exceed", id="idle-longer-than-max"),
    pytest.param(edit(lambda t: t.update(allow_http_loopback="yes")), "admin.oidc.allow_http_loopback", id="loopback-not-a-bool"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "key"), BAD)
def test_bad_oidc_config_names_the_key(raw: Raw, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    assert key in str(caught.value)


def test_oidc_not_a_table() -> None:
    raw = config()
    raw["admin"]["oidc"] = "https://login.example.com"
    with pytest.raises(ConfigError, match=r"\[admin.oidc\] must be a table"):
        parse(raw)
