"""Edge cases of the callback: several optimizers, foreign checkpoints, timescale couplings, groups added late."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lit_net import float64  # noqa: F401  (fixture)
from torch import nn
from torch.utils.data import DataLoader

from lightning_wd import WeightDecay

pytestmark = pytest.mark.usefixtures("float64")


def _trainer(callbacks=(), **kwargs) -> L.Trainer:
    options = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    options.update(kwargs)
    return L.Trainer(callbacks=list(callbacks), **options)


def _data(n: int = 8) -> DataLoader:
    return DataLoader(torch.zeros(n, 1), batch_size=1)


class Still(L.LightningModule):
    """Two linear layers, no gradient signal: only decay moves the weights."""

    def __init__(self, make_opt, freeze_b: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
        self.make_opt = make_opt
        if freeze_b:
            self.b.requires_grad_(False)

    def training_step(self, batch, batch_idx):
        return sum((p * 0.0).sum() for p in self.parameters() if p.requires_grad)

    def configure_optimizers(self):
        return self.make_opt(self)


class TwoOptimizers(Still):
    def __init__(self) -> None:
        super().__init__(None)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        for opt in self.optimizers():
            opt.zero_grad()
        self.manual_backward(sum((p * 0.0).sum() for p in self.parameters()))
        for opt in self.optimizers():
            opt.step()

    def configure_optimizers(self):
        return [torch.optim.SGD(self.a.parameters(), lr=0.1), torch.optim.SGD(self.b.parameters(), lr=0.1)]


def test_second_optimizer_decays_when_the_first_has_nothing_to_decay():
    model = TwoOptimizers()
    a0, b0 = model.a.weight.detach().clone(), model.b.weight.detach().clone()
    callback = WeightDecay(strength=1.0, exclude=["a.*"], print_audit=False)
    _trainer([callback], max_epochs=1).fit(model, _data(4))
    torch.testing.assert_close(model.a.weight, a0, rtol=0, atol=0)
    torch.testing.assert_close(model.b.weight, b0 * 0.9 ** 4, rtol=1e-13, atol=0)
    assert callback.state_dict()["steps"] == [4, 4]


def test_resuming_a_checkpoint_saved_without_the_callback_does_not_decay_twice(tmp_path):
    make = lambda m: torch.optim.SGD(m.parameters(), lr=0.1, weight_decay=0.5)  # noqa: E731
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _trainer([ckpt], max_epochs=1, enable_checkpointing=True).fit(Still(make), _data(4))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    model = Still(make)
    with pytest.warns(UserWarning, match="instead of the optimizer's weight_decay"):
        _trainer([WeightDecay(strength=1.0, print_audit=False)], max_epochs=2).fit(
            model, _data(4), ckpt_path=str(tmp_path / "last.ckpt"))
    assert model.trainer.optimizers[0].param_groups[0]["weight_decay"] == 0.5  # the user's value is kept ...
    torch.testing.assert_close(model.a.bias, saved["a.bias"], rtol=0, atol=0)  # ... but never reaches a step


@pytest.mark.parametrize("coupling", ["lr", "lr_ratio", "none", "corrected", "corrected_all"])
def test_timescale_gives_the_same_rate_under_every_lr_coupling(coupling):
    tau, steps_per_epoch = 2.0, 8
    model = Still(lambda m: torch.optim.SGD(m.parameters(), lr=0.01))
    w0 = model.a.weight.detach().clone()
    callback = WeightDecay(timescale_epochs=tau, lr_coupling=coupling, print_audit=False)
    _trainer([callback], max_epochs=1).fit(model, _data(steps_per_epoch))
    rate = 1 / (tau * steps_per_epoch)  # the EMA timescale, whatever the coupling
    torch.testing.assert_close(model.a.weight, w0 * (1 - rate) ** steps_per_epoch, rtol=1e-12, atol=0)


def test_a_group_added_during_training_is_decayed_by_the_rules():
    class Unfreeze(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                pl_module.b.requires_grad_(True)
                trainer.optimizers[0].add_param_group({"params": list(pl_module.b.parameters())})

    model = Still(lambda m: torch.optim.AdamW([m.a.weight, m.a.bias], lr=0.1, weight_decay=0.3), freeze_b=True)
    b_weight, b_bias = model.b.weight.detach().clone(), model.b.bias.detach().clone()
    with pytest.warns(UserWarning, match="instead of the optimizer's weight_decay"):
        _trainer([WeightDecay(strength=1.0, print_audit=False), Unfreeze()], max_epochs=2).fit(model, _data(4))
    added = model.trainer.optimizers[0].param_groups[-1]
    assert added["weight_decay"] == 0.3  # the optimizer's default, kept in the group; the rules decide the decay
    torch.testing.assert_close(model.b.weight, b_weight * 0.9 ** 4, rtol=1e-12, atol=0)
    torch.testing.assert_close(model.b.bias, b_bias, rtol=0, atol=0)  # a bias: excluded by the rules
