"""Issue 16, item 4: best.yaml of a timescale study prints the transfer rule lambda = 1 / (eta * tau * S)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from lightning_wd.apps.tuning import tune
from lightning_wd.apps.tuning.report import transfer_rule

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from tuning_toy import write_recipe  # noqa: E402


def test_transfer_rule_numbers():
    lines = transfer_rule(4.0, lr=0.05, steps_per_epoch=8)
    assert "lambda = 1 / (eta * tau * S)" in lines[0] and "tau = 4 epochs" in lines[0]
    assert "lambda = 0.625;" in lines[1] and "strength = 0.625 * 8 / S'" in lines[1]  # 1 / (0.05 * 4 * 8)
    assert len(transfer_rule(4.0)) == 1  # without the run's lr and steps: the rule only


@pytest.mark.slow
def test_best_yaml_of_a_timescale_study_prints_the_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, tune={"n_trials": 1, "space": {"timescale_epochs": {"low": 2, "high": 20}}})
    study = tune(str(path), seed=0, progress=False)
    best = tmp_path / "mlruns" / "studies" / "toy" / "best.yaml"
    text = best.read_text()
    trial = study.best_trial
    tau, lr, steps = (trial.params["timescale_epochs"], trial.user_attrs["timescale/lr"],
                      trial.user_attrs["timescale/steps_per_epoch"])
    assert f"# timescale transfer: tau = {tau:g} epochs" in text
    assert f"lambda = {1 / (lr * tau * steps):.6g};" in text
    assert trial.user_attrs["wd/strength"] == pytest.approx(1 / (lr * tau * steps), rel=1e-12)
    decay = yaml.safe_load(text)["trainer"]["callbacks"][0]["init_args"]
    assert decay["timescale_epochs"] == tau
