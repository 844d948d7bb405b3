"""A tiny model, data and helper callbacks for the tuning tests (importable by class_path as ``tuning_toy``).

The tests that use them live in the other ``test_tuning*.py`` files; this module holds the pieces a trial's
LightningCLI instantiates, also in subprocesses (with ``tests/`` on ``PYTHONPATH``), and a recipe writer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch import Callback, LightningDataModule, LightningModule
from torch.utils.data import DataLoader, TensorDataset

TESTS = Path(__file__).parent


class ToyData(LightningDataModule):
    """Gaussian clusters: ``n`` points, ``features`` dims, ``classes`` classes (75 % train, 25 % val)."""

    def __init__(self, n: int = 256, features: int = 8, classes: int = 3, batch_size: int = 32, seed: int = 0):
        super().__init__()
        self.n, self.features, self.classes, self.batch_size, self.seed = n, features, classes, batch_size, seed

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(self.seed)
        centers = torch.randn(self.classes, self.features, generator=g) * 2
        y = torch.randint(0, self.classes, (self.n,), generator=g)
        x = centers[y] + torch.randn(self.n, self.features, generator=g)
        cut = int(0.75 * self.n)
        self.train_set, self.val_set = TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)


class ToyModel(LightningModule):
    """A 2-layer MLP with plain SGD over ``self.parameters()`` (the WeightDecay callback adds the decay)."""

    def __init__(self, features: int = 8, classes: int = 3, hidden: int = 16, lr: float = 0.1,
                 step_sleep: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, classes))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        if self.hparams.step_sleep:
            time.sleep(self.hparams.step_sleep)
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class RaiseInterrupt(Callback):
    """Raise KeyboardInterrupt at the end of the first training epoch (a Ctrl-C during a trial) once the
    environment has ``TOY_INTERRUPT=1`` (the same callback in every invocation: a study refuses to resume with
    other trial settings)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if os.environ.get("TOY_INTERRUPT") == "1":
            raise KeyboardInterrupt


def write_recipe(folder: Path, name: str = "toy.yaml", tune: dict | None = None, scheme: str = "l2",
                 max_epochs: int = 2, **model) -> Path:
    """Write a tiny recipe (CPU, 4 train batches, 2 val batches, no checkpoints) and return its path."""
    recipe = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_epochs": max_epochs, "limit_train_batches": 4,
            "limit_val_batches": 2, "log_every_n_steps": 50, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False,
            "callbacks": [{"class_path": "lightning_wd.WeightDecay",
                           "init_args": {"scheme": scheme, "strength": 0.0, "print_audit": False}}],
        },
        "model": {"class_path": "tuning_toy.ToyModel", "init_args": {"lr": 0.5, **model}},
        "data": {"class_path": "tuning_toy.ToyData"},
    }
    if tune is not None:
        recipe["tune"] = tune
    path = Path(folder) / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path
