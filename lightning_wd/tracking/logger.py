"""The Lightning ``MLFlowLogger`` of a fit: building one that works out of the box, and finding the trainer's.

:func:`mlflow_logger` builds the logger on a SQLite store by default (``sqlite:///mlruns/mlflow.db``,
artifacts under ``mlruns/artifacts``), or on ``MLFLOW_TRACKING_URI``, or on any URI given
(``http://host:5000``, ``postgresql://...``); a tracking server that cannot be reached fails at once with
:class:`~lightning_wd.tracking.uris.TrackingUnavailable`, before training starts. URI handling itself lives
in :mod:`lightning_wd.tracking.uris`; MLflow is imported only inside the functions that use it.
"""

from __future__ import annotations

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

__all__ = ["PARENT_RUN_TAG", "artifact_location", "mlflow_logger", "mlflow_logger_of"]

PARENT_RUN_TAG = "mlflow.parentRunId"
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "oracle")


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
):
    """A Lightning ``MLFlowLogger`` that works out of the box (SQLite store, absolute artifact location).

    The tracking URI is ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns/mlflow.db``
    (relative to the working directory; the folder is created and artifacts go to ``mlruns/artifacts``).
    Relative SQLite paths are made absolute here, against the current working directory.
    A tracking server is checked before anything else (:func:`~lightning_wd.tracking.uris.check_tracking_uri`).

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

    Raises:
        TrackingUnavailable: the tracking server cannot be reached, or the URI is a plain directory.
        ValueError: ``run_id`` does not name a run of this tracking store.

    Example:
        .. code-block:: python

            logger = mlflow_logger("mnist1d", run_name="adamw-0.05")
            trainer = Trainer(logger=logger, callbacks=[WeightDecay(0.05), MLflowRecord()])
    """
    from lightning.pytorch.loggers import MLFlowLogger

    uri = absolute_sqlite_uri(resolve_tracking_uri(tracking_uri))
    check_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
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
    return MLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=uri,
        tags=run_tags or None,
        log_model=log_model,
        artifact_location=artifact_location(uri),
        run_id=run_id,
    )


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
