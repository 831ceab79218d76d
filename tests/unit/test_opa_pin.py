"""The pinned OPA release and the sidecar's command line (`regate.opa`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from regate import opa
from regate.settings import Address

ROOT = Path(__file__).resolve().parents[2]
POLICIES = Path("/srv/regate/policies")


def test_pinned_version_matches_scripts_opa_version() -> None:
    pinned = (ROOT / "scripts" / "opa-version").read_text().strip()
    assert pinned.startswith("v")
    assert pinned == opa.PINNED_VERSION


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize(
    ("listen", "addr"),
    [
        pytest.param("127.0.0.1:8181", "127.0.0.1:8181", id="loopback-v4"),
        pytest.param("[::1]:9191", "[::1]:9191", id="loopback-v6"),
        pytest.param("unix:/run/regate/opa.sock", "unix:///run/regate/opa.sock", id="unix-socket"),
    ],
)
def test_sidecar_argv(listen: str, addr: str) -> None:
    address = Address.parse(listen, "opa.listen", Path("/srv/regate"))
    argv = opa.sidecar_argv("/opt/opa", address, POLICIES)

    assert argv[:3] == ["/opt/opa", "run", "--server"]
    assert option(argv, "--addr") == addr
    assert argv.count("--addr") == 1
    assert option(argv, "--bundle") == str(POLICIES)
    assert "--watch" in argv
    assert "--skip-version-check" in argv


def test_missing_or_wrong_opa_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fake `opa` of the wrong version on PATH, none in the repo, none in $REGATE_OPA.
    fake = tmp_path / "opa"
    fake.write_text("#!/bin/sh\necho 'Version: 0.1.0'\n")
    fake.chmod(0o755)
    monkeypatch.setattr(opa, "REPO_ROOT", tmp_path / "nowhere")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("REGATE_OPA", raising=False)
    with pytest.raises(
        opa.OpaNotFound, match=r"make setup.*go install github.com/open-policy-agent/opa@v"
    ):
        opa.find_opa()
    monkeypatch.setenv("REGATE_OPA", str(fake))
    with pytest.raises(opa.OpaNotFound):
        opa.find_opa()  # the wrong version is never used


def test_sidecar_env_sets_gogc_unless_the_operator_did() -> None:
    assert opa.sidecar_env(400, {"PATH": "/usr/bin"}) == {"GOGC": "400", "PATH": "/usr/bin"}
    assert opa.sidecar_env(400, {"GOGC": "off"})["GOGC"] == "off"
