"""MLflow tracking: a logger that works out of the box, and a callback that records the decay.

* :func:`mlflow_logger` builds a Lightning ``MLFlowLogger`` on a SQLite store by default
  (``sqlite:///mlruns/mlflow.db``, artifacts under ``mlruns/artifacts``), or on ``MLFLOW_TRACKING_URI``,
  or on any URI given (``http://host:5000``, ``postgresql://...``); a tracking server that cannot be
  reached fails at once with :class:`TrackingUnavailable`, before training starts.
* :class:`MLflowRecord` logs what decays and how (parameters, tags, the grouping audit) when training
  starts and plots of the measurements when it ends; it does nothing when the trainer logs elsewhere.
* :func:`run_id_from_checkpoint` reads back the run a checkpoint was logged to, so that a resumed fit
  continues the same MLflow run::

      run_id = run_id_from_checkpoint("last.ckpt")  # None for a checkpoint without MLflow state
      trainer = Trainer(logger=mlflow_logger(run_id=run_id), callbacks=[WeightDecay(...), MLflowRecord()])
      trainer.fit(model, ckpt_path="last.ckpt")

* :func:`log_config` stores a resolved config as a run artifact (``LightningCLI``'s own
  ``SaveConfigCallback`` cannot: it needs a log directory, which SQLite and server loggers do not have).

MLflow is imported only inside the functions that use it.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lightning_wd.core.messages import one_line as _one_line
from lightning_wd.tracking.uris import (
    DEFAULT_EXPERIMENT,
    DEFAULT_TRACKING_URI,
    TrackingUnavailable,
    absolute_sqlite_uri,
    check_tracking_uri,
    redact,
    resolve_tracking_uri,
    sqlite_path,
    uri_scheme,
)

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MLflowRecord",
    "TrackingUnavailable",
    "check_tracking_uri",
    "find_decay_callback",
    "history_from_mlflow",
    "log_config",
    "mlflow_logger",
    "resolve_tracking_uri",
    "run_id_from_checkpoint",
]

TAG_PREFIX = "lightning_wd."
PARENT_RUN_TAG = "mlflow.parentRunId"
STATE_RUN_ID = "mlflow_run_id"  # marks this callback's entry in checkpoint["callbacks"]
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "oracle")
_PARAM_VALUE_LIMIT = 500


def _artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: an absolute ``file://`` URI for database stores."""
    scheme = uri_scheme(uri)
    if scheme not in _DB_SCHEMES:
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
    A tracking server is checked before anything else (:func:`check_tracking_uri`).

    Args:
        experiment_name: the MLflow experiment (created if missing).
        tracking_uri: a database URI (``sqlite:///...``, ``postgresql://...``) or a server ``http(s)://...``.
        run_name: name of the new run.
        run_id: continue this existing run instead of creating one (see :func:`run_id_from_checkpoint`);
            ``run_name``, ``tags`` and ``parent_run_id`` then do not apply.
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
                f"`run_id` {run_id!r} is not a run of the tracking store {redact(uri)}: "
                f"{_one_line(error.message)}"
            ) from None
    return MLFlowLogger(
        experiment_name=experiment_name,
        run_name=run_name,
        tracking_uri=uri,
        tags=run_tags or None,
        log_model=log_model,
        artifact_location=_artifact_location(uri),
        run_id=run_id,
    )


def _mlflow_logger_of(obj) -> Any | None:
    """The first ``MLFlowLogger`` of a logger, a list of loggers, or a trainer; ``None`` if there is none."""
    from lightning.pytorch.loggers import MLFlowLogger

    if isinstance(obj, pl.Trainer):
        obj = obj.loggers
    if isinstance(obj, MLFlowLogger):
        return obj
    if isinstance(obj, (list, tuple)):
        return next((lg for lg in obj if isinstance(lg, MLFlowLogger)), None)
    return None


