"""The ``lightning-wd`` command: recipes parse, a short fit through MLflow, one-line configuration errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from lightning_wd.apps import cli, runner
from lightning_wd.apps.cli import main
from lightning_wd.apps.errors import ConfigError
from lightning_wd.apps.runner import build_cli, describe
from lightning_wd.core.messages import one_line

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
MLP_RECIPE = ROOT / "recipes" / "mnist1d_mlp.yaml"
TUNE_RECIPE = ROOT / "recipes" / "tune_mnist1d_mlp.yaml"
PREFIX = "lightning-wd: error: "
QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
         "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]
# Runs several argument lists through main() in one fresh process, each with its own stderr (file
# descriptor 2) and the warnings' "already shown" registries reset (adding a filter invalidates them),
# so each case prints what a separate `python -m lightning_wd ...` would print.
DRIVER = r"""
import json, os, sys, tempfile, warnings
from lightning_wd.apps.cli import main
results = []
for args in json.loads(sys.argv[1]):
    warnings.filterwarnings("default", message="^never matches$")
    warnings.filters.pop(0)
    warnings.onceregistry.clear()
    with tempfile.TemporaryFile(mode="w+") as err:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            rc = main(args)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        results.append([rc, err.read()])
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()  # the recipes set num_threads: 1
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder with the default MLflow store (mlruns/ lands there)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _recipe(tmp_path: Path, edit, name: str = "bad.yaml") -> Path:
    """A copy of the MLP recipe changed by ``edit(config)``."""
    config = yaml.safe_load(MLP_RECIPE.read_text())
    edit(config)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _wd_args(config: dict) -> dict:
    return config["trainer"]["callbacks"][0]["init_args"]


#: cases rejected before lightning is imported (each is worth its own process)
EARLY = ("missing-file", "malformed-yaml")


def _bad_configs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """Name -> (arguments, a word the one-line message must contain)."""
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("model:\n  init_args: {lr: [0.1\n")
    return {
        "missing-file": (["fit", "--config", str(tmp_path / "nope.yaml")], "not found"),
        "malformed-yaml": (["fit", "--config", str(malformed)], "malformed YAML"),
        "unknown-key": (["fit", "--config", str(_recipe(tmp_path, lambda c: _wd_args(c).update(weight_decy=0.1),
                                                         "typo.yaml"))], "weight_decy"),
        "wrong-type": (["fit", "--config", str(MLP_RECIPE), "--trainer.max_epochs", "many"], "max_epochs"),
        "negative-strength": (["fit", "--config", str(_recipe(tmp_path, lambda c: _wd_args(c).update(strength=-1.0),
                                                               "negative.yaml"))], "strength"),
        "unknown-scheme": (["fit", "--config", str(_recipe(tmp_path, lambda c: _wd_args(c).update(scheme="bogus"),
                                                            "scheme.yaml"))], "decoupled"),
    }


