"""A throwaway Regate stack on loopback for benchmarks: temp state, free ports, real parts.

    with running_stack() as stack:          # stack.settings, stack.pids["gateway"], ...
        ...

Options: the sandbox backend, OPA over TCP or a unix socket, the runner's pool
size, and a different policy bundle (the growth benchmark's generated grants).
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
url = "{opa_url}"
listen = "{opa_listen}"
policies_dir = "{policies}"

[runner]
backend = "{backend}"
url = "unix:state/run/runner.sock"
listen = "unix:state/run/runner.sock"
agents_dir = "{agents}"
pool_size = {pool_size}

[manifests]
dir = "state/manifests"
publishers_jwks = "state/keys/publisher.jwks.json"
auto_approve = true  # benchmarks measure calls, not the approval step

[[issuers]]
issuer = "https://issuer.bench.regate"
jwks_file = "state/keys/issuer.jwks.json"
algorithms = ["ES256"]
"""


@dataclass(frozen=True)
class RunningStack:
    settings: Settings
    pids: dict[str, int]  # service name -> PID: opa, runner, gateway
    root: Path

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.gateway.listen.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_stack(
    backend: str = "bwrap",
    *,
    opa_unix: bool = False,
    pool_size: int = 0,
    policies: Path | None = None,
) -> Iterator[RunningStack]:
    root = Path(tempfile.mkdtemp(prefix="regate-bench-"))
    root.chmod(0o755)
    try:
        config = root / "regate.toml"
        opa_port = free_port()
        opa_address = "unix:state/run/opa.sock" if opa_unix else f"127.0.0.1:{opa_port}"
        config.write_text(
            CONFIG.format(
                gateway_port=free_port(),
                opa_url=opa_address if opa_unix else f"http://{opa_address}",
                opa_listen=opa_address,
                policies=policies or REPO / "policies",
                agents=REPO / "examples" / "agents",
                backend=backend,
                pool_size=pool_size,
            )
        )
        settings = load_settings(config)
        prepare_state(settings)
        stack = Stack(settings, config, log_dir=root / "logs")
        stack.start(find_opa())
        try:
            pids = {s.name: s.process.pid for s in stack.services if s.process is not None}
            yield RunningStack(settings, pids, root)
        finally:
            stack.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
