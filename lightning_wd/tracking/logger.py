"""The Lightning ``MLFlowLogger`` of a fit: building one that works out of the box, and finding the trainer's.

:func:`mlflow_logger` builds the logger on a SQLite store by default (``sqlite:///mlruns/mlflow.db``,
artifacts under ``mlruns/artifacts``), or on ``MLFLOW_TRACKING_URI``, or on any URI given
(``http://host:5000``, ``postgresql://...``); a tracking server that cannot be reached fails at once with
:class:`~lightning_wd.tracking.uris.TrackingUnavailable`, before training starts. URI handling itself lives
in :mod:`lightning_wd.tracking.uris`; MLflow is imported only inside the functions that use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_wd.core.messages import one_line
from lightning_wd.tracking.uris import (
    DEFAULT_EXPERIMENT,
    absolute_sqlite_uri,
    check_tracking_uri,
    redact,
    resolve_tracking_uri,
    sqlite_path,
    uri_scheme,
)

__all__ = ["HTTP_DEFAULTS", "PARENT_RUN_TAG", "STRICT_ENV", "artifact_location", "bound_http_retries",
           "mlflow_logger", "mlflow_logger_of"]

PARENT_RUN_TAG = "mlflow.parentRunId"
STRICT_ENV = "LIGHTNING_WD_TRACKING_STRICT"
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "oracle")
# MLflow's own defaults (7 retries with exponential backoff, 120 s per request) keep a client retrying for
# minutes after a server went away; a fit only needs to know within seconds (its metrics stay buffered).
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def bound_http_retries() -> None:
    """Bound MLflow's HTTP retries to seconds (:data:`HTTP_DEFAULTS`), where the environment does not set them.

    Example:
        >>> bound_http_retries(); int(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) >= 0
        True
    """
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of the store ``uri`` keeps its artifacts: an absolute ``file://`` URI for
    database stores (next to a SQLite file, else under ``./mlruns/artifacts``); ``None`` for servers,
    which choose their own.

    Example:
        >>> artifact_location("sqlite:////data/runs/mlflow.db")
        'file:///data/runs/artifacts'
        >>> artifact_location("http://127.0.0.1:5000") is None
        True
    """
    if uri_scheme(uri) not in _DB_SCHEMES:
        return None  # servers (and Databricks) choose their own
    db = sqlite_path(uri)
    root = (db.parent if db is not None else Path("mlruns")) / "artifacts"
    return root.resolve().as_uri()


def mlflow_logger(
    experiment_name: str = DEFAULT_EXPERIMENT,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    log_model: bool | str = False,
    strict: bool | None = None,
):
    """A Lightning ``MLFlowLogger`` that works out of the box (SQLite store, absolute artifact location) and
    never stops the training for the tracking store's sake (see
    :class:`~lightning_wd.tracking.buffered.BufferedMLFlowLogger`).

    The tracking URI is ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns/mlflow.db``
    (relative to the working directory; the folder is created and artifacts go to ``mlruns/artifacts``).
    Relative SQLite paths are made absolute here, against the current working directory.
    A tracking server is checked before anything else (:func:`~lightning_wd.tracking.uris.check_tracking_uri`);
    MLflow's HTTP retries are bounded to seconds (:func:`bound_http_retries`); a SQLite store is created,
    migrated and given the experiment once, under a file lock (:func:`~lightning_wd.tracking.store.prepare_store`),
    so that several processes can start on a fresh store together.

    Metrics are written by a background thread in batches; a store that fails mid-fit keeps them in a bounded
    buffer, sends them when it answers again, else writes them to ``mlruns/unsent/<run_id>.jsonl`` at the
    end, with one warning naming what was not sent and where it is.

    Args:
        experiment_name: the MLflow experiment (created if missing).
        tracking_uri: a database URI (``sqlite:///...``, ``postgresql://...``) or a server ``http(s)://...``.
        run_name: name of the new run.
        run_id: continue this existing run instead of creating one (see
            :func:`~lightning_wd.tracking.checkpoints.run_id_from_checkpoint`); ``run_name``, ``tags`` and
            ``parent_run_id`` then do not apply.
        tags: tags of the new run.
        parent_run_id: make the new run a child of this run (the ``mlflow.parentRunId`` tag).
        log_model: as ``MLFlowLogger``: log checkpoints as artifacts (``True``, ``"all"``) or not.
        strict: fail the fit at the first failed write instead (default: the environment variable
            ``LIGHTNING_WD_TRACKING_STRICT`` is ``1``/``true``).

    Raises:
        TrackingUnavailable: the tracking server cannot be reached, or the URI is a plain directory.
        ValueError: ``run_id`` does not name a run of this tracking store.

    Example:
        .. code-block:: python

            logger = mlflow_logger("mnist1d", run_name="adamw-0.05")
            trainer = Trainer(logger=logger, callbacks=[WeightDecay(0.05), MLflowRecord()])
    """
    from lightning_wd.tracking.buffered import BufferedMLFlowLogger
    from lightning_wd.tracking.store import prepare_store

    if strict is None:
        strict = os.environ.get(STRICT_ENV, "").lower() in ("1", "true", "yes")
    uri = absolute_sqlite_uri(resolve_tracking_uri(tracking_uri))
    bound_http_retries()
    check_tracking_uri(uri)
    location = artifact_location(uri)
    experiment_id = prepare_store(uri, experiment_name if run_id is None else None, location)
    db = sqlite_path(uri)
    run_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        run_tags[PARENT_RUN_TAG] = parent_run_id
    if run_id is not None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            MlflowClient(uri).get_run(run_id)
        except MlflowException as error:
            raise ValueError(
                f"`run_id` {run_id!r} is not a run of the tracking store {redact(uri)}: {one_line(error.message)}"
            ) from None
    logger = BufferedMLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=uri,
        tags=run_tags or None,
        log_model=log_model,
        artifact_location=location,
        run_id=run_id,
        strict=strict,
        spill_dir=(db.parent if db is not None else Path.cwd() / "mlruns") / "unsent",
    )
    logger._experiment_id = experiment_id  # found or created under the store's lock (None: Lightning's lookup)
    return logger


def mlflow_logger_of(obj: Any) -> Any | None:
    """The first ``MLFlowLogger`` of a logger, a list of loggers, or a trainer; ``None`` if there is none.

    Example:
        >>> mlflow_logger_of(None) is None and mlflow_logger_of([]) is None
        True
    """
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import MLFlowLogger

    if isinstance(obj, pl.Trainer):
        obj = obj.loggers
    if isinstance(obj, MLFlowLogger):
        return obj
    if isinstance(obj, (list, tuple)):
        return next((lg for lg in obj if isinstance(lg, MLFlowLogger)), None)
    return None
