"""Run by tests/test_tuning_ddp.py (and re-run by Lightning's ``ddp`` launcher as rank 1 of each trial): a
2-trial study on 2 CPU ranks whose second trial is pruned at its first validation (a deterministic pruner)."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).parent))


class PruneTrialOne(optuna.pruners.BasePruner):
    """Prune trial 1, never trial 0 (so which trial is pruned does not depend on the metric)."""

    def prune(self, study, trial) -> bool:
        return trial.number == 1


if __name__ == "__main__":
    from lightning_wd.apps.tuning import tune

    study = tune(sys.argv[1], n_trials=2, sampler="random", seed=0, pruner=PruneTrialOne(), progress=False,
                 overrides=["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu",
                            "--trainer.max_epochs", "3"])
    print("STATES", [t.state.name for t in study.trials])
