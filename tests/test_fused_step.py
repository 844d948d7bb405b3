"""Issue 14: the fused Adam/AdamW + decay step (lightning_wd.core.fused) against the general path (every step,
float64, <= 1e-12 relative, the same exact zeros), the for-loop references, and the optimizer's state dict."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import reference_impl as ref
import torch
from torch import nn

from lightning_wd.core import fused as fused_module
from lightning_wd.core.decay_step import OptimizerDecay
from lightning_wd.core.fused import kernels
from lightning_wd.core.schedules import StrengthSchedule
from lightning_wd.core.schemes import get_scheme

DT = torch.float64
SHAPES = [(40, 30), (257,), (3, 5, 7)]
STEPS = 60
ZEROS = ("l1", "elastic_net")
# the optimizer for which each scheme is self-applied (AdamW does decoupled natively, Adam does l2)
# and Adam does elastic_net's L2 part natively: the fused step is for self-applied decay)
CASES = [("decoupled", torch.optim.Adam), ("l2", torch.optim.AdamW), ("elastic_net", torch.optim.AdamW)] + [
    (name, opt) for name in ("l1", "l2_sp", "cautious") for opt in (torch.optim.AdamW, torch.optim.Adam)]


def _problem(seed: int):
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(s, generator=gen, dtype=DT) for s in SHAPES]
    targets = [torch.randn(s, generator=gen, dtype=DT) * 0.5 for s in SHAPES]
    noises = [[0.1 * torch.randn(s, generator=gen, dtype=DT) for s in SHAPES] for _ in range(STEPS)]
    return weights, targets, noises


def _strength(step: int) -> float:
    return 0.4 * (1.0 + 0.5 * math.sin(0.3 * step))  # varies every step, as a schedule would


class Run:
    """One optimizer over the problem's tensors, with the decay installed (fused or general)."""

    def __init__(self, name, opt_cls, weights, path, lr=0.02, **options):
        self.params = [nn.Parameter(w.clone()) for w in weights]
        self.opt = opt_cls(self.params, lr=lr, **options)
        self.decay = OptimizerDecay(self.opt, get_scheme(name), StrengthSchedule(_strength),
                                    assign=lambda p: ("decay", 1.0), fused=path, fused_min_numel=1)
        self.decay.install()

    def step(self, targets, noise):
        for p, t, n in zip(self.params, targets, noise):
            p.grad = (p.detach() - t) + n
        self.opt.step()


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _step_alike(fast, general, targets, noises, same_zeros: bool) -> None:
    """Step both runs on the same noises; after every step their weights agree to 1e-12 (and their zeros)."""
    for noise in noises:
        fast.step(targets, noise)
        general.step(targets, noise)
        for a, b in zip(fast.params, general.params):
            assert _close(a, b) <= 1e-12
            if same_zeros:
                assert torch.equal(a == 0, b == 0)


@pytest.mark.parametrize(("name", "opt_cls"), CASES, ids=[f"{n}-{o.__name__}" for n, o in CASES])
def test_fused_matches_general_every_step_and_the_reference(name, opt_cls):
    weights, targets, noises = _problem(seed=len(name))
    fast = Run(name, opt_cls, weights, path=True)
    general = Run(name, opt_cls, weights, path=False, foreach=False)
    assert fast.decay.fused.describe() == ["group 0: 3 fused (0.0M elements)"]
    _step_alike(fast, general, targets, noises, same_zeros=name in ZEROS)
    if name in ZEROS:
        zeros = sum(int((p == 0).sum()) for p in fast.params)
        assert 0 < zeros < sum(p.numel() for p in fast.params)  # both sides of the threshold
    # the for-loop reference (tests/reference_impl.py), one tensor at a time
    want = [w.clone() for w in weights]
    opts = [ref.Adam(0.02) for _ in want]
    for step, noise in enumerate(noises):
        strength = _strength(step)
        for i in range(len(want)):
            g = (want[i] - targets[i]) + noise[i]
            extra = {"l1_ratio": 0.5} if name == "elastic_net" else {"reference": weights[i]} if name == "l2_sp" else {}
            want[i] = ref.SCHEMES[name](want[i], g, opts[i], 0.02 * strength, strength, **extra)
    for got, w in zip(fast.params, want):
        torch.testing.assert_close(got.detach(), w, rtol=1e-10, atol=1e-12)
        if name in ZEROS:
            assert torch.equal(got == 0, w == 0)


