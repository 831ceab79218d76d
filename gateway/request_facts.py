"""What the policy input says about the HTTP request that carried a call.

The client's address is the TCP peer's, unless that peer is a configured trusted
proxy: then it is the right-most address in `X-Forwarded-For` that is not itself
a trusted proxy (each proxy appends the address it saw). `source_ip_from` tells
policy which it is. An untrusted peer's forwarding headers are ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime

from starlette.requests import Request

from gateway.policy_input import RequestFacts
from regate.middleware import request_id

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def request_facts(request: Request, trusted_proxies: Sequence[str] = ()) -> RequestFacts:
    peer = request.client.host if request.client else ""
    forwarded = request.headers.getlist("x-forwarded-for")
    source_ip, source = client_address(peer, forwarded, trusted_proxies)
    return RequestFacts(
        id=request_id(request),
        time=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        source_ip=source_ip,
        source_ip_from=source,
        method=request.method,
        path=request.scope["path"],  # the one canonical path (regate/front_door.py)
    )


def client_address(
    peer: str, forwarded: Sequence[str], trusted_proxies: Sequence[str]
) -> tuple[str, str]:
    """(address, "peer" | "x-forwarded-for")."""
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]
    if not forwarded or not _trusted(peer, networks):
        return peer, "peer"
    hops = [hop.strip() for header in forwarded for hop in header.split(",")]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer, "peer"  # a malformed chain proves nothing: use what we saw
        if not _trusted(hop, networks):
            return hop, "x-forwarded-for"
    return peer, "peer"


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
