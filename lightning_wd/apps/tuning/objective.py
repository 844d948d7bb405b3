"""One trial: an ordinary fit of the recipe, with the sampled decay, reported to Optuna every validation.

Each trial takes a copy of the recipe with the WeightDecay callback's ``init_args`` set to the sample and
builds its fit with the recipe runner that ``lightning-wd fit`` uses
(:func:`lightning_wd.apps.runner.build_cli`: the sampled recipe, then the user's overrides), passing in
its logger (an ``MLFlowLogger`` on the trial's child run) and its callbacks (:class:`TrialMonitor` and
``MLflowRecord``); then it calls ``trainer.fit``.

Pruning without exceptions inside the fit: at the end of each validation :class:`TrialMonitor` reports the
monitored metric (``trial.report(value, step=validation round)``); when the pruner says so it sets
``trainer.should_stop`` and remembers it. The fit ends normally (loggers FINISHED, checkpoints and
callbacks consistent), and :class:`Objective` raises ``optuna.TrialPruned`` after ``trainer.fit`` returns.

DDP: the monitor's decisions go through the strategy (rank zero reports to Optuna and decides; the decision
is broadcast so every rank stops at the same step; a non-finite loss on any rank stops all of them), and
everything the objective needs afterwards (pruned, fail reason, last value, ``wd/*`` statistics) is stored in
the trial's user attributes, so it also reaches the main process when the ranks are spawned processes
(``ddp_spawn``: the trial and its storage are pickled into them, which needs an RDB or journal storage).
Strategy ``ddp`` starts the other ranks by re-running the command line: the process running the study is
rank 0 and owns the Optuna trial; for the length of the trial's fit it puts the trial (its sampled recipe,
overrides, MLflow run) in the ``LIGHTNING_WD_TRIAL`` environment variable, so a re-run rank
(``LOCAL_RANK`` > 0) does not run a study but :func:`follow_trial`: the same fit with the same parameters,
logging to the same child run (rank zero writes it), its pruning decisions broadcast from rank 0, and exits.
After the fit rank 0 waits for its ranks, ends the process group and restores the launcher's environment,
so the next trial starts its own ranks. Processes started by a cluster (torchrun, SLURM) would each run the
study: refused.

A NaN/inf training loss or monitored metric stops the fit at once; the trial then ends FAIL with the user
attribute ``fail_reason`` and the study goes on.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import Callback

from lightning_wd.apps.errors import TuneError
from lightning_wd.apps.tuning.ddp_ranks import TRIAL_ENV, following_a_trial, ranks_follow
from lightning_wd.apps.tuning.recipe import trial_recipe
from lightning_wd.apps.tuning.space import SPARSITY_KEY

__all__ = ["SPARSITY_KEY", "TRIAL_ENV", "NonFiniteTrial", "Objective", "TrialMonitor", "build_trial", "follow_trial"]

ATTR_LAST = "last_value"
#: a trial prints one summary line under the study's progress bar: no per-trial bar or model summary
#: (a recipe that sets them keeps them)
TRIAL_TRAINER_DEFAULTS = {"enable_progress_bar": False, "enable_model_summary": False}
ATTR_PRUNED = "pruned_at_round"
ATTR_REASON = "fail_reason"


class NonFiniteTrial(RuntimeError):
    """The trial's loss or monitored metric became NaN/inf (the trial ends FAIL, the study goes on)."""


