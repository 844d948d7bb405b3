"""``tune``: run, or resume, an Optuna study over the weight decay of a recipe.

``n_trials`` is the study's target of finished trials (COMPLETE + PRUNED), not a number to add: a worker
runs trials while fewer than ``n_trials`` are finished or running, so re-running the same command resumes
the study and runs only the missing trials (none if the target is met), and any number of workers running
the same command together stop at the target (two workers may both start the last trial: at most
``workers - 1`` trials more). FAIL trials (NaN loss, killed workers, Ctrl-C) do not count. When the only
missing trials are running in other workers, a worker waits up to ``grace_period + 2 * heartbeat_interval``
for one of them to finish short or to go stale (its worker was killed) and be retried, rather than leave the
study short; then it leaves the running trials to their workers.

``--workers N`` starts N worker processes (spawned) that run trials together; the invoking process only
supervises them (progress bar, exit codes), then writes ``best.yaml``, the plots and the parent MLflow run,
under which all the workers' trial runs are logged.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_wd.apps.errors import TuneError
from lightning_wd.apps.tuning import storage as storage_mod
from lightning_wd.apps.tuning.settings import Settings, make_pruner, make_sampler
from lightning_wd.core.messages import one_line
from lightning_wd.tracking.uris import redact

__all__ = ["tune"]


def _target(settings: Settings) -> int:
    if settings.sampler != "grid":
        return settings.n_trials
    size = math.prod(len(v) for v in settings.space.grid().values())
    return min(settings.n_trials, size)


def _warn_shared_sqlite(study: Any, settings: Settings) -> None:
    if storage_mod.storage_kind(settings.storage) != "sqlite":
        return
    running = {t._trial_id: t.number for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"}
    if not running:
        return
    try:
        stale = set(study._storage._get_stale_trial_ids(study._study_id)) if settings.heartbeat_interval else set()
    except Exception:
        stale = set()
    alive = sorted(n for i, n in running.items() if i not in stale)
    if alive:
        warnings.warn(
            f"another process is running trial(s) {alive} of study {settings.study_name!r} on SQLite storage: "
            "SQLite lets one process write at a time, so concurrent workers fail with 'database is locked'; "
            "share a study with --storage postgresql+psycopg2://... (or journal:PATH on one machine)",
            UserWarning, stacklevel=3,
        )


class _Progress:
    """The study's progress bar (finished trials / target) and one summary line per trial."""

    def __init__(self, total: int, done: int, name: str, enabled: bool, names: Sequence[str]) -> None:
        from tqdm.auto import tqdm

        self.names = list(names)
        self.bar = tqdm(total=total, initial=min(done, total), desc=f"study {name}", unit="trial",
                        disable=not enabled, file=sys.stderr, dynamic_ncols=True, leave=True)

    def set(self, done: int) -> None:
        self.bar.n = min(done, self.bar.total)
        self.bar.refresh()

    def started(self, number: int, params: Mapping) -> None:
        from lightning_wd.apps.tuning.report import format_params

        self.bar.set_postfix_str(f"trial {number}: {format_params(params)}")

    def finished(self, study: Any, trial: Any) -> None:
        from lightning_wd.apps.tuning.report import summary_line

        self.bar.write(summary_line(trial, self.names), file=sys.stdout)
        self.set(sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")))

    def message(self, text: str) -> None:
        self.bar.write(text, file=sys.stdout)

    def close(self) -> None:
        self.bar.close()


def _loop(study: Any, objective: Any, settings: Settings, target: int, progress: _Progress,
          catch: tuple[type[BaseException], ...]) -> None:
    start = time.monotonic()
    poll = max(0.5, min(5.0, float(settings.heartbeat_interval or 5)))
    # long enough for a killed worker's trial to go stale and be retried, which is what waiting is for
    patience = (settings.grace_period or 0) + 2 * (settings.heartbeat_interval or 0)
    waiting_since: float | None = None
    while True:
        if settings.timeout is not None and time.monotonic() - start >= settings.timeout:
            progress.message(f"timeout of {settings.timeout:g}s reached: no new trial started")
            return
        storage_mod.fail_stale(study)
        counts = storage_mod.counts(study)
        done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
        running = counts.get("RUNNING", 0)
        progress.set(done)
        if done >= target:
            return
        if done + running >= target:
            if not settings.heartbeat_interval or storage_mod.storage_kind(settings.storage) == "journal":
                return
            if waiting_since is None:
                waiting_since = time.monotonic()
                progress.message(f"waiting for {running} trial(s) running in other workers")
            elif time.monotonic() - waiting_since > patience:
                progress.message(f"{running} trial(s) still running in other workers: leaving them to finish")
                return
            time.sleep(poll)
            continue
        waiting_since = None
        study.optimize(objective, n_trials=1, catch=catch, callbacks=[progress.finished])


def _spawn(settings: Settings, parent_run_id: str) -> list:
    """Start ``settings.workers`` processes running the study (spawned: no state shared with this process)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    worker_settings = settings.replace(workers=1, progress=False)
    processes = []
    for index in range(1, settings.workers + 1):
        process = context.Process(target=_worker_main, args=(worker_settings, index, parent_run_id),
                                  name=f"lightning_wd-tune-{index}")
        process.start()
        processes.append(process)
    return processes


def _worker_main(settings: Settings, index: int, parent_run_id: str) -> None:
    """A worker process of ``--workers``: exit 0 done, 1 failed (one line on stderr), 130 interrupted."""
    try:
        _run(settings, index, parent_run_id)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:
        from lightning_wd.apps.errors import debug_enabled, report_error

        if debug_enabled():
            raise
        sys.exit(report_error(f"lightning-wd tune worker {index}", f"{type(error).__name__}: {one_line(error, 500)}",
                              code=1))


def _finished(study: Any) -> int:
    counts = storage_mod.counts(study)
    return counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)


def _exit_text(code: int | None) -> str:
    """``exit 1``, ``killed by SIGKILL``."""
    import signal

    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def _supervise(study: Any, processes: Sequence, progress: _Progress, target: int) -> str | None:
    """Show the study's progress while the worker processes run.

    A study that reached its target is a success whatever happened to a worker (a killed worker's trial is
    retried by the others): then the failure comes back as one line to report. A study left short raises.

    Returns:
        None, or the line describing the workers that failed.

    Raises:
        RuntimeError: a worker failed and the study has fewer than ``target`` finished trials.
    """
    while any(p.is_alive() for p in processes):
        progress.set(_finished(study))
        for process in processes:
            process.join(timeout=1.0 / len(processes))
    done = _finished(study)
    progress.set(done)
    failed = [f"worker {i} ({_exit_text(p.exitcode)})" for i, p in enumerate(processes, 1) if p.exitcode != 0]
    if not failed:
        return None
    line = f"{', '.join(failed)} of {len(processes)} failed"
    if done < target:
        raise RuntimeError(f"{line}; the study has {done} of {target} finished trials (see the workers' messages "
                           "above; re-run the command to resume)")
    return f"{line}; the other workers finished the study ({done} of {target} trials)"


def _stop_workers(processes: Sequence, interrupt: bool) -> list[int | None]:
    import signal

    if interrupt:
        for process in processes:
            if process.is_alive() and process.pid:
                with contextlib.suppress(OSError):
                    os.kill(process.pid, signal.SIGINT)
    for process in processes:
        process.join(60 if interrupt else None)
        if process.is_alive():
            process.terminate()
            process.join(10)
    return [p.exitcode for p in processes]


def _finish(study: Any, settings: Settings, record: Any, progress: _Progress) -> tuple[dict, dict, list[Path]]:
    """best.yaml, plots, tables; returns metrics, params and artifacts for the parent run."""
    from lightning_wd.apps.tuning import report
    from lightning_wd.apps.tuning.space import best_recipe

    names = settings.names
    trials = study.get_trials(deepcopy=False)
    metrics: dict[str, float] = {f"trials_{s.lower()}": sum(1 for t in trials if t.state.name == s)
                                 for s in ("COMPLETE", "PRUNED", "FAIL")}
    params: dict[str, Any] = {}
    artifacts: list[Path] = []
    out = settings.out
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if not complete:
        progress.message(f"study {settings.study_name}: no completed trial yet, so no best configuration")
        return metrics, params, artifacts
    if len(names) == 1:
        best = study.best_trial
        metrics["best_value"] = best.value
        metrics[f"best/{names[0]}"] = best.value
        summary = f"{names[0]}={best.value:.4g}"
    else:
        rows = report.pareto_rows(study, names)
        table = report.write_pareto(rows, out / "pareto.csv")
        artifacts.append(out / "pareto.csv")
        progress.message(f"Pareto front of study {settings.study_name} ({len(rows)} trial(s)):\n{table}")
        best = next(t for t in study.best_trials if t.number == rows[0]["trial"])
        metrics["pareto_size"] = len(rows)
        for name, value in zip(names, best.values):
            metrics[f"best/{name}"] = value
        summary = " ".join(f"{n}={v:.4g}" for n, v in zip(names, best.values))
    params.update({f"best.{k}": v for k, v in best.params.items()})
    params["best.trial"] = best.number
    best_path = (out / "best.yaml").resolve()
    command = " ".join(["lightning-wd fit --config", shlex.quote(str(best_path)),
                        *map(shlex.quote, settings.overrides)])
    header = [f"best trial {best.number} of study {settings.study_name} ({summary}), "
              f"from {settings.recipe_path or 'a recipe dict'}",
              f"run it as is: cd {shlex.quote(os.getcwd())} && {command}",
              "(the folder the study ran in, for the recipe's relative paths; the MLflow store below is absolute)"]
    tau = best.params.get("timescale_epochs", settings.space.fixed.get("timescale_epochs"))
    if tau:
        header += report.transfer_rule(float(tau), best.user_attrs.get("timescale/lr"),
                                       best.user_attrs.get("timescale/steps_per_epoch"))
    recipe = best_recipe(settings.recipe, settings.space, best.params)
    if redact(record.uri) == record.uri:  # the study's own store (absolute), wherever the fit is started
        recipe["tracking_uri"] = record.uri
    recipe.setdefault("experiment", settings.experiment)
    report.write_best(best_path, recipe, header)
    artifacts.append(best_path)
    artifacts += report.plot_study(study, out, names, settings.space.names)
    with contextlib.suppress(Exception):
        study.trials_dataframe().to_csv(out / "trials.csv", index=False)
        artifacts.append(out / "trials.csv")
    progress.message(f"best trial {best.number}: {report.format_params(best.params)} {summary}; fit it: {command}")
    return metrics, params, artifacts


def tune(config: str | os.PathLike | Mapping | Settings, n_trials: int | None = None, **options: Any) -> Any:
    """Run or resume the Optuna study over the weight decay of a recipe; returns the ``optuna.Study``.

    Every trial is an ordinary fit of the recipe through the recipe runner (as ``lightning-wd fit``), with
    the sampled decay set on its WeightDecay callback, logged to an MLflow child run of the study's parent
    run. Options left out come from the recipe's ``tune:`` section, else the defaults.

    Args:
        config: the recipe (a YAML path, the name of a shipped recipe, or a dict), or :class:`Settings`
            already resolved (then without other arguments).
        n_trials: the study's target number of finished (COMPLETE + PRUNED) trials.
        options: the other settings by name (``sampler="random"``, ``overrides=["--trainer.max_epochs", "3"]``,
            ``workers=2``, ...): the attributes of :class:`~lightning_wd.apps.tuning.settings.Settings`.

    Returns:
        The study.

    Raises:
        TypeError: an unknown option, or options given beside :class:`Settings`.
        TuneError: invalid arguments, recipe, space, or storage (``lightning-wd tune`` exits 2).
        KeyboardInterrupt: Ctrl-C; finished trials are kept, the interrupted trial is FAIL, every MLflow run
            of this invocation is ended (KILLED).
    """
    from lightning_wd.apps.tuning.objective import follow_trial

    if follow_trial():  # a rank that strategy ddp re-ran (this script) for one trial: its fit is done
        raise SystemExit(0)
    if isinstance(config, Settings):
        if n_trials is not None or options:
            raise TypeError("tune(settings) takes no other arguments: use settings.replace(...)")
        return _run(config)
    return _run(Settings.resolve(config, n_trials=n_trials, **options))


IDENTITY_ATTR = "settings"


def _check_identity(study: Any, settings: Settings) -> None:
    """Remember the study's settings (:meth:`Settings.identity`); refuse to resume it with other ones.

    Raises:
        TuneError: one line naming the differences (``trainer.max_epochs: 2 -> 15``) and ``--study-name``.
    """
    identity = settings.identity()
    stored = study.user_attrs.get(IDENTITY_ATTR)
    if stored is None:
        study.set_user_attr(IDENTITY_ATTR, identity)
        return
    changed = [k for k in sorted(set(stored) | set(identity)) if stored.get(k) != identity.get(k)]
    if not changed:
        return
    shown = "; ".join(f"{k.removeprefix('recipe.')}: {stored.get(k, '(unset)')} -> {identity.get(k, '(unset)')}"
                      for k in changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
    raise TuneError(f"study {settings.study_name!r} was run with other settings ({shown}); resume it with its "
                    "own settings, or start another study with --study-name NAME")


def _run(settings: Settings, worker: int = 0, parent_run_id: str | None = None) -> Any:
    """The study of ``settings``, in the invoking process (``worker`` 0) or in worker process ``worker``."""
    import optuna

    from lightning_wd.apps.tuning.objective import NonFiniteTrial, Objective
    from lightning_wd.apps.tuning.record import StudyRecord, checked_tracking_uri

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one summary line per trial instead
    # MLFlowLogger calls mlflow.set_tracking_uri, which also sets MLFLOW_TRACKING_URI: undo it when done
    tracking_env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        grid = settings.sampler == "grid"
        objective = Objective(settings, worker=worker)
        if worker == 0:
            objective.check()  # recipe and overrides: fail before any study or run is created
        # every argument is checked before anything is created: the tracking store, then the study's storage,
        # then the MLflow experiment and parent run
        tracking_uri = checked_tracking_uri(settings.tracking_uri) if worker == 0 else settings.tracking_uri
        the_storage = storage_mod.open_storage(settings.storage, settings.heartbeat_interval,
                                               settings.grace_period, tracking_uri)
        record = objective.record = StudyRecord(
            tracking_uri, settings.experiment, settings.study_name, parent_run_id, checked=worker == 0,
            scheme=settings.space.schemes[0], seed=settings.recipe.get("seed_everything", settings.seed))
        study = optuna.create_study(
            study_name=settings.study_name, storage=the_storage, sampler=make_sampler(settings, worker),
            pruner=make_pruner(settings), directions=settings.directions, load_if_exists=True,
        )
        wanted = [d.upper() for d in settings.directions]
        if [d.name for d in study.directions] != wanted:
            raise TuneError(f"study {settings.study_name!r} exists with directions "
                            f"{[d.name.lower() for d in study.directions]}, not {settings.directions}: "
                            "choose another --study-name")
        if worker == 0:
            _check_identity(study, settings)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(settings.names)
            study.set_user_attr("recipe", str(settings.recipe_path or "(dict)"))
            study.set_user_attr("space", settings.space.describe())
        _warn_shared_sqlite(study, settings)
        target = _target(settings)
        counts = storage_mod.counts(study)
        done = counts.get("COMPLETE", 0) + counts.get("PRUNED", 0)
        bar = _Progress(target, done, settings.study_name, settings.progress and worker == 0, settings.names)
        objective.on_trial_start = bar.started
        if worker == 0:
            note = f" (grid of {target} points)" if grid and target < settings.n_trials else ""
            bar.message(f"study {settings.study_name}: {done} of {target} trials finished{note}"
                        + (f", {counts.get('FAIL', 0)} failed" if counts.get("FAIL") else "")
                        + f"; storage {redact(settings.storage)}")
        record.start(settings.describe(), done=done)
        processes: list = []
        try:
            failure = None
            if settings.workers > 1 and worker == 0:  # this process supervises, the workers run trials
                storage_mod.fail_stale(study)
                if _finished(study) < target:  # nothing to run: no worker processes to start (seconds each)
                    processes = _spawn(settings.replace(tracking_uri=record.uri), record.parent_run_id)
                    failure = _supervise(study, processes, bar, target)
            else:
                _loop(study, objective, settings, target, bar, catch=(NonFiniteTrial,))
            metrics, params, artifacts = ({}, {}, []) if worker else _finish(study, settings, record, bar)
            if failure is not None:
                print(f"lightning-wd tune: warning: {failure}", file=sys.stderr)
                params["workers_failed"] = failure
        except KeyboardInterrupt:
            _stop_workers(processes, interrupt=True)
            bar.close()
            record.finish("KILLED")
            raise
        except BaseException:
            _stop_workers(processes, interrupt=True)
            bar.close()
            record.finish("FAILED")
            raise
        bar.close()
        record.finish("FINISHED", metrics, params, artifacts)
        return study
    finally:
        optuna.logging.set_verbosity(verbosity)
        if os.environ.get("MLFLOW_TRACKING_URI") != tracking_env and "mlflow" in sys.modules:
            sys.modules["mlflow"].set_tracking_uri(tracking_env)
