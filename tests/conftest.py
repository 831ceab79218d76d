"""Shared fixtures: a real Regate stack (opa, runner with bwrap, gateway) on loopback."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from regate import crypto
from regate.demo import mint_token, prepare_state
from regate.manifest import sign_manifest
from regate.opa import find_opa
from regate.settings import Settings, load_settings
from regate.supervisor import Stack

REPO = Path(__file__).resolve().parents[1]
TEST_CALLER = "test-client"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def world_traversable_tmpdir(prefix: str) -> Path:
    """A temp dir the sandbox uid can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(stat.S_IRWXU | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
    return path


CONFIG_TEMPLATE = """
[gateway]
{gateway_config}
listen = "127.0.0.1:{gateway_port}"
state_dir = "state"
audience = "regate"
leeway_s = 5
max_body_bytes = 4096
allowed_hosts = ["127.0.0.1", "localhost"]
header_timeout_s = 2
body_timeout_s = 2

[opa]
url = "http://127.0.0.1:{opa_port}"
listen = "127.0.0.1:{opa_port}"
policies_dir = "{policies}"
timeout_s = 1.0
{opa_config}
[runner]
backend = "{backend}"
url = "unix:state/run/runner.sock"
listen = "unix:state/run/runner.sock"
agents_dir = "agents"
{runner_config}

[manifests]
dir = "state/manifests"
publishers_jwks = "state/keys/publisher.jwks.json"
# Every manifest approved as it is seen, so the other suites find callable agents;
# tests/security/test_manifests.py and the console's browser test run without it.
auto_approve = {auto_approve}

[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "state/keys/admin.token"

[[issuers]]
issuer = "https://issuer.test.regate"
jwks_file = "state/keys/issuer.jwks.json"
algorithms = ["ES256"]
"""


@dataclass
class RunningStack:
    root: Path
    config: Path
    settings: Settings
    stack: Stack

    @property
    def base_url(self) -> str:
        listen = self.settings.gateway.listen
        return f"http://{listen.host}:{listen.port}"

    def token(self, sub: str = TEST_CALLER, **extra: Any) -> str:
        return mint_token(self.settings, sub, **extra)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30)

    def invoke(
        self, agent: str, tool: str, arguments: Any, token: str | None = "default"
    ) -> httpx.Response:
        headers = {}
        if token == "default":
            token = self.token()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        with self.client() as client:
            return client.post(
                f"/v1/invoke/{agent}/{tool}", json={"arguments": arguments}, headers=headers
            )

    def runner_client(self) -> httpx.Client:
        uds = self.settings.runner.url.uds
        assert uds is not None
        return httpx.Client(
            base_url="http://runner", transport=httpx.HTTPTransport(uds=str(uds)), timeout=30
        )

    def audit_rows(self, decision_id: str) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.settings.gateway.audit_db)
        try:
            rows = conn.execute(
                "SELECT kind, body FROM audit_log WHERE decision_id = ? ORDER BY seq",
                (decision_id,),
            ).fetchall()
        finally:
            conn.close()
        return [{"kind": kind, **json.loads(body)} for kind, body in rows]

    def tool_counts(self, name: str) -> tuple[int, int]:
        with self.runner_client() as client:
            body = client.get(f"/v1/tools/{name}").json()
        return body["successes"], body["errors"]


