"""Issue 16, item 3: AdamC as the paper defines it (Defazio 2025): ``lr_coupling="corrected"`` decays the tensors
of layers that feed a normalisation layer at ``λ·lr²/lr_max`` and the others at ``λ·lr``; ``corrected_all``
is timm's whole-group form. Closed forms under zero gradients, float64."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_wd.core.callback import WeightDecay
from lightning_wd.core.normalized import normalized_tensors

DT = torch.float64
LR0, LAM, STEPS = 0.2, 0.5, 9


class ZeroGradLN(L.LightningModule):
    """Linear -> LayerNorm -> Tanh -> Linear, loss = 0 * output: the decay alone moves the weights."""

    def __init__(self, optimizer: str = "sgd") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Tanh(), nn.Linear(4, 2))
        self.net.to(DT)
        self.optimizer = optimizer
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return 0.0 * self.net(batch[0]).sum()

    def configure_optimizers(self):
        cls = torch.optim.SGD if self.optimizer == "sgd" else torch.optim.AdamW
        opt = cls(self.parameters(), lr=LR0, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def fit(callback, optimizer="sgd") -> tuple[ZeroGradLN, dict]:
    model = ZeroGradLN(optimizer)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = DataLoader(TensorDataset(torch.randn(STEPS, 3, dtype=DT)), batch_size=1)
    L.Trainer(max_steps=STEPS, callbacks=[callback], logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, accelerator="cpu").fit(model, data)
    return model, start


def product(rates) -> float:
    return math.prod(1.0 - r for r in rates)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize(("coupling", "globs", "body", "head"), [
    ("lr", None, "lr", "lr"),
    ("corrected", None, "corrected", "lr"),  # the paper: only the layer that feeds the LayerNorm
    ("corrected_all", None, "corrected", "corrected"),  # timm: the whole group
    ("corrected", ["net.3.*"], "lr", "corrected"),  # the explicit override
])
def test_corrected_coupling_closed_form(optimizer, coupling, globs, body, head):
    cb = WeightDecay(scheme="decoupled", strength=LAM, lr_coupling=coupling, normalized_layers=globs, print_audit=False)
    model, start = fit(cb, optimizer)
    lrs = [LR0 * (1 + math.cos(math.pi * t / STEPS)) / 2 for t in range(STEPS)]
    assert model.lrs == pytest.approx(lrs, rel=1e-14)
    rate = {"lr": lambda lr: LAM * lr, "corrected": lambda lr: LAM * lr * lr / LR0}
    for name, kind in (("net.0.weight", body), ("net.3.weight", head)):
        expected = start[name] * product(rate[kind](lr) for lr in lrs)
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), expected, rtol=1e-13, atol=0)
    for name in ("net.0.bias", "net.1.weight", "net.3.bias"):  # excluded by the default rules
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), start[name], rtol=0, atol=0)


def test_the_audit_shows_each_tensors_coupling():
    cb = WeightDecay(scheme="decoupled", strength=LAM, lr_coupling="corrected", print_audit=False)
    fit(cb)
    text = cb.plan.render()
    assert "net.0.weight [4, 3] -> decay: weight; lr coupling corrected (feeds LayerNorm net.1)" in text
    assert "net.3.weight [2, 4] -> decay: weight; lr coupling lr (feeds no norm layer)" in text
    assert cb._decisions()["decisions"]["net.0.weight"][-1] == "corrected"


def test_detection_on_common_blocks():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                         nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4, 2))
    assert set(normalized_tensors(conv)) == {"0.weight", "0.bias", "3.weight", "3.bias"}  # ReLU passes through
    mismatched = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 6), nn.LayerNorm(6), nn.Tanh(), nn.LayerNorm(6))
    assert set(normalized_tensors(mismatched)) == {"1.weight", "1.bias"}  # Tanh breaks the chain; 0 feeds 1
    nested = nn.Sequential(nn.Sequential(nn.Linear(2, 5)), nn.Sequential(nn.GroupNorm(1, 5)))
    assert set(normalized_tensors(nested)) == {"0.0.weight", "0.0.bias"}
    assert normalized_tensors(nn.Linear(2, 2)) == {}


def test_normalized_layers_errors():
    with pytest.raises(ValueError, match="`normalized_layers` applies to lr_coupling='corrected' only"):
        WeightDecay(strength=0.1, normalized_layers=["a.*"])
    with pytest.raises(ValueError, match="`normalized_layers` must be a list of glob strings"):
        WeightDecay(strength=0.1, lr_coupling="corrected", normalized_layers="a.*")
