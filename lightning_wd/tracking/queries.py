"""Reading runs back from a tracking store: a run's ``wd/`` history, and one row per run of an experiment.

A row holds what :class:`~lightning_wd.tracking.record.MLflowRecord` and the decay callback logged: the
``lightning_wd.*`` tags (else the ``wd.*`` params), the final metrics of :data:`METRICS`, the duration
(the active time, :mod:`~lightning_wd.tracking.active_time`) and the status. Imports neither lightning
nor MLflow at module level (``lightning-wd compare`` stays quick).

Example:
    >>> merge_histories([{"step": 2, "metrics": {"a": 1.0}}], [{"step": 1, "metrics": {"a": 0.5}}])
    [{'step': 1, 'metrics': {'a': 0.5}}, {'step': 2, 'metrics': {'a': 1.0}}]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from lightning_wd.tracking.active_time import active_seconds
from lightning_wd.tracking.params import TAG_PREFIX
from lightning_wd.tracking.uris import (
    TrackingUnavailable,
    absolute_sqlite_uri,
    check_tracking_uri,
    resolve_tracking_uri,
    sqlite_path,
)

__all__ = ["METRICS", "ExperimentNotFound", "compare_runs", "history_from_mlflow", "merge_histories", "run_row"]

# row key -> metric name (the last logged value counts)
METRICS = {
    "train_acc": "train/acc",
    "val_acc": "val/acc",
    "train_loss": "train/loss",
    "val_loss": "val/loss",
    "nonzero_fraction": "wd/nonzero_fraction",
}


class ExperimentNotFound(LookupError):
    """No experiment of that name (or id) in the tracking store."""


def history_from_mlflow(client, run_id: str, prefix: str = "wd/") -> list[dict]:
    """The run's metrics whose names start with ``prefix``, as ``[{"step": int, "metrics": {...}}]``.

    The same shape as ``WeightDecay.history``, rebuilt from MLflow's metric history (one request per
    metric). For each (metric, step) the last logged value counts.

    Args:
        client: an ``mlflow.MlflowClient``.
        run_id: the run.
        prefix: which metrics.

    Example:
        .. code-block:: python

            history = history_from_mlflow(MlflowClient("sqlite:///mlruns/mlflow.db"), run_id)
    """
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith(prefix)]
    by_step: dict[int, dict[str, float]] = {}
    for key in keys:
        for metric in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
            by_step.setdefault(int(metric.step), {})[key] = float(metric.value)
    return [{"step": step, "metrics": by_step[step]} for step in sorted(by_step)]


def merge_histories(*histories: Iterable[Mapping]) -> list[dict]:
    """One record per step, in step order; later histories win where they overlap."""
    by_step: dict[int, dict[str, float]] = {}
    for history in histories:
        for record in history:
            by_step.setdefault(int(record["step"]), {}).update(record.get("metrics", {}))
    return [{"step": step, "metrics": by_step[step]} for step in sorted(by_step)]


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def _number(value: Any) -> float | str | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def run_row(run) -> dict:
    """The row of one ``mlflow.entities.Run`` (see :func:`compare_runs` for its keys)."""
    tags, params, metrics, info = run.data.tags, run.data.params, run.data.metrics, run.info
    row = {
        "run": _first(info.run_name, tags.get("mlflow.runName"), info.run_id[:8]),
        "run_id": info.run_id,
        "scheme": _first(tags.get(TAG_PREFIX + "scheme"), params.get("wd.scheme")),
        "strength": _number(_first(tags.get(TAG_PREFIX + "strength"), params.get("wd.weight_decay"),
                                   params.get("wd.strength"))),
        "schedule": _first(tags.get(TAG_PREFIX + "schedule"), params.get("wd.schedule")),
        "duration_s": active_seconds(run),  # the time it trained: a resumed run's pause left out
        # a pruned trial's run ends FINISHED (stopping early was asked for): the table says PRUNED
        "status": "PRUNED" if tags.get("optuna.state") == "PRUNED" else info.status,
        "experiment_id": info.experiment_id,
    }
    row.update({key: metrics.get(name) for key, name in METRICS.items()})
    return row


def _sort_key(row: Mapping) -> tuple:
    acc = row.get("val_acc")
    known = isinstance(acc, (int, float)) and math.isfinite(acc)
    return (0 if known else 1, -acc if known else 0.0)


def _resolve_experiment(client, experiment: str):
    found = client.get_experiment_by_name(experiment)
    if found is None and experiment.isdigit():
        from mlflow.exceptions import MlflowException

        try:
            found = client.get_experiment(experiment)
        except MlflowException:
            found = None
    if found is None or found.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise ExperimentNotFound(
            f"no experiment {experiment!r} in the tracking store; experiments: {', '.join(names) or 'none'}"
        )
    return found


def compare_runs(experiment: str | None = None, tracking_uri: str | None = None, *, parent: str | None = None,
                 study: str | None = None) -> list[dict]:
    """One row per run of ``experiment`` (default: every experiment), sorted by final validation accuracy.

    Args:
        experiment: experiment name (or id); default: every experiment of the store.
        tracking_uri: default ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns/mlflow.db``.
        parent: only the child runs of this run id (a study's trials, a fit's test runs).
        study: only the trials of this Optuna study (tag ``optuna.study_name``).

    Returns:
        Dicts with keys ``run, run_id, scheme, strength, schedule, train_acc, val_acc, train_loss,
        val_loss, nonzero_fraction, duration_s, status, experiment_id``; ``None`` where a run lacks the
        value; ``status`` is ``PRUNED`` for a pruned trial. Runs without ``val/acc`` come last.

    Raises:
        TrackingUnavailable: the server cannot be reached, or there is no store at a SQLite path.
        ExperimentNotFound: the experiment does not exist.

    Example:
        .. code-block:: python

            print(format_table(compare_runs("mnist1d", study="tune_mnist1d_mlp"), "markdown"))
    """
    uri = absolute_sqlite_uri(resolve_tracking_uri(tracking_uri))
    check_tracking_uri(uri)
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # reading must not create an empty store
        raise TrackingUnavailable(f"no MLflow store at {db} (log a run first, or pass --tracking-uri)")
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    if experiment:
        ids = [_resolve_experiment(client, experiment).experiment_id]
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    filters = []
    if parent:
        filters.append(f"tags.`mlflow.parentRunId` = '{_quoted(parent)}'")
    if study:
        filters.append(f"tags.`optuna.study_name` = '{_quoted(study)}' and tags.`lightning_wd.kind` = 'trial'")
    runs, token = [], None
    while ids:
        page = client.search_runs(ids, " and ".join(filters), max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return sorted((run_row(run) for run in runs), key=_sort_key)


def _quoted(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("'", "\\'")
