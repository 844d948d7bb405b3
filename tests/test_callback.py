"""The WeightDecay callback against hand-built torch references, step for step (float64, exact or tight).

The reference of a retrofit is always the optimizer a careful user would have written by hand: the same
optimizer class built on :func:`lightning_wd.param_groups` (decay and no-decay groups) with the same
learning-rate schedule, trained by an identical Trainer.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from lit_net import Net, float64  # noqa: F401  (float64: fixture)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_wd import param_groups
from lightning_wd.core.callback import WeightDecay

S = 0.1  # decay strength
LR = 0.05


pytestmark = pytest.mark.usefixtures("float64")


# -- a small model trained by Lightning ---------------------------------------------------------------

def loader(n: int = 48, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g, dtype=torch.get_default_dtype())
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def trainer(callbacks=(), epochs: int = 3, **kwargs) -> L.Trainer:
    options = dict(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return L.Trainer(callbacks=list(callbacks), **options)


def fit(make_opt, callbacks=(), model_cls=Net, **kwargs) -> tuple[L.LightningModule, L.Trainer]:
    model = model_cls(make_opt)
    t = trainer(callbacks, **kwargs)
    t.fit(model, loader())
    return model, t


def wd(**kwargs) -> WeightDecay:
    kwargs.setdefault("strength", S)
    kwargs.setdefault("print_audit", False)
    return WeightDecay(**kwargs)


def assert_same_weights(a: nn.Module, b: nn.Module, exact: bool = True) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        if exact:
            assert torch.equal(p, q), (name, (p - q).abs().max().item())
        else:
            torch.testing.assert_close(p, q, rtol=0, atol=1e-12, msg=name)


def assert_same_state(opt_a, model_a, opt_b, model_b, keys=("exp_avg", "exp_avg_sq")) -> None:
    for (name, p), q in zip(model_a.named_parameters(), model_b.parameters()):
        for key in keys:
            torch.testing.assert_close(opt_a.state[p][key], opt_b.state[q][key], rtol=0, atol=1e-12,
                                       msg=f"{name} {key}")


def assert_moved(model: nn.Module, make_opt, **kwargs) -> None:
    """The decay did something: the weights differ from those of a run without any decay."""
    plain, _ = fit(make_opt, **kwargs)
    assert not torch.equal(model.head.weight, plain.head.weight)


def with_scheduler(opt, name: str):
    if name == "none":
        return opt
    scheduler = {
        "lambda": lambda: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1.0 + 0.3 * step)),
        "step": lambda: torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5),
    }[name]()
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def no_decay(module):
    return torch.optim.Adam(module.parameters(), lr=LR)


# -- 1. references ------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["lambda", "step"])
def test_adam_plus_decoupled_equals_adamw_on_default_groups(schedule):
    model, t = fit(lambda m: with_scheduler(torch.optim.Adam(m.parameters(), lr=LR), schedule), [wd()])
    ref, rt = fit(lambda m: with_scheduler(torch.optim.AdamW(param_groups(m, S), lr=LR), schedule))
    assert_same_weights(model, ref)
    assert_same_state(t.optimizers[0], model, rt.optimizers[0], ref)
    assert len(t.optimizers[0].param_groups) == 1  # Adam decays coupled: applied by the callback, groups kept
    assert_moved(model, lambda m: with_scheduler(torch.optim.Adam(m.parameters(), lr=LR), schedule))


def test_adamw_retrofit_takes_over_and_equals_adamw_on_default_groups():
    cb = wd()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, t = fit(lambda m: torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.01), [cb])
    takeovers = [str(w.message) for w in caught if "instead of the optimizer's weight_decay" in str(w.message)]
    assert len(takeovers) == 1, takeovers
    assert "group 0: 0.01" in takeovers[0] and "strength 0.1" in takeovers[0]
    ref, rt = fit(lambda m: torch.optim.AdamW(param_groups(m, S), lr=LR))
    assert_same_weights(model, ref)
    assert_same_state(t.optimizers[0], model, rt.optimizers[0], ref)
    # the user's optimizer is as it was built: one group, its own weight_decay (unused during fit)
    groups = t.optimizers[0].param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01


def test_split_groups_is_the_opt_in_native_split():
    model, t = fit(lambda m: torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.01), [wd(split_groups=True)])
    ref, rt = fit(lambda m: torch.optim.AdamW(param_groups(m, S), lr=LR))
    assert_same_weights(model, ref)
    groups = t.optimizers[0].param_groups
    assert [len(g["params"]) for g in groups] == [len(g["params"]) for g in rt.optimizers[0].param_groups]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.01]  # the user's value, outside the step


def test_no_takeover_warning_when_the_optimizer_does_not_decay():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(no_decay, [wd()], epochs=1)
    assert not [w for w in caught if "takes over" in str(w.message)]


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_plus_l2_is_native_and_equals_sgd_on_default_groups(nesterov):
    kw = dict(lr=LR, momentum=0.9, nesterov=nesterov)
    model, t = fit(lambda m: torch.optim.SGD(m.parameters(), **kw), [wd(scheme="l2")])
    ref, rt = fit(lambda m: torch.optim.SGD(param_groups(m, S), **kw))
    assert_same_weights(model, ref)
    assert_same_state(t.optimizers[0], model, rt.optimizers[0], ref, keys=("momentum_buffer",))
    assert len(t.optimizers[0].param_groups) == 1


def test_adam_plus_l2_is_native_coupled():
    model, t = fit(lambda m: torch.optim.Adam(m.parameters(), lr=LR), [wd(scheme="l2")])
    ref, rt = fit(lambda m: torch.optim.Adam(param_groups(m, S), lr=LR))
    assert_same_weights(model, ref)
    assert_same_state(t.optimizers[0], model, rt.optimizers[0], ref)
    assert len(t.optimizers[0].param_groups) == 1


def test_adamw_plus_l2_is_self_applied_and_equals_adam_with_coupled_decay():
    model, t = fit(lambda m: torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.0), [wd(scheme="l2")])
    ref, rt = fit(lambda m: torch.optim.Adam(param_groups(m, S), lr=LR))
    assert_same_weights(model, ref)
    assert_same_state(t.optimizers[0], model, rt.optimizers[0], ref)
    assert len(t.optimizers[0].param_groups) == 1 and t.optimizers[0].param_groups[0]["weight_decay"] == 0.0


def test_native_false_self_applies_the_same_decay():
    model, t = fit(lambda m: torch.optim.AdamW(m.parameters(), lr=LR), [wd(native=False)])
    ref, _ = fit(lambda m: torch.optim.AdamW(param_groups(m, S), lr=LR))
    assert_same_weights(model, ref)
    assert len(t.optimizers[0].param_groups) == 1


@pytest.mark.parametrize("split", [False, True])
def test_multipliers_scale_their_tensors(split):
    cb = wd(multipliers={"head.*": 0.5}, split_groups=split)
    model, t = fit(lambda m: torch.optim.AdamW(m.parameters(), lr=LR), [cb])
    ref, _ = fit(lambda m: torch.optim.AdamW(param_groups(m, S, multipliers={"head.*": 0.5}), lr=LR))
    assert_same_weights(model, ref)
    assert len(t.optimizers[0].param_groups) == (3 if split else 1)


@pytest.mark.parametrize("user_cls", [torch.optim.AdamW, torch.optim.Adam])
def test_timescale_epochs_and_lr_ratio_coupling(user_cls):
    """``timescale_epochs=tau``: lambda = 1 / (lr0 * tau * steps per epoch); ``lr_ratio``: lambda / lr0."""
    steps_per_epoch = 6
    model, _ = fit(lambda m: with_scheduler(user_cls(m.parameters(), lr=LR), "step"),
                   [wd(strength=0.0, timescale_epochs=10.0)])
    equivalent = 1.0 / (LR * 10.0 * steps_per_epoch)
    ref, _ = fit(lambda m: with_scheduler(torch.optim.AdamW(param_groups(m, equivalent), lr=LR), "step"))
    assert_same_weights(model, ref, exact=False)
    model, _ = fit(lambda m: with_scheduler(user_cls(m.parameters(), lr=LR), "step"), [wd(lr_coupling="lr_ratio")])
    ref, _ = fit(lambda m: with_scheduler(torch.optim.AdamW(param_groups(m, S / LR), lr=LR), "step"))
    assert_same_weights(model, ref, exact=False)


def test_l2_sp_toward_zero_is_decoupled_decay(tmp_path):
    """``w <- w - lr * s * (w - 0)``: with a zero reference, L2-SP is AdamW's decay (also from a file)."""
    zeros = {n: torch.zeros_like(p) for n, p in Net(None).named_parameters()}
    torch.save(zeros, tmp_path / "reference.pt")
    ref, _ = fit(lambda m: torch.optim.AdamW(param_groups(m, S), lr=LR))
    for reference in (zeros, str(tmp_path / "reference.pt")):
        cb = WeightDecay(scheme="l2_sp", strength=S, reference=reference)  # prints the audit (rank zero)
        model, _ = fit(lambda m: torch.optim.Adam(m.parameters(), lr=LR), [cb])
        assert_same_weights(model, ref, exact=False)
    with pytest.raises(ValueError, match=r"`reference` has no tensor for \['head.weight'\]"):
        fit(no_decay, [wd(scheme="l2_sp", reference={"body.0.weight": zeros["body.0.weight"]})], epochs=1)


