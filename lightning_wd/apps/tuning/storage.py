"""Where a study lives, and how workers share it.

* ``sqlite:///mlruns/optuna.db`` (default): embedded, one worker at a time. SQLite serialises writers
  with a file lock, so several processes writing trials and heartbeats fail with "database is locked";
  ``--workers`` > 1 on SQLite is refused, and a second process found running trials is warned about.
* ``postgresql+psycopg2://user@host:port/db`` (or MySQL): any number of workers on any machines run the
  same command and share the study.
* ``journal:PATH``: Optuna's JournalStorage on a file, for several processes on one machine (file locks;
  no heartbeats, so a killed worker's trial stays RUNNING).

RDB storages (SQLite included) record a heartbeat of each running trial every ``heartbeat_interval``
seconds; a trial whose heartbeat is older than ``grace_period`` (its worker was killed) is marked FAIL by
the next worker that starts a trial, and :class:`StaleTrialCallback` enqueues it once more with the same
parameters (Optuna's ``RetryHeartbeatStaleTrialCallback(max_retry=1)``) and ends its MLflow run as KILLED.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from lightning_wd.apps.errors import TuneError, unwritable
from lightning_wd.tracking.uris import redact, sqlite_path

__all__ = [
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_STORAGE",
    "StaleTrialCallback",
    "check_workers",
    "check_writable",
    "open_storage",
    "storage_kind",
]

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
DEFAULT_HEARTBEAT_INTERVAL = 60
DEFAULT_GRACE_PERIOD = 180
JOURNAL_PREFIX = "journal:"


def storage_kind(url: str) -> str:
    """``"sqlite"``, ``"journal"`` or ``"rdb"`` (a server database).

    Raises:
        TuneError: not a storage URL.

    Example:
        >>> storage_kind("sqlite:///mlruns/optuna.db"), storage_kind("postgresql://u@h/db"), storage_kind("journal:x")
        ('sqlite', 'rdb', 'journal')
    """
    if not isinstance(url, str) or not url:
        raise TuneError(f"--storage: expected a URL, got {url!r}")
    if url.startswith(JOURNAL_PREFIX):
        if not url[len(JOURNAL_PREFIX):]:
            raise TuneError("--storage journal:PATH needs a file path")
        return "journal"
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if "://" not in url:
        raise TuneError(f"--storage: expected sqlite:///PATH, postgresql+psycopg2://... or journal:PATH, got {url!r}")
    return "sqlite" if scheme == "sqlite" else "rdb"


def check_workers(url: str, workers: int) -> None:
    """Refuse several workers on SQLite.

    Raises:
        TuneError: ``workers`` > 1 with a SQLite storage (with the reason), or ``workers`` < 1.
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise TuneError(f"--workers must be an integer >= 1, got {workers!r}")
    if workers > 1 and storage_kind(url) == "sqlite":
        raise TuneError(
            f"SQLite storage cannot be shared by {workers} workers: it lets one process write at a time, so "
            "concurrent trials and heartbeats fail with 'database is locked'; use --storage "
            "postgresql+psycopg2://USER@HOST/DB (any machines) or --storage journal:PATH (one machine)"
        )


def check_writable(url: str) -> None:
    """Refuse a SQLite or journal storage whose file cannot be created or written (nothing is created).

    Raises:
        TuneError: naming ``--storage`` and the problem (e.g. ``/data is not writable``).
    """
    kind = storage_kind(url)
    path = sqlite_path(url) if kind == "sqlite" else Path(url[len(JOURNAL_PREFIX):]) if kind == "journal" else None
    problem = unwritable(path, folder=False) if path is not None else None
    if problem:
        raise TuneError(f"--storage {redact(url)}: cannot write the study there: {problem}")


class StaleTrialCallback:
    """Called for a trial whose worker stopped sending heartbeats: retry it once, end its MLflow run KILLED.

    Args:
        max_retry: times a trial is retried with the same parameters.
        tracking_uri: the MLflow store holding the trial's run (user attr ``mlflow_run_id``).
    """

    def __init__(self, max_retry: int = 1, tracking_uri: str | None = None) -> None:
        self.max_retry = max_retry
        self.tracking_uri = tracking_uri

    def __call__(self, study: Any, trial: Any) -> None:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
            retry = retry or optuna.storages.RetryFailedTrialCallback
            retry(max_retry=self.max_retry)(study, trial)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id and self.tracking_uri:
            from lightning_wd.apps.tuning.record import end_stale_run

            end_stale_run(self.tracking_uri, run_id, trial.number)


def open_storage(
    url: str,
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL,
    grace_period: int | None = DEFAULT_GRACE_PERIOD,
    tracking_uri: str | None = None,
    max_retry: int = 1,
) -> Any:
    """An Optuna storage for ``url``, with heartbeats and the stale-trial retry on RDB storages.

    Args:
        url: ``sqlite:///PATH`` (its folder is created), a server database URL, or ``journal:PATH``.
        heartbeat_interval: seconds between heartbeats of a running trial (None: no heartbeats); the values
            are checked by :class:`~lightning_wd.apps.tuning.settings.Settings`.
        grace_period: seconds without heartbeat after which a running trial is failed and retried.
        tracking_uri: MLflow store of the trials' runs (their runs are ended KILLED when stale).
        max_retry: retries of a stale trial.

    Raises:
        TuneError: a bad URL, or a database that cannot be reached.
    """
    import optuna

    kind = storage_kind(url)
    check_writable(url)
    try:
        if kind == "journal":
            path = Path(url[len(JOURNAL_PREFIX):])
            path.parent.mkdir(parents=True, exist_ok=True)
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        database = sqlite_path(url) if kind == "sqlite" else None
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TuneError(f"--storage {redact(url)}: cannot write the study there: {error}") from None
    engine_kwargs: dict[str, Any] = {}
    if kind == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                grace_period=grace_period if heartbeat_interval else None,
                heartbeat_stale_trial_callback=(
                    StaleTrialCallback(max_retry, tracking_uri) if heartbeat_interval else None
                ),
            )
    except ImportError as error:
        raise TuneError(f"--storage {redact(url)}: {error} "
                        "(install the database driver, e.g. psycopg2-binary)") from None
    except Exception as error:  # sqlalchemy.exc.OperationalError and friends: unreachable server, bad credentials
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TuneError(f"--storage {redact(url)}: cannot open the database: {first}") from None


def fail_stale(study: Any) -> None:
    """Mark trials whose worker stopped sending heartbeats FAIL (and retry them), if heartbeats are on."""
    import optuna
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if is_heartbeat_enabled(study._storage):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)


def counts(study: Any) -> dict[str, int]:
    """Number of trials per state name (``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING``, ``WAITING``)."""
    out: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        out[trial.state.name] = out.get(trial.state.name, 0) + 1
    return out
