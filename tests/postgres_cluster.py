"""A throwaway PostgreSQL server for tests: its own cluster in a temp dir, on loopback.

The real server from Debian's `postgresql` package (scripts/setup.sh installs it):
`initdb` makes a cluster owned by the `postgres` OS user (PostgreSQL refuses to run
as root, and the tests run as root), `postgres` serves it on 127.0.0.1 on a free
port with password (SCRAM) authentication, and it is stopped by its PID.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import free_port
from psycopg import sql

from regate.settings import AuditSettings

SKIP_VARIABLE = "REGATE_SKIP_POSTGRES"
DATABASE, ROLE = "regate", "regate_gateway"


def server_bindir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin with initdb and postgres."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")]
    found = [d for d in found if (d / "initdb").exists()]
    if found:
        return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0)
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{SKIP_VARIABLE}=1: the PostgreSQL audit store is not tested here")
    pytest.fail(
        "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/postgres), so the"
        " PostgreSQL audit store cannot be tested: run scripts/setup.sh (it installs Debian's"
        f" postgresql package), or set {SKIP_VARIABLE}=1 to skip these tests",
        pytrace=False,
    )


class PostgresServer:
    """One cluster, one server process; `start` and `stop` may alternate (restarts)."""

    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir = bindir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="regate-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.password_file = self.root / "gateway.password"
        self.password_file.write_text("gw-" + os.urandom(12).hex() + "\n")
        self.password_file.chmod(0o600)
        self._superuser_password = "su-" + os.urandom(12).hex()
        self.process: subprocess.Popen[bytes] | None = None
        # Run the server as `postgres` when we are root; as ourselves otherwise.
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    def init(self) -> None:
        pwfile = self.root / "superuser.password"
        pwfile.write_text(self._superuser_password + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        self._run(
            self.bindir / "initdb",
            f"--pgdata={self.data}",
            "--username=postgres",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster: no fsync of its initial files
        )
        pwfile.unlink()

    def start(self, timeout_s: float = 30.0) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    f"-D{self.data}",
                    f"-p{self.port}",
                    "-clisten_addresses=127.0.0.1",
                    f"-cunix_socket_directories={self.root}",
                ],
                stdout=log,
                stderr=log,
                cwd=self.root,
                **self._as,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log_tail()}")
            try:
                self.superuser().close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"postgres not ready in {timeout_s} s:\n{self.log_tail()}"
                    ) from exc
                time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the process we started, by its PID."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def superuser(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=dbname,
            password=self._superuser_password,
            connect_timeout=2,
            autocommit=True,
        )

    def create_database(self) -> None:
        """The gateway's own role (not a superuser) and a database it owns."""
        password = self.password_file.read_text().strip()
        with self.superuser() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(password)
                )
            )
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    def reset_database(self) -> None:
        with self.superuser() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={DATABASE} user={ROLE}"

    def audit_settings(self, **overrides: Any) -> AuditSettings:
        values: dict[str, Any] = {
            "store": "postgres",
            "dsn": self.dsn,
            "password_file": self.password_file,
            "timeout_s": 5.0,
        }
        return AuditSettings(**(values | overrides))

    def audit_config(self) -> str:
        """The [audit] section a gateway config needs to use this server."""
        return (
            f'\n[audit]\nstore = "postgres"\ndsn = "{self.dsn}"\n'
            f'password_file = "{self.password_file}"\ntimeout_s = 5\n'
        )

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _run(self, *argv: Any) -> None:
        done = subprocess.run(
            [str(a) for a in argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.root,
            **self._as,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}):\n{done.stderr}")


@pytest.fixture(scope="module", name="server")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test module's own (import this fixture to use it)."""
    pg = PostgresServer(server_bindir(), free_port())
    try:
        pg.init()
        pg.start()
        pg.create_database()
        yield pg
    finally:
        pg.remove()
