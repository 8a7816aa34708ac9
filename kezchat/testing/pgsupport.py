"""
A real, throwaway PostgreSQL for tests: one cluster per test run, started
on first use and stopped (C{pg_ctl -m immediate stop}) when the process
exits; each test gets a fresh database in it.

Debian's C{postgresql} package provides the binaries
(C{scripts/run-tests} installs it). PostgreSQL refuses to run as root, so
as root the cluster belongs to the C{postgres} user (C{runuser}). The
cluster runs with C{fsync=off}: tests check behaviour across processes,
not the disk, and two shared cores are short of time.  It listens on a
Unix socket in its own temporary directory and on no TCP port at all, so
no port is picked, released and raced for; L{PostgresCluster.url} names
the socket directory (C{?host=/…/sockets}), which asyncpg and libpq read.
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from kezchat.testing.requirements import missing

BIN_DIRS = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15")]
USER = "kez"


def find_bin_dir() -> Path | None:
    """
    The directory holding C{initdb} and C{pg_ctl}, or C{None}.
    """
    for directory in BIN_DIRS:
        if (directory / "initdb").exists():
            return directory
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        # typeshed types socket addresses as Any; AF_INET's is (host, port)
        port: int = s.getsockname()[1]
        return port


class PostgresCluster:
    """
    One PostgreSQL server on a Unix socket, in a temporary directory.
    """

    def __init__(self, bin_dir: Path, settings: dict[str, str] | None = None) -> None:
        self.bin_dir = bin_dir
        self.directory = Path(tempfile.mkdtemp(prefix="kezchat-pg-"))
        self.data = self.directory / "data"
        self.sockets = self.directory / "sockets"
        self.log_path = self.directory / "postgres.log"
        # only names the socket file (.s.PGSQL.<port>) in a private directory
        self.port = 5432
        self.settings = {"fsync": "off", "max_connections": "200", **(settings or {})}
        self._names = itertools.count()
        self.running = False

    def _as_owner(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def _run(self, *argv: str) -> None:
        result = subprocess.run(
            self._as_owner(str(self.bin_dir / argv[0]), *argv[1:]),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stdout}{result.stderr}")

    def start(self) -> None:
        self.sockets.mkdir()
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            for path in (self.directory, self.sockets):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync")
        self.restart()

    def _options(self) -> str:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=''"
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        return options

    def crash(self) -> None:
        """
        Stop the server at once (no shutdown), as a crash would.
        """
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.running = False

    def restart(self) -> None:
        """
        Start it again on the same socket, after L{crash}.
        """
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w",
            "-o", self._options(), "start",
        )
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.directory, ignore_errors=True)

    def url(self, dbname: str = "postgres", **query: str) -> str:
        """
        The URL of C{dbname}: the socket directory as the C{host} parameter.
        """
        params = {"host": str(self.sockets), "port": str(self.port), **query}
        return f"postgresql://{USER}@/{dbname}?" + "&".join(f"{k}={v}" for k, v in params.items())

    def new_name(self) -> str:
        return f"t{os.getpid()}_{next(self._names)}_{int(time.time() * 1000) % 100000}"

    async def create_database(self, name: str | None = None) -> str:
        """
        Create an empty database; return its name.
        """
        import asyncpg

        name = name or self.new_name()
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name

    async def drop_database(self, name: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


_cluster: PostgresCluster | None = None


def cluster() -> PostgresCluster:
    """
    The test run's cluster, started on first use.

    @raise SkipTest: without PostgreSQL binaries or Twisted's asyncio
        reactor (a failure instead under C{KEZ_TEST_NO_SKIP=1}).
    """
    global _cluster
    from twisted.internet import reactor

    from kezchat.compat.aio import is_asyncio_reactor

    if not is_asyncio_reactor(reactor):
        raise missing("PostgreSQL tests need --reactor=asyncio (asyncpg is asyncio)")
    if _cluster is None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise missing("PostgreSQL is not installed (apt-get install postgresql)")
        started = PostgresCluster(bin_dir)
        started.start()
        atexit.register(started.stop)
        _cluster = started
    return _cluster


async def fresh_database(case: Any, **query: str) -> str:
    """
    The URL of a new, empty database for C{case} (dropped when it ends).
    """
    from twisted.internet.threads import deferToThread

    from kezchat.compat.aio import deferred_from_coroutine

    # the first call runs initdb and pg_ctl: off the reactor thread
    pg = _cluster if _cluster is not None else await deferToThread(cluster)
    name = await deferred_from_coroutine(pg.create_database())
    case.addCleanup(lambda: deferred_from_coroutine(pg.drop_database(name)))
    return pg.url(name, **query)
