"""The `regate` command as an operator runs it: up, demo, keys, manifests, tokens, policy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO, build_stack_files, world_traversable_tmpdir

from regate import crypto
from regate.settings import load_settings

pytestmark = pytest.mark.integration
REGATE = [sys.executable, "-m", "regate"]


def regate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REGATE, *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )


@pytest.fixture
def stack_files() -> Path:
    root = world_traversable_tmpdir("regate-cli-")
    try:
        yield build_stack_files(root)  # type: ignore[misc]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def accepting_tcp(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def accepting_unix(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


def test_up_starts_all_three_and_sigterm_stops_them(stack_files: Path) -> None:
    settings = load_settings(stack_files)
    proc = subprocess.Popen(
        [*REGATE, "up", "--config", str(stack_files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops all three" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "".join(lines)
        printed = "".join(lines)
        assert f"127.0.0.1:{settings.gateway.listen.port}" in printed
        assert f"127.0.0.1:{settings.opa.listen.port}" in printed  # type: ignore[union-attr]
        assert str(settings.runner.listen.uds) in printed
        gateway = f"http://127.0.0.1:{settings.gateway.listen.port}"
        assert httpx.get(f"{gateway}/readyz", timeout=5).json()["status"] == "ready"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(5)
        assert proc.stdout is not None
        proc.stdout.close()
    assert "stopped." in "".join(lines)
    assert not accepting_tcp(settings.gateway.listen.port)
    assert not accepting_tcp(settings.opa.listen.port)  # type: ignore[union-attr]
    assert settings.runner.listen.uds is not None
    assert not accepting_unix(settings.runner.listen.uds)


def test_up_without_bwrap_says_what_to_install(stack_files: Path, tmp_path: Path) -> None:
    # A PATH with python but no bwrap.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir)}
    result = regate("up", "--config", str(stack_files), env=env)
    assert result.returncode == 1
    assert "apt-get install bubblewrap" in result.stderr


def test_demo_makes_its_calls_and_verifies_the_log(stack_files: Path) -> None:
    # As in examples/regate.toml: no auto-approval, so the demo approves through the
    # admin API, as an admin would.
    config = stack_files.read_text().replace("auto_approve = true", "auto_approve = false")
    stack_files.write_text(config)
    result = regate("demo", "--config", str(stack_files))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "an admin approves calculator 1.0.0" in out
    for expected in ("-> 200", 'result: {"sum": 42}', "-> 403", "no_grant", "-> 422", "-> 401"):
        assert expected in out
    # Per agent (the demo re-signs all 8 under agents/): manifest_seen and its approval;
    # then 5 decisions and 2 receipts.
    assert "OK: 23 records, hash chain intact" in out


def test_keys_manifest_and_token_round_trip(tmp_path: Path) -> None:
    assert regate("keys", "new", "--name", "pub1", "--dir", str(tmp_path)).returncode == 0
    private = tmp_path / "pub1.private.jwk"
    assert private.stat().st_mode & 0o077 == 0  # private keys are not group/world readable
    signed = tmp_path / "calculator.jws"
    manifest = REPO / "examples" / "agents" / "calculator" / "manifest.json"
    sign = regate("manifest", "sign", str(manifest), "--key", str(private), "--out", str(signed))
    assert sign.returncode == 0, sign.stderr

    ok = regate("manifest", "verify", str(signed), "--jwks", str(tmp_path / "pub1.jwks.json"))
    assert ok.returncode == 0, ok.stderr
    assert "agent calculator 1.0.0, signed by pub1" in ok.stdout

    head, payload, sig = signed.read_text().strip().split(".")
    signed.write_text(f"{head}.{payload[:-4]}AAAA.{sig}")
    bad = regate("manifest", "verify", str(signed), "--jwks", str(tmp_path / "pub1.jwks.json"))
    assert bad.returncode == 1
    assert "INVALID" in bad.stderr

    mint = regate(
        "token", "mint", "--key", str(private), "--iss", "https://i", "--sub", "me", "--ttl", "60"
    )
    assert mint.returncode == 0, mint.stderr
    keys = crypto.load_jwks(tmp_path / "pub1.jwks.json")
    claims = crypto.verify_jwt(
        mint.stdout.strip(),
        keys,
        algorithms=["ES256"],
        audience="regate",
        issuer="https://i",
        leeway_s=0,
    )
    assert claims["sub"] == "me"
    assert 55 <= claims["exp"] - int(time.time()) <= 60


def test_manifest_sign_refuses_a_bad_manifest(tmp_path: Path) -> None:
    regate("keys", "new", "--name", "pub1", "--dir", str(tmp_path))
    bad = tmp_path / "manifest.json"
    bad.write_text(json.dumps({"agent_id": "x", "version": "1", "tools": [{"name": "t"}]}))
    result = regate("manifest", "sign", str(bad), "--key", str(tmp_path / "pub1.private.jwk"))
    assert result.returncode == 1
    assert "tools/0" in result.stderr


def test_policy_test_passes_on_the_bundle_and_fails_on_a_broken_copy(tmp_path: Path) -> None:
    ok = regate("policy", "test", "--dir", str(REPO / "policies"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "coverage" in ok.stdout

    broken = tmp_path / "policies"
    shutil.copytree(REPO / "policies", broken)
    test_file = broken / "regate" / "authz" / "authz_test.rego"
    test_file.write_text(test_file.read_text() + "\ntest_always_fails if {\n\tfalse\n}\n")
    failed = regate("policy", "test", "--dir", str(broken))
    assert failed.returncode == 1
    assert "FAIL tests" in failed.stdout


def test_manifest_inspect_shows_an_unverified_file(tmp_path: Path) -> None:
    regate("keys", "new", "--name", "pub1", "--dir", str(tmp_path))
    signed = tmp_path / "calculator.jws"
    manifest = REPO / "examples" / "agents" / "calculator" / "manifest.json"
    regate(
        "manifest",
        "sign",
        str(manifest),
        "--key",
        str(tmp_path / "pub1.private.jwk"),
        "--out",
        str(signed),
    )

    shown = regate("manifest", "inspect", str(signed))

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"UNVERIFIED {signed}")
    assert "signed by kid: 'pub1' (claimed)" in shown.stdout
    assert "agent: 'calculator'  version: '1.0.0'" in shown.stdout
    assert "tool 'add': permissions ['net:none']" in shown.stdout
    assert "problem:" not in shown.stdout

    head, payload, _ = signed.read_text().strip().split(".")
    signed.write_text(f"{head}.{payload}.")
    broken = regate("manifest", "inspect", str(signed))
    assert broken.returncode == 0
    assert "problem: no signature" in broken.stdout


def test_keys_rotate_then_retire(tmp_path: Path) -> None:
    regate("keys", "new", "--name", "publisher", "--dir", str(tmp_path))
    rotated = regate("keys", "rotate", "--name", "publisher", "--dir", str(tmp_path))
    assert rotated.returncode == 0, rotated.stderr
    assert "now holds" in rotated.stdout
    kids = [k["kid"] for k in json.loads((tmp_path / "publisher.jwks.json").read_text())["keys"]]
    assert len(kids) == 2
    assert kids[1] == "publisher"
    assert "--kid publisher" in rotated.stdout

    retired = regate(
        "keys", "retire", "--name", "publisher", "--dir", str(tmp_path), "--kid", "publisher"
    )
    assert retired.returncode == 0, retired.stderr
    kids_after = [
        k["kid"] for k in json.loads((tmp_path / "publisher.jwks.json").read_text())["keys"]
    ]
    assert kids_after == [kids[0]]
    again = regate(
        "keys", "retire", "--name", "publisher", "--dir", str(tmp_path), "--kid", kids[0]
    )
    assert again.returncode == 2
    assert "current signing key" in again.stderr
