"""Quiet by default: one line per fit, the libraries' banners filtered at their loggers, ``-v`` for all."""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import pytest
from tuning_toy import write_recipe

from lightning_wd.apps import quiet
from lightning_wd.apps.cli import main

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _restore():
    yield
    quiet.install(verbose=True)  # leave no filter to the other tests (conftest restores the thread count)


def _banners(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(b in line for b in quiet.BANNERS) or "LeafSpec" in line]


def test_fit_logs_no_banner_unless_verbose(tmp_path, monkeypatch, capfd, caplog, mlflow_sqlite):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)  # under pytest, Lightning's records reach pytest's handler, not stderr
    recipe = write_recipe(tmp_path, max_epochs=1, scheme="l1")
    args = ["fit", "--config", str(recipe), "--tracking_uri", mlflow_sqlite, "--trainer.limit_train_batches", "2",
            "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "1"]
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert _banners(caplog.text + out + err) == []
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith("fit l1 λ=0 seed 0: val/acc ") and " s; MLflow run " in lines[0]
    assert f"-m mlflow ui --backend-store-uri {mlflow_sqlite}" in lines[0]  # absolute, any folder, this python
    caplog.clear()
    assert main([*args, "-v"]) == 0
    shown = _banners(caplog.text)
    assert any("GPU available" in line for line in shown) and any("Seed set to 0" in s for s in shown), caplog.text


@pytest.mark.slow
def test_fit_output_in_a_fresh_process_is_one_line(tmp_path, mlflow_sqlite_template):
    """What a terminal shows: stdout and stderr of ``lightning-wd fit``, quiet and with ``-v``."""
    import os
    import shutil
    import subprocess

    recipe = write_recipe(tmp_path, max_epochs=1)
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{TESTS.parent}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [sys.executable, "-m", "lightning_wd", "fit", "--config", str(recipe),
               "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
               "--trainer.log_every_n_steps", "1"]
    stores = {name: tmp_path / name / "mlflow.db" for name in ("quiet", "verbose")}
    for store in stores.values():
        store.parent.mkdir()
        shutil.copyfile(mlflow_sqlite_template, store)
    runs = [subprocess.Popen([*command, *extra, "--tracking_uri", f"sqlite:///{stores[name]}"], cwd=tmp_path,
                             env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for name, extra in (("quiet", []), ("verbose", ["-v"]))]
    (out, err), (vout, verr) = (run.communicate(timeout=300) for run in runs)
    assert [run.returncode for run in runs] == [0, 0], err + verr
    assert _banners(out + err) == [] and err == ""
    assert len(out.splitlines()) == 1 and out.startswith("fit l2 λ=0 seed 0: val/acc ")
    assert any(line.startswith("GPU available") for line in _banners(vout + verr))
    assert any(line.startswith("Seed set to 0") for line in _banners(vout + verr))
    assert any("LeafSpec" in line for line in _banners(vout + verr))  # torch's deprecation, back with -v


def test_the_filter_sits_on_the_source_loggers_not_on_the_users_output(capfd):
    quiet.install()
    logging.getLogger("lightning.fabric.utilities.seed").info("Seed set to 0")
    user = logging.getLogger("my_script")
    user.addHandler(logging.StreamHandler(sys.stderr))
    user.warning("Seed set to 0 by my script")  # the same words from the user's own logger stay
    print("GPU available: mine")
    out, err = capfd.readouterr()
    assert out == "GPU available: mine\n" and err == "Seed set to 0 by my script\n"
    assert any(isinstance(f, quiet.LibraryNoise) for f in logging.getLogger(quiet.SOURCES[0]).filters)
    quiet.install(verbose=True)
    assert not any(isinstance(f, quiet.LibraryNoise) for f in logging.getLogger(quiet.SOURCES[0]).filters)


@pytest.mark.slow
def test_tune_prints_a_line_per_trial_and_no_banner(tmp_path, monkeypatch, capfd):
    from lightning_wd.apps.tuning import main as tune_main

    monkeypatch.chdir(tmp_path)
    import yaml

    recipe = write_recipe(tmp_path, max_epochs=1, tune={"space": {"strength": {"low": 1e-5, "high": 1e-2}}})
    config = yaml.safe_load(recipe.read_text())
    for key in ("enable_progress_bar", "enable_model_summary"):  # Lightning's defaults would show them per trial
        del config["trainer"][key]
    recipe.write_text(yaml.safe_dump(config))
    assert tune_main(["--config", str(recipe), "--n-trials", "2", "--trainer.limit_train_batches", "2"]) == 0
    out, err = capfd.readouterr()
    assert _banners(out + err) == []
    lines = out.strip().splitlines()
    assert lines[0].startswith("study toy: 0 of 2 trials finished")
    assert [line.split()[:2] for line in lines[1:3]] == [["trial", "0"], ["trial", "1"]]
    assert lines[3].startswith("best trial ") and "fit it: lightning-wd fit --config " in lines[3]
    assert len(lines) == 4, out
    import re

    # the study's bar: done/total [elapsed<time left, rate]
    assert re.search(r"2/2 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(s/trial|trial/s)", err), err


def test_the_statistics_interval_notice_shows_once_per_command(capfd):
    """WeightDecay doubles its statistics interval two or three times per fit (and per trial): one line."""
    from lightning.pytorch.utilities import rank_zero_info

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addHandler(handler)
    try:
        quiet.install(once=quiet.ONCE)
        for before in (10, 20, 40):
            rank_zero_info(f"WeightDecay: statistics every {2 * before} steps instead of {before} (...)")
        quiet.install(verbose=True)
        rank_zero_info("WeightDecay: statistics every 20 steps instead of 10 (-v)")
    finally:
        logging.getLogger("lightning.pytorch.utilities.rank_zero").removeHandler(handler)
    lines = capfd.readouterr().err.splitlines()
    assert [line for line in lines if line.startswith("WeightDecay: statistics")] == [
        "WeightDecay: statistics every 20 steps instead of 10 (...)",
        "WeightDecay: statistics every 20 steps instead of 10 (-v)"]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_skips_set_up_once_done(tmp_path):
    """Issue 15 item 1: `make main`/`make test` re-ran set-up each time; now only when its inputs change."""
    import os
    import subprocess

    root = TESTS.parent
    (tmp_path / "scripts").mkdir()
    for name in ("Makefile", "pyproject.toml", "scripts/setup.sh"):
        shutil.copy2(root / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    stamp = tmp_path / ".venv" / ".setup-done"

    def planned(target):
        return subprocess.run(["make", "-n", target], cwd=tmp_path, capture_output=True, text=True).stdout

    assert "./scripts/setup.sh" in planned("main")  # never set up: it runs
    stamp.touch()
    later = os.stat(tmp_path / "pyproject.toml").st_mtime + 10
    os.utime(stamp, (later, later))
    assert "./scripts/setup.sh" not in planned("main") and "lightning-wd report" in planned("main")
    assert "./scripts/setup.sh" not in planned("test-fast")
    os.utime(tmp_path / "pyproject.toml", (later + 10, later + 10))  # the dependencies changed: again
    assert "./scripts/setup.sh" in planned("main")
    assert "touch .venv/.setup-done" in (root / "scripts" / "setup.sh").read_text()  # what set-up leaves
