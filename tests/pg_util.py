"""A throw-away PostgreSQL server for tests: Debian's binaries (scripts/install-postgres.sh), `initdb`
on a temp dir, `pg_ctl start` on a free loopback port, stopped and deleted at the end.

initdb and postgres refuse to run as root; as root the server runs as the `postgres` user (made by
the Debian package) through `runuser`, on a temp dir chowned to it. Without the binaries the tests
that need it are skipped, unless HAZARDCTL_REQUIRE_POSTGRES=1, which fails them (under `make test`, HAZARDCTL_NO_SKIP=1
makes any skip a failure: tests/conftest.py).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One server: `url` for the default database; `database(name)` makes another one."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise FileNotFoundError("PostgreSQL server binaries not found (bash scripts/install-postgres.sh)")
        self.root = Path(tempfile.mkdtemp(prefix="hazardctl-pg-"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        self.port = free_port()
        self.user = "hazard"
        self._as: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in (self.root, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as, *cmd], check=True, capture_output=True, timeout=60)

    def start(self) -> "PostgresServer":
        self._run(self.initdb, "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.root / "pg.log"), "-w", "-t", "30",
                  "start")
        return self

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def database(self, name: str) -> str:
        """A fresh empty database on this server; its URL."""
        import psycopg

        with psycopg.connect(self.url.replace("postgresql://", "postgresql://", 1), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a test-made identifier, not input
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self, mode: str = "fast") -> None:
        subprocess.run([*self._as, self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"],
                       capture_output=True, timeout=60)

    def restart(self) -> None:
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.root / "pg.log"), "-w", "-t", "30",
                  "start")

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


_SHARED: PostgresServer | None = None


def shared_server() -> PostgresServer:
    """One server for the whole test session (started by the first module that asks, stopped at exit):
    each test makes its own database on it (`database(name)`)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = PostgresServer().start()
        atexit.register(_SHARED.cleanup)
    return _SHARED


def postgres_server_fixture():
    """Body of a fixture: yields the session's started PostgresServer, or skips/fails without one.
    A test that stops it (an outage) must start it again."""
    try:
        server = shared_server()
    except (FileNotFoundError, subprocess.CalledProcessError, KeyError) as e:
        detail = getattr(e, "stderr", b"") or b""
        msg = f"no PostgreSQL server for the store tests: {e} {detail.decode(errors='replace')[-300:]}"
        if os.environ.get("HAZARDCTL_REQUIRE_POSTGRES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    yield server
