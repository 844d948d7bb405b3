"""A scheme of the user's own (``tests/custom_scheme.py``, outside the package): recipe, search space, a study."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightning_wd.apps.tuning import SearchSpace, TuneError, tune
from lightning_wd.apps.tuning.recipe import scheme_class, trial_recipe

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from custom_scheme import HalfDecoupled  # noqa: E402
from tuning_toy import write_recipe  # noqa: E402

CLASS_PATH = "custom_scheme.HalfDecoupled"


def _recipe(scheme) -> dict:
    return {"trainer": {"callbacks": [{"class_path": "lightning_wd.WeightDecay",
                                       "init_args": {"scheme": scheme, "strength": 0.1}}]}}


@pytest.mark.parametrize("spec", [CLASS_PATH, {"class_path": CLASS_PATH}, HalfDecoupled, HalfDecoupled()],
                         ids=["dotted", "class_path", "class", "instance"])
def test_the_space_reads_the_range_the_custom_scheme_declares(spec):
    assert scheme_class(spec) is HalfDecoupled
    space = SearchSpace.from_recipe(_recipe(spec))
    assert space.schemes == (CLASS_PATH,) and space.names == ["strength"]
    r = space.strength_range(CLASS_PATH)
    assert (r.low, r.high) == HalfDecoupled.search_range


def test_a_custom_scheme_among_built_in_ones_is_a_class_path_for_weight_decay():
    space = SearchSpace.from_recipe(_recipe("l2"), {"scheme": ["l2", CLASS_PATH]})
    assert space.schemes == ("l2", CLASS_PATH)
    assert space.strength_range(CLASS_PATH).high == HalfDecoupled.search_range[1]
    assert space.strength.high == max(HalfDecoupled.search_range[1], 1e-2)  # the union, for grids
    args = space.wd_args({"scheme": CLASS_PATH, "strength": 1e-3})
    assert args == {"scheme": {"class_path": CLASS_PATH}, "strength": 1e-3}
    assert space.wd_args({"scheme": "l2", "strength": 1e-3})["scheme"] == "l2"
    recipe = trial_recipe(_recipe("l2"), args)
    assert recipe["trainer"]["callbacks"][0]["init_args"]["scheme"] == {"class_path": CLASS_PATH}


@pytest.mark.parametrize("spec, message", [
    ("custom_scheme.NoSuchScheme", "cannot import"),
    ("custom_scheme.torch", "not a subclass"),
    ("bogus", "must be one of"),
])
def test_a_bad_scheme_is_named(spec, message):
    with pytest.raises(TuneError, match=message):
        SearchSpace.from_recipe(_recipe(spec))


@pytest.mark.slow
def test_a_study_tunes_the_custom_scheme(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, scheme={"class_path": CLASS_PATH}, tune={"n_trials": 3})
    study = tune(str(path), seed=0, progress=False)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    low, high = HalfDecoupled.search_range
    assert all(low <= t.params["strength"] <= high for t in study.trials)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    run = client.get_run(study.trials[0].user_attrs["mlflow_run_id"])
    assert run.data.params["wd.scheme"] == HalfDecoupled.name
    assert (tmp_path / "mlruns" / "studies" / "toy" / "best.yaml").is_file()
