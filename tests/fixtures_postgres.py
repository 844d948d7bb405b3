"""Fixtures that start a real PostgreSQL server.

``postgres_server`` (session): ``initdb`` in a temporary folder and ``pg_ctl start`` on a free loopback port
(binaries found under ``/usr/lib/postgresql/*/bin``, Debian package ``postgresql``; the tests are skipped
with the reason when they are absent). ``initdb`` refuses to run as root, so as root the server runs as the
``postgres`` system user (``runuser -u postgres --``, else ``su postgres -c``) in a folder it owns.
``postgres_url`` (session): ``postgresql+psycopg2://postgres@127.0.0.1:PORT/optuna``.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    """The newest PostgreSQL ``bin`` folder that has initdb and pg_ctl."""
    def version(path: str) -> tuple:
        part = Path(path).parent.parent.name
        return tuple(int(p) if p.isdigit() else 0 for p in part.split("."))

    found = [p for p in glob.glob("/usr/lib/postgresql/*/bin/initdb") if os.path.exists(Path(p).parent / "pg_ctl")]
    return Path(sorted(found, key=version)[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(argv: list[str]) -> list[str]:
    """``argv`` run as the ``postgres`` user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *argv]
    return ["su", "postgres", "-s", "/bin/sh", "-c", shlex.join(argv)]


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({result.returncode}): {result.stderr.strip() or result.stdout}")
    return result


@dataclass
class PostgresServer:
    """A running PostgreSQL server (trust authentication, user ``postgres``, loopback only)."""

    bindir: Path
    port: int
    root: Path

    def url(self, database: str = "optuna", driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of ``database`` on this server."""
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create the database ``name`` (if missing) and return its URL."""
        result = subprocess.run(
            [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
            capture_output=True, text=True, timeout=60,
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise RuntimeError(f"createdb {name} failed: {result.stderr.strip()}")
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session, with the database ``optuna``; stopped at the end."""
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql/*/bin; "
                    "apt-get install postgresql)")
    if os.geteuid() == 0:
        try:
            import pwd

            server_user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` system user to run the server as")
    root = Path(tempfile.mkdtemp(prefix="lightning_wd_pg_"))
    data, log = root / "data", root / "server.log"
    if os.geteuid() == 0:
        os.chown(root, server_user.pw_uid, server_user.pw_gid)
    port = _free_port()
    try:
        _run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                              "--no-sync", "-E", "UTF8"]), timeout=120)
        options = f"-k {root} -h 127.0.0.1 -p {port} -F -c max_connections=200"
        _run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w",
                              "-t", "60", "start"]), timeout=90)
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {error}")
    server = PostgresServer(bindir, port, root)
    try:
        server.create_database("optuna")
        yield server
    finally:
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """``postgresql+psycopg2://postgres@127.0.0.1:PORT/optuna`` on the session's server."""
    return postgres_server.url("optuna")
