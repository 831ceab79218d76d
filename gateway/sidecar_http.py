"""The HTTP client for the gateway's two hot hops: OPA for every decision (and the
shadow policy's sampled questions, on the same session), the runner for every call
that runs.

aiohttp's ClientSession, not httpx: on loopback, httpx's client over an aiohttp
transport spent ~400 us of gateway CPU per request, aiohttp alone ~200 us, and
httpx's default transport ~950 us, collapsing to a few hundred requests/s at 64 in
flight (bench/opa_clients.py, docs/benchmarks.md). The cold paths (JWKS fetches,
the console's OIDC) keep httpx.
"""

from __future__ import annotations

import aiohttp

from regate.settings import Address

# An idle connection is dropped by the client before the server's keep-alive timeout
# closes it (the runner's uvicorn: regate.serve.HttpLimits.keep_alive_s, 5 s).
# Otherwise a request sent just as the server closes the connection fails: a POST is
# not retried, so a decision would be a 503 and a run a 502.
IDLE_KEEPALIVE_S = 2.0


def sidecar_session(address: Address) -> aiohttp.ClientSession:
    """A keep-alive connection pool to one local service, over TCP or a unix socket."""
    connector: aiohttp.BaseConnector = (
        aiohttp.UnixConnector(path=str(address.uds), keepalive_timeout=IDLE_KEEPALIVE_S)
        if address.uds
        else aiohttp.TCPConnector(keepalive_timeout=IDLE_KEEPALIVE_S)
    )
    # No compressed answers (CPU for nothing on loopback), no User-Agent.
    return aiohttp.ClientSession(
        connector=connector, skip_auto_headers=("Accept-Encoding", "User-Agent")
    )
