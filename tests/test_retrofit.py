"""Splitting a user's optimizer groups and rewriting its LR schedulers: every torch scheduler keeps its lr
trajectory exactly, per tensor, and the result equals the optimizer built by hand on the default groups."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.core.optimizer import LightningOptimizer
from lit_net import Net, float64  # noqa: F401  (float64: fixture)
from torch import nn
from torch.optim import lr_scheduler as S
from torch.utils.data import DataLoader, TensorDataset

from lightning_wd import param_groups
from lightning_wd.core.callback import WeightDecay
from lightning_wd.core.retrofit import decay_kind, expand_schedulers, regroup_is_safe, split_groups

WD = 0.1
LR = 0.05
EPOCHS, BATCHES = 3, 6
TOTAL = EPOCHS * BATCHES


pytestmark = pytest.mark.usefixtures("float64")

class Recorder(Callback):
    """The lr (and momentum) each tensor is stepped with, per optimizer step."""

    def __init__(self) -> None:
        self.lrs: list[dict[str, float]] = []
        self.momenta: list[dict[str, float]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        names = {id(p): n for n, p in pl_module.named_parameters()}
        self.lrs.append({names[id(p)]: float(g["lr"]) for g in optimizer.param_groups for p in g["params"]})
        self.momenta.append({names[id(p)]: float(g.get("momentum", g.get("betas", (0.0,))[0]))
                             for g in optimizer.param_groups for p in g["params"]})


def fit(make_opt, callbacks=()) -> tuple[Net, L.Trainer, Recorder]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8 * BATCHES, 4, generator=g), torch.randint(0, 3, (8 * BATCHES,), generator=g)
    recorder = Recorder()
    model = Net(make_opt)
    trainer = L.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[*callbacks, recorder],
    )
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False))
    return model, trainer, recorder


def cfg(scheduler, **extra):
    return {"optimizer": scheduler.optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", **extra}}


SCHEDULERS = {
    "StepLR": lambda o: cfg(S.StepLR(o, step_size=4, gamma=0.5)),
    "MultiStepLR": lambda o: cfg(S.MultiStepLR(o, milestones=[3, 7, 12], gamma=0.5)),
    "ExponentialLR": lambda o: cfg(S.ExponentialLR(o, gamma=0.9)),
    "CosineAnnealingLR": lambda o: cfg(S.CosineAnnealingLR(o, T_max=TOTAL, eta_min=1e-3)),
    "CosineAnnealingWarmRestarts": lambda o: cfg(S.CosineAnnealingWarmRestarts(o, T_0=4, T_mult=2)),
    "LinearLR": lambda o: cfg(S.LinearLR(o, start_factor=0.2, total_iters=8)),
    "PolynomialLR": lambda o: cfg(S.PolynomialLR(o, total_iters=TOTAL, power=2.0)),
    "LambdaLR": lambda o: cfg(S.LambdaLR(o, lambda step: 1.0 / (1.0 + 0.2 * step))),
    "MultiplicativeLR": lambda o: cfg(S.MultiplicativeLR(o, lambda step: 0.95)),
    "CyclicLR": lambda o: cfg(S.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=3)),
    "OneCycleLR": lambda o: cfg(S.OneCycleLR(o, max_lr=0.1, total_steps=TOTAL)),
    "SequentialLR": lambda o: cfg(S.SequentialLR(
        o, [S.LinearLR(o, start_factor=0.3, total_iters=4), S.ExponentialLR(o, gamma=0.9)], milestones=[4])),
    "ChainedScheduler": lambda o: cfg(S.ChainedScheduler(
        [S.LinearLR(o, start_factor=0.3, total_iters=5), S.ExponentialLR(o, gamma=0.95)], optimizer=o)),
    "ReduceLROnPlateau": lambda o: cfg(
        S.ReduceLROnPlateau(o, mode="min", factor=0.5, patience=0, threshold=0.2), monitor="train_loss"),
}


def user_and_reference(name: str):
    """(user's optimizer, scheme, hand-built reference optimizer) for one scheduler."""
    if name == "CyclicLR":  # cycles SGD's momentum
        return (lambda m: torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9), "l2",
                lambda m: torch.optim.SGD(param_groups(m, WD), lr=LR, momentum=0.9))
    return (lambda m: torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.0), "decoupled",
            lambda m: torch.optim.AdamW(param_groups(m, WD), lr=LR))


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_torch_scheduler_keeps_its_trajectory_and_matches_the_reference(name):
    user, scheme, reference = user_and_reference(name)
    schedule = SCHEDULERS[name]
    plain, _, seen_plain = fit(lambda m: schedule(user(m)))
    cb = WeightDecay(scheme=scheme, strength=WD, print_audit=False, split_groups=True)
    model, trainer, seen = fit(lambda m: schedule(user(m)), [cb])
    ref, _, seen_ref = fit(lambda m: schedule(reference(m)))

    assert len(trainer.optimizers[0].param_groups) == 2  # natively decayed: the group was split
    assert seen.lrs == seen_plain.lrs == seen_ref.lrs
    assert seen.momenta == seen_plain.momenta == seen_ref.momenta
    assert len({step["head.weight"] for step in seen.lrs}) > 1, "the scheduler did change the lr"
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), n
    assert not torch.equal(model.head.weight, plain.head.weight)


