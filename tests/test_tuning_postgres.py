"""Several workers on one PostgreSQL study; a killed worker's trial is failed after the grace period and retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_wd.apps.tuning import tune

TESTS = Path(__file__).parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
from tuning_toy import write_recipe  # noqa: E402

pytestmark = [pytest.mark.server, pytest.mark.slow]
SPACE = {"strength": {"low": 1e-5, "high": 1e-2}}
ENV = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{REPO}"}


def command(path: Path, url: str, study: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lightning_wd", "tune", "--config", str(path), "--storage", url,
            "--study-name", study, "--no-progress", *extra]


def mlflow_runs(folder: Path):
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    return c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=1000)


def test_two_worker_processes_share_one_study(postgres_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, max_epochs=1, step_sleep=0.2, tune={"space": SPACE})
    # --workers 2: two spawned processes run trials concurrently, this one supervises and writes the results
    study = tune(str(path), n_trials=4, storage=postgres_url, study_name="shared", workers=2, progress=False)
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers)
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert 4 <= len(trials) <= 5  # the target; both workers may start the last trial
    runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("lightning_wd.kind") == "study"]
    children = [r for r in runs if r.data.tags.get("lightning_wd.kind") == "trial"]
    assert len(parents) == 1 and parents[0].data.metrics["trials_complete"] == len(trials)
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == sorted(numbers)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert {r.data.tags["optuna.worker"] for r in children} == {"1", "2"}  # both worked
    assert all(r.info.status == "FINISHED" for r in runs)
    assert (tmp_path / "mlruns" / "studies" / "shared" / "best.yaml").exists()


def test_killed_worker_trial_fails_after_the_grace_period_and_is_retried_once(postgres_url, tmp_path,
                                                                               monkeypatch):
    import optuna

    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, max_epochs=3, step_sleep=0.5, tune={"space": SPACE})  # ~6 s per trial
    beat = ["--heartbeat-interval", "1", "--grace-period", "3"]
    worker = subprocess.Popen(command(path, postgres_url, "killed", "--n-trials", "1", *beat), cwd=tmp_path,
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = optuna.storages.RDBStorage(postgres_url)
    running = []
    deadline = time.monotonic() + 240
    while not running and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name="killed", storage=storage)
        except KeyError:  # not created yet
            continue
        running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert running, "the worker never started a trial"
    time.sleep(1.5)  # mid-trial, heartbeats recorded
    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    killed = optuna.load_study(study_name="killed", storage=storage).trials[0]  # read now: params sampled
    assert killed.number == running[0].number and killed.state.name == "RUNNING" and killed.params
    time.sleep(3.5)  # the grace period passes
    study = tune(str(path), n_trials=1, storage=postgres_url, study_name="killed", heartbeat_interval=1,
                 grace_period=3, progress=False)  # the same settings: a study refuses to resume with others
    first, retry = study.trials
    assert (first.number, first.state.name) == (killed.number, "FAIL")
    assert retry.state.name == "COMPLETE" and retry.params == killed.params
    assert retry.system_attrs["failed_trial"] == killed.number and retry.system_attrs["retry_history"] == [0]
    runs = {r.data.tags.get("optuna.trial_number"): r for r in mlflow_runs(tmp_path)
            if r.data.tags.get("lightning_wd.kind") == "trial"}
    assert runs["0"].info.status == "KILLED" and "heartbeats" in runs["0"].data.tags["fail_reason"]
    assert runs["1"].info.status == "FINISHED"
    # the killed invocation's parent run is closed by this one (KILLED, with the reason); nothing stays RUNNING
    parents = sorted((r for r in mlflow_runs(tmp_path) if r.data.tags.get("lightning_wd.kind") == "study"),
                     key=lambda r: r.info.start_time)
    assert [r.info.status for r in parents] == ["KILLED", "FINISHED"]
    assert "ended without closing it (killed)" in parents[0].data.tags["lightning_wd.end_reason"]
    assert not [r for r in mlflow_runs(tmp_path) if r.info.status == "RUNNING"]
