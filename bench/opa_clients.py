"""The hop to OPA: which HTTP client, over TCP or a unix socket, costs the gateway what.

    .venv/bin/python bench/opa_clients.py [--requests 2000]

One real OPA (the repo's policies, `opa run --server` listening on loopback TCP and
on a unix socket at once, GOGC as `regate up` sets it) answers the decision the
decision-path benchmark asks. Each client sends it in this process, JSON-encoding
the input and decoding the answer as the gateway does:

  httpx                 httpx.AsyncClient, its default transport (httpcore)
  httpx + aiohttp       httpx.AsyncClient on httpx_aiohttp's AiohttpTransport
  aiohttp (gateway)     the gateway's own PolicyClient.decide on sidecar_session
  raw asyncio stream    hand-written HTTP/1.1 on one asyncio stream, a floor only

c=1: one request at a time; `cpu us` is this process's CPU per request
(time.process_time), the gateway's cost of the hop. c=64: 64 in flight on one
client (its connection pool), throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decision_path import opa_input
from stack import REPO, free_port

from gateway.policy import DECISION_PATH, PolicyClient
from gateway.sidecar_http import sidecar_session
from regate.opa import find_opa, sidecar_env
from regate.settings import Address

BODY = opa_input("demo-client").encode()
INPUT = json.loads(BODY)["input"]
QUERY = DECISION_PATH + "?provenance=true"
Send = Callable[[], Awaitable[None]]


def httpx_client(
    address: Address, aiohttp_transport: bool
) -> tuple[Send, Callable[[], Awaitable[None]]]:
    if aiohttp_transport:
        transport: httpx.AsyncBaseTransport = AiohttpTransport(
            uds=str(address.uds) if address.uds else None
        )
    else:
        transport = httpx.AsyncHTTPTransport(uds=str(address.uds) if address.uds else None)
    client = httpx.AsyncClient(base_url=address.base_url, transport=transport, timeout=5)

    async def send() -> None:
        response = await client.post(
            QUERY,
            content=json.dumps({"input": INPUT}).encode(),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200
        assert "result" in response.json()

    return send, client.aclose


def gateway_client(address: Address) -> tuple[Send, Callable[[], Awaitable[None]]]:
    session = sidecar_session(address)
    policy = PolicyClient(session, address.base_url, timeout_s=5)

    async def send() -> None:
        await policy.decide(INPUT)

    return send, session.close


async def raw_stream(address: Address) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """One connection, Content-Length answers only: what the hop costs without a client."""
    if address.uds:
        reader, writer = await asyncio.open_unix_connection(str(address.uds))
    else:
        reader, writer = await asyncio.open_connection(address.host, address.port)
    lock = asyncio.Lock()  # one connection: requests take turns

    async def send() -> None:
        body = json.dumps({"input": INPUT}).encode()
        head = f"POST {QUERY} HTTP/1.1\r\nHost: opa\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        async with lock:
            writer.write(head.encode() + body)
            header = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in header.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            answer = await reader.readexactly(length)
        assert header.startswith(b"HTTP/1.1 200")
        assert "result" in json.loads(answer)

    async def close() -> None:
        writer.close()
        await writer.wait_closed()

    return send, close


async def measure(send: Send, requests: int) -> dict[str, Any]:
    for _ in range(100):
        await send()  # warm-up: connections open, caches filled
    latencies = []
    cpu = time.process_time()
    for _ in range(requests):
        began = time.perf_counter()
        await send()
        latencies.append((time.perf_counter() - began) * 1000)
    cpu_us = (time.process_time() - cpu) / requests * 1e6

    async def worker(n: int) -> None:
        for _ in range(n):
            await send()

    began = time.perf_counter()
    await asyncio.gather(*(worker(requests * 2 // 64) for _ in range(64)))
    rps = (requests * 2 // 64 * 64) / (time.perf_counter() - began)
    return {"cpu_us": cpu_us, "p50_ms": statistics.median(latencies), "rps64": rps}


async def run_all(
    tcp: Address, unix: Address, requests: int
) -> list[tuple[str, str, dict[str, Any]]]:
    rows = []
    for transport_name, address in (("tcp", tcp), ("unix", unix)):
        clients: list[tuple[str, Any]] = [
            ("httpx", lambda a=address: httpx_client(a, aiohttp_transport=False)),
            ("httpx + aiohttp", lambda a=address: httpx_client(a, aiohttp_transport=True)),
            ("aiohttp (gateway)", lambda a=address: gateway_client(a)),
        ]
        for name, make in clients:
            send, close = make()
            try:
                rows.append((name, transport_name, await measure(send, requests)))
            finally:
                await close()
        send, close = await raw_stream(address)
        try:
            rows.append(("raw asyncio stream", transport_name, await measure(send, requests)))
        finally:
            await close()
    return rows


def main(requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="regate-bench-opa-") as tmp:
        sock = Path(tmp) / "opa.sock"
        port = free_port()
        argv = [find_opa(), "run", "--server", "--addr", f"127.0.0.1:{port}", "--addr", f"unix://{sock}",
                "--bundle", str(REPO / "policies"), "--log-level", "error", "--skip-version-check"]  # fmt: skip
        opa = subprocess.Popen(argv, env=sidecar_env(400, os.environ), stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not (sock.exists() and _answers(port)):
                if time.monotonic() > deadline or opa.poll() is not None:
                    raise SystemExit("OPA did not start")
                time.sleep(0.1)
            rows = asyncio.run(
                run_all(Address(host="127.0.0.1", port=port), Address(uds=sock), requests)
            )
        finally:
            opa.terminate()
            opa.wait(10)
    print(
        f"{'client':<21}{'to OPA':>7}{'cpu us':>8}{'p50 ms':>8}{'r/s c=64':>10}   (c=1: {requests} requests; c=64: {requests * 2 // 64 * 64})"
    )
    for name, transport, r in rows:
        print(f"{name:<21}{transport:>7}{r['cpu_us']:8.0f}{r['p50_ms']:8.3f}{r['rps64']:10.0f}")


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    main(parser.parse_args().requests)