@pytest.mark.parametrize("options", [{"amsgrad": True}, {"maximize": True}, {"betas": (0.3, 0.9), "eps": 1e-3},
                                     {"foreach": True}, {"fused": True}], ids=str)
def test_fused_honours_the_group_options(options):
    weights, targets, noises = _problem(seed=3)
    fast = Run("l1", torch.optim.AdamW, weights, path=True, **options)
    general = Run("l1", torch.optim.AdamW, weights, path=False, **options)
    for noise in noises[:25]:
        fast.step(targets, noise)
        general.step(targets, noise)
    tolerance = 1e-12 if not options.get("fused") else 1e-10  # torch's fused kernel rounds its scalars otherwise
    for a, b in zip(fast.params, general.params):
        assert _close(a, b) <= tolerance
        assert torch.equal(a == 0, b == 0)


def test_state_dict_is_the_general_paths_and_checkpoints_resume_across_paths():
    weights, targets, noises = _problem(seed=5)
    fast = Run("cautious", torch.optim.AdamW, weights, path=True, amsgrad=True)
    general = Run("cautious", torch.optim.AdamW, weights, path=False, amsgrad=True)
    for noise in noises[:20]:
        fast.step(targets, noise)
        general.step(targets, noise)
    a, b = fast.opt.state_dict(), general.opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert sorted(a["state"]) == sorted(b["state"])
    for key in a["state"]:
        assert set(a["state"][key]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"} == set(b["state"][key])
        for name, value in a["state"][key].items():
            other = b["state"][key][name]
            assert value.dtype == other.dtype and value.device == other.device and value.shape == other.shape
            assert _close(value, other) <= 1e-12
    # a checkpoint of the fused run resumes under the general path, and the other way round
    crossed = Run("cautious", torch.optim.AdamW, [p.detach() for p in general.params], path=True, amsgrad=True)
    crossed.opt.load_state_dict(copy.deepcopy(b))  # as from a file (load_state_dict keeps the step tensors)
    back = Run("cautious", torch.optim.AdamW, [p.detach() for p in fast.params], path=False, amsgrad=True)
    back.opt.load_state_dict(copy.deepcopy(a))
    crossed.decay.step_count = back.decay.step_count = general.decay.step_count
    for noise in noises[20:30]:
        for run in (crossed, back, general, fast):
            run.step(targets, noise)
    for x, y, z, w in zip(crossed.params, back.params, general.params, fast.params):
        assert _close(x, z) <= 1e-12 and _close(y, w) <= 1e-12 and _close(x, y) <= 1e-12


def test_the_groups_stay_as_the_user_built_them():
    big, small = nn.Parameter(torch.randn(64, 64, dtype=DT)), nn.Parameter(torch.randn(3, dtype=DT))
    opt = torch.optim.AdamW([{"params": [big, small], "lr": 0.01}, {"params": [], "lr": 0.1}], weight_decay=0.02)
    params_list = opt.param_groups[0]["params"]
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append([len(g["params"]) for g in o.param_groups]))
    decay = OptimizerDecay(opt, get_scheme("l1"), StrengthSchedule("constant", 0.1),
                           assign=lambda p: ("decay", 1.0) if p.ndim > 1 else ("no_decay", 0.0), fused=True,
                           fused_min_numel=1000)
    decay.install()
    big.grad, small.grad = torch.ones_like(big), torch.ones_like(small)
    grads = [big.grad, small.grad]
    assert opt.step() is None
    assert big.grad is grads[0] and small.grad is grads[1]  # held aside during the optimizer's step only
    assert decay.fused.describe() == ["group 0: 1 fused (0.0M elements)"]
    assert seen == [[2, 0]]  # the hooks ran, with the groups as built
    assert opt.param_groups[0]["params"] is params_list and params_list == [big, small]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.02, 0.02]
    assert set(opt.state) == {big, small} and int(opt.state[big]["step"]) == 1 == int(opt.state[small]["step"])


