"""A throwaway PostgreSQL 15 cluster for the tests: initdb in a temporary directory, pg_ctl on a free port.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster is created and run as the `postgres` user
(runuser), in a directory that user owns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.ports import free_port

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/local/bin", "/usr/bin")


def pg_bin(tool: str) -> str:
    for directory in PG_BIN_CANDIDATES:
        candidate = Path(directory) / tool
        if candidate.exists():
            return str(candidate)
    found = shutil.which(tool)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {tool} not found: install postgresql-15 (Debian)")
    return found


class PostgresCluster:
    def __init__(self, *, options: str = "") -> None:
        """`options`: more server settings for pg_ctl -o (e.g. "-c shared_preload_libraries=pg_stat_statements")."""
        self.options = options
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="partledger-pg-"))
        self.data = self.root / "data"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 {self.options}".rstrip()
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str) -> str:
        """Creates a database and returns its SQLAlchemy URL (over a connection, not a psql process per database)."""
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, name: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


_counter = iter(range(1, 1_000_000))


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}_{os.getpid()}_{next(_counter)}_{int(time.time() * 1000) % 100000}"
