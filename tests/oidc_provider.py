"""A real OpenID Connect provider (panva's oidc-provider, tests/e2e/oidc/) and a stack
whose admin console signs in with it. Used by the SSO integration test and the browser
end-to-end test. Everything listens on 127.0.0.1 and is stopped by its PID."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from conftest import REPO, RunningStack, free_port, start_stack, stop_stack

PROVIDER_DIR = REPO / "tests" / "e2e" / "oidc"
CLIENT_ID = "regate-console"
ADMIN_GROUP, VIEWER_GROUP = "regate-admins", "regate-viewers"


@dataclass(frozen=True)
class User:
    login: str
    password: str
    name: str
    groups: tuple[str, ...]


ALICE = User("alice", "alice-password", "Alice Admin", (ADMIN_GROUP, "staff"))
VICTOR = User("victor", "victor-password", "Victor Viewer", (VIEWER_GROUP,))
NOBODY = User("nobody", "nobody-password", "No Group", ("staff",))
USERS = (ALICE, VICTOR, NOBODY)


@dataclass
class ConsoleStack:
    running: RunningStack
    issuer: str
    console_url: str

    @property
    def admin_token(self) -> str:
        assert self.running.settings.admin is not None
        return self.running.settings.admin.token_file.read_text().strip()


def oidc_config(issuer: str, secrets_dir: Path) -> str:
    return f"""
[admin.oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secrets_dir / "client_secret"}"
cookie_secret_file = "{secrets_dir / "cookie_secret"}"
admin_groups = ["{ADMIN_GROUP}"]
viewer_groups = ["{VIEWER_GROUP}"]
id_token_algorithms = ["RS256", "ES256"]
allow_http_loopback = true
timeout_s = 10
"""


@contextmanager
def provider(port: int, redirect_uri: str, client_secret: str, work: Path) -> Iterator[str]:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("the test OIDC provider needs Node.js: run `make setup`")
    install_provider()
    config = work / "provider.json"
    config.write_text(
        json.dumps(
            {
                "port": port,
                "client_id": CLIENT_ID,
                "client_secret": client_secret,
                "redirect_uri": redirect_uri,
                "users": {
                    u.login: {
                        "password": u.password,
                        "name": u.name,
                        "email": f"{u.login}@example.test",
                        "groups": list(u.groups),
                    }
                    for u in USERS
                },
            }
        )
    )
    issuer = f"http://127.0.0.1:{port}"
    log = (work / "provider.log").open("wb")
    proc = subprocess.Popen(
        [node, str(PROVIDER_DIR / "provider.mjs"), str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=PROVIDER_DIR,
    )
    try:
        _wait_ready(issuer + "/.well-known/openid-configuration", proc, work / "provider.log")
        yield issuer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def install_provider() -> None:
    """`npm ci` in tests/e2e/oidc, as scripts/setup.sh does, for a tree that skipped it
    (a fresh git worktree): the pinned lock file, from npm's cache when it has it."""
    if (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("the test OIDC provider needs npm: run `make setup`")
    done = subprocess.run(
        [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=PROVIDER_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm ci in {PROVIDER_DIR} failed: {done.stderr[-2000:]}")
    (PROVIDER_DIR / "node_modules" / ".installed").touch()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the OIDC provider exited: {log.read_text()[-2000:]}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"the OIDC provider did not answer within 30 s: {log.read_text()[-2000:]}")


@contextmanager
def console_stack(
    prefix: str, extra_config: str = "", *, auto_approve: bool = True
) -> Iterator[ConsoleStack]:
    """A real stack with [admin.oidc] pointing at a real provider on a free port."""
    secrets_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"{prefix}secrets-{secrets.token_hex(4)}"
    secrets_dir.mkdir(mode=0o700)
    client_secret = secrets.token_urlsafe(32)
    for name, value in (("client_secret", client_secret), ("cookie_secret", secrets.token_hex(32))):
        path = secrets_dir / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    provider_port = free_port()
    issuer = f"http://127.0.0.1:{provider_port}"
    running = start_stack(
        prefix,
        extra_config=oidc_config(issuer, secrets_dir) + extra_config,
        auto_approve=auto_approve,
    )
    try:
        admin = running.settings.admin
        assert admin is not None
        assert admin.oidc is not None
        with provider(provider_port, admin.oidc.redirect_uri, client_secret, secrets_dir):
            yield ConsoleStack(running, issuer, admin.oidc.console_url)
    finally:
        stop_stack(running)
        shutil.rmtree(secrets_dir, ignore_errors=True)