def test_fallbacks_say_why():
    p = [nn.Parameter(torch.randn(600, 500))]
    cases = [(torch.optim.RMSprop(p), "l1", "no fused form for RMSprop (Adam, AdamW and SGD with momentum have one)"),
             (torch.optim.SGD(p, lr=0.1), "l1", "SGD without momentum"),
             (torch.optim.AdamW(p), "group_lasso", "no fused form for scheme group_lasso"),
             (torch.optim.AdamW(p, capturable=True), "l1", "capturable=True"),
             (torch.optim.AdamW(p), "decoupled", "native"),
             (torch.optim.AdamW([nn.Parameter(torch.randn(8, 8))]), "l1", f"under {fused_module.MIN_NUMEL} elements"),
             (torch.optim.AdamW([nn.Parameter(torch.randn(600, 500, dtype=torch.bfloat16))]), "l1",
              "torch.bfloat16 (float32 and float64 are fused)")]
    for opt, scheme, why in cases:
        decay = OptimizerDecay(opt, get_scheme(scheme), StrengthSchedule("constant", 0.1),
                               assign=lambda q: ("decay", 1.0), fused=True)
        label = "native" if why == "native" else f"general ({why})"
        assert decay.fused.describe() == [f"group 0: 1 {label}"], why
        assert not decay.fused.active
    decay = OptimizerDecay(torch.optim.AdamW(p), get_scheme("l1"), StrengthSchedule("constant", 0.1),
                           assign=lambda q: ("decay", 1.0), fused=False)
    assert decay.fused.describe() == ["group 0: 1 general (fused=False)"]


def test_auto_fuses_where_it_measured_faster_and_on_cpu_only():
    """fused='auto' fuses cautious and elastic_net (measured faster, RESULTS section 2) and keeps l1, l2_sp
    (measured no faster), l2 and decoupled (not measured) general; True fuses every scheme that has a fused
    form. (On CUDA 'auto' keeps the general path until the fused step is verified there; no CUDA here.)"""
    p = [nn.Parameter(torch.randn(600, 500))]
    for scheme, fused in [("l1", False), ("l2_sp", False), ("l2", False), ("cautious", True), ("elastic_net", True)]:
        decay = OptimizerDecay(torch.optim.AdamW(p), get_scheme(scheme), StrengthSchedule("constant", 0.1),
                               assign=lambda q: ("decay", 1.0), fused="auto")
        assert decay.fused.active is fused, scheme
        if not fused:
            assert decay.fused.describe() == [f"group 0: 1 general (fused='auto' keeps {scheme} general: its fused "
                                              "step is not measured faster (fused=True))"]
        forced = OptimizerDecay(torch.optim.AdamW(p), get_scheme(scheme), StrengthSchedule("constant", 0.1),
                                assign=lambda q: ("decay", 1.0), fused=True)
        assert forced.fused.active, scheme


def test_no_compiler_means_the_general_path_and_one_notice(monkeypatch):
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(fused_module.path, "_NOTICED", set())

    def broken(variant, device_type):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore lines")

    monkeypatch.setattr(fused_module.path, "compiled", broken)
    weights, targets, noises = _problem(seed=7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = Run("l1", torch.optim.AdamW, weights, path=True)
    notices = [str(w.message) for w in caught if "fused step" in str(w.message)]
    assert len(notices) == 1 and "\n" not in notices[0] and "general path runs instead" in notices[0]
    assert not fast.decay.fused.active and fast.decay.fused.describe() == ["group 0: 3 general (no compiler)"]
    general = Run("l1", torch.optim.AdamW, weights, path=False)
    for noise in noises[:5]:
        fast.step(targets, noise)
        general.step(targets, noise)
    assert all(torch.equal(a, b) for a, b in zip(fast.params, general.params))


def test_fused_argument_is_validated_eagerly():
    from lightning_wd import WeightDecay

    for bad in ("yes", 1, None, "Auto"):
        with pytest.raises(ValueError, match=r"`fused` must be 'auto', True or False, got"):
            WeightDecay(scheme="l1", strength=0.1, fused=bad)
    assert WeightDecay(scheme="l1", strength=0.1).fused == "auto"


def test_one_compilation_per_variant_whatever_the_sizes_and_the_lr():
    weights, targets, noises = _problem(seed=9)
    run = Run("l2_sp", torch.optim.Adam, weights, path=True)
    scheduler = torch.optim.lr_scheduler.StepLR(run.opt, step_size=1, gamma=0.9)
    fn = kernels._COMPILED[(("lerp", "none", False, False, True, True), "cpu")]
    for noise in noises[:6]:
        run.step(targets, noise)
        scheduler.step()
    # float32 and float64 (the probe and these tensors): one graph each, for three shapes and six lrs
    assert len(torch._dynamo.eval_frame._debug_get_cache_entry_list(fn._torchdynamo_orig_callable.__code__)) <= 2


class _Wide(__import__("lightning").pytorch.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 4))

    def training_step(self, batch, batch_idx):
        return self.net(batch).square().mean()

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=0.0)


