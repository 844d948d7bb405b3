"""Issue 18: ``lightning-wd fit`` with strategy ``ddp`` on 2 CPU ranks: the launched rank gets the same
arguments (Lightning re-runs ``sys.argv``), both ranks finish, one MLflow run ends FINISHED."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = """\
seed_everything: 0
experiment: ddp_cli
num_threads: 1
trainer:
  max_epochs: 2
  log_every_n_steps: 1
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning_wd.WeightDecay
      init_args: {scheme: decoupled, strength: 0.1}
model:
  class_path: lightning_wd.examples.MLP
  init_args: {in_features: 40, hidden: [16], num_classes: 10, optimizer: adam, lr: 0.01}
data:
  class_path: lightning_wd.examples.MNIST1DDataModule
  init_args: {batch_size: 50, num_train: 200, num_test: 100, seed: 0}
"""


def command() -> list[str]:
    """The installed console script when there is one (as a user runs it), else ``python -m lightning_wd``."""
    script = Path(sys.executable).with_name("lightning-wd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lightning_wd"]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("how", ["script", "module"])
def test_fit_on_two_ddp_ranks_from_the_command_line(how, tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = command() if how == "script" else [sys.executable, "-m", "lightning_wd"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    result = subprocess.run([*cmd, "fit", "--config", "tiny.yaml", "--trainer.strategy", "ddp",
                             "--trainer.devices", "2", "--trainer.accelerator", "cpu", "--tracking-uri", uri,
                             "--verbose"],  # Lightning's own lines too: they show rank 1 joining
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output  # rank 1 ran the fit, not the usage text
    assert "usage:" not in output and "Traceback" not in output
    assert result.stdout.count("fit decoupled λ=0.1 seed 0: val/acc") == 1  # one summary line, from rank 0
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ddp_cli").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.metrics["train/loss"] > 0