# ----------------------------------------------------------------------------------------------------------
# Config, checkpoints, history
# ----------------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Plain YAML-able values: mappings, sequences, numbers, strings; anything else as its ``str``."""
    if hasattr(value, "as_dict") and callable(value.as_dict):  # jsonargparse.Namespace
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def log_config(logger, config: str | Mapping | Any, name: str = "config.yaml") -> str | None:
    """Store a resolved config as an artifact of the run of ``logger``; do nothing for other loggers.

    Args:
        logger: an ``MLFlowLogger``, a list of loggers, or a ``Trainer`` (its first ``MLFlowLogger``).
        config: the config as text (e.g. ``parser.dump(config)``), a mapping, a ``jsonargparse.Namespace``
            (written as YAML), or a ``pathlib.Path`` of a file to copy.
        name: the artifact path inside the run (relative, e.g. ``config.yaml`` or ``configs/fit.yaml``).

    Returns:
        The artifact path, or ``None`` when there is no MLflow logger (or on ranks other than zero).

    Raises:
        ValueError: ``name`` is empty, absolute, or leaves the run's artifact folder.

    Example:
        >>> log_config(None, {"model": {"lr": 0.1}}) is None  # no MLflow logger: nothing to do
        True
    """
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts:
        raise ValueError(f"`name` must be a relative artifact path, got {name!r}")
    target = _mlflow_logger_of(logger)
    if target is None or rank_zero_only.rank != 0:
        return None
    if isinstance(config, Path):
        text = config.read_text()
    elif isinstance(config, str):
        text = config
    else:
        import yaml

        text = yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False)
    target.experiment.log_text(target.run_id, text, Path(name).as_posix())
    return Path(name).as_posix()


def run_id_from_checkpoint(path: str | os.PathLike, weights_only: bool | None = None) -> str | None:
    """The MLflow run a Lightning checkpoint was logged to (saved there by :class:`MLflowRecord`).

    Args:
        path: a checkpoint file (local path or fsspec URL).
        weights_only: passed to ``torch.load`` (``None``: torch's default); checkpoints holding pickled
            objects in their hyper-parameters need ``False`` (only for files you trust).

    Returns:
        The run id, or ``None`` when the checkpoint has no :class:`MLflowRecord` state.

    Raises:
        FileNotFoundError: there is no such checkpoint.

    Example:
        .. code-block:: python

            run_id = run_id_from_checkpoint("checkpoints/last.ckpt")
            logger = mlflow_logger(run_id=run_id)  # None: a new run
    """
    from lightning.fabric.utilities.cloud_io import _load, get_filesystem

    if not get_filesystem(path).exists(str(path)):
        raise FileNotFoundError(f"no checkpoint at {os.fspath(path)}")
    checkpoint = _load(path, map_location="cpu", weights_only=weights_only)
    states = checkpoint.get("callbacks", {}) if isinstance(checkpoint, Mapping) else {}
    for state in states.values():
        if isinstance(state, Mapping) and state.get(STATE_RUN_ID):
            return str(state[STATE_RUN_ID])
    return None


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


def _merge_history(*histories: Iterable[Mapping]) -> list[dict]:
    """One record per step; later histories win where they overlap."""
    by_step: dict[int, dict[str, float]] = {}
    for history in histories:
        for record in history:
            by_step.setdefault(int(record["step"]), {}).update(record.get("metrics", {}))
    return [{"step": step, "metrics": by_step[step]} for step in sorted(by_step)]


def find_decay_callback(trainer: pl.Trainer) -> Callback | None:
    """The trainer's weight-decay callback: the first with ``plan``, ``history`` and ``hparams`` attributes."""
    for callback in trainer.callbacks:
        if all(hasattr(type(callback), a) or hasattr(callback, a) for a in ("plan", "history", "hparams")):
            return callback
    return None


# ----------------------------------------------------------------------------------------------------------
# What is logged
# ----------------------------------------------------------------------------------------------------------


def _flatten(params: Mapping, prefix: str) -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = str(_plain(value))[:_PARAM_VALUE_LIMIT]
    return flat


