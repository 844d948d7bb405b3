"""The record callback: what decays and how, logged to the trainer's MLflow run, and plots at the end.

:class:`MLflowRecord` logs params, tags and the grouping audit when training starts (their text comes from
:mod:`lightning_wd.tracking.params`), PNG plots of the measurements when fit ends
(:mod:`lightning_wd.tracking.plots`), and keeps the run's status honest. It finds the decay callback by
duck typing (:func:`find_decay_callback`), so the core never imports this layer. MLflow is imported only
inside the hooks.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_wd.core.messages import one_line
from lightning_wd.tracking.active_time import open_segment
from lightning_wd.tracking.artifacts import log_private_artifacts, log_private_text
from lightning_wd.tracking.checkpoints import STATE_RUN_ID
from lightning_wd.tracking.colours import RUN_COLOUR_TAG, setting_colour
from lightning_wd.tracking.logger import mlflow_logger_of
from lightning_wd.tracking.params import (
    TAG_PREFIX,
    audit_csv,
    audit_rows,
    decay_tags,
    mlflow_hparams,
    run_params,
)
from lightning_wd.tracking.queries import history_from_mlflow, merge_histories
from lightning_wd.tracking.redaction import redact_text
from lightning_wd.tracking.uris import TrackingUnavailable, redact
from lightning_wd.tracking.writer import TrackingWriteError

__all__ = ["MLflowRecord", "decay_hparams", "filter_hyperparams", "find_decay_callback"]


def find_decay_callback(trainer: pl.Trainer) -> Callback | None:
    """The trainer's weight-decay callback: the first with ``plan``, ``history`` and ``hparams`` attributes."""
    for callback in trainer.callbacks:
        if all(hasattr(type(callback), a) or hasattr(callback, a) for a in ("plan", "history", "hparams")):
            return callback
    return None


