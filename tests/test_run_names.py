"""What a user sees of a run in MLflow: a name from what it is, the seed, one account of the decay."""

from __future__ import annotations

import yaml
from tuning_toy import write_recipe

from lightning_wd.apps.cli import main


def _runs(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, order_by=["attributes.start_time ASC"])


def test_fits_are_named_from_their_setting_and_seed(tmp_path, monkeypatch, mlflow_sqlite):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path, max_epochs=1)
    base = ["fit", "--config", str(recipe), "--tracking_uri", mlflow_sqlite,
            "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    wd = "--trainer.callbacks.init_args."
    assert main([*base, wd + "scheme", "l1", wd + "strength", "0.01"]) == 0
    assert main([*base, wd + "scheme", "decoupled", wd + "strength", "0.25", "--seed_everything", "3"]) == 0
    first, second = _runs(mlflow_sqlite)
    assert first.info.run_name == "l1 λ=1e-2 seed 0"
    assert second.info.run_name == "decoupled λ=0.25 seed 3"
    assert first.data.params["seed"] == "0" and second.data.params["seed"] == "3"
    assert second.data.tags["lightning_wd.setting"] == "decoupled λ=0.25"
    from lightning_wd.tracking.colours import setting_colour

    # the setting's colour in the MLflow UI's charts, the colour of its lines in the report's figures
    assert first.data.tags["mlflow.runColor"] == setting_colour("L1 (proximal)") == "#ff7f0e"
    assert second.data.tags["mlflow.runColor"] == setting_colour("decoupled") == "#1f77b4"


def _mlp_recipe(tmp_path, monkeypatch, **decay):
    """A one-epoch recipe of the example MLP (its own ``weight_decay=0.0`` argument set) with ``decay``, run from
    ``tmp_path``: its path."""
    monkeypatch.chdir(tmp_path)
    recipe = yaml.safe_load(write_recipe(tmp_path, max_epochs=1).read_text())
    recipe["model"] = {"class_path": "lightning_wd.examples.MLP",
                       "init_args": {"in_features": 8, "hidden": [4], "num_classes": 3, "weight_decay": 0.0}}
    recipe["trainer"]["callbacks"][0]["init_args"].update(**decay)
    path = tmp_path / "mlp.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_one_account_of_the_decay_in_the_params(tmp_path, monkeypatch, mlflow_sqlite):
    path = _mlp_recipe(tmp_path, monkeypatch, scheme="decoupled", strength=0.25)
    assert main(["fit", "--config", str(path), "--tracking_uri", mlflow_sqlite,
                 "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]) == 0
    (run,) = _runs(mlflow_sqlite)
    params = run.data.params
    assert params["wd.strength"] == "0.25" and params["wd.scheme"] == "decoupled"
    assert "weight_decay" not in params  # the model's argument, superseded by the callback
    assert not any(k.startswith("_instantiator") for k in params)
    assert params["optimizer.group0.native_weight_decay"] == "0.0"  # what the optimizer applies itself
    assert not any(k.endswith(".weight_decay") for k in params)
    assert params["in_features"] == "8"  # the model's other arguments stay


def test_without_a_decay_callback_the_models_weight_decay_is_the_account(tmp_path, monkeypatch, mlflow_sqlite):
    monkeypatch.chdir(tmp_path)
    recipe = yaml.safe_load(write_recipe(tmp_path, max_epochs=1).read_text())
    recipe["trainer"]["callbacks"] = None
    recipe["model"] = {"class_path": "lightning_wd.examples.MLP",
                       "init_args": {"in_features": 8, "hidden": [4], "num_classes": 3, "weight_decay": 0.1,
                                     "optimizer": "adamw"}}
    path = tmp_path / "native.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["fit", "--config", str(path), "--tracking_uri", mlflow_sqlite,
                 "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]) == 0
    (run,) = _runs(mlflow_sqlite)
    assert run.info.run_name == "native λ=0.1 seed 0"
    assert run.data.params["weight_decay"] == "0.1"
    assert any(k.endswith("group0.weight_decay") for k in run.data.params)
    assert not any(k.startswith("_instantiator") for k in run.data.params)


def test_test_and_validate_log_to_their_own_child_run(tmp_path, monkeypatch, mlflow_sqlite):
    monkeypatch.chdir(tmp_path)
    recipe = yaml.safe_load(write_recipe(tmp_path, max_epochs=1).read_text())
    recipe["trainer"].update(enable_checkpointing=True, limit_train_batches=2, limit_val_batches=1)
    recipe["model"] = {"class_path": "lightning_wd.examples.MLP",
                       "init_args": {"in_features": 40, "hidden": [8], "num_classes": 10}}
    recipe["data"] = {"class_path": "lightning_wd.examples.MNIST1DDataModule",
                      "init_args": {"batch_size": 20, "num_train": 60, "num_test": 40, "disk_cache": False}}
    path = tmp_path / "mnist1d.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["fit", "--config", str(path), "--tracking_uri", mlflow_sqlite]) == 0
    (ckpt,) = (tmp_path / "checkpoints").rglob("*.ckpt")
    for subcommand in ("test", "validate"):
        assert main([subcommand, "--config", str(path), "--tracking_uri", mlflow_sqlite, "--ckpt_path", str(ckpt)]) == 0
    training, test, validate = _runs(mlflow_sqlite)
    assert "mlflow.parentRunId" not in training.data.tags
    assert not any(k.startswith("test") for k in training.data.metrics)  # its duration is the fit's alone
    assert test.info.run_name == "test · l2 λ=0 seed 0" and validate.info.run_name == "validate · l2 λ=0 seed 0"
    for run, kind in ((test, "test"), (validate, "validate")):
        assert run.data.tags["mlflow.parentRunId"] == training.info.run_id
        assert run.data.tags["lightning_wd.kind"] == kind and run.info.status == "FINISHED"
    assert "test/acc" in test.data.metrics


def test_weightdecay_by_short_name_with_help_for_every_argument(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--trainer.callbacks.help", "WeightDecay"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for argument, words in (("exclude", "globs of parameter names"), ("include", "globs that decay even"),
                            ("multipliers", "matching decayed tensors decay"), ("exclude_bias", "biases do not decay"),
                            ("exclude_1d", "tensors with ``ndim <= 1`` do not decay")):
        assert f"--trainer.callbacks.{argument}" in text and words in text, argument
    recipe = yaml.safe_load(write_recipe(tmp_path).read_text())
    recipe["trainer"]["callbacks"][0]["class_path"] = "WeightDecay"
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["fit", "--config", str(path), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["callbacks"][0]["class_path"] == "lightning_wd.WeightDecay"


def test_config_saved_in_the_log_dir_of_a_csv_logger(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path, max_epochs=1, scheme="l1")
    assert main(["fit", "--config", str(recipe), "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                 "--trainer.logger.init_args.save_dir", "csv", "--trainer.limit_train_batches", "2",
                 "--trainer.limit_val_batches", "1"]) == 0
    (saved,) = (tmp_path / "csv").rglob("config.yaml")
    config = yaml.safe_load(saved.read_text())
    assert config["trainer"]["callbacks"][0]["init_args"]["scheme"] == "l1"
    assert (saved.parent / "metrics.csv").exists()  # the logger's own folder


def test_csv_hparams_yaml_carries_the_decay_account_mlflow_gets(tmp_path, monkeypatch, mlflow_sqlite):
    """hparams.yaml of a CSVLogger: the same wd.*, optimizer.* and seed entries as the MLflow params of the
    same fit, and the same model hparams left out (the superseded weight_decay, _instantiator)."""
    path = _mlp_recipe(tmp_path, monkeypatch, scheme="l1", strength=0.01)
    quick = ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--seed_everything", "7"]
    assert main(["fit", "--config", str(path), "--tracking_uri", mlflow_sqlite, *quick]) == 0
    assert main(["fit", "--config", str(path), "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                 "--trainer.logger.init_args.save_dir", "csv", *quick]) == 0
    (run,) = _runs(mlflow_sqlite)
    (saved,) = (tmp_path / "csv").rglob("hparams.yaml")
    hparams = yaml.safe_load(saved.read_text())
    decay = {k: v for k, v in run.data.params.items() if k.startswith(("wd.", "optimizer.")) or k == "seed"}
    assert decay["wd.scheme"] == "l1" and decay["seed"] == "7" and len(decay) > 10
    assert {k: str(v) for k, v in hparams.items() if k in decay} == decay  # the same account, value for value
    assert "weight_decay" not in hparams and not any(k.startswith("_") for k in hparams)
    assert set(hparams) - set(decay) == set(run.data.params) - set(decay)  # and the same model/data hparams


def test_a_second_weightdecay_on_the_command_line_is_one_line(tmp_path, monkeypatch, capsys, mlflow_sqlite):
    """Issue 15 item 11: Lightning's 30-line RuntimeError (two callbacks with one state key) becomes one line,
    exit 2, before any MLflow run is created."""
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path, max_epochs=1)
    assert main(["fit", "--config", str(recipe), "--tracking_uri", mlflow_sqlite,
                 "--trainer.callbacks+=WeightDecay"]) == 2
    captured = capsys.readouterr()
    (line,) = [x for x in captured.err.splitlines() if x.strip()]
    assert line.startswith("lightning-wd: error: --trainer.callbacks: more than one WeightDecay callback; ")
    assert "Traceback" not in captured.err + captured.out
    assert _runs(mlflow_sqlite) == []
