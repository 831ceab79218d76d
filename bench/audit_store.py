"""Audit store appends, SQLite beside PostgreSQL, side by side in one run.

    .venv/bin/python bench/audit_store.py [--records 4000] [--concurrency 32]

Each row appends `--records` decision-sized records through `AuditStore`, keeping
`--concurrency` appends in flight per store, and reports the latency of one append
(until durable), records/s and records per commit (group commit at work):

  sqlite              the embedded store, a file in a temp dir (synchronous=FULL)
  postgres x1         one PostgresChain (one gateway replica)
  postgres x2         two PostgresChains on one database (two replicas, one chain)

PostgreSQL is a throwaway cluster (tests/postgres_cluster.py: initdb, loopback, the
server's default fsync and synchronous_commit), so it needs the postgresql package.
The per-record `audit_record` log line is switched off: this measures the store.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import free_port
from postgres_cluster import PostgresServer, server_bindir

from gateway.audit import AuditStore
from gateway.audit_postgres import PostgresChain, verify_chain
from regate.settings import AuditSettings

BODY = {
    "caller": {"sub": "bench-client", "iss": "https://issuer.bench"},
    "target": {"agent_id": "calculator", "version": "1.0.0", "manifest_sha256": "0" * 64},
    "tool": "add",
    "outcome": "deny",
    "status": 403,
    "reasons": [{"code": "no_grant", "message": "no grant for this caller"}],
    "stages_ms": {"auth": 0.4, "policy": 1.9, "audit": 0.0},
}


async def drive(stores: list[AuditStore], records: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(records))

    async def worker(store: AuditStore) -> None:
        for n in counter:
            start = time.perf_counter()
            await store.append("decision", f"d-{n}", {**BODY, "n": n})
            latencies.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(worker(s) for s in stores for _ in range(concurrency)))
    return latencies


def run(make: Callable[[], list[AuditStore]], records: int, concurrency: int) -> tuple[str, ...]:
    async def main() -> tuple[list[float], float, int]:
        stores = make()
        try:
            await drive(stores, 200, concurrency)  # warm up: connections, schema, caches
            before = sum(s.commits for s in stores)
            start = time.perf_counter()
            latencies = await drive(stores, records, concurrency)
            elapsed = time.perf_counter() - start
            return latencies, elapsed, sum(s.commits for s in stores) - before
        finally:
            await asyncio.gather(*(s.close() for s in stores))

    latencies, elapsed, commits = asyncio.run(main())
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return (
        f"{statistics.median(latencies):8.2f}",
        f"{q[98]:8.2f}",
        f"{records / elapsed:9.0f}",
        f"{records / max(commits, 1):8.1f}",
    )


def replicas(settings: AuditSettings, count: int) -> Callable[[], list[AuditStore]]:
    return lambda: [AuditStore(PostgresChain(settings)) for _ in range(count)]


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32, help="in flight per store")
    args = parser.parse_args()

    rows: list[tuple[str, tuple[str, ...]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.sqlite3"
        rows.append(("sqlite", run(lambda: [AuditStore(path)], args.records, args.concurrency)))

    server = PostgresServer(server_bindir(), free_port())
    try:
        server.init()
        server.start()
        server.create_database()
        for count in (1, 2):
            server.reset_database()
            settings = server.audit_settings()
            stores = replicas(settings, count)
            rows.append((f"postgres x{count}", run(stores, args.records, args.concurrency)))
            report = verify_chain(settings)
            assert report.ok, report.problem
    finally:
        server.remove()

    print(f"{'store':<14}{'p50 ms':>8}{'p99 ms':>9}{'rec/s':>10}{'per commit':>11}"
          f"   (n={args.records}, {args.concurrency} in flight per store)")  # fmt: skip
    for name, cells in rows:
        print(f"{name:<14}{cells[0]}{cells[1]} {cells[2]}{cells[3]:>11}")


if __name__ == "__main__":
    main()