class HalvingLR(S.StepLR):
    """A user's scheduler: not one of torch's classes, so its per-group state cannot be proven rewritable."""


def test_custom_scheduler_forces_self_applied_decay(caplog):
    def schedule(o):
        return cfg(HalvingLR(o, step_size=4, gamma=0.5))

    plain, _, seen_plain = fit(lambda m: schedule(torch.optim.AdamW(m.parameters(), lr=LR)))
    cb = WeightDecay(strength=WD, print_audit=False, split_groups=True)
    with caplog.at_level("INFO"):
        model, trainer, seen = fit(lambda m: schedule(torch.optim.AdamW(m.parameters(), lr=LR)), [cb])
    ref, _, _ = fit(lambda m: schedule(torch.optim.AdamW(param_groups(m, WD), lr=LR)))
    assert len(trainer.optimizers[0].param_groups) == 1  # not split
    assert "HalvingLR is not one of torch.optim.lr_scheduler's" in caplog.text
    assert seen.lrs == seen_plain.lrs
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-13, msg=n)


TWO_GROUP_SCHEDULERS = {
    "LambdaLR": (lambda o: cfg(S.LambdaLR(o, [lambda s: 0.9 ** s, lambda s: 1.0 / (1 + s)])),
                 lambda o: cfg(S.LambdaLR(o, [lambda s: 0.9 ** s] * 2 + [lambda s: 1.0 / (1 + s)] * 2))),
    "CyclicLR": (lambda o: cfg(S.CyclicLR(o, base_lr=[0.01, 0.001], max_lr=[0.1, 0.02], step_size_up=3,
                                          cycle_momentum=False)),
                 lambda o: cfg(S.CyclicLR(o, base_lr=[0.01, 0.01, 0.001, 0.001], max_lr=[0.1, 0.1, 0.02, 0.02],
                                          step_size_up=3, cycle_momentum=False))),
    "ReduceLROnPlateau": (
        lambda o: cfg(S.ReduceLROnPlateau(o, factor=0.5, patience=0, threshold=0.2, min_lr=[0.02, 0.001]),
                      monitor="train_loss"),
        lambda o: cfg(S.ReduceLROnPlateau(o, factor=0.5, patience=0, threshold=0.2,
                                          min_lr=[0.02, 0.02, 0.001, 0.001]), monitor="train_loss")),
}


@pytest.mark.parametrize("name", list(TWO_GROUP_SCHEDULERS))
def test_several_user_groups_keep_their_lr_through_the_split(name):
    user_schedule, reference_schedule = TWO_GROUP_SCHEDULERS[name]

    def user(m):
        return torch.optim.AdamW([{"params": m.body.parameters()}, {"params": m.head.parameters(), "lr": LR / 4}],
                                 lr=LR)

    def reference(m):
        body, head = param_groups(m.body, WD), param_groups(m.head, WD)
        return torch.optim.AdamW(body + [{**g, "lr": LR / 4} for g in head], lr=LR)

    plain, _, seen_plain = fit(lambda m: user_schedule(user(m)))
    split = WeightDecay(strength=WD, print_audit=False, split_groups=True)
    model, trainer, seen = fit(lambda m: user_schedule(user(m)), [split])
    ref, _, seen_ref = fit(lambda m: reference_schedule(reference(m)))
    assert len(trainer.optimizers[0].param_groups) == 4
    assert seen.lrs == seen_plain.lrs == seen_ref.lrs
    assert seen.lrs[0]["head.weight"] != seen.lrs[0]["body.0.weight"]
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        assert torch.equal(p, q), n


# -- the functions, directly --------------------------------------------------------------------------


def params(n: int = 3):
    return [nn.Parameter(torch.randn(2, 2) if i % 2 == 0 else torch.randn(2)) for i in range(n)]


class MySGD(torch.optim.SGD):
    pass


