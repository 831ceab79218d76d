"""The HTTP client for the gateway's two hot hops: OPA for every decision, the runner
for every call that runs.

aiohttp's ClientSession, not httpx: on loopback, httpx's client over an aiohttp
transport spent ~400 us of gateway CPU per request, aiohttp alone ~200 us, and
httpx's default transport ~950 us, collapsing to a few hundred requests/s at 64 in
flight (bench/opa_clients.py, docs/benchmarks.md). The cold paths (JWKS fetches,
the shadow policy, the console's OIDC) keep httpx.
"""

from __future__ import annotations

import aiohttp

from regate.settings import Address


def sidecar_session(address: Address) -> aiohttp.ClientSession:
    """A keep-alive connection pool to one local service, over TCP or a unix socket."""
    connector: aiohttp.BaseConnector = (
        aiohttp.UnixConnector(path=str(address.uds)) if address.uds else aiohttp.TCPConnector()
    )
    # No compressed answers (CPU for nothing on loopback), no User-Agent.
    return aiohttp.ClientSession(
        connector=connector, skip_auto_headers=("Accept-Encoding", "User-Agent")
    )