def optimizer_params(optimizers) -> dict[str, str]:
    """Params describing the optimizers: class, and per group its name, lr, decay, betas/momentum, sizes.

    Example:
        >>> import torch
        >>> from lightning_wd import build_optimizer
        >>> opt = build_optimizer(torch.nn.Linear(3, 2), "sgd", lr=0.1, weight_decay=0.01, momentum=0.9)
        >>> params = optimizer_params([opt])
        >>> params["optimizer.class"], params["optimizer.group0.name"], params["optimizer.group1.tensors"]
        ('SGD', 'decay', '1')
    """
    params: dict[str, str] = {}
    for i, optimizer in enumerate(optimizers):
        prefix = "optimizer." if len(optimizers) == 1 else f"optimizer{i}."
        params[prefix + "class"] = type(optimizer).__name__
        params[prefix + "groups"] = str(len(optimizer.param_groups))
        for j, group in enumerate(optimizer.param_groups):
            key = f"{prefix}group{j}."
            params[key + "name"] = str(group.get("name", j))
            for option in ("lr", "weight_decay", "betas", "momentum"):
                if option in group:
                    value = group[option]
                    value = value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else value
                    params[key + option] = str(_plain(value))
            params[key + "tensors"] = str(len(group["params"]))
            params[key + "numel"] = str(sum(p.numel() for p in group["params"]))
    return params


