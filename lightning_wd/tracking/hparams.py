"""The decay settings in the ``hparams.yaml`` of loggers other than MLflow (CSV, TensorBoard, any other).

Lightning gives every logger the model's and datamodule's hparams, which say nothing of a weight-decay
callback, and include the model's own ``weight_decay`` argument (``0.0`` when the callback does the
decay) and LightningCLI's ``_instantiator``. :class:`DecayHparams` gives those loggers the account MLflow
gets from :class:`~lightning_wd.tracking.record.MLflowRecord`: the same filtered hparams and the same
``wd.*``, ``optimizer.*`` and ``seed`` entries (:func:`~lightning_wd.tracking.params.run_params`).
``lightning-wd fit`` adds it when the trainer has such a logger.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger
from typing_extensions import override

from lightning_wd.tracking.params import run_params
from lightning_wd.tracking.record import decay_hparams, filter_hyperparams, find_decay_callback

__all__ = ["DecayHparams"]


class DecayHparams(Callback):
    """Write the decay settings into the hyperparameters of every logger of the trainer but MLflow's.

    When fit starts, each such logger's ``log_hyperparams`` is made to leave out what MLflow leaves out
    (LightningCLI's ``_instantiator``; the model's ``weight_decay`` when a weight-decay callback manages the
    decay); when training starts (the decay's applied strength is known then), the ``wd.*``,
    ``optimizer.*`` and ``seed`` entries are logged to them: ``CSVLogger`` and ``TensorBoardLogger`` write
    them into their ``hparams.yaml``. Only rank zero logs.

    Example:
        .. code-block:: python

            trainer = Trainer(logger=CSVLogger("logs"), callbacks=[WeightDecay(0.05), DecayHparams()])
    """

    @staticmethod
    def _loggers(trainer: pl.Trainer) -> list:
        return [lg for lg in trainer.loggers if not isinstance(lg, MLFlowLogger)] if trainer.is_global_zero else []

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        managed = find_decay_callback(trainer) is not None
        for logger in self._loggers(trainer):
            filter_hyperparams(logger, decay_managed=managed)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = self._loggers(trainer)
        if not loggers:
            return
        decay = find_decay_callback(trainer)
        params = run_params(None if decay is None else decay_hparams(decay), trainer.optimizers,
                            os.environ.get("PL_GLOBAL_SEED"))
        for logger in loggers:
            logger.log_hyperparams(params)
            logger.save()
