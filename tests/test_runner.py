"""The recipe runner shared by fit, tune and report: recipe by path, name or dict; logger and callbacks in."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_wd.apps.cli import main
from lightning_wd.apps.errors import ConfigError
from lightning_wd.apps.runner import build_cli

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from tuning_toy import write_recipe  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()  # the shipped recipes set num_threads: 1
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _toy(tmp_path: Path) -> dict:
    return yaml.safe_load(write_recipe(tmp_path).read_text())


def test_a_dict_recipe_with_the_logger_and_callbacks_passed_in(in_tmp):
    from lightning.pytorch import Callback
    from lightning.pytorch.loggers import CSVLogger

    class Marker(Callback):
        pass

    logger = CSVLogger(str(in_tmp / "csv"))
    marker = Marker()
    built = build_cli(_toy(in_tmp), ["--trainer.max_epochs", "3"], logger=logger, callbacks=[marker])
    assert built.trainer.logger is logger and built.trainer.max_epochs == 3
    assert marker in built.trainer.callbacks
    assert any(type(c).__name__ == "WeightDecay" for c in built.trainer.callbacks)  # the recipe's stay
    assert not (in_tmp / "mlruns").exists()  # a logger passed in replaces the MLflow default


def test_logger_false_and_the_recipes_own_logger(in_tmp):
    recipe = _toy(in_tmp)
    assert build_cli(recipe, logger=False).trainer.logger is None
    recipe["trainer"]["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                   "init_args": {"save_dir": str(in_tmp / "csv")}}
    assert type(build_cli(recipe).trainer.logger).__name__ == "CSVLogger"


def test_the_default_logger_is_mlflow_and_records_the_config(in_tmp):
    from lightning.pytorch.loggers import MLFlowLogger

    from lightning_wd.tracking import MLflowRecord

    built = build_cli(_toy(in_tmp), ["--experiment", "runner", "--run-name", "r1"])
    assert isinstance(built.trainer.logger, MLFlowLogger)
    assert sum(isinstance(c, MLflowRecord) for c in built.trainer.callbacks) == 1
    run = built.trainer.logger.experiment.get_run(built.trainer.logger.run_id)
    assert run.info.run_name == "r1"


def test_a_shipped_recipe_by_name(in_tmp):
    built = build_cli("mnist1d_mlp", ["--trainer.max_epochs", "1"], logger=False)
    assert type(built.model).__name__ == "MLP" and built.trainer.max_epochs == 1
    assert build_cli("recipes/mnist1d_mlp.yaml", logger=False).datamodule is not None  # README's spelling


def test_errors_are_config_errors(in_tmp):
    with pytest.raises(ConfigError, match="config file not found: nope.*shipped recipes: .*mnist1d_mlp"):
        build_cli("nope")
    with pytest.raises(ConfigError, match="max_epochs"):
        build_cli(_toy(in_tmp), ["--trainer.max_epochs", "many"])


def test_fit_takes_a_shipped_recipe_by_name(in_tmp, capsys):
    assert main(["fit", "--config", "tune_mnist1d_mlp", "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["experiment"] == "tune_mnist1d_mlp"
    assert main(["validate", "--config=mnist1d_mlp", "--print-config"]) == 0
    capsys.readouterr()
    assert main(["fit", "--config", "mnist1d_mpl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mnist1d_mpl" in err[0] and "mnist1d_mlp" in err[0]


def test_tune_takes_a_shipped_recipe_by_name(in_tmp):
    from lightning_wd.apps.tuning import Settings

    settings = Settings.resolve("tune_mnist1d_mlp", n_trials=1)
    assert settings.recipe_path.name == "tune_mnist1d_mlp.yaml" and settings.study_name == "tune_mnist1d_mlp"
