"""Drop-in compatibility (issue 11): the user's optimizer keeps its param groups; the decay stays exact.

Every test trains the same user code three ways: with ``WeightDecay`` added, without it (the optimizer's
structure and group values must be recorded identically, ``Watch``), and as a reference that decays by hand
or on hand-built :func:`lightning_wd.param_groups` (the weights must be equal, float64, bit for bit).
The other compatibility files: ``test_compat_callbacks.py`` (Lightning callbacks), ``test_compat_resume.py``
(checkpoints), ``test_compat_matrix.py`` (every ``configure_optimizers`` format, demos, trainer features).
"""

from __future__ import annotations

import pytest
import torch
from compat_models import LR, Classifier, RefDecay, S, Watch, assert_same_log, assert_same_weights, fit, wd
from lit_net import float64  # noqa: F401  (float64: fixture)
from torch.optim.lr_scheduler import OneCycleLR, StepLR

from lightning_wd import param_groups

pytestmark = pytest.mark.usefixtures("float64")


def scheduled(opt, schedule: str):
    if schedule == "none":
        return opt
    scheduler = {
        "step": lambda: StepLR(opt, step_size=5, gamma=0.5),
        "onecycle": lambda: OneCycleLR(opt, max_lr=0.1, total_steps=30),
    }[schedule]()
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def kernel(fused: bool) -> dict:
    return {"fused": True} if fused else {"foreach": True}


def three_runs(user, reference, callback, model=Classifier, **kwargs):
    """(model with callback, its Watch, reference model, plain Watch): the user's code with the callback, the
    reference (``reference(m)`` -> what configure_optimizers returns, or ``(make_opt, callbacks)``) and the user's
    code without the callback."""
    reference, ref_callbacks = reference if isinstance(reference, tuple) else (reference, [])
    got, watch = model(user), Watch()
    fit(got, [watch, callback], **kwargs)
    ref = model(reference)
    fit(ref, ref_callbacks, **kwargs)
    plain_watch = Watch()
    fit(model(user), [plain_watch], **kwargs)
    return got, watch, ref, plain_watch


# -- the reference itself -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["decoupled", "l2"])
def test_reference_decay_matches_torch(scheme):
    """RefDecay on the user's groups == torch on param_groups (so it may stand in where torch cannot)."""
    if scheme == "decoupled":
        def hand(m):
            return scheduled(torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.0, foreach=True), "onecycle")

        def native(m):
            return scheduled(torch.optim.AdamW(param_groups(m, S), lr=LR, foreach=True), "onecycle")
    else:
        def hand(m):
            return scheduled(torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9, foreach=True), "step")

        def native(m):
            return scheduled(torch.optim.SGD(param_groups(m, S), lr=LR, momentum=0.9, foreach=True), "step")
    a, b = Classifier(hand), Classifier(native)
    fit(a, [RefDecay(S, scheme)])
    fit(b)
    assert_same_weights(a, b)
    plain = Classifier(hand)
    fit(plain)
    assert not torch.equal(a.head.weight, plain.head.weight)


# -- bit-identical to hand-built groups, groups untouched -------------------------------------------------


@pytest.mark.parametrize(("fused", "schedule"), [(False, "step"), (False, "onecycle"), (True, "step")],
                         ids=["foreach-steplr", "foreach-onecycle", "fused-steplr"])
def test_decoupled_on_adamw_equals_adamw_on_param_groups(fused, schedule):
    def user(m):
        return scheduled(torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.3, **kernel(fused)), schedule)

    def reference(m):
        return scheduled(torch.optim.AdamW(param_groups(m, S), lr=LR, **kernel(fused)), schedule)

    got, watch, ref, plain = three_runs(user, reference, wd(scheme="decoupled", strength=S))
    assert_same_log(watch, plain)  # one group, weight_decay 0.3 outside step, the scheduler's lr and betas
    assert_same_weights(got, ref, exact=not fused)


def test_l2_on_sgd_equals_sgd_on_param_groups():
    def user(m):
        opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9, weight_decay=1e-4, foreach=True)
        return scheduled(opt, "step")

    def reference(m):
        return scheduled(torch.optim.SGD(param_groups(m, S), lr=LR, momentum=0.9, foreach=True), "step")

    got, watch, ref, plain = three_runs(user, reference, wd(scheme="l2", strength=S))
    assert_same_log(watch, plain)
    assert_same_weights(got, ref)


def test_split_groups_is_the_opt_in_for_native_decay():
    def user(m):
        return scheduled(torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.3, foreach=True), "step")

    def reference(m):
        return scheduled(torch.optim.AdamW(param_groups(m, S), lr=LR, foreach=True), "step")

    got, ref = Classifier(user), Classifier(reference)
    t = fit(got, [wd(strength=S, split_groups=True)])
    fit(ref)
    groups = t.optimizers[0].param_groups
    names = {id(p): n for n, p in got.named_parameters()}
    assert [[names[id(p)] for p in g["params"]] for g in groups] == [
        ["backbone.0.weight", "head.weight"], ["backbone.0.bias", "backbone.1.weight", "backbone.1.bias", "head.bias"]
    ]
    assert_same_weights(got, ref)


def test_groups_already_right_are_left_alone():
    def user(m):
        return scheduled(torch.optim.AdamW(param_groups(m, S), lr=LR, foreach=True), "step")

    got, watch = Classifier(user), Watch()
    fit(got, [watch, wd()])
    plain, plain_watch = Classifier(user), Watch()
    fit(plain, [plain_watch])
    assert_same_log(watch, plain_watch)
    assert_same_weights(got, plain)


# -- 7. no strength: the user's own decay, moved onto the right tensors -----------------------------------


def decayed_rows(cb) -> dict[str, float]:
    return {row.name: row.strength for row in cb.plan.rows if row.decayed}