def build_stack_files(
    root: Path,
    backend: str = "bwrap",
    extra_config: str = "",
    *,
    policies: Path | None = None,
    gateway_config: str = "",
    opa_config: str = "",
    auto_approve: bool = True,
    runner_config: str = "",
) -> Path:
    """Config, agents (examples + test agents + two bad ones), keys and signed manifests.

    `extra_config` is appended (new sections); `gateway_config` goes into [gateway],
    `opa_config` into [opa], `runner_config` into [runner]; `policies` is the bundle
    OPA loads (default: the repository's policies/)."""
    agents = root / "agents"
    shutil.copytree(REPO / "examples" / "agents", agents)
    shutil.copytree(REPO / "tests" / "fixtures" / "agents", agents, dirs_exist_ok=True)
    # A link planted to make the runner hand a host file to a tool.
    (agents / "hostile" / "leak").symlink_to("/etc/hostname")
    for bad in ("tampered", "foreign"):
        doc = json.loads((agents / "calculator" / "manifest.json").read_text())
        doc["agent_id"] = bad
        (agents / bad).mkdir()
        (agents / bad / "manifest.json").write_text(json.dumps(doc))
        shutil.copy(agents / "calculator" / "add.py", agents / bad / "add.py")
    config = root / "regate.toml"
    config.write_text(
        CONFIG_TEMPLATE.format(
            gateway_port=free_port(),
            admin_port=free_port(),
            opa_port=free_port(),
            policies=policies or REPO / "policies",
            backend=backend,
            gateway_config=gateway_config,
            opa_config=opa_config,
            auto_approve="true" if auto_approve else "false",
            runner_config=runner_config,
        )
        + extra_config
    )
    settings = load_settings(config)
    prepare_state(settings)
    _tamper(settings.manifests.dir / "tampered.jws")
    _sign_with_untrusted_key(agents / "foreign" / "manifest.json", settings.manifests.dir)
    return config


def _tamper(path: Path) -> None:
    """Change one field of a signed manifest's payload, keeping the old signature."""
    header, payload, signature = path.read_text().strip().split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    doc["tools"][0]["entrypoint"] = ["python3", "-c", "import os; os.system('id')"]
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    path.write_text(f"{header}.{forged}.{signature}\n")


def _sign_with_untrusted_key(manifest: Path, out_dir: Path) -> None:
    # Same kid as the trusted publisher, different key: a forgery attempt.
    private, _ = crypto.generate_ec_key("publisher")
    token = sign_manifest(json.loads(manifest.read_text()), private)
    (out_dir / "foreign.jws").write_text(token + "\n")


def start_stack(
    prefix: str,
    backend: str = "bwrap",
    extra_config: str = "",
    *,
    policies: Path | None = None,
    gateway_config: str = "",
    opa_config: str = "",
    auto_approve: bool = True,
    runner_config: str = "",
) -> RunningStack:
    root = world_traversable_tmpdir(prefix)
    if policies is not None:  # a copy of its own, which the test may edit
        shutil.copytree(policies, root / "policies")
        policies = root / "policies"
    config = build_stack_files(
        root,
        backend,
        extra_config,
        policies=policies,
        gateway_config=gateway_config,
        opa_config=opa_config,
        auto_approve=auto_approve,
        runner_config=runner_config,
    )
    settings = load_settings(config)
    stack = Stack(settings, config, log_dir=root / "logs")
    stack.start(find_opa())
    return RunningStack(root=root, config=config, settings=settings, stack=stack)


def stop_stack(running: RunningStack) -> None:
    running.stack.stop()
    if os.environ.get("REGATE_KEEP_TEST_STATE") != "1":
        shutil.rmtree(running.root, ignore_errors=True)


@pytest.fixture(scope="session")
def stack() -> Iterator[RunningStack]:
    """One stack for the session: tests that stop parts of it make their own."""
    running = start_stack("regate-it-")
    try:
        yield running
    finally:
        stop_stack(running)


POOL_SIZE = 2


@pytest.fixture(scope="session")
def pooled_stack() -> Iterator[RunningStack]:
    """A second session stack whose runner keeps pre-started sandboxes
    (`[runner] pool_size`): the sandbox suites run against both."""
    running = start_stack("regate-pool-", runner_config=f"pool_size = {POOL_SIZE}")
    try:
        yield running
    finally:
        stop_stack(running)


def stack_in_mode(request: pytest.FixtureRequest, stack: RunningStack) -> RunningStack:
    """For a module fixture parametrized over ["cold", "pooled"]: the session's stack
    that starts a sandbox per call, or the one that takes them from its pool."""
    if request.param == "pooled":
        pooled: RunningStack = request.getfixturevalue("pooled_stack")
        return pooled
    return stack