def build_trial(config: Mapping, overrides: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """The trial's fit, built by the recipe runner on its sampled recipe (not run).

    Args:
        config: the trial's recipe.
        overrides: LightningCLI arguments after it.
        kwargs: the runner's ``logger``, ``callbacks``, ``quiet``.

    Raises:
        TuneError: the configuration is invalid (one-line message).
    """
    from lightning_wd.apps.errors import ConfigError
    from lightning_wd.apps.runner import build_cli
    from lightning_wd.core.messages import one_line

    try:
        return build_cli(config, overrides, **kwargs)
    except ConfigError as error:
        raise TuneError(one_line(error)) from None
    except SystemExit as exit_:  # a parser that prints and exits (LIGHTNING_WD_DEBUG=1)
        raise TuneError(f"invalid configuration (exit {exit_.code})") from None


def _finite(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.detach().float().cpu().item()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class TrialMonitor(Callback):
    """Report the monitored metric to an Optuna trial after each validation, prune, stop on NaN/inf.

    Args:
        trial: the ``optuna.Trial``.
        metric: the monitored metric in ``trainer.callback_metrics`` (e.g. ``val/acc``).
        report: report intermediate values and ask the pruner (single-objective studies only).

    Raises:
        TuneError: (during fit) the metric is not logged by the model.
    """

    def __init__(self, trial: Any, metric: str, report: bool = True) -> None:
        self.trial = trial
        self.metric = metric
        self.report = report
        self.rounds = 0
        self.pruned = False
        self.fail_reason: str | None = None
        self.last_value: float | None = None
        self.wd_stats: dict[str, float] = {}

    def _attr(self, trainer: Any, key: str, value: Any) -> None:
        if trainer.is_global_zero:
            self.trial.set_user_attr(key, value)

    def _stop(self, trainer: Any, reason: str) -> None:
        trainer.should_stop = True
        if self.fail_reason is None:
            self.fail_reason = reason
            self._attr(trainer, ATTR_REASON, reason)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Stop every rank at the first non-finite training loss (one boolean all-reduce per step)."""
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        bad = isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(bad, all=False):  # one rank's NaN stops every rank
            value = _finite(loss) if isinstance(loss, torch.Tensor) else None
            self._stop(trainer, f"non-finite training loss ({value}) at epoch {trainer.current_epoch}, "
                                f"step {trainer.global_step}")

    def on_validation_end(self, trainer, pl_module) -> None:
        """Report the metric (rank zero), ask the pruner, broadcast its decision, stop on NaN/inf."""
        if trainer.sanity_checking or self.fail_reason is not None:
            return
        if self.metric not in trainer.callback_metrics:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise TuneError(f"metric {self.metric!r} is not logged by the model (logged: {logged}); "
                            "choose one with --metric")
        value = _finite(trainer.callback_metrics[self.metric])
        if value is None or not math.isfinite(value):
            self._stop(trainer, f"non-finite {self.metric} ({value}) at epoch {trainer.current_epoch}")
            return
        self.last_value = value
        self._attr(trainer, ATTR_LAST, value)
        round_ = self.rounds
        self.rounds += 1
        if not self.report:
            return
        prune = False
        if trainer.is_global_zero:
            self.trial.report(value, step=round_)
            prune = bool(self.trial.should_prune())
        prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            self.pruned = True
            trainer.should_stop = True
            self._attr(trainer, ATTR_PRUNED, round_)

    def on_train_end(self, trainer, pl_module) -> None:
        """Store the final ``wd/*`` statistics of the WeightDecay callback in the trial's user attributes."""
        if not trainer.is_global_zero:
            return
        from lightning_wd.tracking import find_decay_callback

        wd = find_decay_callback(trainer)
        if wd is None:
            return
        stats = wd.history[-1]["metrics"] if wd.history else wd.compute_stats(pl_module)
        self.wd_stats = {k: float(v) for k, v in stats.items() if k.count("/") == 1 and _finite(v) is not None}
        for key, value in self.wd_stats.items():
            self.trial.set_user_attr(key, value)
        if wd.timescale_epochs and trainer.optimizers:  # what best.yaml's transfer rule quotes
            from lightning_wd.core.planning import steps_per_epoch

            group = trainer.optimizers[0].param_groups[0]
            self.trial.set_user_attr("timescale/lr", float(group.get("initial_lr", group["lr"])))
            self.trial.set_user_attr("timescale/steps_per_epoch", steps_per_epoch(trainer))


class Objective:
    """The Optuna objective: one fit of the recipe per trial (see the module docstring).

    Args:
        settings: the study's :class:`~lightning_wd.apps.tuning.settings.Settings` (recipe, space,
            overrides, metric, objectives, sampler, seed).
        record: the :class:`~lightning_wd.apps.tuning.record.StudyRecord`.
        worker: index of this worker (a tag of the child runs).
        on_trial_start: called with the trial number and parameters when a trial starts (progress display).
    """

    def __init__(self, settings: Any, record: Any = None, worker: int = 0, on_trial_start: Any = None) -> None:
        self.settings = settings
        self.space = settings.space
        self.grid = settings.sampler == "grid"  # strength over the union range of the schemes
        self.record = record
        self.worker = worker
        self.on_trial_start = on_trial_start

    def config_for(self, params: Mapping[str, Any]) -> dict:
        """The trial's recipe: the sampled decay set on the WeightDecay callback, ``tune:`` removed."""
        config = trial_recipe(self.settings.recipe, self.space.wd_args(params))
        if self.settings.seed is not None and "seed_everything" not in config:
            config["seed_everything"] = self.settings.seed
        return config

    def check(self) -> None:
        """Build the fit once with the lowest values of the space, quietly (config errors fail early).

        Raises:
            TuneError: the recipe or the overrides are invalid.
        """
        import optuna

        low = {}
        for name in self.space.names:
            if name == "scheme":
                low[name] = self.space.schemes[0]
            else:
                r = (self.space.strength_range(self.space.schemes[0], self.grid) if name == "strength"
                     else getattr(self.space, name))
                low[name] = r.low
        params = self.space.suggest(optuna.trial.FixedTrial(low), self.grid)
        config = self.config_for(params)
        cli = build_trial(config, self.settings.overrides, logger=False, quiet=True)
        self._check_strategy(cli.trainer)

    @staticmethod
    def _check_strategy(trainer: Any) -> None:
        environment = getattr(trainer.strategy, "cluster_environment", None)
        if trainer.world_size > 1 and environment is not None and environment.creates_processes_externally:
            raise TuneError(
                f"trials cannot run on processes started by {type(environment).__name__} (torchrun, SLURM, ...): "
                "each would run the whole study; start `lightning-wd tune` once, with --trainer.strategy ddp "
                "(it starts the trial's ranks itself) or ddp_spawn"
            )

    def __call__(self, trial: Any) -> float | list[float]:
        import optuna

        started = time.time()
        params = self.space.suggest(trial, self.grid)
        if self.on_trial_start is not None:
            self.on_trial_start(trial.number, params)
        run_id = self.record.start_trial(trial.number, params, self.worker)
        trial.set_user_attr("mlflow_run_id", run_id)
        state, reason, values = "FAIL", None, None
        try:
            values = self._fit(trial, params, run_id)
            state = "COMPLETE"
            return values[0] if len(values) == 1 else values
        except optuna.TrialPruned:
            state = "PRUNED"
            raise
        except NonFiniteTrial as error:
            reason = str(error)
            raise
        except KeyboardInterrupt:
            state, reason = "KILLED", "interrupted (KeyboardInterrupt)"
            self._set_reason(trial, reason)
            raise
        except Exception as error:
            from lightning_wd.core.messages import one_line

            reason = f"{type(error).__name__}: {one_line(error)}"
            self._set_reason(trial, reason)
            raise
        finally:
            self.record.end_trial(run_id, state, values, reason, time.time() - started)

    @staticmethod
    def _set_reason(trial: Any, reason: str) -> None:
        try:
            trial.set_user_attr(ATTR_REASON, reason)
        except Exception:  # noqa: S110 - the original exception is what matters
            pass

    def _fit(self, trial: Any, params: Mapping[str, Any], run_id: str) -> list[float]:
        import optuna

        from lightning_wd.tracking import MLflowRecord

        monitor = TrialMonitor(trial, self.settings.metric, report=len(self.settings.objectives) == 1)
        config = self.config_for(params)
        cli = build_trial(config, self.settings.overrides,
                          logger=self.record.trial_logger(run_id), callbacks=[monitor, MLflowRecord(plots=False)],
                          trainer_defaults=TRIAL_TRAINER_DEFAULTS)
        trainer = cli.trainer
        self._check_strategy(trainer)
        handler = signal.getsignal(signal.SIGINT)
        spec = {"config": config, "overrides": list(self.settings.overrides),
                "tracking_uri": self.record.uri, "experiment": self.record.experiment, "run_id": run_id,
                "metric": self.settings.metric, "report": monitor.report, "trial": trial.number}
        try:
            with ranks_follow(trainer, spec):
                trainer.fit(cli.model, datamodule=cli.datamodule)
        except SystemExit as exit_:  # Lightning turns Ctrl-C into sys.exit(1) after a graceful shutdown
            raise KeyboardInterrupt(f"fit interrupted (exit {exit_.code})") from None
        finally:
            if handler is not None:
                signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after a Ctrl-C
        # written by the monitor, possibly in spawned rank-zero processes: read back from the storage
        attrs = trial.storage.get_trial(trial._trial_id).user_attrs
        reason = monitor.fail_reason or attrs.get(ATTR_REASON)
        if reason:
            raise NonFiniteTrial(reason)
        if monitor.pruned or attrs.get(ATTR_PRUNED) is not None:
            at = attrs.get(ATTR_PRUNED, monitor.rounds - 1)
            raise optuna.TrialPruned(f"pruned after validation round {at}")
        value = monitor.last_value if monitor.last_value is not None else attrs.get(ATTR_LAST)
        if value is None:
            raise TuneError(f"no validation ran, so {self.settings.metric!r} was never measured "
                            "(check limit_val_batches)")
        values = []
        for objective in self.settings.objectives:
            if objective == "accuracy":
                values.append(float(value))
            else:
                sparsity = monitor.wd_stats.get(SPARSITY_KEY, attrs.get(SPARSITY_KEY))
                if sparsity is None:
                    raise TuneError(f"the WeightDecay callback reported no {SPARSITY_KEY}")
                values.append(float(sparsity))
        return values


def follow_trial() -> bool:
    """In a rank that Lightning's ``ddp`` launcher re-ran for a trial: run that trial's fit, return True.

    Returns False (and does nothing) in any other process. The fit is the one rank 0 runs (same sampled
    recipe and overrides, same seed), logging to the trial's MLflow child run through rank zero only; the
    monitor takes its pruning and stopping decisions from rank 0 (broadcast), so every rank stops together.
    """
    if not following_a_trial():
        return False
    spec = json.loads(os.environ[TRIAL_ENV])
    from lightning_wd import tracking

    monitor = TrialMonitor(None, spec["metric"], report=bool(spec["report"]))
    logger = tracking.mlflow_logger(experiment_name=spec["experiment"], tracking_uri=spec["tracking_uri"],
                                    run_id=spec["run_id"])
    cli = build_trial(spec["config"], tuple(spec["overrides"]), logger=logger,
                      callbacks=[monitor, tracking.MLflowRecord(plots=False)], trainer_defaults=TRIAL_TRAINER_DEFAULTS)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return True
