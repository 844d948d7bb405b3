"""``lightning-wd tune`` end to end on a tiny recipe (SQLite study, SQLite MLflow store, CPU, a few batches)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_wd.apps.tuning import main, tune

TESTS = Path(__file__).parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
from tuning_toy import write_recipe  # noqa: E402

pytestmark = pytest.mark.slow
SPACE = {"strength": {"low": 1e-5, "high": 1e-2}}


def client():
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}")  # absolute: MLflow caches stores


def runs(c, **tags):
    experiments = [e.experiment_id for e in c.search_experiments()]
    found = c.search_runs(experiments, max_results=1000, order_by=["attributes.start_time ASC"])
    return [r for r in found if all(r.data.tags.get(k) == v for k, v in tags.items())]


def assert_no_run_left_running(c):
    assert [r.info.run_name for r in runs(c) if r.info.status == "RUNNING"] == []


def states(study):
    return [t.state.name for t in study.get_trials()]


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    """A two-trial study run once for the module: (folder, recipe path, study)."""
    folder = tmp_path_factory.mktemp("basic")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        path = write_recipe(folder, tune={"n_trials": 2, "space": SPACE})
        study = tune(str(path), seed=0, progress=False)
    return folder, path, study


def test_each_trial_is_a_child_run_of_the_study_run(basic, monkeypatch, tmp_path):
    folder, _, study = basic
    monkeypatch.chdir(folder)
    assert states(study) == ["COMPLETE", "COMPLETE"]
    c = client()
    parent = runs(c, **{"lightning_wd.kind": "study"})[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "study toy"
    assert parent.data.params["sampler"] == "tpe" and parent.data.params["space.strength"] == "log[1e-05, 0.01]"
    assert parent.data.metrics["best_value"] == study.best_value
    artifacts = {a.path for a in c.list_artifacts(parent.info.run_id)}
    assert {"best.yaml", "optimization_history.png", "slice_strength.png", "trials.csv"} <= artifacts
    children = runs(c, **{"mlflow.parentRunId": parent.info.run_id})
    assert sorted(r.data.tags["optuna.trial_number"] for r in children) == ["0", "1"]
    for run in children:
        trial = study.trials[int(run.data.tags["optuna.trial_number"])]
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"
        from lightning_wd.tracking.params import format_strength

        label = f"l2 λ={format_strength(trial.params['strength'])}"
        assert run.info.run_name == f"trial {trial.number} · {label} seed 0"  # what it is, not a drawn name
        assert run.data.tags["lightning_wd.setting"] == label and run.data.tags["optuna.study_name"] == "toy"
        assert float(run.data.params["tune.strength"]) == pytest.approx(trial.params["strength"])
        assert run.data.metrics["optuna.value"] == pytest.approx(trial.value)
        assert "wd/nonzero_fraction" in run.data.metrics and "wd.scheme" in run.data.params  # MLflowRecord
        assert len(c.get_metric_history(run.info.run_id, "val/acc")) == 2  # the Lightning curve, 2 epochs
        from lightning_wd.tracking.colours import trial_colour

        # its chart colour in the MLflow UI: its own, not the record's per-setting one (the trials' setting)
        assert run.data.tags["mlflow.runColor"] == trial_colour(trial.number)
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert list(trial.intermediate_values) == [0, 1]  # reported every validation
        # the runner logged the trial's resolved config (sampled strength, no tune: section) into its run
        config = yaml.safe_load(Path(c.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).read_text())
        assert config["trainer"]["callbacks"][0]["init_args"]["strength"] == pytest.approx(trial.params["strength"])
        assert "tune" not in config or config["tune"] is None
    assert len({r.data.tags["mlflow.runColor"] for r in children}) == 2  # told apart in the UI's charts
    assert_no_run_left_running(c)


def test_rerun_resumes_the_study_without_duplicating_trials(basic, monkeypatch, capsys):
    folder, path, _ = basic
    monkeypatch.chdir(folder)
    again = tune(str(path), seed=0, progress=False)  # target (2) reached: nothing to run
    assert len(again.trials) == 2
    assert "2 of 2 trials finished" in capsys.readouterr().out
    more = tune(str(path), n_trials=3, seed=0, progress=False)  # one missing trial
    assert [t.number for t in more.trials] == [0, 1, 2] and states(more) == ["COMPLETE"] * 3
    c = client()
    parents = runs(c, **{"lightning_wd.kind": "study"})
    children = [len(runs(c, **{"mlflow.parentRunId": p.info.run_id})) for p in parents]
    assert children[-2:] == [0, 1] and all(p.info.status == "FINISHED" for p in parents)
    assert [p.info.run_name for p in parents[-2:]] == ["study toy (resumed at trial 2)"] * 2
    assert_no_run_left_running(c)


def test_best_yaml_is_a_recipe_that_fit_runs_as_is(basic, tmp_path):
    folder, _, study = basic
    best = folder / "mlruns" / "studies" / "toy" / "best.yaml"
    text = best.read_text()
    recipe = yaml.safe_load(text)
    assert "tune" not in recipe
    decay = recipe["trainer"]["callbacks"][0]["init_args"]
    assert decay["strength"] == study.best_params["strength"] and decay["scheme"] == "l2"
    store = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    assert recipe["tracking_uri"] == store  # absolute: the study's store, from any folder
    hint = next(line for line in text.splitlines() if line.startswith("# run it as is: "))
    assert hint == f"# run it as is: cd {folder} && lightning-wd fit --config {best}"
    from mlflow import MlflowClient

    store_client = MlflowClient(store)
    before = len(runs(store_client))
    elsewhere = tmp_path / "elsewhere"  # e.g. the project root: best.yaml is not there, nor is the store
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{REPO}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = hint.split(" && ", 1)[1].replace("lightning-wd", f"{sys.executable} -m lightning_wd", 1)
    result = subprocess.run([*command.split(), "--trainer.max_epochs", "1"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(runs(store_client)) == before + 1 and not (elsewhere / "mlruns").exists()


def test_pruned_trial_stops_early_and_its_run_is_not_failed(tmp_path, monkeypatch):
    import optuna

    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, max_epochs=3, tune={"space": SPACE})
    # val/acc <= 1 < 1.1: the pruner prunes at the first report, deterministically
    study = tune(str(path), n_trials=1, pruner=optuna.pruners.ThresholdPruner(lower=1.1), progress=False)
    trial = study.trials[0]
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [0]
    assert trial.user_attrs["pruned_at_round"] == 0
    c = client()
    run = runs(c, **{"optuna.trial_number": "0"})[0]
    assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "PRUNED"
    # what the MLflow UI's search box does: PRUNED trials of a study by their tags
    found = c.search_runs([run.info.experiment_id],
                          "tags.`optuna.state` = 'PRUNED' and tags.`optuna.study_name` = 'toy'")
    assert [r.info.run_id for r in found] == [run.info.run_id]
    assert len(c.get_metric_history(run.info.run_id, "val/acc")) == 1  # stopped after epoch 0 of 3
    assert_no_run_left_running(c)


def test_nan_loss_fails_the_trial_with_its_reason_and_the_study_goes_on(tmp_path, monkeypatch, capsys):
    import optuna

    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, max_epochs=2, tune={"space": {"strength": {"low": 1e-5, "high": 1e6}}})
    Path("mlruns").mkdir()
    study = optuna.create_study(study_name="toy", storage="sqlite:///mlruns/optuna.db", direction="maximize")
    study.enqueue_trial({"strength": 1e6})  # coupled L2 with lr 0.5: |1 - lr * strength| >> 1, diverges
    study.enqueue_trial({"strength": 1e-3})
    study = tune(str(path), n_trials=1, progress=False)
    assert states(study) == ["FAIL", "COMPLETE"]
    reason = study.trials[0].user_attrs["fail_reason"]
    assert reason.startswith("non-finite training loss") and "FAIL" in capsys.readouterr().out
    c = client()
    run = runs(c, **{"optuna.trial_number": "0"})[0]
    assert run.info.status == "FAILED" and run.data.tags["fail_reason"] == reason
    steps = [m.step for m in c.get_metric_history(run.info.run_id, "val/acc")]
    assert max(steps) < 7  # stopped at the first non-finite loss, before the end (step 7 of 8)
    assert_no_run_left_running(c)


def test_ctrl_c_keeps_finished_trials_and_ends_every_run_killed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, max_epochs=1, tune={"space": SPACE})
    handler = signal.getsignal(signal.SIGINT)
    interrupt = "--trainer.callbacks+=tuning_toy.RaiseInterrupt"
    assert main(["--config", str(path), "--n-trials", "1", "--no-progress", interrupt]) == 0
    monkeypatch.setenv("TOY_INTERRUPT", "1")
    code = main(["--config", str(path), "--n-trials", "2", "--no-progress", interrupt])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning's SIG_IGN undone
    import optuna

    study = optuna.load_study(study_name="toy", storage="sqlite:///mlruns/optuna.db")
    assert states(study) == ["COMPLETE", "FAIL"]
    assert study.trials[1].user_attrs["fail_reason"].startswith("interrupted")
    c = client()
    parents = runs(c, **{"lightning_wd.kind": "study"})
    assert [p.info.status for p in parents] == ["FINISHED", "KILLED"]
    run = runs(c, **{"optuna.trial_number": "1"})[0]
    assert run.info.status == "KILLED" and run.data.tags["mlflow.parentRunId"] == parents[1].info.run_id
    assert_no_run_left_running(c)


def test_two_objectives_write_the_pareto_front(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, scheme="l1", max_epochs=1, tune={"space": {"strength": {"low": 1e-4, "high": 1.0}}})
    study = tune(str(path), n_trials=3, objectives="accuracy,sparsity", seed=0, progress=False)
    assert study.study_name == "toy-accuracy-sparsity" and len(study.directions) == 2
    assert all(len(t.values) == 2 for t in study.trials)
    out = tmp_path / "mlruns" / "studies" / "toy-accuracy-sparsity"
    table = (out / "pareto.csv").read_text().splitlines()
    assert table[0] == "trial,strength,val/acc,wd/nonzero_fraction" and len(table) == 1 + len(study.best_trials)
    assert (out / "pareto.png").stat().st_size > 1000 and (out / "best.yaml").exists()
    assert "Pareto front" in capsys.readouterr().out
    parent = runs(client(), **{"lightning_wd.kind": "study"})[0]
    assert {"pareto.csv", "pareto.png"} <= {a.path for a in client().list_artifacts(parent.info.run_id)}


def test_grid_sampler_runs_the_grid_once_on_a_journal_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, max_epochs=1, tune={"space": {"strength": {"low": 1e-4, "high": 1e-2, "points": 2}}})
    study = tune(str(path), n_trials=5, sampler="grid", pruner="none", storage="journal:studies/journal.log",
                 progress=False)  # 5 asked, the grid has 2 points
    assert sorted(t.params["strength"] for t in study.trials) == [1e-4, 1e-2]
    assert (tmp_path / "studies" / "journal.log").stat().st_size > 0
    assert (tmp_path / "studies" / "studies" / "toy" / "best.yaml").exists()  # out: next to the storage


@pytest.mark.skipif(os.environ.get("LIGHTNING_WD_DDP_TESTS") != "1",
                    reason="a trial on 2 spawned CPU ranks takes about a minute on 2 cores: LIGHTNING_WD_DDP_TESTS=1")
def test_ddp_spawn_trial_reports_from_rank_zero_and_is_pruned(tmp_path, monkeypatch):
    import optuna

    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, max_epochs=3, tune={"space": SPACE})
    study = tune(str(path), n_trials=1, pruner=optuna.pruners.ThresholdPruner(lower=1.1), progress=False,
                 overrides=["--trainer.strategy", "ddp_spawn", "--trainer.devices", "2"])
    trial = study.trials[0]
    # the ranks ran in spawned processes: the report, the decision and wd/* reached the study through the storage
    assert trial.state.name == "PRUNED" and list(trial.intermediate_values) == [0]
    assert trial.user_attrs["pruned_at_round"] == 0 and "wd/nonzero_fraction" in trial.user_attrs
    run = runs(client(), **{"optuna.trial_number": "0"})[0]
    assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "PRUNED"
