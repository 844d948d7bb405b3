"""The small Lightning model the callback tests train: Linear -> LayerNorm -> Tanh -> Linear."""

import lightning as L
import pytest
import torch
from torch import nn


@pytest.fixture
def float64():
    """Run the test in float64 (tight comparisons against references)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class Net(L.LightningModule):
    """``make_opt(module)`` is what ``configure_optimizers`` returns; logs ``train_loss`` every step."""

    def __init__(self, make_opt, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh())
        self.head = nn.Linear(8, 3)
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
