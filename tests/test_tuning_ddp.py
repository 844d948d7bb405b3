"""Issue 12: tuning trials on strategy ``ddp`` (2 CPU gloo ranks): rank 0 owns the Optuna trial, the re-run
rank follows the same trial's fit, the pruning decision reaches both ranks (they stop together), one MLflow
child run per trial."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from tuning_toy import write_recipe  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{TESTS.parent}", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.distributed
def test_two_trials_on_two_ddp_ranks_one_pruned(tmp_path):
    import optuna
    from mlflow import MlflowClient

    path = write_recipe(tmp_path, max_epochs=3, tune={"space": {"strength": {"low": 1e-4, "high": 1e-2}}})
    env = {k: v for k, v in ENV.items() if k not in ("MLFLOW_TRACKING_URI", "LOCAL_RANK", "LIGHTNING_WD_TRIAL")}
    result = subprocess.run([sys.executable, str(TESTS / "tuning_ddp_driver.py"), str(path)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "STATES ['COMPLETE', 'PRUNED']" in result.stdout
    assert output.count("GLOBAL_RANK: 1, MEMBER: 2/2") == 2  # each trial started its own rank 1
    assert output.count("study toy:") == 1  # the re-run ranks followed their trial, not the study
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")
    pruned = study.trials[1]
    assert list(pruned.intermediate_values) == [0] and pruned.user_attrs["pruned_at_round"] == 0
    assert len(study.trials[0].intermediate_values) == 3
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    trials = sorted((r.data.tags["optuna.trial_number"], r.data.tags["optuna.state"], r.info.status)
                    for r in runs if r.data.tags.get("lightning_wd.kind") == "trial")
    assert trials == [("0", "COMPLETE", "FINISHED"), ("1", "PRUNED", "FINISHED")]
    # the pruned trial stopped after its first epoch on both ranks: one epoch of validation metrics logged
    history = client.get_metric_history([r for r in runs if r.data.tags.get("optuna.trial_number") == "1"][0]
                                        .info.run_id, "val/acc")
    assert len(history) == 1