# -- 3. training set-ups ------------------------------------------------------------------------------


@pytest.mark.parametrize("make_opt", [no_decay, lambda m: torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9)])
def test_strength_zero_is_bit_identical_to_no_callback(make_opt):
    model, t = fit(make_opt, [wd(strength=0.0)])
    ref, _ = fit(make_opt)
    assert_same_weights(model, ref)
    assert "step" not in t.optimizers[0].__dict__  # nothing was installed


@pytest.mark.parametrize("native", [True, False])
def test_gradient_accumulation_decays_once_per_optimizer_step(native):
    cb = wd(native=native)
    model, t = fit(lambda m: torch.optim.AdamW(m.parameters(), lr=LR), [cb], accumulate_grad_batches=3)
    ref, rt = fit(lambda m: torch.optim.AdamW(param_groups(m, S), lr=LR), accumulate_grad_batches=3)
    assert_same_weights(model, ref)
    assert cb.steps == [t.global_step] == [rt.global_step] == [3 * 6 // 3]


def test_clipping_then_coupled_l2_on_adamw_like_torch():
    kw = dict(gradient_clip_val=0.05)
    model, t = fit(lambda m: torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.0), [wd(scheme="l2")], **kw)
    ref, _ = fit(lambda m: torch.optim.Adam(param_groups(m, S), lr=LR), **kw)
    assert_same_weights(model, ref, exact=False)  # clip norm summed in another tensor order
    # and clipping mattered: without it the run differs
    unclipped, _ = fit(lambda m: torch.optim.Adam(param_groups(m, S), lr=LR))
    assert not torch.allclose(model.head.weight, unclipped.head.weight)


