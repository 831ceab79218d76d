"""Serving an app under uvicorn on host:port or a unix socket."""

from __future__ import annotations

import os

import uvicorn
from starlette.types import ASGIApp

from regate.settings import Address


def serve(app: ASGIApp, listen: Address) -> None:
    if listen.uds:
        # Only the runner's owner may reach the socket: uvicorn opens it to everyone,
        # so the directory around it is what keeps other local users out.
        listen.uds.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(listen.uds.parent, 0o700)
        if listen.uds.exists():
            listen.uds.unlink()
    config = uvicorn.Config(
        app,
        host=listen.host or "127.0.0.1",
        port=listen.port or 0,
        uds=str(listen.uds) if listen.uds else None,
        http="h11",
        lifespan="on",
        log_config=None,  # our structlog JSON handler is already on the root logger
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
