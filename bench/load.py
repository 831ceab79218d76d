"""A small closed-loop HTTP load generator, run as its own process by the benchmarks.

    python bench/load.py --url URL [--method POST] [--body JSON] [--header 'K: V']
                         [--concurrency 8] [--duration 5] [--expect 403]

Keeps `concurrency` requests in flight on keep-alive connections (aiohttp) for
`duration` seconds after a one-second warm-up, checks every status, and prints one
JSON line: count, errors, throughput and latency percentiles in milliseconds (and
how many requests the warm-up sent, for per-request CPU figures).
Only loopback URLs are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import urllib.parse

import aiohttp


async def worker(
    session: aiohttp.ClientSession,
    args: argparse.Namespace,
    headers: dict[str, str],
    stop_at: float,
    measure_from: float,
    samples: list[float],
    errors: list[int],
    warmup: list[int],
) -> None:
    data = args.body.encode() if args.body else None
    while (now := time.perf_counter()) < stop_at:
        async with session.request(args.method, args.url, data=data, headers=headers) as response:
            await response.read()
            status = response.status
        done = time.perf_counter()
        if now >= measure_from:
            samples.append((done - now) * 1000)
            if status != args.expect:
                errors.append(status)
        else:
            warmup.append(status)


async def main(args: argparse.Namespace) -> dict[str, float]:
    host = urllib.parse.urlsplit(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("bench/load.py only sends traffic to loopback")
    headers = dict(h.split(": ", 1) for h in args.header)
    if args.body:
        headers.setdefault("Content-Type", "application/json")
    samples: list[float] = []
    errors: list[int] = []
    warmup: list[int] = []
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        measure_from = start + 1.0
        stop_at = measure_from + args.duration
        await asyncio.gather(
            *(
                worker(session, args, headers, stop_at, measure_from, samples, errors, warmup)
                for _ in range(args.concurrency)
            )
        )
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "count": len(samples),
        "errors": len(errors),
        "warmup_count": len(warmup),
        "rps": round(len(samples) / args.duration, 1),
        "p50_ms": round(statistics.median(samples), 3),
        "p90_ms": round(q[89], 3),
        "p99_ms": round(q[98], 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", default="")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--expect", type=int, default=200)
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
