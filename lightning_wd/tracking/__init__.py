"""The tracking layer: MLflow stores, the logger, the record callback, queries and plots.

Imports only :mod:`lightning_wd.core` below it; MLflow itself is imported inside the functions that use it.
The URI names load with the package; every other name loads its module on first use, so
``lightning_wd.tracking.uris`` stays light for the command line (no lightning, no MLflow).

Modules, one concern each:

============== ===========================================================================================
``uris``        store URIs: default store and experiment, resolution, SQLite paths, reachability (MLflow or not)
``redaction``   credentials never leave the process: passwords masked in URIs, text, mappings; private files
``logger``      ``mlflow_logger`` (the Lightning ``MLFlowLogger``), artifact location, the trainer's logger
``buffered``    ``BufferedMLFlowLogger``: metrics off the training thread; a store that fails never stops the fit
``writer``      ``MetricWriter``: the bounded background writer (batches, outage buffer, spill file, ``replay``)
``store``       ``prepare_store``: a SQLite store created and migrated once, under a file lock
``params``      what a run records as text: ``wd.*``/``optimizer.*`` params, ``lightning_wd.*`` tags, audit
``artifacts``   ``log_config``: a resolved config as a run artifact (masked); owner-only artifact files
``checkpoints`` ``run_id_from_checkpoint``: the run a checkpoint was logged to
``record``      ``MLflowRecord``, the callback that logs the decay, and ``find_decay_callback``
``hparams``     ``DecayHparams``: the same decay account in the ``hparams.yaml`` of CSV, TensorBoard loggers
``save_config`` ``MLflowSaveConfigCallback`` for ``LightningCLI``
``queries``     reading back: ``history_from_mlflow``, ``compare_runs`` (one row per run)
``plots``       PNG plots of a decay history
============== ===========================================================================================
"""

import importlib

from lightning_wd.tracking.uris import (
    DEFAULT_EXPERIMENT,
    DEFAULT_TRACKING_URI,
    TrackingUnavailable,
    absolute_sqlite_uri,
    check_tracking_uri,
    redact,
    resolve_tracking_uri,
    sqlite_path,
)

_LAZY = {
    "artifact_location": "logger", "mlflow_logger": "logger", "mlflow_logger_of": "logger",
    "BufferedMLFlowLogger": "buffered", "replay": "writer", "prepare_store": "store",
    "optimizer_params": "params",
    "log_config": "artifacts",
    "run_id_from_checkpoint": "checkpoints",
    "MLflowRecord": "record", "find_decay_callback": "record",
    "MLflowSaveConfigCallback": "save_config", "DecayHparams": "hparams",
    "ExperimentNotFound": "queries", "compare_runs": "queries", "history_from_mlflow": "queries",
}

__all__ = [
    "BufferedMLFlowLogger",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "DecayHparams",
    "ExperimentNotFound",
    "MLflowRecord",
    "MLflowSaveConfigCallback",
    "TrackingUnavailable",
    "absolute_sqlite_uri",
    "artifact_location",
    "check_tracking_uri",
    "compare_runs",
    "find_decay_callback",
    "history_from_mlflow",
    "log_config",
    "mlflow_logger",
    "mlflow_logger_of",
    "optimizer_params",
    "prepare_store",
    "redact",
    "replay",
    "resolve_tracking_uri",
    "run_id_from_checkpoint",
    "sqlite_path",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