def test_clipping_with_self_applied_decoupled():
    kw = dict(gradient_clip_val=0.05, gradient_clip_algorithm="value")
    model, _ = fit(lambda m: torch.optim.Adam(m.parameters(), lr=LR), [wd()], **kw)
    ref, _ = fit(lambda m: torch.optim.AdamW(param_groups(m, S), lr=LR), **kw)
    assert_same_weights(model, ref)


def test_bf16_mixed_precision_on_cpu_decays():
    torch.set_default_dtype(torch.float32)  # CPU autocast lowers float32 only (the fixture restores float64)
    kw = dict(precision="bf16-mixed", epochs=2)
    model, _ = fit(lambda m: torch.optim.AdamW(m.parameters(), lr=LR), [wd(strength=0.5)], **kw)
    ref, _ = fit(lambda m: torch.optim.AdamW(param_groups(m, 0.5), lr=LR), **kw)
    plain, _ = fit(lambda m: torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=0.0), **kw)
    assert_same_weights(model, ref)
    assert model.head.weight.norm() < plain.head.weight.norm()


class GAN(L.LightningModule):
    """Two networks, two optimizers, stepped by hand (automatic_optimization=False)."""

    def __init__(self, make_opt, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.automatic_optimization = False
        self.gen = nn.Sequential(nn.Linear(2, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 4))
        self.disc = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.make_opt = make_opt

    def training_step(self, batch, batch_idx):
        x, _ = batch
        g_opt, d_opt = self.optimizers()
        z = x[:, :2]
        fake = self.gen(z)
        d_loss = nn.functional.softplus(self.disc(fake.detach())).mean() + nn.functional.softplus(-self.disc(x)).mean()
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        g_loss = nn.functional.softplus(-self.disc(self.gen(z))).mean()
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()

    def configure_optimizers(self):
        return self.make_opt(self)


@pytest.mark.parametrize("user_cls", [torch.optim.AdamW, torch.optim.Adam])
def test_manual_optimization_with_two_optimizers(user_cls):
    cb = wd()
    model, t = fit(lambda m: [user_cls(m.gen.parameters(), lr=LR), user_cls(m.disc.parameters(), lr=LR)],
                   [cb], model_cls=GAN)
    ref, _ = fit(lambda m: [torch.optim.AdamW(param_groups(m.gen, S), lr=LR),
                            torch.optim.AdamW(param_groups(m.disc, S), lr=LR)], model_cls=GAN)
    plain, _ = fit(lambda m: [torch.optim.Adam(m.gen.parameters(), lr=LR),
                              torch.optim.Adam(m.disc.parameters(), lr=LR)], model_cls=GAN)
    assert_same_weights(model, ref)
    assert cb.steps == [18, 18]
    for a, b in zip(model.gen.parameters(), plain.gen.parameters()):
        assert a.ndim == 1 or not torch.equal(a, b)
    assert not torch.equal(model.disc[2].weight, plain.disc[2].weight)


def test_lbfgs_is_refused():
    with pytest.raises(ValueError, match="does not support LBFGS"):
        fit(lambda m: torch.optim.LBFGS(m.parameters(), lr=0.1), [wd()], epochs=1)


# -- (a) a tensor frozen at fit start but held by the optimizer ---------------------------------------


class Unfreeze(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            pl_module.body[0].requires_grad_(True)


class FrozenBody(Net):
    def __init__(self, make_opt, seed: int = 0) -> None:
        super().__init__(make_opt, seed)
        self.body[0].requires_grad_(False)


def groups_as_if_trainable(module):
    module.body[0].requires_grad_(True)
    try:
        return param_groups(module, S)
    finally:
        module.body[0].requires_grad_(False)


def test_frozen_at_start_but_in_the_optimizer_decays_once_unfrozen():
    cb = wd()
    model, t = fit(lambda m: torch.optim.AdamW(m.parameters(), lr=LR), [cb, Unfreeze(1)], model_cls=FrozenBody)
    ref, _ = fit(lambda m: torch.optim.AdamW(groups_as_if_trainable(m), lr=LR), [Unfreeze(1)], model_cls=FrozenBody)
    assert_same_weights(model, ref)
    row = next(r for r in cb.plan.rows if r.name == "body.0.weight")
    assert row.decayed and "frozen now" in row.reason
    assert model.body[0].weight.requires_grad  # the plan restored requires_grad as it found it (then unfrozen)
    start = FrozenBody(None).body[0].weight
    assert not torch.equal(model.body[0].weight, start)


def test_frozen_tensor_not_in_the_optimizer_stays_out_of_the_plan():
    class HeadOnly(FrozenBody):
        pass

    cb = wd()
    model, _ = fit(lambda m: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=LR), [cb],
                   model_cls=HeadOnly, epochs=1)
    row = next(r for r in cb.plan.rows if r.name == "body.0.weight")
    assert row.group is None and "frozen" in row.reason
    assert not model.body[0].weight.requires_grad
    assert torch.equal(model.body[0].weight, HeadOnly(None).body[0].weight)


# -- (b) named user groups and LearningRateMonitor ----------------------------------------------------


def test_named_groups_and_learning_rate_monitor_keys_are_kept(tmp_path):
    def make_opt(m):
        return torch.optim.AdamW([{"params": m.body.parameters(), "name": "body"},
                                  {"params": m.head.parameters(), "name": "head", "lr": LR / 2}], lr=LR)

    logger = CSVLogger(tmp_path, name="", version="")
    model, t = fit(make_opt, [wd(), LearningRateMonitor("step")], logger=logger, log_every_n_steps=1, epochs=1)
    groups = t.optimizers[0].param_groups
    assert [g["name"] for g in groups] == ["body", "head"] and [g["lr"] for g in groups] == [LR, LR / 2]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"lr-AdamW/body", "lr-AdamW/head"} <= set(header)
    split_logger = CSVLogger(tmp_path / "split", name="", version="")
    _, t = fit(make_opt, [wd(split_groups=True), LearningRateMonitor("step")], logger=split_logger,
               log_every_n_steps=1, epochs=1)
    assert [g["name"] for g in t.optimizers[0].param_groups] == [
        "body/decay", "body/no_decay", "head/decay", "head/no_decay"]


