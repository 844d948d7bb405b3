"""Resuming from the command line with other decay rules: one line, exit 2, and the run marked FAILED."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_wd.apps.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2",
         "--trainer.enable_progress_bar", "false"]


PATHS = {  # the recipe's Adam: decoupled decay by the callback's own passes; AdamW: the optimizer decays natively
    "self-applied": [],
    "native": ["--model.init_args.optimizer", "adamw"],
    "native-split": ["--model.init_args.optimizer", "adamw", "--trainer.callbacks.init_args.split_groups", "true"],
}


@pytest.mark.slow
@pytest.mark.parametrize("path", list(PATHS))
def test_resume_with_another_exclude_is_one_line_and_a_failed_run(tmp_path, monkeypatch, capsys, path):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    recipe = str(ROOT / "recipes" / "mnist1d_mlp.yaml")
    args = ["fit", "--config", recipe, *QUICK, *PATHS[path], "--experiment", "rules"]
    assert main(args) == 0
    checkpoint = sorted(tmp_path.glob("checkpoints/**/*.ckpt"))[0]
    capsys.readouterr()
    changed = [*args, "--trainer.max_epochs", "2", "--ckpt_path", str(checkpoint),
               "--trainer.callbacks.init_args.exclude", "[net.5.weight]"]
    assert main(changed) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightning-wd: error")]
    assert len(err) == 1, err
    assert err[0].startswith("lightning-wd: error: WeightDecay: the checkpoint was trained with other decay rules: ")
    assert "not decayed now (user exclude 'net.5.weight')" in err[0]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")  # absolute: MLflow caches stores by URI
    runs = client.search_runs([client.get_experiment_by_name("rules").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    reason = runs[0].data.tags["lightning_wd.error"]
    assert reason.startswith("ResumeMismatchError: WeightDecay: the checkpoint was trained with other decay rules")
