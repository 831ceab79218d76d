"""The OPA client against real misbehaving peers on loopback: refused, slow, hung up.

These go through the gateway's own client (`sidecar_session`, aiohttp), so what is
tested is what runs: a refused connection, a peer that holds the request past the
deadline, a peer that drops the connection. Each is a 503 deny with its cause.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import free_port
from peers import SlowOpa

from gateway.breaker import CircuitBreaker
from gateway.errors import PolicyUnavailable
from gateway.policy import PolicyClient
from gateway.sidecar_http import sidecar_session
from regate.settings import Address

pytestmark = pytest.mark.integration

POLICY_INPUT: dict[str, Any] = {"caller": {"sub": "alice"}, "arguments": {}}


def causes(port: int, calls: int, *, threshold: int = 5, timeout_s: float = 0.3) -> list[str]:
    """Ask OPA at 127.0.0.1:port `calls` times in a row; each outcome or 503 cause."""

    async def run() -> list[str]:
        address = Address(host="127.0.0.1", port=port)
        breaker = CircuitBreaker("opa", failure_threshold=threshold, cooldown_s=60)
        async with sidecar_session(address) as session:
            policy = PolicyClient(session, address.base_url, timeout_s=timeout_s, breaker=breaker)
            seen = []
            for _ in range(calls):
                try:
                    seen.append((await policy.decide(POLICY_INPUT)).outcome)
                except PolicyUnavailable as exc:
                    seen.append(exc.details["cause"])
            return seen

    return asyncio.run(run())


def test_refused_connection_is_unreachable_and_opens_the_breaker() -> None:
    port = free_port()  # nothing listens there
    assert causes(port, 4, threshold=2) == [
        "opa_unreachable",
        "opa_unreachable",
        "breaker_open",
        "breaker_open",
    ]


def test_slow_opa_is_denied_before_it_answers() -> None:
    with SlowOpa() as peer:
        assert causes(peer.port, 1) == ["opa_timeout"]
        # The request reached the peer, and the deny came while the peer still held it.
        assert peer.arrived.is_set()
        assert (peer.received, peer.answered) == (1, 0)


def test_slow_opa_opens_the_breaker_and_is_not_asked_again() -> None:
    with SlowOpa() as peer:
        assert causes(peer.port, 5, threshold=2) == ["opa_timeout"] * 2 + ["breaker_open"] * 3
        assert peer.received == 2  # no request piled up on the slow peer after that
        assert peer.answered == 0


def test_peer_hanging_up_is_unreachable() -> None:
    with SlowOpa(hang_up=True) as peer:
        assert causes(peer.port, 2) == ["opa_unreachable"] * 2
        assert peer.received == 2
