"""``tune`` as a user meets it: a study remembers its settings, refuses objectives that cannot vary,
and plots importances for the right direction."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightning_wd.apps.errors import TuneError
from lightning_wd.apps.tuning import Settings, main

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from tuning_toy import write_recipe  # noqa: E402

SPACE = {"strength": {"low": 1e-5, "high": 1e-2}}


def test_sparsity_under_a_scheme_without_exact_zeros_is_refused_before_any_trial(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, scheme="decoupled", tune={"space": SPACE})
    assert main(["--config", str(path), "--n-trials", "2", "--objectives", "accuracy,sparsity"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scheme decoupled never sets weights to exactly 0" in err[0]
    assert "l1" in err[0] and "group_lasso" in err[0]
    assert not (tmp_path / "mlruns").exists()  # no study, no run
    # the scheme the trials run with counts, also when an override sets it
    Settings.resolve(path, n_trials=2, objectives="accuracy,sparsity",
                     overrides=["--trainer.callbacks.init_args.scheme", "l1"])
    Settings.resolve(write_recipe(tmp_path, "l1.yaml", scheme="l1"), n_trials=2, objectives="accuracy,sparsity")
    with pytest.raises(TuneError, match="scheme l2 never"):
        Settings.resolve(path, n_trials=2, objectives="sparsity", overrides=["--trainer.callbacks.init_args.scheme=l2"])


def test_identity_holds_what_makes_trials_comparable(tmp_path):
    path = write_recipe(tmp_path, tune={"space": SPACE})
    a = Settings.resolve(path, n_trials=2).identity()
    assert a["recipe.trainer.max_epochs"] == "2" and a["space.strength"] == "log[1e-05, 0.01]"
    # n_trials, sampler, workers, where results go: not part of it; the same epochs written differently: equal
    assert Settings.resolve(path, n_trials=9, sampler="random", overrides=["--trainer.max_epochs=2"]).identity() == a
    b = Settings.resolve(path, n_trials=2, overrides=["--trainer.max_epochs", "15"]).identity()
    assert {k for k in a if a[k] != b.get(k)} == {"recipe.trainer.max_epochs"}


@pytest.mark.slow
def test_resuming_with_other_settings_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, max_epochs=1, tune={"space": SPACE})
    base = ["--config", str(path), "--n-trials", "1", "--no-progress", "--trainer.limit_train_batches", "2"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--trainer.max_epochs", "15"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "study 'toy' was run with other settings (trainer.max_epochs: 1 -> 15)" in err[0]
    assert "--study-name" in err[0]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    parents = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 "tags.`lightning_wd.kind` = 'study'")
    assert len(parents) == 1  # the refused invocation made no parent run
    assert main([*base, "--trainer.max_epochs", "15", "--study-name", "toy-15"]) == 0  # another study


def test_param_importances_of_a_maximised_objective_rank_high_values_best(tmp_path, monkeypatch):
    import optuna
    from optuna.visualization import matplotlib as vis

    from lightning_wd.apps.tuning import report

    study = optuna.create_study(directions=["maximize", "minimize"])
    for i in range(6):
        trial = optuna.trial.create_trial(
            params={"strength": 10.0 ** -i, "l1_ratio": i / 10},
            distributions={"strength": optuna.distributions.FloatDistribution(1e-6, 1, log=True),
                           "l1_ratio": optuna.distributions.FloatDistribution(0, 1)},
            values=[0.5 + i / 20, 1.0 - i / 10])
        study.add_trial(trial)
    seen = {}
    real = vis.plot_param_importances

    def spy(study_, **kwargs):
        seen.update(kwargs)
        return real(study_, **kwargs)

    monkeypatch.setattr(vis, "plot_param_importances", spy)
    written = report.plot_study(study, tmp_path, ["val/acc", "wd/nonzero_fraction"], ["strength", "l1_ratio"])
    assert tmp_path / "param_importances.png" in written
    best = max(study.trials, key=lambda t: t.values[0])
    assert seen["target"](best) == -best.values[0]  # the evaluator's "low is best" is then the highest accuracy
    assert seen["target_name"] == "val/acc"


def test_tune_takes_lightningclis_spellings_and_refuses_options_it_would_ignore(tmp_path, monkeypatch, capsys):
    from lightning_wd.apps.tuning.command import build_parser

    args, extra = build_parser().parse_known_args(["-c", "x.yaml", "--tracking_uri", "sqlite:////a.db",
                                                   "--n_trials", "3", "--study-name", "s"])
    assert (args.tracking_uri, args.n_trials, args.study_name, extra) == ("sqlite:////a.db", 3, "s", [])
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, tune={"space": SPACE})
    assert main(["--config", str(path), "--n-trials", "1", "--run_name", "mine"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized argument --run_name" in err[0]
    assert not (tmp_path / "mlruns").exists()


def test_optimization_history_has_whole_trial_ticks_and_names_the_study(tmp_path, monkeypatch):
    import matplotlib.figure
    import optuna

    from lightning_wd.apps.tuning import report

    study = optuna.create_study(study_name="ticks", direction="maximize")
    for i in range(4):
        study.add_trial(optuna.trial.create_trial(
            params={"strength": 10.0 ** -i},
            distributions={"strength": optuna.distributions.FloatDistribution(1e-6, 1, log=True)}, value=0.5 + i / 20))
    saved = {}
    real = matplotlib.figure.Figure.savefig

    def spy(figure, path, *args, **kwargs):
        figure.canvas.draw()
        saved[Path(path).name] = (figure.axes[0].get_title(), list(figure.axes[0].get_xticks()),
                                  figure.axes[0].get_xlim())
        return real(figure, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    report.plot_study(study, tmp_path, ["val/acc"], ["strength"])
    title, ticks, (low, high) = saved["optimization_history.png"]
    assert title == "Optimization history · study ticks"
    shown = [t for t in ticks if low <= t <= high]
    assert shown and all(float(t).is_integer() for t in shown), shown  # trial 1.5 does not exist
