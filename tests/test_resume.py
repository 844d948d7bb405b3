"""Checkpoints: an interrupted and resumed run is bit-identical to an uninterrupted one, for every scheme."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lit_net import Net, float64  # noqa: F401  (float64: fixture)
from torch.utils.data import DataLoader, TensorDataset

from lightning_wd.core.callback import WeightDecay

EPOCHS = 4
LR = 0.05


pytestmark = pytest.mark.usefixtures("float64")

class StopAfter(Callback):
    """Interrupt a run planned for EPOCHS epochs at the end of epoch ``epoch`` (0-based)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


def run(make_opt, callbacks, ckpt_dir=None, ckpt_path=None) -> tuple[Net, L.Trainer]:
    callbacks = list(callbacks)
    if ckpt_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_last=True))
    trainer = L.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=ckpt_dir is not None,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
    )
    model = Net(make_opt)
    trainer.fit(model, loader(), ckpt_path=ckpt_path)
    return model, trainer


def adamw(m):
    opt = torch.optim.AdamW(m.parameters(), lr=LR)
    return {"optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.StepLR(opt, 5, 0.5), "interval": "step"}}


def sgd(m):
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9)
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)}


CASES = {  # scheme -> (user optimizer, strength); decoupled and l2 run natively (split groups)
    "decoupled": (adamw, 0.5),
    "l2": (sgd, 0.05),
    "l1": (adamw, 0.5),
    "elastic_net": (sgd, 0.5),
    "group_lasso": (adamw, 0.5),
    "l2_sp": (adamw, 2.0),
    "cautious": (adamw, 0.5),
}


def callback(scheme: str, **kwargs) -> WeightDecay:
    make_opt, strength = CASES[scheme]
    return WeightDecay(scheme=scheme, strength=strength, schedule="cosine", print_audit=False, **kwargs)


@pytest.mark.parametrize("scheme", list(CASES))
def test_resume_is_bit_identical(scheme, tmp_path):
    make_opt = CASES[scheme][0]
    first = callback(scheme)
    run(make_opt, [first, StopAfter(1)], ckpt_dir=tmp_path)
    last = tmp_path / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["callbacks"]["WeightDecay"]["steps"] == [12]

    resumed_cb = callback(scheme)
    resumed, resumed_trainer = run(make_opt, [resumed_cb], ckpt_path=last)
    straight_cb = callback(scheme)
    straight, _ = run(make_opt, [straight_cb])

    assert resumed_trainer.global_step == 24 and resumed_cb.steps == straight_cb.steps == [24]
    for (name, p), q in zip(resumed.named_parameters(), straight.parameters()):
        assert torch.equal(p, q), name
    assert len(resumed_trainer.optimizers[0].param_groups) == 1  # the user's groups, never split
    assert not torch.equal(straight.body[0].weight, undecayed(make_opt).body[0].weight)  # the decay did act


@functools.lru_cache
def undecayed(make_opt) -> Net:
    return run(make_opt, [])[0]


def test_l2_sp_reference_survives_the_checkpoint(tmp_path):
    start = Net(adamw)
    run(adamw, [callback("l2_sp"), StopAfter(1)], ckpt_dir=tmp_path)
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]["WeightDecay"]
    assert set(state["persistent"]["reference"]) == {"body.0.weight", "head.weight"}
    assert torch.equal(state["persistent"]["reference"]["body.0.weight"], start.body[0].weight.detach())
    assert torch.equal(state["persistent"]["reference"]["head.weight"], start.head.weight.detach())

    cb = callback("l2_sp")
    model, _ = run(adamw, [cb], ckpt_path=tmp_path / "last.ckpt")
    bucket = next(b for d in cb.decays for b in d.buckets if "head.weight" in b.names)
    reference = bucket.state["reference"][bucket.names.index("head.weight")]
    assert torch.equal(reference, start.head.weight.detach())  # the start of training, not of the resumed fit
    assert not torch.equal(model.head.weight, start.head.weight)


def test_resume_with_a_changed_grouping_is_refused(tmp_path):
    def plain_adamw(m):
        return torch.optim.AdamW(m.parameters(), lr=LR)

    run(plain_adamw, [WeightDecay(strength=0.1, print_audit=False), StopAfter(1)], ckpt_dir=tmp_path)
    changed = WeightDecay(strength=0.1, exclude=["head.weight"], print_audit=False)
    with pytest.raises(ValueError, match=r"^WeightDecay: the checkpoint was trained with other decay rules: "
                                         r"head\.weight: decayed x1 \(weight\) in the checkpoint, not decayed now "
                                         r"\(user exclude 'head\.weight'\)[^\n]*$"):
        run(plain_adamw, [changed], ckpt_path=tmp_path / "last.ckpt")
    split = WeightDecay(strength=0.1, exclude=["head.weight"], print_audit=False, split_groups=True)
    with pytest.raises(ValueError, match="other decay rules: head.weight"):
        run(plain_adamw, [split], ckpt_path=tmp_path / "last.ckpt")
    # the same rules resume fine
    run(plain_adamw, [WeightDecay(strength=0.1, print_audit=False)], ckpt_path=tmp_path / "last.ckpt")


def test_resume_from_a_checkpoint_saved_without_the_callback(tmp_path):
    def plain_adamw(m):
        return torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.0)

    run(plain_adamw, [StopAfter(1)], ckpt_dir=tmp_path)
    cb = WeightDecay(strength=0.1, print_audit=False)
    model, trainer = run(plain_adamw, [cb], ckpt_path=tmp_path / "last.ckpt")
    # the checkpoint's optimizer state has the user's one group: it is kept, and the decay self-applied
    assert len(trainer.optimizers[0].param_groups) == 1
    assert cb.steps == [12]  # the steps of this fit only: the checkpoint had no counter
    assert trainer.global_step == 24


def test_a_checkpoint_loaded_for_validation_does_not_leak_into_a_later_fit(tmp_path):
    def plain_adamw(m):
        return torch.optim.AdamW(m.parameters(), lr=LR)

    class WithVal(Net):
        def validation_step(self, batch, batch_idx):
            return None

    cb = WeightDecay(strength=0.1, print_audit=False)
    run(plain_adamw, [cb, StopAfter(1)], ckpt_dir=tmp_path)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[cb], max_epochs=1)
    trainer.validate(WithVal(plain_adamw), loader(), ckpt_path=tmp_path / "last.ckpt", weights_only=True)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[cb], max_epochs=1)
    trainer.fit(Net(plain_adamw), loader())
    assert cb.steps == [6]  # counted from 0, not from the validated checkpoint's 12


def test_state_loaded_after_fit_start_is_checked_at_once():
    """Strategies that restore after setup (FSDP, DeepSpeed) load callback state after fit start."""

    class LateLoad(Callback):
        def __init__(self, cb: WeightDecay) -> None:
            self.cb = cb

        def on_train_start(self, trainer, pl_module):
            state = self.cb.state_dict()
            self.cb.load_state_dict({**state, "steps": [5]})  # a matching layout: the counter is taken over
            assert self.cb.steps == [5]
            decisions = {**state["decisions"], "decisions": {**state["decisions"]["decisions"],
                                                             "head.weight": [0.0, "user exclude 'head.*'"]}}
            self.cb.load_state_dict({**state, "decisions": decisions})

    cb = WeightDecay(strength=0.1, print_audit=False)
    with pytest.raises(ValueError, match="other decay rules: head.weight"):
        run(adamw, [cb, LateLoad(cb)])
