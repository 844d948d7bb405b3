"""Fast tests of ``lightning-wd tune``: search space, per-trial recipes, settings, argument errors (no training)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_wd.apps.tuning import FloatRange, SearchSpace, Settings, TuneError, main
from lightning_wd.apps.tuning.recipe import trial_recipe, wd_init_args
from lightning_wd.apps.tuning.space import best_recipe
from lightning_wd.core.schemes import SCHEMES

TESTS = Path(__file__).parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))


def recipe(scheme="decoupled", schedule=None, tune=None):
    args = {"scheme": scheme, "strength": 0.1}
    if schedule:
        args["schedule"] = schedule
    out = {"trainer": {"max_epochs": 1, "callbacks": [{"class_path": "lightning_wd.WeightDecay", "init_args": args}]},
           "model": {"class_path": "x.Model"}}
    if tune is not None:
        out["tune"] = tune
    return out


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_default_strength_range_is_the_schemes_declaration(scheme):
    space = SearchSpace.from_recipe(recipe(scheme))
    assert space.names == ["strength"]
    r = space.strength_range(scheme)
    assert (r.low, r.high, r.log) == (*SCHEMES[scheme].search_range, True)
    assert SCHEMES["l2"].search_range == (1e-6, 1e-2) and SCHEMES["decoupled"].search_range == (1e-6, 1.0)


def test_grid_defaults_to_16_log_spaced_points_within_the_range():
    space = SearchSpace.from_recipe(recipe("l1"))
    values = space.grid()["strength"]
    assert len(values) == 16 and values[0] == 1e-6 and values[-1] == 1e-2
    ratios = [b / a for a, b in zip(values, values[1:])]
    assert max(ratios) / min(ratios) < 1.01  # evenly spaced in log
    assert FloatRange(0.1, 0.9, log=False, points=5).grid_values() == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert SearchSpace.from_recipe(recipe(), {"strength": [1e-3, 1e-1]}).grid() == {"strength": [1e-3, 1e-1]}


def test_categorical_scheme_samples_strength_over_each_schemes_range():
    import optuna

    space = SearchSpace.from_recipe(recipe(), {"scheme": ["decoupled", "l2", "elastic_net"], "l1_ratio": {}})
    assert space.names == ["scheme", "strength", "l1_ratio"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        params = space.suggest(trial)
        low, high = SCHEMES[params["scheme"]].search_range
        assert low <= params["strength"] <= high
        assert ("l1_ratio" in params) == (params["scheme"] == "elastic_net")
        study.tell(trial, 0.0)
    assert space.describe()["strength"] == "per-scheme default range"
    with pytest.raises(TuneError, match="grid sampler needs an unconditional space"):
        space.grid()
    grid = SearchSpace.from_recipe(recipe(), {"scheme": ["decoupled", "l2"]}).grid()
    assert grid["scheme"] == ["decoupled", "l2"] and grid["strength"][-1] == 1.0  # the union range


def test_fixed_values_timescale_and_final_strength():
    space = SearchSpace.from_recipe(recipe("decoupled"), {"timescale_epochs": {"low": 5, "high": 50}, "scheme": "l2"})
    assert space.names == ["timescale_epochs"]
    assert space.wd_args({"timescale_epochs": 10.0}) == {"scheme": "l2", "timescale_epochs": 10.0, "strength": 0.0}
    space = SearchSpace.from_recipe(recipe(schedule="cosine"), {"strength": {}, "final_strength": {"high": 1e-3}})
    assert space.names == ["strength", "final_strength"]
    assert space.final_strength.high == 1e-3 and space.final_strength.low == 1e-6
    space = SearchSpace.from_recipe(recipe(), {"strength": "1e-3", "scheme": ["l1", "l2"]})  # YAML string number
    assert space.names == ["scheme"] and space.fixed == {"strength": 1e-3}


@pytest.mark.parametrize("spec, message", [
    ({"lr": {}}, "unknown parameter"),
    ({"strength": {}, "timescale_epochs": {}}, "not both"),
    ({"l1_ratio": {}}, "elastic_net only"),
    ({"final_strength": {}}, "decaying schedule"),
    ({"strength": {"low": 1, "high": 0.1}}, "low <= high"),
    ({"strength": {"low": 0, "high": 1}}, "low > 0"),
    ({"strength": {"lo": 1}}, "unknown key"),
    ({"scheme": ["l2", "bogus"]}, "space.scheme: `scheme` must be one of"),
    ({"strength": 0.1}, "nothing to tune"),
])
def test_space_errors_name_the_problem(spec, message):
    with pytest.raises(TuneError, match=message):
        SearchSpace.from_recipe(recipe(), spec)


def test_trial_and_best_recipes_set_the_callback_and_drop_tune():
    base = recipe("l1", tune={"n_trials": 3})
    space = SearchSpace.from_recipe(base)
    out = best_recipe(base, space, {"strength": 0.001})
    assert "tune" not in out and "tune" in base  # the input is not modified
    assert wd_init_args(out) == {"scheme": "l1", "strength": 0.001}
    assert wd_init_args(base)["strength"] == 0.1
    added = trial_recipe({"model": {}}, {"strength": 0.5})
    assert added["trainer"]["callbacks"] == [{"class_path": "lightning_wd.core.callback.WeightDecay",
                                              "init_args": {"strength": 0.5}}]
    two = recipe()
    two["trainer"]["callbacks"] *= 2
    with pytest.raises(TuneError, match="several WeightDecay"):
        wd_init_args(two)


def test_settings_merge_arguments_recipe_section_and_defaults(tmp_path):
    path = tmp_path / "my_recipe.yaml"
    path.write_text(yaml.safe_dump(recipe("l2", tune={"n_trials": 7, "metric": "val/loss", "pruner": "hyperband",
                                                      "space": {"strength": {"high": 1e-3}}})))
    s = Settings.resolve(path)
    assert (s.n_trials, s.metric, s.direction, s.pruner, s.sampler) == (7, "val/loss", "minimize", "hyperband", "tpe")
    assert s.study_name == "my_recipe" and s.storage == "sqlite:///mlruns/optuna.db"
    assert s.out == Path("mlruns/studies/my_recipe") and s.space.strength.high == 1e-3
    with pytest.raises(TuneError, match="scheme l2 never sets weights to exactly 0"):
        Settings.resolve(path, n_trials=2, objectives="accuracy,sparsity", pruner=None)
    path.write_text(yaml.safe_dump(recipe("l1", tune={"n_trials": 7, "metric": "val/loss", "pruner": "hyperband",
                                                      "space": {"strength": {"high": 1e-3}}})))
    s = Settings.resolve(path, n_trials=2, objectives="accuracy,sparsity", pruner=None)
    assert (s.n_trials, s.sampler, s.pruner, s.directions) == (2, "nsga2", "none", ["minimize", "minimize"])
    assert s.names == ["val/loss", "wd/nonzero_fraction"] and s.study_name == "my_recipe-accuracy-sparsity"
    s = Settings.resolve(path, storage="sqlite:////data/x/optuna.db", study_name="s1")
    assert s.out == Path("/data/x/studies/s1")
    with pytest.raises(TuneError, match="cannot prune on several values"):
        Settings.resolve(path, objectives="accuracy,sparsity", pruner="median")
    with pytest.raises(TuneError, match="--n-trials"):
        Settings.resolve(recipe())
    with pytest.raises(TuneError, match="unknown key"):
        Settings.resolve(recipe(tune={"n_trial": 3}))


def test_sqlite_with_several_workers_is_refused_with_the_reason():
    with pytest.raises(TuneError, match="database is locked"):
        Settings.resolve(recipe(), n_trials=2, workers=2)
    Settings.resolve(recipe(), n_trials=2, workers=2, storage="postgresql+psycopg2://u@h/db")
    Settings.resolve(recipe(), n_trials=2, workers=2, storage="journal:studies.log")


def test_settings_are_one_frozen_object_validated_on_every_construction():
    import dataclasses
    import pickle

    from lightning_wd.apps.tuning import tune

    s = Settings.resolve(recipe(), n_trials=2, storage="journal:studies.log", overrides=["--trainer.max_epochs", "1"])
    assert s.overrides == ("--trainer.max_epochs", "1") and s.objectives == ("accuracy",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.n_trials = 3
    assert pickle.loads(pickle.dumps(s)) == s  # what a spawned worker receives
    assert s.replace(workers=2).workers == 2
    with pytest.raises(TuneError, match=r"--grace-period \(5\) must exceed --heartbeat-interval \(10\)"):
        s.replace(heartbeat_interval=10, grace_period=5)
    with pytest.raises(TuneError, match="--direction: maximize or minimize, got 'up'"):
        s.replace(direction="up")
    with pytest.raises(TuneError, match="--sampler: choose from tpe, random, grid, nsga2"):
        s.replace(sampler="cmaes")
    with pytest.raises(TypeError, match=r"unknown tuning option\(s\) \['n_trial'\]; allowed: n_trials"):
        Settings.resolve(recipe(), n_trial=2)
    with pytest.raises(TypeError, match="takes no other arguments"):
        tune(s, n_trials=3)


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["--n-trials", "3"], "--config"),
    (["--config", "r.yaml", "--n-trials", "x"], "expected an integer"),
    (["--config", "r.yaml", "--n-trials", "0"], "must be >= 1"),
    (["--config", "r.yaml", "--n-trails", "3"], "unrecognized argument --n-trails"),
    (["--config", "r.yaml", "--sampler", "cmaes"], "invalid choice"),
    (["--config", "missing.yaml", "--n-trials", "2"], "recipe not found"),
    (["--config", "r.yaml", "--n-trials", "2", "--workers", "2"], "database is locked"),
    (["--config", "r.yaml", "--n-trials", "2", "--objectives", "accuracy,speed"], "--objectives"),
    (["--config", "r.yaml", "--n-trials", "2", "--storage", "nowhere"], "--storage"),
])
def test_bad_arguments_exit_2_with_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("r.yaml").write_text(yaml.safe_dump(recipe()))
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert line.startswith("lightning-wd tune: error:") and message in line


def test_bad_override_through_the_lightning_wd_command_exits_2(tmp_path, monkeypatch, capsys):
    from tuning_toy import write_recipe

    from lightning_wd.apps.cli import main as lightning_wd_main

    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path)
    assert lightning_wd_main(["tune", "--config", str(path), "--n-trials", "1", "--trainer.max_epochs", "abc"]) == 2
    assert "max_epochs" in _one_error_line(capsys)
    assert not (tmp_path / "mlruns").exists()  # refused before any study or run was created


def test_import_is_light():
    code = ("import sys, lightning_wd, lightning_wd.apps.tuning, lightning_wd.apps.tuning.study; "
            "print(sorted(m for m in ('optuna', 'mlflow', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr


def test_every_scheme_declares_a_default_range():
    for cls in SCHEMES.values():
        low, high = cls.search_range
        assert 0 < low < high, cls


def test_float_range_describe_and_math():
    r = FloatRange(1e-6, 1.0)
    assert r.describe() == "log[1e-06, 1]"
    assert all(r.low <= v <= r.high for v in r.grid_values())
    assert math.isclose(r.grid_values()[8], 10 ** -2.8, rel_tol=1e-5)


def test_ddp_strategy_that_reruns_the_command_is_refused(tmp_path, monkeypatch, capsys):
    from tuning_toy import write_recipe

    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path)
    argv = ["--config", str(path), "--n-trials", "1", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
    assert main(argv) == 2
    assert "use --trainer.strategy ddp_spawn" in _one_error_line(capsys)


def test_plots_pareto_table_and_summary_lines_from_a_synthetic_study(tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from lightning_wd.apps.tuning.report import pareto_rows, plot_study, summary_line, write_pareto

    dists = {"scheme": CategoricalDistribution(["l1", "l2"]), "strength": FloatDistribution(1e-7, 1.0, log=True)}
    single = optuna.create_study(direction="maximize")
    double = optuna.create_study(directions=["maximize", "minimize"])
    for i in range(6):
        params = {"scheme": ["l1", "l2"][i % 2], "strength": 10.0 ** -(i + 1)}
        single.add_trial(optuna.create_trial(params=params, distributions=dists, value=0.5 + 0.05 * i))
        double.add_trial(optuna.create_trial(params=params, distributions=dists, values=[0.5 + 0.05 * i, 0.1 * i]))
    single.add_trial(optuna.create_trial(state=optuna.trial.TrialState.FAIL, params=params, distributions=dists,
                                         user_attrs={"fail_reason": "non-finite training loss (nan)"}))
    files = plot_study(single, tmp_path / "one", ["val/acc"], ["scheme", "strength"])
    assert [f.name for f in files] == ["optimization_history.png", "slice_strength.png", "param_importances.png"]
    files = plot_study(double, tmp_path / "two", ["val/acc", "wd/nonzero_fraction"], ["scheme", "strength"])
    assert "pareto.png" in [f.name for f in files] and all(f.stat().st_size > 1000 for f in files)
    rows = pareto_rows(double, ["val/acc", "wd/nonzero_fraction"])
    assert [r["trial"] for r in rows] == [5, 4, 3, 2, 1, 0]  # every trial trades accuracy for density here
    table = write_pareto(rows, tmp_path / "pareto.csv")
    assert table.splitlines()[0].split() == ["trial", "scheme", "strength", "val/acc", "wd/nonzero_fraction"]
    line = summary_line(single.trials[-1], ["val/acc"])
    assert line.startswith("trial   6") and "FAIL" in line and line.endswith("(non-finite training loss (nan))")


def test_a_second_process_on_a_sqlite_study_is_warned_about(tmp_path):
    import optuna

    from lightning_wd.apps.tuning.storage import open_storage
    from lightning_wd.apps.tuning.study import _warn_shared_sqlite

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=1, grace_period=5))
    trial = study.ask()  # running in "another process", heartbeat just recorded
    study._storage.record_heartbeat(trial._trial_id)
    settings = Settings.resolve(recipe(), n_trials=2, storage=url, study_name="s", heartbeat_interval=1,
                                grace_period=5)
    with pytest.warns(UserWarning, match=r"another process is running trial\(s\) \[0\].*database is locked"):
        _warn_shared_sqlite(study, settings)
