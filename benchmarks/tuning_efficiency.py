"""5. Tuning efficiency where tuning matters: TPE + median pruning vs an exhaustive strength grid on a
peaked landscape (``recipes/tune_mnist1d_overfit.yaml``: the MNIST-1D MLP overfitting 400 examples).

1. The grid, fitted once per training seed: per strength the mean and sd of validation accuracy over the
   seeds; the landscape counts as peaked when best minus worst mean is at least 5x the pooled seed sd.
2. The target: within one pooled seed sd of the grid's best mean.
3. TPE + median pruning over the raw strength, one study per study seed: the epochs spent until a
   finished trial reaches the target, as a share of one grid pass's epochs (points x epochs); target
   <= 30 % on every study seed.
4. The same studies over ``timescale_epochs`` (the EMA timescale ``1 / (lr * lambda)`` in epochs, over
   the range that maps onto the strength range) on the same trial budget.

Every trial is a real fit through ``lightning_wd.apps.tuning.tune`` (a throwaway SQLite store).
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tune_mnist1d_overfit.yaml"
LR, STEPS_PER_EPOCH = 0.01, 400 // 50  # of the recipe: the timescale range that maps onto the strength range
STRENGTH = (1e-4, 10.0)


def _timescale(strength: float) -> float:
    return 1.0 / (LR * strength * STEPS_PER_EPOCH)


def _finished(study) -> list:
    return sorted((t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")), key=lambda t: t.number)


def _epochs(trial) -> int:
    return len(trial.intermediate_values)


QUICK = {"train_seeds": (0,), "study_seeds": (0,), "epochs": 1, "grid_points": 2, "trials": 2}  # smoke-test sizes


def _spent_to(study, target: float) -> int | None:
    spent = 0
    for trial in _finished(study):
        spent += _epochs(trial)
        if trial.state.name == "COMPLETE" and trial.value >= target:
            return spent
    return None


def run(train_seeds: tuple[int, ...] = (0, 1, 2), study_seeds: tuple[int, ...] = (0, 1, 2, 3, 4), epochs: int = 12,
        grid_points: int = 12, trials: int = 8) -> list[dict]:
    from lightning_wd.apps.tuning import tune

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def study(name, n, train_seed, **options):
            return tune(RECIPE, n, tracking_uri=f"sqlite:///{tmp}/mlflow.db", experiment="bench_tuning",
                        progress=False, storage=f"sqlite:///{tmp}/{name}.db", study_name=name, out=f"{tmp}/{name}",
                        overrides=["--trainer.max_epochs", str(epochs), "--seed_everything", str(train_seed)],
                        **options)

        space = {"strength": {"low": STRENGTH[0], "high": STRENGTH[1], "log": True, "points": grid_points}}
        values: dict[float, list[float]] = {}
        for seed in train_seeds:
            grid = study(f"grid{seed}", grid_points, seed, sampler="grid", pruner="none", space=space)
            for trial in _finished(grid):
                values.setdefault(trial.params["strength"], []).append(trial.value)
        means = {s: statistics.fmean(v) for s, v in values.items()}
        pooled_sd = math.sqrt(statistics.fmean(statistics.variance(v) for v in values.values())) \
            if len(train_seeds) > 1 else float("nan")
        best, worst = max(means.values()), min(means.values())
        for s in sorted(values):
            rows.append({"study": "grid point", "seed": f"{len(values[s])} seeds", "strength": s,
                         "val_acc": means[s],
                         "sd": statistics.stdev(values[s]) if len(values[s]) > 1 else float("nan"),
                         "epochs_to_target": "-", "share_of_grid": "-"})
        grid_epochs = grid_points * epochs
        target = best - pooled_sd if pooled_sd == pooled_sd else best
        rows.append({"study": "grid (one pass)", "seed": f"best-worst = {(best - worst) / pooled_sd:.1f} sd"
                     if pooled_sd == pooled_sd and pooled_sd > 0 else "-", "strength": max(means, key=means.get),
                     "val_acc": best, "sd": pooled_sd, "epochs_to_target": grid_epochs, "share_of_grid": 1.0})
        timescales = {"timescale_epochs": {"low": _timescale(STRENGTH[1]), "high": _timescale(STRENGTH[0]),
                                           "log": True}}
        for label, tuned in (("TPE + pruning, strength", {"space": space}),
                             ("TPE + pruning, timescale_epochs", {"space": timescales})):
            shares = []
            for seed in study_seeds:
                found = study(f"{label.split()[-1]}{seed}", trials, 0, sampler="tpe", pruner="median", seed=seed,
                              **tuned)
                spent = _spent_to(found, target)
                share = spent / grid_epochs if spent is not None else float("nan")
                shares.append(share)
                best_trial = found.best_trial
                rows.append({"study": label, "seed": seed, "strength": next(iter(best_trial.params.values())),
                             "val_acc": found.best_value, "sd": "-",
                             "epochs_to_target": spent if spent is not None else
                             f"not reached ({sum(_epochs(t) for t in _finished(found))} spent)",
                             "share_of_grid": share})
            reached = [s for s in shares if s == s]
            rows.append({"study": f"{label}: worst seed", "seed": f"{len(reached)}/{len(shares)} reached",
                         "strength": "-", "val_acc": "-", "sd": "-", "epochs_to_target": "-",
                         "share_of_grid": max(reached) if len(reached) == len(shares) else float("nan")})
    return rows
