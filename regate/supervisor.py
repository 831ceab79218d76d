"""`regate up`: start OPA, the runner and the gateway, wait for each, stop them together."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from regate.opa import find_opa, sidecar_argv, sidecar_env
from regate.serve import prepare_unix_socket
from regate.settings import Address, Settings


class StackError(Exception):
    """A piece of the stack could not start; the message says which and what to do."""


@dataclass
class Service:
    name: str
    argv: list[str]
    address: Address
    ready_path: str
    env: dict[str, str] | None = None  # None: ours
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    log_path: Path | None = None


def preflight() -> str:
    """Return the OPA binary, or explain exactly what is missing."""
    if shutil.which("bwrap") is None:
        raise StackError(
            "bubblewrap (bwrap) is not installed, and the runner will not run tools"
            " unconfined. Install it: 'sudo apt-get install bubblewrap' (or 'make setup')."
        )
    try:
        return find_opa()
    except Exception as exc:
        raise StackError(str(exc)) from exc


@dataclass
class Stack:
    settings: Settings
    config_path: Path
    log_dir: Path | None = None  # None: children log to our stderr
    services: list[Service] = field(default_factory=list)

    def plan(self, opa_binary: str) -> list[Service]:
        opa = self.settings.opa
        if opa.listen is None or opa.policies_dir is None:
            raise StackError("[opa] needs 'listen' and 'policies_dir' for regate up to start it")
        regate = [sys.executable, "-m", "regate"]
        config = ["--config", str(self.config_path)]
        runner, gateway = self.settings.runner, self.settings.gateway
        return [
            Service(
                "opa",
                sidecar_argv(opa_binary, opa.listen, opa.policies_dir),
                opa.listen,
                "/health",
                env=sidecar_env(opa.gogc, os.environ),
            ),
            Service("runner", [*regate, "runner", *config], runner.listen, "/healthz"),
            Service("gateway", [*regate, "gateway", *config], gateway.listen, "/readyz"),
        ]

    def start(self, opa_binary: str, timeout_s: float = 30.0) -> None:
        opa_socket = self.settings.opa.listen.uds if self.settings.opa.listen else None
        if opa_socket is not None:
            prepare_unix_socket(opa_socket)
        try:
            for service in self.plan(opa_binary):
                self.start_service(service, timeout_s)
        except BaseException:
            self.stop()
            raise

    def start_service(self, service: Service, timeout_s: float) -> None:
        out: Any = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            service.log_path = self.log_dir / f"{service.name}.log"
            service.log_file = out = service.log_path.open("ab")
        service.process = subprocess.Popen(service.argv, stdout=out, stderr=out, env=service.env)
        self.services.append(service)
        wait_ready(service, timeout_s)

    def service(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)

    def stop(self) -> None:
        stop_services(reversed(self.services))
        self.services.clear()


def wait_ready(service: Service, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    transport = httpx.HTTPTransport(uds=str(service.address.uds)) if service.address.uds else None
    with httpx.Client(
        base_url=service.address.base_url, transport=transport, timeout=1.0
    ) as client:
        while time.monotonic() < deadline:
            assert service.process is not None
            if service.process.poll() is not None:
                raise StackError(
                    f"{service.name} exited with status {service.process.returncode} while"
                    f" starting{_log_hint(service)}"
                )
            uds = service.address.uds
            try:
                if uds is not None and not _accepting(uds):
                    pass
                elif client.get(service.ready_path).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise StackError(f"{service.name} was not ready within {timeout_s:g} s{_log_hint(service)}")


def _accepting(uds: Path) -> bool:
    # Probe the socket ourselves first: httpcore leaks a socket when a unix-socket
    # connect is refused (absent or stale path).
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(uds))
        except OSError:
            return False
    return True


def stop_services(services: Sequence[Service] | Any, grace_s: float = 5.0) -> None:
    """SIGTERM each process we started (by its PID), then SIGKILL any that linger."""
    for service in services:
        process = service.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(grace_s)
        if service.log_file is not None:
            service.log_file.close()


def _log_hint(service: Service) -> str:
    if service.log_path is None or not service.log_path.exists():
        return ""
    tail = service.log_path.read_text(errors="replace").strip().splitlines()[-5:]
    return f"; last lines of {service.log_path}:\n" + "\n".join(tail)
