"""``LightningCLI``'s config saving, made to work with MLflow loggers that have no log directory.

Use as ``LightningCLI(save_config_callback=lightning_wd.tracking.MLflowSaveConfigCallback)``. This module
imports ``lightning.pytorch.cli`` (and with it jsonargparse); ``lightning_wd.tracking`` loads it only when
the name is first used.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.cli import SaveConfigCallback
from typing_extensions import override

from lightning_wd.tracking.artifacts import log_config

__all__ = ["MLflowSaveConfigCallback"]


class MLflowSaveConfigCallback(SaveConfigCallback):
    """Save the config to the log dir when the loggers have one, and to the MLflow run if any.

    Example:
        .. code-block:: python

            LightningCLI(MyModel, MyData, save_config_callback=MLflowSaveConfigCallback)
    """

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning asserts a log dir exists (issue #19441); SQLite/server MLflow loggers have none
        self.save_to_log_dir = self.save_to_log_dir and trainer.log_dir is not None
        super().setup(trainer, pl_module, stage)

    @override
    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        log_config(trainer, self.parser.dump(self.config, skip_none=False), self.config_filename)
