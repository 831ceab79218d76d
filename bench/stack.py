"""A throwaway Regate stack on loopback for benchmarks: temp state, free ports, real parts."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from regate.demo import prepare_state
from regate.opa import find_opa
from regate.settings import Settings, load_settings
from regate.supervisor import Stack

REPO = Path(__file__).resolve().parents[1]

CONFIG = """
[gateway]
listen = "127.0.0.1:{gateway_port}"
state_dir = "state"
audience = "regate"

[opa]
url = "http://127.0.0.1:{opa_port}"
listen = "127.0.0.1:{opa_port}"
policies_dir = "{policies}"

[runner]
backend = "{backend}"
url = "unix:state/run/runner.sock"
listen = "unix:state/run/runner.sock"
agents_dir = "{agents}"

[manifests]
dir = "state/manifests"
publishers_jwks = "state/keys/publisher.jwks.json"
auto_approve = true  # benchmarks measure calls, not the approval step

[[issuers]]
issuer = "https://issuer.bench.regate"
jwks_file = "state/keys/issuer.jwks.json"
algorithms = ["ES256"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_stack(backend: str = "bwrap") -> Iterator[Settings]:
    root = Path(tempfile.mkdtemp(prefix="regate-bench-"))
    root.chmod(0o755)
    try:
        config = root / "regate.toml"
        config.write_text(
            CONFIG.format(
                gateway_port=free_port(),
                opa_port=free_port(),
                policies=REPO / "policies",
                agents=REPO / "examples" / "agents",
                backend=backend,
            )
        )
        settings = load_settings(config)
        prepare_state(settings)
        stack = Stack(settings, config, log_dir=root / "logs")
        stack.start(find_opa())
        try:
            yield settings
        finally:
            stack.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
