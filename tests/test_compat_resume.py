"""Drop-in compatibility across checkpoints (issue 11): finetuning resumed, a checkpoint resumed without the
callback, and a real change of rules refused in one line. See ``test_compat.py`` for the scheme of the suite.
"""

from __future__ import annotations

import pytest
import torch
from compat_models import LR, Classifier, RefDecay, S, Watch, assert_same_log, assert_same_weights, fit, wd
from lightning.pytorch.callbacks import BackboneFinetuning, BaseFinetuning, Callback
from lit_net import float64  # noqa: F401  (float64: fixture)
from torch.optim.lr_scheduler import StepLR

pytestmark = pytest.mark.usefixtures("float64")

EPOCHS = 4


class StopAfter(Callback):
    """Interrupt the run at the end of epoch ``epoch`` (0-based)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def adamw(weight_decay, trainable_only: bool = False, schedule: bool = False):
    def make(m):
        params = [p for p in m.parameters() if p.requires_grad] if trainable_only else m.parameters()
        opt = torch.optim.AdamW(params, lr=LR, weight_decay=weight_decay, foreach=True)
        if schedule:
            return {"optimizer": opt, "lr_scheduler": {"scheduler": StepLR(opt, 5, 0.5), "interval": "step"}}
        return opt
    return make


def checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


# -- 1. finetuning callbacks before WeightDecay, stopped after the unfreeze, resumed ------------------------


class UnfreezeAt(BaseFinetuning):
    """A user's BaseFinetuning: the backbone joins the optimizer (at lr / 10) at epoch 1 and trains on after a
    resume. (Lightning's BackboneFinetuning, resumed after its unfreeze epoch, restores the group but leaves the
    backbone frozen: its resumed runs are compared with the reference resumed the same way.)"""

    def freeze_before_training(self, pl_module):
        self.freeze(pl_module.backbone)

    def finetune_function(self, pl_module, epoch, optimizer):
        if epoch == 1:
            self.unfreeze_and_add_param_group(pl_module.backbone, optimizer, lr=LR / 10)
        elif epoch > 1:
            self.make_trainable(pl_module.backbone)  # resumed: BaseFinetuning restored the group, not requires_grad


FINETUNING = {"BackboneFinetuning": lambda: BackboneFinetuning(unfreeze_backbone_at_epoch=1), "UnfreezeAt": UnfreezeAt}


def finetune(finetuning, user, decay, ckpt_dir):
    """(full run, its Watch, run stopped after epoch 1 and resumed, its Watch); ``decay()``: callbacks after it."""
    full, watch = Classifier(user), Watch()
    fit(full, [watch, finetuning(), *decay()], max_epochs=EPOCHS)
    fit(Classifier(user), [finetuning(), *decay(), StopAfter(1)], ckpt_dir=ckpt_dir, max_epochs=EPOCHS)
    resumed, resumed_watch = Classifier(user), Watch()
    fit(resumed, [resumed_watch, finetuning(), *decay()], ckpt_path=ckpt_dir / "last.ckpt", max_epochs=EPOCHS)
    return full, watch, resumed, resumed_watch


@pytest.mark.parametrize("name", list(FINETUNING))
def test_finetuning_resumed_after_the_unfreeze(name, tmp_path):
    user = adamw(0.01, trainable_only=True)  # the backbone is frozen when configure_optimizers runs
    full, watch, resumed, resumed_watch = finetune(FINETUNING[name], user, lambda: [wd(strength=S)], tmp_path / "wd")
    assert len(resumed.trainer.optimizers[0].param_groups) == 2  # the premise: the backbone joined as a group
    ref, _, ref_resumed, _ = finetune(FINETUNING[name], adamw(0.0, trainable_only=True), lambda: [RefDecay(S)],
                                      tmp_path / "ref")
    assert_same_weights(full, ref)  # the unfrozen backbone weights decay from epoch 1 on
    assert_same_weights(resumed, ref_resumed)
    if name == "UnfreezeAt":
        assert_same_weights(resumed, full)  # and go on decaying after the resume
    _, plain, _, plain_resumed = finetune(FINETUNING[name], user, lambda: [], tmp_path / "plain")
    assert_same_log(watch, plain)
    assert_same_log(resumed_watch, plain_resumed)


# -- 6. a WeightDecay checkpoint resumed without it, or with strength 0 ----------------------------------


@pytest.mark.parametrize("resume_with", ["nothing", "strength_0"])
def test_checkpoint_resumes_without_the_callback(resume_with, tmp_path):
    user = adamw(0.01, schedule=True)
    fit(Classifier(user), [wd(strength=S)], ckpt_dir=tmp_path / "wd", max_epochs=2)
    fit(Classifier(user), [], ckpt_dir=tmp_path / "plain", max_epochs=2)
    saved, plain_saved = checkpoint(tmp_path / "wd" / "last.ckpt"), checkpoint(tmp_path / "plain" / "last.ckpt")
    # the optimizer and scheduler state of the user's own layout, with the user's weight_decay
    assert saved["optimizer_states"][0]["param_groups"] == plain_saved["optimizer_states"][0]["param_groups"]
    assert saved["lr_schedulers"] == plain_saved["lr_schedulers"]

    callbacks = [] if resume_with == "nothing" else [wd(strength=0.0)]
    model, watch = Classifier(user), Watch()
    fit(model, [watch, *callbacks], ckpt_path=tmp_path / "wd" / "last.ckpt", max_epochs=EPOCHS)
    plain = Watch()
    fit(Classifier(user), [plain], ckpt_path=tmp_path / "plain" / "last.ckpt", max_epochs=EPOCHS)
    assert_same_log(watch, plain)
    assert model.trainer.global_step == 6 * EPOCHS
    assert not torch.equal(model.head.weight, saved["state_dict"]["head.weight"])  # it trained on


# -- 11. a real change of rules on resume: one line naming it -------------------------------------------


@pytest.mark.parametrize("split_groups", [False, True], ids=["default", "split_groups"])
def test_resume_with_another_exclude_fails_in_one_line(split_groups, tmp_path):
    options = {"split_groups": True} if split_groups else {}
    fit(Classifier(adamw(0.01)), [wd(strength=S, **options)], ckpt_dir=tmp_path, max_epochs=2)
    with pytest.raises(Exception) as caught:  # noqa: B017  (the type is the implementation's; the message is spec)
        fit(Classifier(adamw(0.01)), [wd(strength=S, exclude=["head.*"], **options)],
            ckpt_path=tmp_path / "last.ckpt", max_epochs=EPOCHS)
    message = str(caught.value)
    assert not isinstance(caught.value, (AssertionError, TypeError, AttributeError, KeyError)), repr(caught.value)
    assert "\n" not in message.strip(), message
    assert "head.weight" in message or "head.*" in message, message  # what changed: the tensor or the rule


@pytest.mark.parametrize("split_groups", [False, True], ids=["default", "split_groups"])
def test_resume_with_the_same_rules_is_exact(split_groups, tmp_path):
    options = {"split_groups": True} if split_groups else {}
    full = Classifier(adamw(0.01, schedule=True))
    fit(full, [wd(strength=S, **options)], max_epochs=EPOCHS)
    fit(Classifier(adamw(0.01, schedule=True)), [wd(strength=S, **options), StopAfter(1)], ckpt_dir=tmp_path,
        max_epochs=EPOCHS)
    resumed = Classifier(adamw(0.01, schedule=True))
    fit(resumed, [wd(strength=S, **options)], ckpt_path=tmp_path / "last.ckpt", max_epochs=EPOCHS)
    assert_same_weights(resumed, full)