def _audit_rows(plan, optimizers) -> list[dict]:
    """Audit rows from the plan, else from optimizer groups that carry ``param_names``."""
    if plan is not None and getattr(plan, "rows", None):
        return [
            {"name": r.name, "shape": "x".join(map(str, r.shape)) or "scalar", "numel": r.numel,
             "group": r.group or "", "strength": r.strength, "reason": r.reason}
            for r in plan.rows
        ]
    rows = []
    for optimizer in optimizers:
        for j, group in enumerate(optimizer.param_groups):
            for name, param in zip(group.get("param_names") or [], group["params"]):
                rows.append({"name": name, "shape": "x".join(map(str, param.shape)) or "scalar",
                             "numel": param.numel(), "group": str(group.get("name", j)),
                             "strength": group.get("weight_decay", 0.0), "reason": ""})
    return rows


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["name", "shape", "numel", "group", "strength", "reason"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _sample(tensors: list, limit: int) -> Any:
    """At most about ``limit`` values drawn evenly (by stride) from ``tensors``, as a numpy array."""
    import numpy as np

    total = sum(t.numel() for t in tensors)
    if total == 0:
        return np.zeros(0)
    stride = max(1, math.ceil(total / limit))
    parts = [t.detach().reshape(-1)[::stride].float().cpu().numpy() for t in tensors]
    return np.concatenate(parts)


def _split_weights(pl_module, plan, optimizers, limit: int = 200_000) -> tuple[Any, Any]:
    """Samples of the decayed and of the excluded weights (by the plan, else by the optimizer groups)."""
    named = dict(pl_module.named_parameters())
    decayed, excluded = [], []
    rows = getattr(plan, "rows", None) or []
    if rows and any(r.name in named for r in rows):
        for row in rows:
            if row.name in named and row.group is not None:
                (decayed if row.decayed else excluded).append(named[row.name])
    else:
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                (decayed if group.get("weight_decay", 0) else excluded).extend(group["params"])
    return _sample(decayed, limit), _sample(excluded, limit)


# ----------------------------------------------------------------------------------------------------------
# The callback
# ----------------------------------------------------------------------------------------------------------


class MLflowRecord(Callback):
    """Record the decay in the trainer's MLflow run: parameters, tags, audit, plots, honest status.

    When training starts: params ``wd.*`` (the ``hparams`` of the weight-decay callback, found by its
    ``plan``/``history``/``hparams`` attributes) and ``optimizer.*`` (class; per group name, lr,
    weight_decay, betas/momentum, tensors, numel); tags ``lightning_wd.scheme``/``schedule``/
    ``strength``/``optimizer``/``version``; artifacts ``audit/grouping.txt`` and ``audit/grouping.csv``.
    When fit ends: PNG plots under ``plots/`` (non-zero fraction, per-layer norms and non-zero fractions,
    histogram of decayed vs excluded weights) from the callback's ``history`` (or the run's ``wd/``
    metrics when it has none, or when the fit was resumed).

    The run ends ``FINISHED`` on success, ``FAILED`` on an exception (both Lightning's doing) and
    ``KILLED`` on ``KeyboardInterrupt``; a continued run is set back to ``RUNNING`` while it trains. The
    run id is saved in checkpoints: see :func:`run_id_from_checkpoint`.

    Without an ``MLFlowLogger`` the callback does nothing. Failing to log at the start stops the fit
    (before any training); failing to plot or upload at the end only warns, as training is done.

    Args:
        plots: make and log the plots at the end of fit.
        histogram_values: at most about this many weight values per histogram class.

    Example:
        .. code-block:: python

            trainer = Trainer(logger=mlflow_logger(), callbacks=[WeightDecay(0.05), MLflowRecord()])
    """

    def __init__(self, plots: bool = True, histogram_values: int = 200_000) -> None:
        self.plots = plots
        self.histogram_values = histogram_values
        self._logger = None
        self._run_id: str | None = None
        self._experiment_id: str | None = None
        self._tracking_uri: str | None = None
        self._restored: dict = {}
        self._continued = False

    # -- state --------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        if self._run_id is None:
            return {}
        return {STATE_RUN_ID: self._run_id, "experiment_id": self._experiment_id,
                "tracking_uri": redact(self._tracking_uri or "")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict or {})

    # -- hooks --------------------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether this fit is being recorded (an MLflow logger, on rank zero)."""
        return self._logger is not None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._logger = _mlflow_logger_of(trainer) if trainer.is_global_zero else None
        if self._logger is None:
            return
        client = self._logger.experiment
        self._run_id, self._experiment_id = self._logger.run_id, self._logger.experiment_id
        self._tracking_uri = self._logger._tracking_uri
        run = client.get_run(self._run_id)
        previous = self._restored.get(STATE_RUN_ID)
        self._continued = bool(run.data.metrics) or previous == self._run_id
        if previous and previous != self._run_id:
            warnings.warn(
                f"the checkpoint was logged to MLflow run {previous}, this fit logs to run {self._run_id}; "
                "to continue that run pass `mlflow_logger(run_id=run_id_from_checkpoint(ckpt_path))`",
                UserWarning, stacklevel=2,
            )
            client.set_tag(self._run_id, TAG_PREFIX + "resumed_from", previous)
        if run.info.status != "RUNNING":
            client.update_run(self._run_id, status="RUNNING")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.active:
            return
        from mlflow.entities import Param, RunTag

        from lightning_wd.core.version import __version__

        client, run_id = self._logger.experiment, self._run_id
        decay = find_decay_callback(trainer)
        hparams = getattr(decay, "hparams", None) if decay is not None else None
        hparams = dict((hparams() if callable(hparams) else hparams) or {})
        optimizers = list(trainer.optimizers)
        params = {**_flatten(hparams, "wd."), **optimizer_params(optimizers)}

        existing = client.get_run(run_id).data.params
        changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
        if changed:
            warnings.warn(f"MLflow params cannot change within a run; keeping the logged values of {changed}",
                          UserWarning, stacklevel=2)
        fresh = [Param(k, v) for k, v in params.items() if k not in existing]

        strength = hparams.get("weight_decay", hparams.get("strength"))
        if strength is None:
            strength = max((g.get("weight_decay", 0.0) for o in optimizers for g in o.param_groups), default=0.0)
        scheme = hparams.get("scheme") or ("native" if strength else "none")
        tags = {"scheme": scheme, "strength": f"{float(strength):g}" if _is_number(strength) else strength,
                "optimizer": ",".join(type(o).__name__ for o in optimizers) or "-",
                "version": __version__}
        if hparams.get("schedule") is not None:
            tags["schedule"] = hparams["schedule"]
        run_tags = [RunTag(TAG_PREFIX + k, str(_plain(v))[:_PARAM_VALUE_LIMIT]) for k, v in tags.items()]
        for start in range(0, max(len(fresh), 1), 100):
            client.log_batch(run_id, params=fresh[start : start + 100], tags=run_tags if start == 0 else [])

        plan = getattr(decay, "plan", None) if decay is not None else None
        rows = _audit_rows(plan, optimizers)
        if plan is not None:
            client.log_text(run_id, str(plan) + "\n", "audit/grouping.txt")
        if rows:
            client.log_text(run_id, _csv(rows), "audit/grouping.csv")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.active or not self.plots:
            return
        try:
            self._log_plots(trainer, pl_module)
        except Exception as error:  # training is done: do not turn a finished run into a failed one
            warnings.warn(f"lightning_wd: could not log the weight-decay plots to MLflow: {_one_line(error)}",
                          UserWarning, stacklevel=2)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not self.active:
            return
        if isinstance(exception, KeyboardInterrupt):
            _end_as(self._logger, "KILLED")
        elif not _is_tracking_error(exception):
            try:  # best effort: the reason shows in the MLflow UI next to the FAILED status
                self._logger.experiment.set_tag(self._run_id, TAG_PREFIX + "error",
                                                _one_line(f"{type(exception).__name__}: {exception}", 500))
            except Exception:  # noqa: S110 - the original exception is what matters
                pass

    # -- helpers ------------------------------------------------------------------------------------------

    def _log_plots(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning_wd.tracking import plots

        client, run_id = self._logger.experiment, self._run_id
        decay = find_decay_callback(trainer)
        history = list(getattr(decay, "history", None) or []) if decay is not None else []
        if not history or self._continued:
            history = _merge_history(history_from_mlflow(client, run_id), history)
        decayed, excluded = _split_weights(pl_module, getattr(decay, "plan", None), trainer.optimizers,
                                           self.histogram_values)
        with tempfile.TemporaryDirectory(prefix="lightning_wd_plots_") as folder:
            written = plots.plot_history(history, folder)
            hist = plots.plot_weight_histogram(decayed, excluded, Path(folder) / "weight_histogram.png")
            if hist is not None:
                written.append(hist)
            if written:
                client.log_artifacts(run_id, folder, "plots")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_tracking_error(exception: BaseException) -> bool:
    """Whether talking to MLflow is what failed (then do not try again while handling it)."""
    module = type(exception).__module__ or ""
    return module.split(".")[0] in ("mlflow", "requests", "urllib3") or isinstance(exception, OSError)


def _end_as(logger, status: str) -> None:
    """Make the logger's next ``finalize("failed")`` end the run with ``status`` instead (once)."""
    original = logger.finalize

    def finalize(outcome: str = "success") -> None:
        del logger.finalize  # back to the class's method
        original(status if outcome == "failed" else outcome)

    logger.finalize = finalize


# ----------------------------------------------------------------------------------------------------------
# LightningCLI
# ----------------------------------------------------------------------------------------------------------

_SAVE_CONFIG_CLASS = None


def __getattr__(name: str):
    if name == "MLflowSaveConfigCallback":
        return _save_config_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _save_config_class():
    """``SaveConfigCallback`` that also logs the config to MLflow and skips the log dir when there is none.

    Use as ``LightningCLI(save_config_callback=lightning_wd.tracking.MLflowSaveConfigCallback)``.
    """
    global _SAVE_CONFIG_CLASS
    if _SAVE_CONFIG_CLASS is not None:
        return _SAVE_CONFIG_CLASS
    from lightning.pytorch.cli import SaveConfigCallback

    class MLflowSaveConfigCallback(SaveConfigCallback):
        """Save the config to the log dir when the loggers have one, and to the MLflow run if any."""

        def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
            # Lightning asserts a log dir exists (issue #19441); SQLite/server MLflow loggers have none
            self.save_to_log_dir = self.save_to_log_dir and trainer.log_dir is not None
            super().setup(trainer, pl_module, stage)

        def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
            log_config(trainer, self.parser.dump(self.config, skip_none=False), self.config_filename)

    MLflowSaveConfigCallback.__module__ = __name__
    _SAVE_CONFIG_CLASS = MLflowSaveConfigCallback
    return MLflowSaveConfigCallback
