"""The tracking layer: MLflow stores, the logger, the record callback, queries and plots.

Imports only :mod:`lightning_wd.core` below it; MLflow itself is imported inside the functions that use it.
The names that need lightning load on first use, so ``lightning_wd.tracking.uris`` stays light for the
command line.
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

__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_TRACKING_URI",
    "MLflowRecord",
    "TrackingUnavailable",
    "absolute_sqlite_uri",
    "check_tracking_uri",
    "find_decay_callback",
    "history_from_mlflow",
    "log_config",
    "mlflow_logger",
    "optimizer_params",
    "redact",
    "resolve_tracking_uri",
    "run_id_from_checkpoint",
    "sqlite_path",
]


_LAZY = {
    "MLflowRecord": "record", "MLflowSaveConfigCallback": "record", "find_decay_callback": "record",
    "history_from_mlflow": "record", "log_config": "record", "mlflow_logger": "record",
    "optimizer_params": "record", "run_id_from_checkpoint": "record",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
