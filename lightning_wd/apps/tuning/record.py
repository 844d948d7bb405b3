"""The MLflow record of a study: one parent run per invocation, one child run per trial.

* Parent run (``lightning_wd.kind=study``): params ``space.*``, ``sampler``, ``pruner``, ``recipe``,
  ``n_trials``, ``metric``, ...; at the end metrics ``best_value`` (or one per objective), the counts of
  trials per state, params ``best.*``, and artifacts (plots, ``best.yaml``, ``trials.csv``, Pareto table).
* Child run per trial (tag ``mlflow.parentRunId``): the trial's Lightning curves and ``wd/*`` metrics
  (its ``MLFlowLogger``), params ``tune.<param>``, tags ``optuna.trial_number``, ``optuna.state`` and
  ``fail_reason``, metric ``optuna.value`` (``optuna.values.<i>`` for several objectives).

End states: a COMPLETE trial's run is FINISHED; a PRUNED trial's run is FINISHED too, with the tag
``optuna.state=PRUNED`` (it ended as asked: stopping early is the pruner's decision, not a failure); a
failed trial's run is FAILED (tag ``fail_reason``); an interrupted trial's run (Ctrl-C) is KILLED, and so is
the parent of an interrupted study. A trial whose worker was killed gets its run ended KILLED by the worker
that finds it stale. No run is left RUNNING by a clean or interrupted study; the parent run of an invocation
that was killed (SIGKILL, a lost machine) is ended KILLED by the next invocation of the same study on the same
host (the parent's tags ``lightning_wd.host`` and ``lightning_wd.process`` name its owner; a process that no
longer runs is stale), with the tag ``lightning_wd.end_reason``.
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["StudyRecord", "checked_tracking_uri", "end_stale_run", "process_tag", "process_alive"]

KIND_TAG = "lightning_wd.kind"
PARENT_TAG = "mlflow.parentRunId"
HOST_TAG = "lightning_wd.host"
PROCESS_TAG = "lightning_wd.process"
_PARAM_LIMIT = 500


def _text(value: Any) -> str:
    from lightning_wd.tracking.redaction import redact_text

    return redact_text(" ".join(str(value).split()))[:_PARAM_LIMIT]


def _warn(what: str, error: BaseException) -> None:
    warnings.warn(f"lightning_wd tune: could not {what} in MLflow: {_text(error)[:200]}", UserWarning, stacklevel=3)


def end_stale_run(tracking_uri: str, run_id: str, trial_number: int) -> None:
    """End the run of a trial whose worker stopped sending heartbeats as KILLED (best effort)."""
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "optuna.state", "FAIL")
            client.set_tag(run_id, "fail_reason", f"trial {trial_number}: its worker stopped sending heartbeats")
            client.set_terminated(run_id, "KILLED")
    except Exception as error:  # the study goes on without this bookkeeping
        _warn(f"end the stale run {run_id}", error)


def _start_ticks(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot ('' where /proc cannot tell)."""
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: PTH123, SIM115
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def process_tag(pid: int | None = None) -> str:
    """``<pid>:<start ticks>`` of this (or ``pid``'s) process: a pid reused later does not match it."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_ticks(pid)}"


def process_alive(tag: str) -> bool:
    """Whether the process named by :func:`process_tag`'s ``tag`` still runs (on this host).

    Example:
        >>> process_alive(process_tag()), process_alive("999999999:1")
        (True, False)
    """
    pid, _, ticks = tag.partition(":")
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True  # another user's process, or a tag we cannot read: not ours to end
    return not ticks or _start_ticks(int(pid)) in ("", ticks)


def checked_tracking_uri(tracking_uri: str | None) -> str:
    """The study's MLflow store as an absolute URI, checked (reachable, MLflow, known scheme); absolute because
    MLflow caches stores by URI, so a relative one would follow the first working directory.

    Raises:
        TuneError: the store cannot be used (one line).

    Example:
        >>> checked_tracking_uri("bogus://x")
        Traceback (most recent call last):
        ...
        lightning_wd.apps.errors.TuneError: --tracking-uri: ...
    """
    from lightning_wd.apps.errors import TuneError
    from lightning_wd.tracking import uris

    uri = uris.absolute_sqlite_uri(uris.resolve_tracking_uri(tracking_uri))
    try:
        uris.check_tracking_uri(uri)
    except uris.TrackingUnavailable as error:
        raise TuneError(f"--tracking-uri: {error}") from None
    return uri


class StudyRecord:
    """Parent and child MLflow runs of one invocation of a study.

    Args:
        tracking_uri: MLflow tracking URI (default: ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns/mlflow.db``).
        experiment: MLflow experiment name (created if missing).
        study_name: the Optuna study.
        parent_run_id: an existing parent run (workers spawned by ``--workers``): not created, not ended here.
        scheme: the recipe's scheme, in the trial run names when the space does not sample one.
        seed: the trials' ``seed_everything``, in the trial run names.
        checked: ``tracking_uri`` is already the result of :func:`checked_tracking_uri` (not checked again).

    Raises:
        TuneError: the tracking store cannot be used.
    """

    def __init__(self, tracking_uri: str | None, experiment: str, study_name: str,
                 parent_run_id: str | None = None, scheme: str | None = None, seed: Any = None,
                 checked: bool = False) -> None:
        from mlflow import MlflowClient

        from lightning_wd.apps.errors import TuneError
        from lightning_wd.tracking import uris
        from lightning_wd.tracking.store import prepare_store

        self.uri = tracking_uri if checked and tracking_uri else checked_tracking_uri(tracking_uri)
        try:
            prepare_store(self.uri)  # a fresh SQLite store: created and migrated once, under a file lock
        except uris.TrackingUnavailable as error:
            raise TuneError(str(error)) from None
        self.client = MlflowClient(self.uri)
        self.experiment = experiment
        self.study_name = study_name
        self.experiment_id = self._experiment_id(experiment)
        self.parent_run_id = parent_run_id
        self.owns_parent = parent_run_id is None
        self.scheme, self.seed = scheme, seed

    def trial_run_name(self, number: int, params: Mapping[str, Any]) -> str:
        """``trial 3 · l1 λ=1e-2 seed 0``: what the trial is, not a name MLflow draws."""
        from lightning_wd.tracking.params import setting_label

        return f"trial {number} · {setting_label(params.get('scheme', self.scheme), params.get('strength'), self.seed)}"

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage != "deleted":
            return found.experiment_id
        from lightning_wd.tracking.logger import artifact_location

        location = artifact_location(self.uri)
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # created meanwhile by another worker
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    # -- parent ----------------------------------------------------------------------------------------------
    def start(self, params: Mapping[str, Any], tags: Mapping[str, str] | None = None, done: int = 0) -> str:
        """Create the parent run (if this invocation owns it) and log ``params``; returns its id.

        Its name is ``study NAME``, or ``study NAME (resumed at trial k)`` when ``done`` trials were finished.
        """
        if self.owns_parent:
            self.end_stale_parents()
            name = f"study {self.study_name}" + (f" (resumed at trial {done})" if done else "")
            run = self.client.create_run(
                self.experiment_id, run_name=name,
                tags={KIND_TAG: "study", "optuna.study_name": self.study_name, HOST_TAG: socket.gethostname(),
                      PROCESS_TAG: process_tag(), **dict(tags or {})},
            )
            self.parent_run_id = run.info.run_id
            from mlflow.entities import Param

            items = [Param(str(k), _text(v)) for k, v in params.items() if v is not None]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.parent_run_id, params=items[i:i + 100])
        return self.parent_run_id

    def end_stale_parents(self) -> list[str]:
        """End KILLED the RUNNING parent runs of this study whose invoking process (on this host) is gone;
        their ids. Best effort: a store that cannot be searched only warns."""
        ended = []
        try:
            runs = self.client.search_runs(
                [self.experiment_id], max_results=200,
                filter_string=f"tags.`{KIND_TAG}` = 'study' AND attributes.status = 'RUNNING'",
            )
            host = socket.gethostname()
            for run in runs:
                tags = run.data.tags
                ours = tags.get("optuna.study_name") == self.study_name and tags.get(HOST_TAG) == host
                if not ours or not tags.get(PROCESS_TAG) or process_alive(tags[PROCESS_TAG]):
                    continue
                self.client.set_tag(run.info.run_id, "lightning_wd.end_reason",
                                    f"its process {tags[PROCESS_TAG].split(':')[0]} on {host} ended without closing "
                                    "it (killed); closed by the next invocation of the study")
                self.client.set_terminated(run.info.run_id, "KILLED")
                ended.append(run.info.run_id)
        except Exception as error:  # the study goes on without this bookkeeping
            _warn("close the stale parent runs of the study", error)
        return ended

    def finish(self, status: str, metrics: Mapping[str, float] | None = None,
               params: Mapping[str, Any] | None = None, artifacts: Sequence[Path] = ()) -> None:
        """Log the study's results and end the parent run with ``status`` (FINISHED, FAILED, KILLED)."""
        if not self.owns_parent or self.parent_run_id is None:
            return
        run_id = self.parent_run_id
        try:
            from mlflow.entities import Metric, Param

            now = int(time.time() * 1000)
            batch_metrics = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()
                             if v is not None and math.isfinite(float(v))]
            batch_params = [Param(str(k), _text(v)) for k, v in (params or {}).items()]
            if batch_metrics or batch_params:
                self.client.log_batch(run_id, metrics=batch_metrics, params=batch_params)
            from lightning_wd.tracking.artifacts import log_private_artifacts

            log_private_artifacts(self.client, run_id, [Path(p) for p in artifacts])
        except Exception as error:
            _warn("log the study results", error)
        finally:
            self.client.set_terminated(run_id, status)

    # -- children --------------------------------------------------------------------------------------------
    def start_trial(self, number: int, params: Mapping[str, Any], worker: int = 0) -> str:
        """Create the child run of trial ``number``; returns its id."""
        run = self.client.create_run(
            self.experiment_id, run_name=self.trial_run_name(number, params),
            tags={PARENT_TAG: self.parent_run_id, KIND_TAG: "trial", "optuna.study_name": self.study_name,
                  "optuna.trial_number": str(number), "optuna.state": "RUNNING", "optuna.worker": str(worker)},
        )
        from mlflow.entities import Param

        items = [Param(f"tune.{k}", _text(v)) for k, v in params.items()]
        items.append(Param("optuna.trial_number", str(number)))
        self.client.log_batch(run.info.run_id, params=items)
        return run.info.run_id

    def trial_logger(self, run_id: str) -> Any:
        """The Lightning ``MLFlowLogger`` writing into the child run ``run_id``."""
        from lightning_wd import tracking

        return tracking.mlflow_logger(experiment_name=self.experiment, tracking_uri=self.uri, run_id=run_id)

    def end_trial(self, run_id: str, state: str, values: Sequence[float] | None, reason: str | None,
                  duration: float, extra: Mapping[str, float] | None = None) -> None:
        """Tag the trial's outcome, log its value(s), and end its run (see the module docstring)."""
        status = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "KILLED": "KILLED"}.get(state, "FAILED")
        try:
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            tags = [RunTag("optuna.state", "FAIL" if state == "KILLED" else state)]
            if reason:
                tags.append(RunTag("fail_reason", _text(reason)))
            metrics = [Metric("optuna.duration_s", float(duration), now, 0)]
            values = list(values or [])
            names = ["optuna.value"] if len(values) == 1 else [f"optuna.values.{i}" for i in range(len(values))]
            metrics += [Metric(n, float(v), now, 0) for n, v in zip(names, values) if math.isfinite(float(v))]
            metrics += [Metric(k, float(v), now, 0) for k, v in (extra or {}).items()
                        if isinstance(v, (int, float)) and math.isfinite(float(v))]
            self.client.log_batch(run_id, metrics=metrics, tags=tags)
        except Exception as error:
            _warn(f"record the end of run {run_id}", error)
        finally:
            self.client.set_terminated(run_id, status)