# -- 6. pickling, restoring optimizer.step, DDP -------------------------------------------------------


class StepProbe(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.during = trainer.optimizers[0].__dict__.get("step")


def test_pickled_callback_works_and_step_is_restored():
    cb = pickle.loads(pickle.dumps(wd()))
    probe = StepProbe()
    model, t = fit(lambda m: torch.optim.Adam(m.parameters(), lr=LR), [cb, probe])
    ref, _ = fit(lambda m: torch.optim.AdamW(param_groups(m, S), lr=LR))
    assert_same_weights(model, ref)
    assert "OptimizerDecay.install" in probe.during.__qualname__
    assert "step" not in t.optimizers[0].__dict__
    pickle.loads(pickle.dumps(cb))  # and after fit


def test_step_restored_to_the_schedulers_wrapper_and_no_scheduler_warning():
    probe = StepProbe()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, t = fit(lambda m: with_scheduler(torch.optim.Adam(m.parameters(), lr=LR), "step"), [wd(), probe])
    assert not [w for w in caught if "overridden" in str(w.message) or "before `optimizer.step()`" in str(w.message)]
    step = t.optimizers[0].__dict__["step"]
    assert getattr(step, "_wrapped_by_lr_sched", False) and "OptimizerDecay" not in step.__qualname__
    assert "OptimizerDecay.install" in probe.during.__qualname__


def test_step_restored_after_an_exception():
    class Boom(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 2:
                raise RuntimeError("boom")

    model = Net(no_decay)
    t = trainer([wd(), Boom()])
    with pytest.raises(RuntimeError, match="boom"):
        t.fit(model, loader())
    assert "step" not in t.optimizers[0].__dict__


DDP_SCRIPT = """
import sys, torch, lightning as L
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from lightning_wd.core.callback import WeightDecay

torch.set_default_dtype(torch.float64)

class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3))
    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.05)

if __name__ == "__main__":
    out = sys.argv[1]
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g))
    model = Net()
    cb = WeightDecay(strength=2.0, scheme=sys.argv[2], print_audit=False)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=False, callbacks=[cb],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(data, batch_size=8, shuffle=False))
    assert "step" not in trainer.optimizers[0].__dict__
    assert cb.steps == [trainer.global_step] == [8]  # 64 samples / 2 ranks / batch 8, 2 epochs
    assert len(trainer.optimizers[0].param_groups) == 1 and (trainer.global_rank == 0) == bool(cb.history)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
               f"{out}/rank{trainer.global_rank}.pt")
"""


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    root = Path(__file__).resolve().parents[1]
    env = {**__import__("os").environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script), str(tmp_path), "l1"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert (a["net.0.weight"] == 0).any()  # l1 made exact zeros on both ranks


# -- 7. constructor validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(scheme="ridge"), r"`scheme` must be one of decoupled, l2, l1, elastic_net, group_lasso, l2_sp, cautious"),
        (dict(scheme=5), r"`scheme` must be one of .* or a Scheme, got 5"),
        (dict(final_strength=0.1, schedule="cosine"), r"`final_strength` needs a `strength`"),
        (dict(strength=-1.0), r"`strength` must be a finite number >= 0"),
        (dict(strength=float("nan")), r"`strength` must be a finite number >= 0"),
        (dict(strength=float("inf")), r"`strength` must be a finite number >= 0"),
        (dict(strength="big"), r"`strength` must be a non-negative float"),
        (dict(strength=0.1, schedule="cosine", final_strength=-0.1), r"`final_strength` must be a finite number >= 0"),
        (dict(strength=0.1, final_strength=0.01), r"`final_strength` needs a decaying `schedule`"),
        (dict(schedule="exp"), r"`schedule` must be one of constant, linear, cosine, warmup_cosine, step, lr"),
        (dict(warmup_steps=-1), r"`warmup_steps` must be an integer >= 0"),
        (dict(warmup_steps=1.5), r"`warmup_steps` must be an integer >= 0"),
        (dict(strength=0.1, timescale_epochs=10.0), r"either `strength` or `timescale_epochs`"),
        (dict(timescale_epochs=0.0), r"`timescale_epochs` must be > 0"),
        (dict(timescale_epochs=-1.0), r"`timescale_epochs` must be a finite number >= 0"),
        (dict(timescale_epochs=5.0, schedule="cosine"), r"`timescale_epochs` works with schedule 'constant' or 'lr'"),
        (dict(lr_coupling="sqrt"), r"`lr_coupling` must be one of lr, lr_ratio, none, corrected, corrected_all"),
        (dict(scheme="l2", lr_coupling="none"), r"`lr_coupling` does not apply to scheme='l2'"),
        (dict(scheme="elastic_net", l1_ratio=1.5), r"`l1_ratio` must be a number in \[0, 1\]"),
        (dict(l1_ratio=-0.1), r"`l1_ratio` must be a number in \[0, 1\]"),
        (dict(reference={"w": torch.zeros(1)}), r"`reference` does not apply to scheme='decoupled'"),
        (dict(log_every_n_steps=0), r"`log_every_n_steps` must be an integer >= 1 or None"),
        (dict(log_every_n_steps=True), r"`log_every_n_steps` must be an integer >= 1 or None"),
        (dict(zero_tolerance=-1e-3), r"`zero_tolerance` must be a finite number >= 0"),
        (dict(multipliers={"head.*": -1.0}), r"`multipliers\['head.\*'\]` must be a finite number >= 0"),
        (dict(multipliers={"head.*": float("nan")}), r"`multipliers\['head.\*'\]` must be a finite number >= 0"),
        (dict(multipliers={"": 0.5}), r"`multipliers` must hold non-empty glob strings"),
        (dict(multipliers=["head.*"]), r"`multipliers` must be a dict"),
        (dict(exclude=[""]), r"`exclude` must hold non-empty glob strings"),
        (dict(per_layer_stats="yes"), r"`per_layer_stats` must be True or False"),
        (dict(native=1), r"`native` must be True or False"),
    ],
)
def test_constructor_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WeightDecay(**kwargs)


def test_hparams_are_plain_values():
    cb = WeightDecay(scheme="elastic_net", strength=1e-3, l1_ratio=0.25, schedule="cosine", exclude=["head.*"])
    hp = cb.hparams
    assert hp["scheme"] == "elastic_net" and hp["l1_ratio"] == 0.25 and hp["schedule"] == "cosine"
    assert hp["exclude"] == ["head.*"] and hp["strength"] == 1e-3