def _assert_one_line(rc: int, err: str, word: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(PREFIX) and word in lines[0], err
    assert "Traceback" not in err


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-m", "lightning_wd", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------- no lightning


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "lightning-wd 0.1.0"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "fit, validate, test" in out and "tune" in out
    assert main([]) == 0


def test_version_subprocess_is_quick_and_skips_lightning(tmp_path):
    code = "import sys; from lightning_wd.apps.cli import main; main(['--version']); print('lightning' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["lightning-wd", "0.1.0", "False"]


def test_unknown_subcommand(capsys):
    assert main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    _assert_one_line(2, err, "frobnicate")


def test_missing_external_module_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(cli.EXTERNAL_SUBCOMMANDS, "report", "lightning_wd.no_such_module")
    _assert_one_line(main(["report"]), capsys.readouterr().err, "not available")


def test_dispatch_to_external_main(monkeypatch):
    import types

    fake = types.ModuleType("lightning_wd.fake_tool")
    fake.main = lambda argv: 7 if argv == ["--x", "1"] else 0
    monkeypatch.setitem(sys.modules, "lightning_wd.fake_tool", fake)
    monkeypatch.setitem(cli.EXTERNAL_SUBCOMMANDS, "compare", "lightning_wd.fake_tool")
    assert main(["compare", "--x", "1"]) == 7


def test_one_line_condenses_jsonargparse_trees():
    message = ('Parser key "trainer.callbacks":\n  Does not validate against any of the Union subtypes\n'
               "  Errors:\n    - Option 'weight_decy' is not accepted\n    - Not a valid subclass of Callback\n"
               "      Subclass types expect one of:\n      - a class path (str)\n"
               "    - Expected a <class 'NoneType'>\n  Given value type: <class 'list'>")
    line = one_line(message, noise=runner.NOISE)
    assert "\n" not in line and "weight_decy" in line and line.startswith('Parser key "trainer.callbacks"')
    inner = ValueError("Expected a <class 'float'>. Got value: abc")
    outer = TypeError('Parser key "strength":\n  Expected a float')
    outer.__cause__ = inner
    assert describe('Parser key "trainer.callbacks":\n  nope', outer) == (
        "trainer.callbacks.strength: Expected a <class 'float'>. Got value: abc")


def test_config_file_checks_before_lightning(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        cli.check_config_files(["fit", "--config", str(listing)])
    with pytest.raises(ConfigError, match="directory"):
        cli.check_config_files(["fit", f"--config={tmp_path}"])
    cli.check_config_files(["fit", "--config", "{trainer: {max_epochs: 1}}"])  # inline YAML: jsonargparse's


# ---------------------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_parses_and_prints_config(recipe, capsys):
    assert main(["fit", "--config", str(recipe), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed_everything"] == 0
    assert printed["model"]["class_path"].startswith("lightning_wd.examples.")
    assert printed["data"]["class_path"].startswith("lightning_wd.examples.")
    callbacks = printed["trainer"]["callbacks"]
    assert any(c["class_path"].endswith("WeightDecay") for c in callbacks)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_instantiates(recipe, in_tmp):
    built = build_cli(recipe, ["--trainer.logger", "false"])
    from lightning_wd.examples import ClassifierModule

    assert isinstance(built.model, ClassifierModule)
    assert built.datamodule is not None
    assert any(type(c).__name__ == "WeightDecay" for c in built.trainer.callbacks)
    assert built.trainer.max_epochs >= 1 and built.trainer.progress_bar_callback is not None


def test_tune_recipe_has_a_tune_section():
    section = yaml.safe_load(TUNE_RECIPE.read_text())["tune"]
    assert section["metric"] == "val/acc" and section["direction"] == "maximize"
    assert section["space"]["strength"]["log"] is True


def test_bad_configs_in_process(tmp_path, capsys):
    for name, (args, word) in _bad_configs(tmp_path).items():
        rc = main(args)
        captured = capsys.readouterr()
        try:
            _assert_one_line(rc, captured.err, word)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None


def test_more_bad_values_in_process(tmp_path, capsys):
    cases = {
        "model-typo": (["--model.init_args.hiden", "[3]"], "hiden"),
        "model-value": (["--model.init_args.lr", "-1"], "`lr`"),
        "unknown-class": (["--model", "lightning_wd.examples.NoSuchModel"], "NoSuchModel"),
        "missing-ckpt": (["--ckpt_path", str(tmp_path / "x.ckpt")], "checkpoint not found"),
        "server-down": (["--tracking-uri", "http://127.0.0.1:9"], "unreachable"),
        "threads": (["--num_threads", "0"], "num_threads"),
    }
    for name, (extra, word) in cases.items():
        rc = main(["fit", "--config", str(MLP_RECIPE), *extra])
        captured = capsys.readouterr()
        try:
            _assert_one_line(rc, captured.err, word)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None


def test_explicit_logger_is_respected(in_tmp):
    built = build_cli(MLP_RECIPE, ["--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                                   "--trainer.logger.save_dir", str(in_tmp / "csv")])
    assert type(built.trainer.logger).__name__ == "CSVLogger"
    assert not (in_tmp / "mlruns").exists()


def test_fit_then_resume_keeps_the_mlflow_run(in_tmp):
    from mlflow import MlflowClient

    args = ["fit", "--config", str(MLP_RECIPE), *QUICK, "--experiment", "resume", "--run-name", "first"]
    assert main(args) == 0
    checkpoints = sorted(in_tmp.glob("checkpoints/**/*.ckpt"))
    assert len(checkpoints) == 1
    assert main([*args[:-4], "--trainer.max_epochs", "2", "--ckpt_path", str(checkpoints[0])]) == 0

    client = MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")  # absolute: MLflow caches stores by URI
    experiment = client.get_experiment_by_name("resume")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == "first"
    assert len(client.get_metric_history(runs[0].info.run_id, "val/acc")) == 2
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert "config.yaml" in artifacts
    config = yaml.safe_load(Path(client.download_artifacts(runs[0].info.run_id, "config.yaml", str(in_tmp)))
                            .read_text())
    assert config["model"]["class_path"] == "lightning_wd.examples.MLP"


def test_validate_and_test_subcommands(in_tmp):
    quick = ["--trainer.limit_val_batches", "2", "--trainer.limit_test_batches", "2",
             "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"]
    assert main(["validate", "--config", str(MLP_RECIPE), *quick]) == 0
    assert main(["test", "--config", str(MLP_RECIPE), *quick]) == 0


# ---------------------------------------------------------------------------------------- subprocess


@pytest.mark.slow
def test_bad_configs_subprocess(tmp_path):
    """Exit 2, exactly one line on stderr, no traceback and no stray warning, in fresh processes.

    The cases caught before lightning is imported run as ``python -m lightning_wd`` each; the others
    (lightning takes ~10 s to import) share one fresh process that gives each its own stderr.
    """
    cases = _bad_configs(tmp_path)
    late = [name for name in cases if name not in EARLY]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

    def driver() -> subprocess.CompletedProcess:
        payload = json.dumps([cases[name][0] for name in late])
        return subprocess.run([sys.executable, "-c", DRIVER, payload], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        shared = pool.submit(driver)
        early = {name: pool.submit(_run, cases[name][0], tmp_path) for name in EARLY}
        done = shared.result()
        results = {name: (future.result().returncode, future.result().stderr) for name, future in early.items()}
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULTS "))
    results.update(zip(late, (tuple(r) for r in json.loads(line[len("RESULTS "):]))))
    for name, (_, word) in cases.items():
        try:
            _assert_one_line(*results[name], word)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None


@pytest.mark.slow
def test_short_fit_subprocess_with_tune_section(tmp_path):
    """A real fit through ``python -m lightning_wd`` on the recipe with a ``tune:`` section."""
    done = _run(["fit", "--config", str(TUNE_RECIPE), *QUICK], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tune_mnist1d_mlp")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert {"train/loss", "val/loss", "val/acc", "train/acc"} <= set(run.data.metrics)
    assert any(key.startswith("wd/") for key in run.data.metrics)