def test_decay_kind():
    p = params(1)
    assert decay_kind(torch.optim.AdamW(p), torch.optim.AdamW(p).param_groups[0]) == "decoupled"
    adam_decoupled = torch.optim.Adam(p, decoupled_weight_decay=True)
    assert decay_kind(adam_decoupled, adam_decoupled.param_groups[0]) == "decoupled"
    for cls in (torch.optim.Adam, torch.optim.SGD, torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.NAdam):
        opt = cls(p, lr=0.1)
        assert decay_kind(opt, opt.param_groups[0]) == "coupled", cls
    rprop = torch.optim.Rprop(p)
    assert decay_kind(rprop, rprop.param_groups[0]) is None  # no weight_decay at all
    mine = MySGD(p, lr=0.1)
    assert decay_kind(mine, mine.param_groups[0]) is None  # a subclass may decay differently: never assumed
    if hasattr(torch.optim, "Adafactor"):  # decoupled, but not AdamW-style: not classified
        opt = torch.optim.Adafactor(p)
        assert decay_kind(opt, opt.param_groups[0]) is None


def test_split_groups_orders_by_plan_and_keeps_aligned_entries():
    a, b, c, d = params(4)
    opt = torch.optim.SGD([{"params": [a, b, c], "name": "body", "lr": 0.1}, {"params": [d], "name": "head"}],
                          lr=0.2, momentum=0.9)
    groups = opt.param_groups
    head = groups[1]
    keys = {id(a): "decay", id(b): "no_decay", id(c): "decay", id(d): "no_decay"}
    origin = split_groups(opt, lambda p: keys[id(p)], ["decay", "no_decay"])
    assert origin == [0, 0, 1]
    assert opt.param_groups is groups  # mutated in place (Lightning's wrappers hold the list)
    assert [g["name"] for g in groups] == ["body/decay", "body/no_decay", "head"]
    assert [[id(p) for p in g["params"]] for g in groups] == [[id(a), id(c)], [id(b)], [id(d)]]
    assert groups[2] is head  # a homogeneous group is kept as it is
    assert [g["lr"] for g in groups] == [0.1, 0.1, 0.2] and all(g["momentum"] == 0.9 for g in groups)


def test_split_groups_keeps_param_names_aligned():
    a, b, c = params(3)
    opt = torch.optim.SGD([("a", a), ("b", b), ("c", c)], lr=0.1)
    split_groups(opt, lambda p: "decay" if p.ndim > 1 else "no_decay", ["decay", "no_decay"])
    assert [g["param_names"] for g in opt.param_groups] == [["a", "c"], ["b"]]
    opt.step()  # torch accepts the result


def test_expand_schedulers_nested_and_listed_twice():
    a, b, c, d = params(4)
    opt = torch.optim.SGD([{"params": [a, b]}, {"params": [c, d], "lr": 0.01}], lr=0.1)
    lam = S.LambdaLR(opt, [lambda s: 1.0, lambda s: 0.5])
    seq = S.SequentialLR(opt, [S.ExponentialLR(opt, 0.9), S.StepLR(opt, 2)], milestones=[2])
    origin = split_groups(opt, lambda p: "decay" if p.ndim > 1 else "no_decay", ["decay", "no_decay"])
    assert origin == [0, 0, 1, 1]
    expand_schedulers([lam, seq, seq._schedulers[0]], opt, origin)
    assert [f(0) for f in lam.lr_lambdas] == [1.0, 1.0, 0.5, 0.5]
    for scheduler in (lam, *seq._schedulers):
        assert len(scheduler.base_lrs) == 4 and len(scheduler._last_lr) == 4
    assert len(seq._last_lr) == 4


def test_regroup_is_safe_refuses_what_it_cannot_prove():
    p = params(2)
    opt = torch.optim.AdamW([{"params": [p[0]]}, {"params": [p[1]]}])
    assert regroup_is_safe([S.StepLR(opt, 2)], opt) == (True, "")
    custom = HalvingLR(opt, 2)
    assert regroup_is_safe([custom], opt)[0] is False
    unknown = S.StepLR(opt, 2)
    unknown.my_per_group = [1, 2]
    safe, why = regroup_is_safe([unknown], opt)
    assert not safe and "my_per_group" in why

    class NoOptimizerAttribute:
        def step(self):
            pass

    safe, why = regroup_is_safe([NoOptimizerAttribute()], opt)
    assert not safe and "which optimizer" in why
    other = torch.optim.AdamW(params(1))
    assert regroup_is_safe([HalvingLR(other, 2)], opt) == (True, "")  # another optimizer's: irrelevant


def test_schedulers_built_on_a_lightning_optimizer_are_found():
    p = params(2)
    opt = torch.optim.AdamW([{"params": [p[0]]}, {"params": [p[1]]}])
    wrapped = LightningOptimizer(opt)
    scheduler = HalvingLR(opt, 2)
    scheduler.optimizer = wrapped
    assert regroup_is_safe([scheduler], opt)[0] is False
