"""5. Tuning efficiency: TPE + median pruning vs an exhaustive 16-point strength grid (MNIST-1D MLP).

Figure: epochs a TPE study spends until one of its trials is within 0.5 points of the grid's best
validation accuracy, as a share of the grid's epochs (mean over study seeds). Every trial is a real fit
of ``recipes/tune_mnist1d_mlp.yaml`` through ``lightning_wd.apps.tuning.tune``.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tune_mnist1d_mlp.yaml"


def _complete(study) -> list:
    return sorted((t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")), key=lambda t: t.number)


def _epochs(trial) -> int:
    return len(trial.intermediate_values)


QUICK = {"seeds": (0,), "epochs": 1, "grid_points": 2, "tpe_trials": 2}  # the smoke test's sizes


def run(seeds: tuple[int, ...] = (0, 1, 2), epochs: int = 15, grid_points: int = 16, tpe_trials: int = 16,
        tolerance: float = 0.005) -> list[dict]:
    from lightning_wd.apps.tuning import tune

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        common = dict(tracking_uri=f"sqlite:///{tmp}/mlflow.db", experiment="bench_tuning", progress=False,
                      overrides=["--trainer.max_epochs", str(epochs)])
        grid = tune(RECIPE, grid_points, sampler="grid", pruner="none", storage=f"sqlite:///{tmp}/grid.db",
                    study_name="grid", out=f"{tmp}/grid", **common)
        grid_trials = _complete(grid)
        grid_epochs = sum(_epochs(t) for t in grid_trials)
        grid_best = max(t.value for t in grid_trials if t.value is not None)
        rows.append({"study": f"grid ({grid_points} points)", "seed": "-", "trials": len(grid_trials),
                     "epochs": grid_epochs, "best_val_acc": grid_best, "epochs_to_target": grid_epochs,
                     "share_of_grid": 1.0})
        shares = []
        for seed in seeds:
            study = tune(RECIPE, tpe_trials, sampler="tpe", pruner="median", seed=seed,
                         storage=f"sqlite:///{tmp}/tpe{seed}.db", study_name=f"tpe{seed}", out=f"{tmp}/tpe{seed}",
                         **common)
            spent, reached = 0, None
            for trial in _complete(study):
                spent += _epochs(trial)
                if trial.state.name == "COMPLETE" and trial.value >= grid_best - tolerance:
                    reached = spent
                    break
            share = reached / grid_epochs if reached is not None else float("nan")
            shares.append(share)
            rows.append({"study": "TPE + median pruning", "seed": seed, "trials": len(_complete(study)),
                         "epochs": sum(_epochs(t) for t in _complete(study)),
                         "best_val_acc": study.best_value, "epochs_to_target": reached if reached else "not reached",
                         "share_of_grid": share})
        finite = [s for s in shares if s == s]
        rows.append({"study": "TPE mean", "seed": f"{len(finite)}/{len(seeds)} reached", "trials": "-",
                     "epochs": "-", "best_val_acc": float("nan"), "epochs_to_target": "-",
                     "share_of_grid": statistics.fmean(finite) if finite else float("nan")})
    return rows
