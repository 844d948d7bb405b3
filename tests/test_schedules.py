"""Strength schedules vs their closed forms; lr coupling and timescale_epochs through the callback."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_wd.core.callback import WeightDecay
from lightning_wd.core.schedules import SCHEDULES, StrengthSchedule

DT = torch.float64


def closed_form(name, t, lam, final=None, warmup=0, total=None, lr_ratio=1.0, fn=None):
    """The module docstring's formulas, written out independently."""
    if name == "warmup_cosine" and warmup == 0:
        warmup = max(1, round(0.05 * total))
    warm = min(1.0, (t + 1) / warmup) if warmup else 1.0
    if name == "callable":
        return fn(t) * warm
    if name == "constant":
        return lam * warm
    if name == "lr":
        return lam * lr_ratio * warm
    p = min(max((t - warmup) / (total - warmup), 0.0), 1.0)
    if name == "step":
        g = 0.1 if final is None else math.sqrt(final / lam)
        k = (p >= 0.5) + (p >= 0.75)
        return lam * g**k * warm
    f = 0.0 if final is None else final
    if name == "linear":
        return (f + (lam - f) * (1 - p)) * warm
    return (f + (lam - f) * (1 + math.cos(math.pi * p)) / 2) * warm  # cosine, warmup_cosine


def _fn(t):
    return 0.3 / (1 + t)


CASES = [
    (name, warmup, final)
    for name in (*SCHEDULES, "callable")
    for warmup in (0, 7)
    for final in ((None, 0.05) if name in ("linear", "cosine", "warmup_cosine", "step") else (None,))
]


@pytest.mark.parametrize(("name", "warmup", "final"), CASES)
def test_schedule_matches_closed_form(name, warmup, final):
    total, lam = 60, 0.4
    schedule = StrengthSchedule(_fn if name == "callable" else name, lam, final_strength=final,
                                warmup_steps=warmup, total_steps=total)
    for t in range(total + 5):
        ratio = 0.5 ** (t // 10)
        got = schedule(t, lr_ratio=ratio)
        want = closed_form(name, t, lam, final, warmup, total, ratio, _fn)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), (name, t)
    if name in ("linear", "cosine", "warmup_cosine", "step"):  # ends at the final strength
        end = final if final is not None else (lam * 0.01 if name == "step" else 0.0)
        assert schedule(total) == pytest.approx(end, rel=1e-12, abs=1e-15)
        assert schedule(10 * total) == pytest.approx(end, rel=1e-12, abs=1e-15)


def test_schedule_known_values():
    assert [StrengthSchedule("linear", 1.0, total_steps=4)(t) for t in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    cos = StrengthSchedule("cosine", 1.0, final_strength=0.0, total_steps=3)
    assert [round(cos(t), 12) for t in range(4)] == [1.0, 0.75, 0.25, 0.0]
    step = StrengthSchedule("step", 1.0, total_steps=8)
    assert [step(t) for t in range(9)] == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01, 0.01], rel=1e-15)
    step = StrengthSchedule("step", 1.0, final_strength=0.04, total_steps=8)
    assert [step(t) for t in range(9)] == pytest.approx([1, 1, 1, 1, 0.2, 0.2, 0.04, 0.04, 0.04], rel=1e-15)
    warm = StrengthSchedule("linear", 2.0, warmup_steps=4, total_steps=8)
    assert [warm(t) for t in range(9)] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 1.5, 1.0, 0.5, 0.0], rel=1e-15)
    constant = StrengthSchedule("constant", 0.3, warmup_steps=3)
    assert [constant(t) for t in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3], rel=1e-15)
    wc = StrengthSchedule("warmup_cosine", 1.0, total_steps=100)  # W = 5 % of T = 5
    assert [wc(t) for t in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0], rel=1e-15)
    assert wc(5) == 1.0 and wc(100) == 0.0
    assert StrengthSchedule("lr", 0.5)(3, lr_ratio=0.1) == pytest.approx(0.05, rel=1e-15)
    assert StrengthSchedule(lambda t: 2.0 * t, warmup_steps=2)(0) == 0.0
    assert StrengthSchedule(lambda t: 2.0 * t, warmup_steps=4)(1) == pytest.approx(1.0, rel=1e-15)


def test_is_constant():
    assert StrengthSchedule("constant", 1.0).is_constant
    assert not StrengthSchedule("constant", 1.0, warmup_steps=2).is_constant
    assert not StrengthSchedule("cosine", 1.0).is_constant
    assert not StrengthSchedule(_fn).is_constant


@pytest.mark.parametrize("name", ["linear", "cosine", "warmup_cosine", "step"])
def test_unbounded_run_rejects_decaying_schedules(name):
    schedule = StrengthSchedule(name, 1.0)
    with pytest.raises(ValueError, match=f"schedule={name!r}.*bounded run"):
        schedule.set_total_steps(math.inf)
    with pytest.raises(ValueError, match="set_total_steps"):  # T unknown: only the warmup is defined
        schedule(5)
    schedule.set_total_steps(10)
    assert schedule.total_steps == 10