@pytest.mark.parametrize("scheme", ["l1", "cautious"])
def test_weight_decay_callback_takes_the_fused_path_and_says_so(scheme, caplog):
    from lightning.pytorch import Trainer

    from lightning_wd import WeightDecay

    weights = {}
    for path in (True, False):
        model = _Wide()
        callback = WeightDecay(scheme=scheme, strength=0.05, fused=path, log_every_n_steps=5)
        trainer = Trainer(max_steps=12, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, callbacks=[callback])
        with caplog.at_level("INFO"):
            trainer.fit(model, torch.utils.data.DataLoader(torch.randn(96, 512), batch_size=8))
        weights[path] = {k: v.clone() for k, v in model.state_dict().items()}
        lines = [line for r in caplog.records for line in r.getMessage().splitlines() if line.startswith("step of")]
        caplog.clear()
        if path is True:  # the 512 x 512 weight (2^18 elements) fused; the 4 x 512 head is small
            assert lines == ["step of optimizer 0 group 0: 1 fused (0.3M elements), 1 general (under 262144 elements)"]
            assert len(trainer.optimizers[0].param_groups) == 1
        else:
            assert lines == ["step of optimizer 0 group 0: 2 general (fused=False)"]
    for key, value in weights[True].items():
        other = weights[False][key]
        if scheme == "cautious":  # float32: a coordinate whose update rounds to 0 in one path (and not in the
            # other, one ulp apart) flips its mask: allow such rare flips, nothing else
            assert int(((value - other).abs() > 1e-5).sum()) <= max(1, value.numel() // 10_000)
        else:
            torch.testing.assert_close(value, other, rtol=1e-5, atol=1e-6)
    if scheme == "l1":
        assert torch.equal(weights[True]["net.0.weight"] == 0, weights[False]["net.0.weight"] == 0)
        assert int((weights[True]["net.0.weight"] == 0).sum()) > 0


SGD_CASES = [("decoupled", {}), ("l1", {"nesterov": True}), ("l2_sp", {"dampening": 0.3}), ("cautious", {}),
             ("l1", {"maximize": True})]


@pytest.mark.parametrize(("name", "options"), SGD_CASES, ids=[f"{n}-{o}" for n, o in SGD_CASES])
def test_fused_sgd_with_momentum_matches_general_every_step_and_its_state(name, options):
    weights, targets, noises = _problem(seed=11 + len(name))
    fast = Run(name, torch.optim.SGD, weights, path=True, lr=0.05, momentum=0.9, **options)
    general = Run(name, torch.optim.SGD, weights, path=False, lr=0.05, momentum=0.9, foreach=False, **options)
    assert fast.decay.fused.describe() == ["group 0: 3 fused (0.0M elements)"]
    _step_alike(fast, general, targets, noises, same_zeros=True)
    for a, b in zip(fast.params, general.params):
        buffers = fast.opt.state[a]["momentum_buffer"], general.opt.state[b]["momentum_buffer"]
        assert set(fast.opt.state[a]) == {"momentum_buffer"} and _close(*buffers) <= 1e-12
    if not options:  # the for-loop reference (tests/reference_impl.py): SGD with momentum 0.9
        want = [w.clone() for w in weights]
        opts = [ref.SGDMomentum(0.05, 0.9) for _ in want]
        for step, noise in enumerate(noises):
            strength = _strength(step)
            for i in range(len(want)):
                g = (want[i] - targets[i]) + noise[i]
                extra = {"reference": weights[i]} if name == "l2_sp" else {}
                want[i] = ref.SCHEMES[name](want[i], g, opts[i], 0.05 * strength, strength, **extra)
        for got, w in zip(fast.params, want):
            torch.testing.assert_close(got.detach(), w, rtol=1e-10, atol=1e-12)
