"""The embedded SQLite store, safe for several processes: created and migrated once, under a file lock.

MLflow creates and migrates the tables of a new SQLite store the first time a process opens it, without a
lock between processes: several fits started together on a fresh ``mlruns/mlflow.db`` race in the schema
migration (``duplicate column name``, ``table _alembic_tmp_tags already exists``), and in the creation of
the experiment. :func:`prepare_store` does both once, under an exclusive ``fcntl`` lock on
``<db>.lock`` next to the database; every later process finds the store ready (MLflow then keeps the
opened store for the URI, with its own ``busy_timeout`` of 20 s on each session). Servers and other
databases are left alone: a server migrates its own store, PostgreSQL serialises its migrations.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from lightning_wd.core.messages import one_line
from lightning_wd.tracking.uris import TrackingUnavailable, redact, sqlite_path

__all__ = ["LOCK_TIMEOUT_S", "prepare_store", "store_lock"]

LOCK_TIMEOUT_S = 600.0  # creating the tables takes MLflow seconds, minutes on a busy machine
SERVER_HINT = ("an embedded SQLite store serves a few processes; for many concurrent writers start a tracking "
               "server (mlflow server --backend-store-uri sqlite:///... ) or use PostgreSQL, and pass its URI")


@contextlib.contextmanager
def store_lock(db: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``<db>.lock`` (waiting up to ``timeout`` seconds).

    Raises:
        TrackingUnavailable: the lock was not obtained in time.

    Example:
        >>> import tempfile
        >>> with store_lock(Path(tempfile.mkdtemp()) / "mlflow.db"):
        ...     pass
    """
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    path = db.with_name(db.name + ".lock")
    deadline = time.monotonic() + timeout
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TrackingUnavailable(f"the SQLite store {db} stayed locked for {timeout:.0f} s by another "
                                              f"process creating or opening it (lock file: {path}); {SERVER_HINT}"
                                              ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def prepare_store(uri: str, experiment: str | None = None, artifact_location: str | None = None) -> str | None:
    """Create and migrate the SQLite store ``uri`` once (under :func:`store_lock`) and make sure ``experiment``
    exists; its id (``None`` for other stores, or without ``experiment``).

    Args:
        uri: an absolute tracking URI; only ``sqlite:///`` files are prepared.
        experiment: the experiment to find or create.
        artifact_location: where a new experiment keeps its artifacts.

    Raises:
        TrackingUnavailable: the store cannot be created or opened (one line, with the advice to use a server
            when SQLite is busy).
    """
    db = sqlite_path(uri)
    if db is None:
        return None
    from mlflow import MlflowClient

    with store_lock(db):
        try:
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)  # opens the store: creates or migrates its tables
            if experiment is None:
                return None
            found = client.get_experiment_by_name(experiment)
            if found is not None and found.lifecycle_stage != "deleted":
                return found.experiment_id
            return client.create_experiment(experiment, artifact_location=artifact_location)
        except Exception as error:
            text = one_line(error, 300)
            hint = f"; {SERVER_HINT}" if "locked" in text or "busy" in text else ""
            raise TrackingUnavailable(f"cannot open the MLflow store {redact(uri)}: {text}{hint}") from None
