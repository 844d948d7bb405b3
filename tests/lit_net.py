"""The tiny Lightning world most tests train in: one model, one loader, one quiet trainer.

``conftest.py`` offers them as fixtures (``tiny_net``, ``tiny_loader``, ``quiet_trainer``, ``float64``); import
from here only what a module needs at import time (a base class to subclass, a helper called at module
level). The loader is 48 samples of 4 features and 3 classes in batches of 8: 6 optimizer steps an epoch.

Example::

    trainer = make_trainer([WeightDecay(strength=0.1, print_audit=False)], max_epochs=3)
    trainer.fit(Net(), make_loader())  # 18 steps
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

LR = 0.05

QUIET = dict(
    accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
    enable_model_summary=False, num_sanity_val_steps=0, deterministic=True, max_epochs=1,
)


@pytest.fixture
def float64():
    """Run the test in float64 (tight comparisons against references); registered for every module by conftest."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def sgd(module: nn.Module) -> torch.optim.Optimizer:
    """Plain SGD at ``LR`` over all parameters (no momentum, no weight decay)."""
    return torch.optim.SGD(module.parameters(), lr=LR)


class Net(L.LightningModule):
    """Linear(4, hidden) -> LayerNorm -> Tanh -> Linear(hidden, 3); logs ``train_loss`` every step.

    ``make_opt(module)`` is what ``configure_optimizers`` returns (plain SGD by default). The default
    grouping rules decay ``body.0.weight`` and ``head.weight``.
    """

    def __init__(self, make_opt=sgd, seed: int = 0, hidden: int = 8) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(4, hidden), nn.LayerNorm(hidden), nn.Tanh())
        self.head = nn.Linear(hidden, 3)
        self.make_opt = make_opt

    def forward(self, x):
        return self.head(self.body(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return self.make_opt(self)


def make_loader(n: int = 48, batch_size: int = 8, seed: int = 1) -> DataLoader:
    """``n`` random samples (4 features, in the default dtype) with labels in 0..2, not shuffled."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.get_default_dtype())
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def make_trainer(callbacks=(), **overrides) -> L.Trainer:
    """A CPU trainer that writes and prints nothing: no logger (pass ``logger=`` to get one), no checkpoints,
    no progress bar, no model summary, no sanity validation, deterministic, one epoch unless told otherwise."""
    return L.Trainer(callbacks=list(callbacks), **{**QUIET, **overrides})
