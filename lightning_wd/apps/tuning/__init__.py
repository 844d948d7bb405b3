"""``lightning-wd tune``: Optuna studies over the weight-decay strength of a recipe.

Python::

    from lightning_wd.apps.tuning import Settings, tune
    study = tune("tune_mnist1d_mlp", n_trials=20, overrides=["--trainer.max_epochs", "3"])
    settings = Settings.resolve("tune_mnist1d_mlp", n_trials=20, workers=2, storage="journal:study.log")
    study = tune(settings)        # the same object the command builds and the workers receive

Command line::

    lightning-wd tune --config recipes/tune_mnist1d_mlp.yaml --n-trials 20 --trainer.max_epochs 3

Modules: :mod:`~lightning_wd.apps.tuning.space` (search space, per-trial recipes),
:mod:`~lightning_wd.apps.tuning.objective` (one trial = one fit; pruning and NaN handling),
:mod:`~lightning_wd.apps.tuning.storage` (SQLite, PostgreSQL, journal; heartbeats and retries),
:mod:`~lightning_wd.apps.tuning.record` (MLflow parent and child runs),
:mod:`~lightning_wd.apps.tuning.report` (summary lines, best.yaml, Pareto table, plots),
:mod:`~lightning_wd.apps.tuning.settings` (:class:`Settings`: every option, validated once),
:mod:`~lightning_wd.apps.tuning.study` (:func:`tune`), :mod:`~lightning_wd.apps.tuning.command` (:func:`main`).
Optuna, MLflow and Lightning are imported only when a study runs.
"""

from __future__ import annotations

from lightning_wd.apps.errors import TuneError
from lightning_wd.apps.tuning.command import main
from lightning_wd.apps.tuning.settings import Settings
from lightning_wd.apps.tuning.space import FloatRange, SearchSpace
from lightning_wd.apps.tuning.study import tune

__all__ = ["FloatRange", "SearchSpace", "Settings", "TuneError", "main", "tune"]
