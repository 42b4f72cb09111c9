"""A throwaway PostgreSQL server for the tests: Debian's binaries
(scripts/install-postgres), a cluster made by ``initdb`` in a temporary
directory, ``postgres`` listening on a free loopback port, stopped and
deleted afterwards.

PostgreSQL refuses to run as root; as root the cluster belongs to the
``postgres`` user (made by the Debian package), else to ``nobody``, and the
server runs as that user. Trust authentication on loopback only.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

USER = "aibridge"


def _bindir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise RuntimeError("no PostgreSQL server here: run scripts/install-postgres")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """``start()``, then :meth:`new_database` for a fresh database's URL."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        # As root the server's user must reach the directory: under /tmp,
        # whatever TMPDIR says (it may be inside root's home).
        where = "/tmp" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="aibridge-pg-", dir=where))
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                with contextlib.suppress(KeyError):
                    entry = pwd.getpwnam(name)
                    self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
                    break
            os.chown(self.dir, self._run_as["user"], self._run_as["group"])

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        data = self.dir / "data"
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                *("-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"),
                *("--no-locale", "--no-sync"),
            ],
            check=True,
            capture_output=True,
            cwd=self.dir,
            **self._run_as,
        )
        self.port = _free_port()
        self.start_server()
        return self

    def start_server(self) -> None:
        """Start ``postgres`` on the cluster (again, after :meth:`stop_server`)."""
        data = self.dir / "data"
        self.process = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                *("-D", str(data), "-p", str(self.port), "-k", str(self.dir)),
                *("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"),
                # A test server: losing it to a power cut is fine.
                *("-c", "fsync=off", "-c", "full_page_writes=off"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "server.log", "ab"),  # noqa: SIM115
            cwd=self.dir,
            start_new_session=True,
            **self._run_as,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{self.log()}")
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "server.log").read_text(errors="replace")
        return ""

    def new_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)

    def stop_server(self) -> None:
        """Stop ``postgres``, keeping the cluster."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