@pytest.mark.parametrize("name", ["constant", "lr", "callable"])
def test_unbounded_run_accepts_non_decaying_schedules(name):
    schedule = StrengthSchedule(_fn if name == "callable" else name, 0.3)
    schedule.set_total_steps(math.inf)
    assert schedule.total_steps == 0
    assert schedule(10**9) == pytest.approx(0.3 if name != "callable" else _fn(10**9), rel=1e-15)


def test_validation_errors():
    with pytest.raises(ValueError, match="`schedule` must be one of constant, linear.*got 'exp'"):
        StrengthSchedule("exp", 1.0)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="warmup_steps"):
            StrengthSchedule("constant", 1.0, warmup_steps=bad)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="`strength`"):
            StrengthSchedule("linear", bad)
        with pytest.raises(ValueError, match="`final_strength`"):
            StrengthSchedule("linear", 1.0, final_strength=bad)
    for name in ("constant", "lr", _fn):
        with pytest.raises(ValueError, match="`final_strength` needs a decaying `schedule`"):
            StrengthSchedule(name, 1.0, final_strength=0.5)
    StrengthSchedule("constant", 1.0, final_strength=1.0)  # the same value: allowed


# ----------------------------------------------------------------------------- through the callback
class _ZeroGrad(L.LightningModule):
    """A 2-D weight (decayed by default) and loss = 0 * sum: every gradient is 0, only the decay moves it."""

    def __init__(self, optimizer="sgd", lr=0.1, scheduler=False) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((2, 3), 1.0, dtype=DT))
        self.optimizer, self.lr, self.scheduler = optimizer, lr, scheduler
        self.trace, self.lrs = [self.w.detach().clone()], []

    def training_step(self, batch, batch_idx):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return 0.0 * self.w.sum()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.trace.append(self.w.detach().clone())

    def configure_optimizers(self):
        cls = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[self.optimizer]
        opt = cls(self.parameters(), lr=self.lr, weight_decay=0.0)
        if not self.scheduler:
            return opt
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


@pytest.fixture
def fit(quiet_trainer):
    """``fit(model, callback, n=8, batch_size=1, **trainer_options)`` on ``n`` zero inputs (the data is unused)."""
    def fit(model, callback, n=8, batch_size=1, **kwargs):
        trainer = quiet_trainer([callback], **kwargs)
        trainer.fit(model, DataLoader(TensorDataset(torch.zeros(n, 1, dtype=DT)), batch_size=batch_size))
        return trainer

    return fit


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("coupling", ["lr", "lr_ratio", "none", "corrected_all"])
def test_lr_coupling_with_steplr(fit, coupling, optimizer):
    lr0, lam, steps = 0.1, 0.5, 7
    model = _ZeroGrad(optimizer, lr0, scheduler=True)
    callback = WeightDecay(scheme="decoupled", strength=lam, lr_coupling=coupling, print_audit=False)
    fit(model, callback, max_steps=steps)
    lrs = [lr0 * 0.5 ** (t // 2) for t in range(steps)]
    assert model.lrs == pytest.approx(lrs, rel=1e-15)
    for t, lr in enumerate(lrs):  # the callback docstring's rates
        rate = {"lr": lr * lam, "lr_ratio": lam * lr / lr0, "none": lam, "corrected_all": lam * lr**2 / lr0}[coupling]
        torch.testing.assert_close(model.trace[t + 1], model.trace[t] * (1 - rate), rtol=1e-13, atol=0)
    # AdamW decays natively except under "none" (its decay is always multiplied by lr)
    assert callback.decays[0].buckets[0].native == (optimizer == "adamw" and coupling != "none")


@pytest.mark.parametrize("schedule", ["constant", "lr"])
def test_timescale_epochs_derives_strength(fit, schedule):
    lr, tau, n, epochs = 0.05, 3.0, 32, 2
    strengths = {}
    for batch_size in (8, 4):
        steps_per_epoch = n // batch_size
        model = _ZeroGrad("sgd", lr)
        callback = WeightDecay(scheme="decoupled", timescale_epochs=tau, schedule=schedule, print_audit=False)
        fit(model, callback, n=n, batch_size=batch_size, max_epochs=epochs)
        lam = 1.0 / (lr * tau * steps_per_epoch)
        assert callback.current_strength() == pytest.approx(lam, rel=1e-14)
        assert callback.history[-1]["metrics"]["wd/strength"] == pytest.approx(lam, rel=1e-14)
        # per step w <- w (1 - lr lam) = w (1 - 1 / (tau S)): after one epoch about exp(-1 / tau)
        want = (1 - 1 / (tau * steps_per_epoch)) ** (epochs * steps_per_epoch)
        torch.testing.assert_close(model.trace[-1], torch.full((2, 3), want, dtype=DT), rtol=1e-13, atol=0)
        strengths[batch_size] = lam
    assert strengths[4] == pytest.approx(strengths[8] / 2, rel=1e-14)  # twice the steps per epoch: half lambda


def test_schedule_rising_from_zero_strength_decays(fit):
    model = _ZeroGrad("sgd", 0.1)
    callback = WeightDecay(scheme="decoupled", strength=0.0, schedule="linear", final_strength=1.0,
                           print_audit=False)
    fit(model, callback, max_steps=4)
    for t in range(4):  # strength_t = t / 4, rate = lr * strength_t
        torch.testing.assert_close(model.trace[t + 1], model.trace[t] * (1 - 0.1 * t / 4), rtol=1e-13, atol=0)
