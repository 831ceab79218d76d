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
