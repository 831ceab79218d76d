"""Settings (`regate.settings`): one valid config, and a table of bad ones that name their key."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from regate.settings import Address, ConfigError, load_settings, parse_settings

Raw = dict[str, Any]

MINIMAL_TOML = """
[gateway]
state_dir = "state"
audience = "regate"

[opa]
url = "127.0.0.1:8181"

[runner]
url = "unix:state/run/runner.sock"
listen = "unix:state/run/runner.sock"
agents_dir = "agents"

[manifests]
dir = "state/manifests"
publishers_jwks = "/etc/regate/publishers.jwks.json"

[[issuers]]
issuer = "https://issuer.test"
jwks_file = "keys/issuer.jwks.json"
algorithms = ["ES256"]
"""


def minimal() -> Raw:
    return {
        "gateway": {"state_dir": "state", "audience": "regate"},
        "opa": {"url": "127.0.0.1:8181"},
        "runner": {
            "url": "unix:state/run/runner.sock",
            "listen": "unix:state/run/runner.sock",
            "agents_dir": "agents",
        },
        "manifests": {"dir": "state/manifests", "publishers_jwks": "keys/publishers.jwks.json"},
        "issuers": [
            {
                "issuer": "https://issuer.test",
                "jwks_file": "keys/issuer.jwks.json",
                "algorithms": ["ES256"],
            }
        ],
    }


def parse(raw: Raw, base: Path = Path("/srv/regate")) -> Any:
    return parse_settings(raw, base=base, source=base / "regate.toml")


# --- valid ------------------------------------------------------------------


def test_minimal_config_with_defaults() -> None:
    base = Path("/srv/regate")
    settings = parse(minimal(), base)

    gw = settings.gateway
    assert gw.listen == Address(host="127.0.0.1", port=8080)
    assert (gw.audience, gw.leeway_s, gw.max_body_bytes, gw.grant_ttl_s) == (
        "regate",
        30,
        64 * 1024,
        30,
    )
    assert gw.audit_db == base / "state" / "audit.sqlite3"
    assert settings.opa.url == Address(host="127.0.0.1", port=8181)
    assert (settings.opa.timeout_s, settings.opa.listen, settings.opa.policies_dir) == (
        0.5,
        None,
        None,
    )
    assert (settings.opa.breaker_failures, settings.opa.breaker_cooldown_s) == (5, 5.0)
    assert settings.runner.sandbox_uid == 65534
    assert [i.issuer for i in settings.issuers] == ["https://issuer.test"]
    assert settings.issuers[0].algorithms == ("ES256",)
    assert settings.source == base / "regate.toml"
    assert (settings.call_approvals.ttl_s, settings.call_approvals.max_pending_per_caller) == (
        3600,
        20,
    )


def test_call_approvals_section() -> None:
    raw = minimal()
    raw["call_approvals"] = {"ttl_s": 600, "max_pending_per_caller": 3}
    approvals = parse(raw).call_approvals
    assert (approvals.ttl_s, approvals.max_pending_per_caller) == (600, 3)


def test_http_prefix_is_accepted_on_addresses() -> None:
    raw = minimal()
    raw["opa"]["url"] = "http://localhost:8181"
    assert parse(raw).opa.url == Address(host="localhost", port=8181)


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "regate.toml").write_text(MINIMAL_TOML)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    settings = load_settings("../conf/regate.toml")

    base = config_dir.resolve()
    assert settings.source == base / "regate.toml"
    assert settings.gateway.state_dir == base / "state"
    assert settings.runner.url.uds == base / "state" / "run" / "runner.sock"
    assert settings.runner.agents_dir == base / "agents"
    assert settings.runner.work_dir is None  # a fresh temp dir per runner start
    assert settings.runner.grant_jwks == base / "state" / "keys" / "gateway.jwks.json"
    assert settings.manifests.dir == base / "state" / "manifests"
    assert settings.issuers[0].jwks_file == base / "keys" / "issuer.jwks.json"
    # Absolute paths are kept as written.
    assert settings.manifests.publishers_jwks == Path("/etc/regate/publishers.jwks.json")


def test_config_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "regate.toml").write_text(MINIMAL_TOML)
    monkeypatch.setenv("REGATE_CONFIG", str(tmp_path / "regate.toml"))
    assert load_settings().gateway.audience == "regate"


# --- invalid ----------------------------------------------------------------


def edit(change: Callable[[Raw], object]) -> Raw:
    raw = copy.deepcopy(minimal())
    change(raw)
    return raw


def second_issuer(raw: Raw, **fields: Any) -> None:
    raw["issuers"].append({**raw["issuers"][0], **fields})


BAD: list[Any] = [
    pytest.param(edit(lambda r: r.pop("gateway")), "[gateway] section is missing", id="missing-gateway"),
    pytest.param(edit(lambda r: r.update(gateway="x")), "[gateway] section is missing", id="gateway-not-a-table"),
    pytest.param(edit(lambda r: r.pop("runner")), "[runner] section is missing", id="missing-runner"),
    pytest.param(edit(lambda r: r["gateway"].update(listen="localhost")), "gateway.listen", id="listen-without-port"),
    pytest.param(edit(lambda r: r["gateway"].update(listen=":8080")), "gateway.listen", id="listen-without-host"),
    pytest.param(edit(lambda r: r["gateway"].update(listen="127.0.0.1:70000")), "gateway.listen", id="listen-port-out-of-range"),
    pytest.param(edit(lambda r: r["gateway"].update(listen="127.0.0.1:0")), "gateway.listen", id="listen-port-zero"),
    pytest.param(edit(lambda r: r["gateway"].update(listen="127.0.0.1:http")), "gateway.listen", id="listen-port-not-a-number"),
    pytest.param(edit(lambda r: r["opa"].update(url="opa")), "opa.url", id="opa-url-without-port"),
    pytest.param(edit(lambda r: r["issuers"][0].update(algorithms=["none"])), "issuers[0].algorithms", id="alg-none"),
    pytest.param(edit(lambda r: r["issuers"][0].update(algorithms=["ES256", "HS256"])), "issuers[0].algorithms", id="alg-hs256"),
    pytest.param(edit(lambda r: r["issuers"][0].update(algorithms=[])), "issuers[0].algorithms", id="no-algorithms"),
    pytest.param(edit(lambda r: r["issuers"][0].update(algorithms="ES256")), "issuers[0].algorithms", id="algorithms-not-a-list"),
    pytest.param(edit(lambda r: second_issuer(r, issuer="https://b.test", algorithms=["none"])), "issuers[1].algorithms", id="second-issuer-alg-none"),
    pytest.param(edit(lambda r: r.update(issuers=[])), "[[issuers]]", id="empty-issuers"),
    pytest.param(edit(lambda r: r.pop("issuers")), "[[issuers]]", id="missing-issuers"),
    pytest.param(edit(lambda r: r.update(issuers={"issuer": "x"})), "[[issuers]]", id="issuers-not-a-list"),
    pytest.param(edit(lambda r: r.update(issuers=["https://issuer.test"])), "issuers[0] must be a table", id="issuer-not-a-table"),
    pytest.param(edit(second_issuer), "each issuer may appear only once", id="duplicate-issuer"),
    pytest.param(edit(lambda r: r["issuers"][0].pop("issuer")), "issuers[0].issuer", id="issuer-name-missing"),
    pytest.param(edit(lambda r: r["issuers"][0].pop("jwks_file")), "issuers[0]: give exactly one of jwks_file and jwks_url", id="issuer-jwks-missing"),
    pytest.param(edit(lambda r: r["opa"].update(timeout_s=0)), "opa.timeout_s", id="timeout-zero"),
    pytest.param(edit(lambda r: r["opa"].update(timeout_s=31)), "opa.timeout_s", id="timeout-too-long"),
    pytest.param(edit(lambda r: r["opa"].update(timeout_s="1s")), "opa.timeout_s", id="timeout-string"),
    pytest.param(edit(lambda r: r["opa"].update(timeout_s=True)), "opa.timeout_s", id="timeout-boolean"),
    pytest.param(edit(lambda r: r["opa"].update(breaker_failures=0)), "opa.breaker_failures", id="breaker-failures-zero"),
    pytest.param(edit(lambda r: r["opa"].update(breaker_failures=2.5)), "opa.breaker_failures", id="breaker-failures-fraction"),
    pytest.param(edit(lambda r: r["opa"].update(breaker_cooldown_s=0)), "opa.breaker_cooldown_s", id="breaker-cooldown-zero"),
    pytest.param(edit(lambda r: r["opa"].update(breaker_cooldown_s="5s")), "opa.breaker_cooldown_s", id="breaker-cooldown-string"),
    pytest.param(edit(lambda r: r["runner"].update(timeout_s=0.5)), "runner.timeout_s", id="runner-timeout-too-short"),
    pytest.param(edit(lambda r: r["gateway"].update(leeway_s=-1)), "gateway.leeway_s", id="leeway-negative"),
    pytest.param(edit(lambda r: r["gateway"].update(leeway_s=301)), "gateway.leeway_s", id="leeway-too-long"),
    pytest.param(edit(lambda r: r["gateway"].update(leeway_s=1.5)), "gateway.leeway_s", id="leeway-float"),
    pytest.param(edit(lambda r: r["gateway"].update(leeway_s=True)), "gateway.leeway_s", id="leeway-boolean"),
    pytest.param(edit(lambda r: r["gateway"].update(max_body_bytes=10)), "gateway.max_body_bytes", id="body-limit-too-small"),
    pytest.param(edit(lambda r: r["gateway"].update(grant_ttl_s=0)), "gateway.grant_ttl_s", id="grant-ttl-zero"),
    pytest.param(edit(lambda r: r["gateway"].update(audience=5)), "gateway.audience", id="audience-not-a-string"),
    pytest.param(edit(lambda r: r["gateway"].update(audience="")), "gateway.audience", id="audience-empty"),
    pytest.param(edit(lambda r: r["gateway"].pop("state_dir")), "gateway.state_dir", id="state-dir-missing"),
    pytest.param(edit(lambda r: r["runner"].update(sandbox_uid=0)), "runner.sandbox_uid", id="sandbox-as-root"),
    pytest.param(edit(lambda r: r["runner"].update(sandbox_gid=0)), "runner.sandbox_gid", id="sandbox-root-group"),
    pytest.param(edit(lambda r: r["runner"].update(agents_dir=["agents"])), "runner.agents_dir", id="agents-dir-not-a-string"),
    pytest.param(edit(lambda r: r["runner"].update(pool_size=-1)), "runner.pool_size", id="pool-size-negative"),
    pytest.param(edit(lambda r: r["runner"].update(pool_size=17)), "runner.pool_size", id="pool-size-too-big"),
    pytest.param(edit(lambda r: r["manifests"].pop("publishers_jwks")), "manifests.publishers_jwks", id="publishers-missing"),
    pytest.param(edit(lambda r: r["gateway"].update(audit_checkpoint_records=0)), "gateway.audit_checkpoint_records", id="checkpoint-records-zero"),
    pytest.param(edit(lambda r: r["gateway"].update(audit_checkpoint_s="1m")), "gateway.audit_checkpoint_s", id="checkpoint-seconds-string"),
    pytest.param(edit(lambda r: r.update(shadow={"sample_rate": 1.5})), "shadow.sample_rate", id="shadow-rate-above-one"),
    pytest.param(edit(lambda r: r.update(shadow={"sample_rate": -0.1})), "shadow.sample_rate", id="shadow-rate-negative"),
    pytest.param(edit(lambda r: r.update(shadow={"max_wait_s": 11})), "shadow.max_wait_s", id="shadow-wait-too-long"),
    pytest.param(edit(lambda r: r.update(shadow="on")), "[shadow] section is missing", id="shadow-not-a-table"),
    pytest.param(edit(lambda r: r.update(call_approvals={"ttl_s": 0})), "call_approvals.ttl_s", id="approval-ttl-zero"),
    pytest.param(edit(lambda r: r.update(call_approvals={"ttl_s": 8 * 86400})), "call_approvals.ttl_s", id="approval-ttl-over-a-week"),
    pytest.param(edit(lambda r: r.update(call_approvals={"ttl_s": "1h"})), "call_approvals.ttl_s", id="approval-ttl-string"),
    pytest.param(edit(lambda r: r.update(call_approvals={"max_pending_per_caller": 0})), "call_approvals.max_pending_per_caller", id="approval-no-pending"),
    pytest.param(edit(lambda r: r.update(call_approvals=3600)), "[call_approvals] section", id="approvals-not-a-table"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "key"), BAD)
def test_bad_config_names_the_key(raw: Raw, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    assert key in str(caught.value)


def test_shadow_is_off_unless_configured() -> None:
    assert parse(minimal()).shadow.sample_rate == 0.0
    on = parse(edit(lambda r: r.update(shadow={"sample_rate": 0.1, "max_wait_s": 0.2})))
    assert (on.shadow.sample_rate, on.shadow.max_wait_s) == (0.1, 0.2)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config .*/absent\.toml"):
        load_settings(tmp_path / "absent.toml")


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "regate.toml"
    path.write_text('[gateway]\naudience = "regate\n')
    with pytest.raises(ConfigError, match=r"regate\.toml is not valid TOML"):
        load_settings(path)


def test_no_config_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGATE_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="pass --config FILE or set REGATE_CONFIG"):
        load_settings()


@pytest.mark.parametrize(
    "value",
    ["https://opa:8181", "::1:8181", "unix:", "opa", "opa:0", "opa:99999", "http://a/b:1"],
)
def test_bad_addresses_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"opa\.url"):
        Address.parse(value, "opa.url", Path("/etc"))


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("127.0.0.1:8181", "http://127.0.0.1:8181"),
        ("http://opa:8181", "http://opa:8181"),
        ("[::1]:8181", "http://[::1]:8181"),
    ],
)
def test_good_addresses_parse(value: str, url: str) -> None:
    assert Address.parse(value, "opa.url", Path("/etc")).base_url == url
