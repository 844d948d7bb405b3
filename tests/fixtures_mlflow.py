"""Fixtures that start a real MLflow tracking server.

``mlflow_server`` (session scope) runs ``mlflow server`` on 127.0.0.1 and a free port, with a SQLite
backend and proxied artifacts in a temporary folder, and yields its URL. The server takes a while to
boot, so it is started as soon as collection shows a selected test will need it, and runs while the
other tests do.

``mlflow_sqlite`` gives each test a fresh SQLite tracking store (an absolute ``sqlite:///`` URI): a copy
of one store made per session, since creating the tables of a new store takes MLflow seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """One ``mlflow server`` process in its own temporary folder."""

    def __init__(self) -> None:
        self.folder: Path | None = None
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.log: Path | None = None

    def start(self) -> None:
        if self.process is not None:
            return
        self.folder = Path(tempfile.mkdtemp(prefix="lightning_wd_mlflow_server_"))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = self.folder / "server.log"
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--serve-artifacts", "--artifacts-destination", str(self.folder / "artifacts"),
        ]
        env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
        env.pop("MLFLOW_TRACKING_URI")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)

    def wait(self, timeout: float = STARTUP_TIMEOUT_S) -> str:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.url
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"mlflow server did not answer within {timeout:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:  # the server forks workers: end its whole process group (it started a new session)
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=5)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


_SERVER = MlflowServer()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start booting the server early when a selected test uses ``mlflow_server``."""
    if session.config.option.collectonly:
        return
    if any("mlflow_server" in getattr(item, "fixturenames", ()) for item in session.items):
        _SERVER.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _SERVER.stop()


@pytest.fixture(scope="session")
def mlflow_sqlite_template(tmp_path_factory) -> Path:
    """An empty, fully migrated MLflow SQLite store, made once per session (copy it, do not write to it)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_sqlite(tmp_path, mlflow_sqlite_template) -> str:
    """A fresh SQLite tracking store for one test: ``sqlite:///<tmp_path>/store/mlflow.db``."""
    target = tmp_path / "store" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mlflow_sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture(scope="session")
def mlflow_server() -> str:
    """URL (``http://127.0.0.1:<port>``) of a live MLflow tracking server with a SQLite backend."""
    _SERVER.start()
    try:
        url = _SERVER.wait()
    except RuntimeError as error:
        _SERVER.stop()
        pytest.fail(str(error), pytrace=False)
    yield url
    _SERVER.stop()