def test_no_strength_keeps_the_decay_of_adamw():
    def user(m):
        return torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.05, foreach=True)

    def reference(m):
        return torch.optim.AdamW(param_groups(m, 0.05), lr=LR, foreach=True)

    cb = wd()
    got, watch, ref, plain = three_runs(user, reference, cb)
    assert_same_weights(got, ref)  # 0.05 on the weights, none on biases and the LayerNorm
    assert_same_log(watch, plain)
    assert cb.hparams["strength"] == 0.05
    assert decayed_rows(cb) == {"backbone.0.weight": 0.05, "head.weight": 0.05}
    assert cb.compute_stats(got)["wd/strength"] == 0.05


@pytest.mark.parametrize("scheme", [None, "l2"], ids=["default", "l2"])
def test_no_strength_keeps_the_coupled_decay_of_sgd(scheme):
    def user(m):
        return torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9, weight_decay=1e-3, foreach=True)

    def reference(m):
        return torch.optim.SGD(param_groups(m, 1e-3), lr=LR, momentum=0.9, foreach=True)

    cb = wd() if scheme is None else wd(scheme=scheme)
    got, watch, ref, plain = three_runs(user, reference, cb)
    assert_same_weights(got, ref)  # coupled L2 of 1e-3, on the weights only
    assert_same_log(watch, plain)
    assert cb.hparams["strength"] == 1e-3
    assert decayed_rows(cb) == {"backbone.0.weight": 1e-3, "head.weight": 1e-3}


def test_no_strength_keeps_the_decay_of_each_group():
    def user(m):
        groups = [{"params": m.backbone.parameters(), "weight_decay": 0.05},
                  {"params": m.head.parameters(), "weight_decay": 0.01}]
        return torch.optim.AdamW(groups, lr=LR, foreach=True)

    def reference(m):
        return torch.optim.AdamW(param_groups(m.backbone, 0.05) + param_groups(m.head, 0.01), lr=LR, foreach=True)

    cb = wd()
    got, watch, ref, plain = three_runs(user, reference, cb)
    assert_same_weights(got, ref)
    assert_same_log(watch, plain)
    assert decayed_rows(cb) == {"backbone.0.weight": 0.05, "head.weight": 0.01}


# -- 2. user code indexing param_groups ---------------------------------------------------------------


class HeadLrCut(Classifier):
    """User code: from epoch 1 on, the head (group 1) trains at a tenth of the lr."""

    def on_train_epoch_start(self):
        if self.current_epoch == 1:
            self.optimizers().param_groups[1]["lr"] *= 0.1


def two_groups(weight_decay):
    def make(m):
        groups = [{"params": m.backbone.parameters()}, {"params": m.head.parameters()}]
        return torch.optim.AdamW(groups, lr=LR, weight_decay=weight_decay, foreach=True)
    return make


def test_user_code_indexing_param_groups_changes_only_its_group():
    got, watch, ref, plain = three_runs(
        two_groups(0.01), (two_groups(0.0), [RefDecay(S)]), wd(strength=S), model=HeadLrCut
    )
    groups = got.trainer.optimizers[0].param_groups
    assert [g["lr"] for g in groups] == [LR, LR * 0.1]
    assert_same_log(watch, plain)
    assert_same_weights(got, ref)


# -- 3. an optimizer rebuilt during fit ---------------------------------------------------------------


class Rebuilding(Classifier):
    """User code: a fresh optimizer (configure_optimizers again) at the start of epoch 1."""

    def on_train_epoch_start(self):
        if self.current_epoch == 1:
            first = self.trainer.optimizers[0]
            self.trainer.strategy.setup_optimizers(self.trainer)
            assert self.trainer.optimizers[0] is not first


def adamw(weight_decay):
    def make(m):
        return torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=weight_decay, foreach=True)
    return make


def test_decay_follows_an_optimizer_rebuilt_during_fit():
    got, watch, ref, plain = three_runs(adamw(0.01), (adamw(0.0), [RefDecay(S)]), wd(strength=S), model=Rebuilding)
    assert_same_log(watch, plain)
    assert_same_weights(got, ref)  # the decay went on with the new optimizer


# -- 4. a scheduler the user keeps and steps ----------------------------------------------------------


class OwnScheduler(Classifier):
    """User code: a StepLR built in configure_optimizers but not returned, stepped at each epoch end."""

    def configure_optimizers(self):
        opt = self.make_opt(self)
        self.scheduler = StepLR(opt, step_size=1, gamma=0.5)
        return opt

    def on_train_epoch_end(self):
        self.scheduler.step()


def test_a_scheduler_stepped_by_the_user_keeps_its_lr_trajectory():
    got, watch, ref, plain = three_runs(
        adamw(0.01), (adamw(0.0), [RefDecay(S)]), wd(strength=S), model=OwnScheduler
    )
    assert [g["lr"] for g in got.trainer.optimizers[0].param_groups] == [LR * 0.5**4]
    assert_same_log(watch, plain)  # the lr of every step, too
    assert_same_weights(got, ref)


# -- 10. lazy modules ---------------------------------------------------------------------------------


def test_a_lazy_layer_materialised_during_fit_decays():
    def lazy(m):
        return Classifier(m, lazy=True)

    model = Classifier(adamw(0.0), lazy=True)
    assert isinstance(model.backbone[0].weight, torch.nn.parameter.UninitializedParameter)
    got, watch, ref, plain = three_runs(adamw(0.01), (adamw(0.0), [RefDecay(S)]), wd(strength=S), model=lazy)
    assert got.backbone[0].weight.shape == (8, 4)
    assert_same_log(watch, plain)
    assert_same_weights(got, ref)  # backbone.0.weight decayed from its first step on
