"""Serving apps under uvicorn on host:port or unix sockets, with the front door's limits."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from regate.http_protocol import guarded_h11
from regate.settings import Address

# A request line plus its headers must fit in this (h11's incomplete-event cap).
MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float = 10.0
    max_connections: int = 1000
    keep_alive_s: float = 5.0


def serve(app: ASGIApp, listen: Address, limits: HttpLimits | None = None) -> None:
    uvicorn.Server(_config(app, listen, limits or HttpLimits())).run()


class _Server(uvicorn.Server):
    """A server that leaves signals to `serve_many`, which stops every server at once."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve_many(apps: Sequence[tuple[ASGIApp, Address, HttpLimits]]) -> None:
    """Serve several apps in one process and one event loop (so they can share state).

    SIGINT or SIGTERM stops them all; so does any one of them stopping (for
    instance because its lifespan failed at start).
    """
    servers = [_Server(_config(app, listen, limits)) for app, listen, limits in apps]

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def stop_all() -> None:
            for server in servers:
                server.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_all)
        tasks = [asyncio.create_task(server.serve()) for server in servers]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_all()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            task.result()  # re-raise a server's failure

    asyncio.run(main())


def prepare_unix_socket(path: Path) -> None:
    """Only the owner may reach the socket: servers (uvicorn, OPA) open it to everyone,
    so the directory around it is what keeps other local users out. A stale socket
    file from an earlier run is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    if path.exists():
        path.unlink()


def _config(app: ASGIApp, listen: Address, limits: HttpLimits) -> uvicorn.Config:
    if listen.uds:
        prepare_unix_socket(listen.uds)
    return uvicorn.Config(
        app,
        host=listen.host or "127.0.0.1",
        port=listen.port or 0,
        uds=str(listen.uds) if listen.uds else None,
        http=guarded_h11(limits.header_timeout_s, MAX_HEAD_BYTES),
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        limit_concurrency=limits.max_connections,
        backlog=2048,
        timeout_keep_alive=int(limits.keep_alive_s),
        lifespan="on",
        log_config=None,  # our structlog JSON handler is already on the root logger
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=False,  # X-Forwarded-For is judged by us, against trusted_proxies
        timeout_graceful_shutdown=5,
    )