class MLflowRecord(Callback):
    """Record the decay in the trainer's MLflow run: parameters, tags, audit, plots, honest status.

    When training starts: params ``wd.*`` (the ``hparams`` of the weight-decay callback, found by its
    ``plan``/``history``/``hparams`` attributes), ``seed`` (``seed_everything``'s) and ``optimizer.*``
    (class; per group name, lr, weight_decay, betas/momentum, tensors, numel); tags
    ``lightning_wd.scheme``/``schedule``/``strength``/``setting``/``optimizer``/``version`` and
    ``mlflow.runColor`` (the setting's colour in the UI's charts, unless the run has one); artifacts
    ``audit/grouping.txt`` and ``audit/grouping.csv``. One account of the decay: with a weight-decay
    callback the model's own ``weight_decay`` argument is not logged and each group's optimizer
    ``weight_decay`` is logged as ``native_weight_decay`` (the part the optimizer applies itself); the
    LightningCLI's ``_instantiator`` hparam is never logged.
    When fit ends: PNG plots under ``plots/`` (non-zero fraction, per-layer norms and non-zero fractions,
    histogram of decayed vs excluded weights) from the callback's ``history`` (or the run's ``wd/``
    metrics when it has none, or when the fit was resumed).

    The run's active time (the segments it trained in, so a resumed run's pause is not counted) is kept in
    the tags ``lightning_wd.active_seconds`` and ``lightning_wd.segment_start``
    (:mod:`~lightning_wd.tracking.active_time`). The run ends ``FINISHED`` on success, ``FAILED`` on an
    exception (both Lightning's doing) and ``KILLED`` on ``KeyboardInterrupt``; a continued run is set back
    to ``RUNNING`` while it trains. The run id is saved in checkpoints: see
    :func:`~lightning_wd.tracking.checkpoints.run_id_from_checkpoint`.

    Without an ``MLFlowLogger`` the callback does nothing. Failing to log the params at the start stops the fit
    (before any training); failing to write an artifact (the audit at the start; the plots, made once when
    fit ends, off the training steps) only warns: an artifact store that is full, unwritable or gone never
    stops the training. ``seconds`` holds the time spent at the start (``start``) and at the end (``plots``).

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
        self._label: str | None = None
        self.seconds: dict[str, float] = {}

    # -- state --------------------------------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        if self._run_id is None:
            return {}
        return {STATE_RUN_ID: self._run_id, "experiment_id": self._experiment_id,
                "tracking_uri": redact(self._tracking_uri or "")}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict or {})

    # -- hooks --------------------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether this fit is being recorded (an MLflow logger, on rank zero)."""
        return self._logger is not None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._logger = mlflow_logger_of(trainer) if trainer.is_global_zero else None
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
        open_segment(client, run, self._continued)  # the active time: a resumed run does not count the pause
        filter_hyperparams(self._logger, decay_managed=find_decay_callback(trainer) is not None)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.active:
            return
        start = time.perf_counter()
        from mlflow.entities import Param, RunTag

        from lightning_wd.core.version import __version__

        client, run_id = self._logger.experiment, self._run_id
        decay = find_decay_callback(trainer)
        hparams = decay_hparams(decay)
        optimizers = list(trainer.optimizers)
        params = run_params(None if decay is None else hparams, optimizers, os.environ.get("PL_GLOBAL_SEED"))

        run = client.get_run(run_id)
        existing = run.data.params
        changed = sorted(k for k, v in params.items() if k in existing and existing[k] != v)
        if changed:
            warnings.warn(f"MLflow params cannot change within a run; keeping the logged values of {changed}",
                          UserWarning, stacklevel=2)
        fresh = [Param(k, v) for k, v in params.items() if k not in existing]

        tags = decay_tags(hparams, optimizers, __version__)
        seed = params.get("seed")
        self._label = tags[TAG_PREFIX + "setting"] + ("" if seed is None else f" seed {seed}")
        if RUN_COLOUR_TAG not in run.data.tags:  # the setting's colour in the UI's charts; a user's pick stays
            tags[RUN_COLOUR_TAG] = setting_colour(tags[TAG_PREFIX + "scheme"])
        run_tags = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, max(len(fresh), 1), 100):
            client.log_batch(run_id, params=fresh[i : i + 100], tags=run_tags if i == 0 else [])

        plan = getattr(decay, "plan", None) if decay is not None else None
        rows = audit_rows(plan, optimizers)
        try:
            if plan is not None:
                log_private_text(client, run_id, str(plan) + "\n", "audit/grouping.txt")
            if rows:
                log_private_text(client, run_id, audit_csv(rows), "audit/grouping.csv")
        except Exception as error:  # an artifact store that is full or unwritable does not stop the training
            _warn_artifacts("the grouping audit", self._run_id, error)
        self.seconds["start"] = time.perf_counter() - start

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.active or not self.plots:
            return
        start = time.perf_counter()
        try:
            self._log_plots(trainer, pl_module)
        except Exception as error:  # training is done: do not turn a finished run into a failed one
            _warn_artifacts("the weight-decay plots", self._run_id, error)
        self.seconds["plots"] = time.perf_counter() - start

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        logger = self._logger
        if logger is None and trainer.is_global_zero:  # failed before this callback's fit start (resume checks)
            logger = mlflow_logger_of(trainer)
            if logger is None or not getattr(logger, "_initialized", False):
                return
        elif logger is None:
            return
        if isinstance(exception, KeyboardInterrupt):
            _end_as(logger, "KILLED")
        if not isinstance(exception, KeyboardInterrupt) and not _is_tracking_error(exception):
            try:  # best effort: the reason shows in the MLflow UI next to the FAILED status
                logger.experiment.set_tag(logger.run_id, TAG_PREFIX + "error",
                                          redact_text(one_line(f"{type(exception).__name__}: {exception}", 500)))
            except Exception:  # noqa: S110 - the original exception is what matters
                pass

    # -- helpers ------------------------------------------------------------------------------------------

    def _log_plots(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning_wd.tracking import plots

        client, run_id = self._logger.experiment, self._run_id
        decay = find_decay_callback(trainer)
        history = list(getattr(decay, "history", None) or []) if decay is not None else []
        if not history or self._continued:
            flush = getattr(self._logger, "flush", None)  # a buffered logger: its points first, then read them
            if callable(flush):
                flush()
            history = merge_histories(history_from_mlflow(client, run_id), history)
        decayed, excluded = _split_weights(pl_module, getattr(decay, "plan", None), trainer.optimizers,
                                           self.histogram_values)
        with tempfile.TemporaryDirectory(prefix="lightning_wd_plots_") as folder:
            written = plots.plot_history(history, folder, self._label)
            hist = plots.plot_weight_histogram(decayed, excluded, Path(folder) / "weight_histogram.png",
                                               label=self._label)
            if hist is not None:
                written.append(hist)
            if written:
                log_private_artifacts(client, run_id, folder, "plots")


def decay_hparams(decay: Callback | None) -> dict[str, Any]:
    """The weight-decay callback's ``hparams`` (a property or a method) as a dict; ``{}`` without one."""
    hparams = getattr(decay, "hparams", None) if decay is not None else None
    return dict((hparams() if callable(hparams) else hparams) or {})


def _is_tracking_error(exception: BaseException) -> bool:
    """Whether talking to MLflow is what failed (then do not try again while handling it)."""
    module = type(exception).__module__ or ""
    return (module.split(".")[0] in ("mlflow", "requests", "urllib3")
            or isinstance(exception, OSError | TrackingUnavailable | TrackingWriteError))


def _end_as(logger, status: str) -> None:
    """Make the logger's next ``finalize("failed")`` end the run with ``status`` instead (once)."""
    original = logger.finalize

    def finalize(outcome: str = "success") -> None:
        del logger.finalize  # back to the class's method
        original(status if outcome == "failed" else outcome)

    logger.finalize = finalize


def _warn_artifacts(what: str, run_id: str | None, error: BaseException) -> None:
    warnings.warn(f"lightning_wd: could not log {what} to MLflow run {run_id}: {one_line(error, 300)}; "
                  "training goes on without them", UserWarning, stacklevel=3)


def filter_hyperparams(logger, decay_managed: bool) -> None:
    """Make the logger's ``log_hyperparams`` (Lightning calls it right after ``on_fit_start``) log the model's
    and datamodule's hparams through :func:`~lightning_wd.tracking.params.mlflow_hparams`."""
    original = getattr(logger.log_hyperparams, "_lightning_wd_original", logger.log_hyperparams)

    def log_hyperparams(params: Any, *args: Any, **kwargs: Any) -> None:
        if hasattr(params, "items"):
            params = mlflow_hparams(params, decay_managed)
        elif params is not None and hasattr(params, "__dict__"):  # an argparse.Namespace
            params = mlflow_hparams(vars(params), decay_managed)
        original(params, *args, **kwargs)

    log_hyperparams._lightning_wd_original = original
    logger.log_hyperparams = log_hyperparams


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
