"""X-Forwarded-For counts only from trusted proxies (gateway/request_facts.py)."""

from __future__ import annotations

import pytest

from gateway.request_facts import client_address

PROXIES = ["10.0.0.0/8", "192.0.2.1"]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        pytest.param("198.51.100.9", [], ("198.51.100.9", "peer"), id="no-header"),
        pytest.param("198.51.100.9", ["203.0.113.7"], ("198.51.100.9", "peer"), id="untrusted-peer-ignored"),
        pytest.param("10.1.2.3", ["203.0.113.7"], ("203.0.113.7", "x-forwarded-for"), id="trusted-proxy"),
        pytest.param("10.1.2.3", ["203.0.113.7, 10.9.9.9"], ("203.0.113.7", "x-forwarded-for"), id="proxy-chain"),
        pytest.param("10.1.2.3", ["1.1.1.1, 203.0.113.7"], ("203.0.113.7", "x-forwarded-for"), id="spoofed-left-entry-ignored"),
        pytest.param("10.1.2.3", ["203.0.113.7", "192.0.2.1"], ("203.0.113.7", "x-forwarded-for"), id="several-headers"),
        pytest.param("10.1.2.3", ["not-an-ip"], ("10.1.2.3", "peer"), id="malformed-chain"),
        pytest.param("10.1.2.3", ["10.4.4.4"], ("10.1.2.3", "peer"), id="only-proxies"),
        pytest.param("192.0.2.1", ["2001:db8::1"], ("2001:db8::1", "x-forwarded-for"), id="ipv6-client"),
    ],
)  # fmt: skip
def test_client_address(peer: str, forwarded: list[str], expected: tuple[str, str]) -> None:
    assert client_address(peer, forwarded, PROXIES) == expected


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_address("10.1.2.3", ["203.0.113.7"], []) == ("10.1.2.3", "peer")
