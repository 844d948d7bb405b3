"""Every decay scheme against its naive for-loop reference (tests/reference_impl.py), in float64."""

from __future__ import annotations

import math

import lightning as L
import pytest
import reference_impl as ref
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_wd.core.callback import WeightDecay
from lightning_wd.core.schemes import SCHEMES, ElasticNet, GroupLasso, get_scheme
from lightning_wd.core.schemes.base import soft_threshold_

DT = torch.float64
SHAPES = [(0,), (), (7,), (3, 5), (4, 3, 3, 3), (2, 0), (6, 4)]
L1_RATIO = 0.3


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _problem(seed: int):
    """Initial weights, quadratic targets (some units/elements near 0 so L1/group lasso zero them)."""
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(s, generator=gen, dtype=DT) for s in SHAPES]
    targets = []
    for s in SHAPES:
        t = torch.randn(s, generator=gen, dtype=DT)
        t = t * (torch.rand(s, generator=gen, dtype=DT) > 0.4)  # ~40 % of targets are exactly 0
        if len(s) >= 2 and s[0] > 1:
            t[0] = 0.0  # a whole unit pulled to 0
        targets.append(t)
    return weights, targets, gen


def _run_package(name, optimizer, weights, targets, noises, strengths, lr):
    scheme = get_scheme(name, l1_ratio=L1_RATIO)
    params = [nn.Parameter(w.clone()) for w in weights]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)
    state: dict = {}
    scheme.prepare(params, state)
    for noise, strength in zip(noises, strengths):
        for p, t, n in zip(params, targets, noise):
            p.grad = (p.detach() - t) + n  # gradient of 0.5 ||w - t||^2 plus noise
        rate = lr * strength
        with torch.no_grad():
            scheme.before_update(params, [p.grad for p in params], rate, strength, state)
            opt.step()
            scheme.after_update(params, rate, strength, state)
    return [p.detach() for p in params]


def _run_reference(name, optimizer, weights, targets, noises, strengths, lr):
    fn = ref.SCHEMES[name]
    ws = [w.clone() for w in weights]
    references = [w.clone() for w in weights]
    opts = [ref.SGDMomentum(lr, 0.9) if optimizer == "sgd" else ref.Adam(lr) for _ in ws]
    for noise, strength in zip(noises, strengths):
        rate = lr * strength
        for i in range(len(ws)):  # one tensor at a time
            g = (ws[i] - targets[i]) + noise[i]
            extra = {"l1_ratio": L1_RATIO} if name == "elastic_net" else {}
            if name in ("l2_sp", "selective_projection"):
                extra = {"reference": references[i]}
            if name == "target_norm":  # the default target: each tensor's initial norm
                extra = {"target": float(references[i].norm())}
            ws[i] = fn(ws[i], g, opts[i], rate, strength, **extra)
    return ws


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", list(SCHEMES))
def test_scheme_matches_reference_over_100_steps(name, optimizer):
    weights, targets, gen = _problem(seed=10 * list(SCHEMES).index(name) + (optimizer == "adam"))
    steps, lr = 100, (0.05 if optimizer == "sgd" else 0.02)
    noises = [[0.1 * torch.randn(s, generator=gen, dtype=DT) for s in SHAPES] for _ in range(steps)]
    # a strength that varies from step to step (as a schedule would), rate = lr * strength
    strengths = [0.4 * (1.0 + 0.5 * math.sin(0.3 * t)) for t in range(steps)]
    got = _run_package(name, optimizer, weights, targets, noises, strengths, lr)
    want = _run_reference(name, optimizer, weights, targets, noises, strengths, lr)
    for g, w, shape in zip(got, want, SHAPES):
        assert g.shape == torch.Size(shape) and g.dtype == DT
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
        if name in ("l1", "elastic_net", "group_lasso"):
            assert torch.equal(g == 0, w == 0), f"zero pattern differs for shape {shape}"
    if name in ("l1", "elastic_net", "group_lasso"):
        zeros = sum(int((g == 0).sum()) for g in got)
        assert 0 < zeros < sum(g.numel() for g in got)  # the test exercises both sides of the threshold
    if name == "group_lasso":  # whole units died, the same ones as in the reference
        dead = GroupLasso.dead_units(got, {})
        assert dead >= 1
        assert dead == sum(1 for w in want for unit in ref.units(w) if unit.numel() and bool((unit == 0).all()))


@pytest.mark.parametrize("name", list(SCHEMES))
def test_zero_rate_and_strength_is_a_noop(name):
    scheme = get_scheme(name)
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen, dtype=DT) for s in SHAPES]
    grads = [torch.randn(s, generator=gen, dtype=DT) for s in SHAPES]
    before_g = [g.clone() for g in grads]
    state: dict = {}
    scheme.prepare(params, state)
    for p in params:  # an optimizer update in between, so L2-SP's reference and cautious' snapshot differ
        p.add_(0.1)
    shifted = [p.clone() for p in params]
    scheme.before_update(params, grads, 0.0, 0.0, state)
    scheme.after_update(params, 0.0, 0.0, state)
    for p, s in zip(params, shifted):
        assert torch.equal(p, s)
    for g, b in zip(grads, before_g):
        assert torch.equal(g, b)


@pytest.mark.parametrize("name", ["l2", "l1", "elastic_net", "group_lasso", "l2_sp"])
def test_penalty_matches_closed_form(name):
    scheme = get_scheme(name, l1_ratio=L1_RATIO)
    gen = torch.Generator().manual_seed(1)
    params = [torch.randn(s, generator=gen, dtype=DT) for s in SHAPES]
    state: dict = {}
    scheme.prepare(params, state)
    references = [p.clone() for p in params]
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen, dtype=DT))
    strength = 0.37
    got = scheme.penalty(params, strength, state)
    want = ref.penalty(name, params, strength, l1_ratio=L1_RATIO, references=references)
    assert got.dtype == DT and got.ndim == 0
    assert float(got) == pytest.approx(want, rel=1e-12)
    assert float(scheme.penalty(params, 0.0, state)) == 0.0


def test_penalty_none_for_decoupled_and_cautious():
    params = [torch.ones(3, 3)]
    assert get_scheme("decoupled").penalty(params, 1.0, {}) is None
    assert get_scheme("cautious").penalty(params, 1.0, {}) is None


def test_soft_threshold_exact_zeros():
    w = [torch.tensor([-2.0, -0.5, -0.25, -0.0, 0.0, 1e-300, 0.5, 0.75, 3.0], dtype=DT), torch.zeros(0)]
    soft_threshold_(w, 0.5)
    want = torch.tensor([-1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25, 2.5], dtype=DT)
    assert torch.equal(w[0], want)
    assert torch.equal(w[0] == 0, want == 0)
    assert w[1].numel() == 0
    # against the one-number reference on random data
    x = torch.randn(1000, generator=torch.Generator().manual_seed(3), dtype=DT)
    y = [x.clone()]
    soft_threshold_(y, 0.7)
    assert y[0].tolist() == [ref.soft(v, 0.7) for v in x.tolist()]
    # threshold <= 0: unchanged
    z = [x.clone()]
    soft_threshold_(z, 0.0)
    assert torch.equal(z[0], x)


def test_group_lasso_dead_units():
    w = [
        torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], dtype=DT),  # 1 dead row of 3
        torch.zeros(2, 3, 2, 2, dtype=DT),  # 2 dead channels
        torch.ones(4, dtype=DT),  # a 1-D tensor is one (live) unit
        torch.zeros(0, dtype=DT),  # no weights: not a unit that died
        torch.zeros(3, 0, dtype=DT),  # three empty rows: not dead units either
    ]
    assert GroupLasso.dead_units(w, {}) == 3
    GroupLasso().after_update(w, rate=0.01, strength=1.0, state={})  # kills [1e-3, 0]: threshold 0.01*sqrt(2)
    assert GroupLasso.dead_units(w, {}) == 4
    assert torch.equal(w[0][2], torch.zeros(2, dtype=DT))
    torch.testing.assert_close(w[0][0], torch.tensor([3.0, 4.0]) * (1 - 0.01 * math.sqrt(2) / 5), rtol=1e-14, atol=0)
    assert GroupLasso.dead_units([], {}) == 0


def test_group_lasso_scalar_tensor():
    w = [torch.tensor(2.0, dtype=DT), torch.tensor(-0.05, dtype=DT)]
    GroupLasso().after_update(w, rate=0.1, strength=1.0, state={})
    assert w[0].item() == pytest.approx(1.9, rel=1e-14) and w[1].item() == 0.0


def test_schemes_on_a_changing_subset_of_tensors():
    """The callback passes only the tensors that have a gradient this step: the state must follow."""
    gen = torch.Generator().manual_seed(5)
    a, b, c = (torch.randn(s, generator=gen, dtype=DT) for s in [(3, 4), (2, 6), (5,)])
    # group lasso: the cached layout of [a, c] must not be reused for [b, c] (same count, other shapes)
    state: dict = {}
    x = [a.clone(), b.clone(), c.clone()]
    GroupLasso().after_update([x[0], x[2]], 0.1, 1.0, state)
    GroupLasso().after_update([x[1], x[2]], 0.1, 1.0, state)
    want_b = ref.group_lasso(b, None, lambda g: 0.0, 0.1, 1.0)
    torch.testing.assert_close(x[1], want_b, rtol=1e-14, atol=0)
    # L2-SP: a subset decays toward its own references
    scheme, state = get_scheme("l2_sp"), {}
    params = [a.clone(), b.clone(), c.clone()]
    scheme.prepare(params, state)
    for p in params:
        p.mul_(2.0)
    scheme.before_update([params[1]], [torch.zeros_like(b)], 0.25, 1.0, state)
    torch.testing.assert_close(params[1], 2 * b - 0.25 * (2 * b - b), rtol=1e-14, atol=0)
    assert torch.equal(params[0], 2 * a) and torch.equal(params[2], 2 * c)
    assert float(scheme.penalty([params[2]], 2.0, state)) == pytest.approx(float((c * c).sum()), rel=1e-12)
    # cautious: a snapshot of [a, c] is not reused for [b, c]
    scheme, state = get_scheme("cautious"), {}
    x = [a.clone(), b.clone(), c.clone()]
    scheme.before_update([x[0], x[2]], [], 0.1, 1.0, state)
    scheme.after_update([x[0], x[2]], 0.1, 1.0, state)
    scheme.before_update([x[1], x[2]], [], 0.1, 1.0, state)
    x[1].sub_(0.01 * x[1].sign())  # the optimizer moves every weight of b toward 0: all decay
    scheme.after_update([x[1], x[2]], 0.1, 1.0, state)
    torch.testing.assert_close(x[1], b - 0.01 * b.sign() - 0.1 * b, rtol=1e-14, atol=0)


def test_get_scheme_errors_and_names():
    assert set(SCHEMES) == {"decoupled", "l2", "l1", "elastic_net", "group_lasso", "l2_sp", "cautious", "target_norm",
                            "selective_projection"}
    for name in SCHEMES:
        assert get_scheme(name).name == name
    assert get_scheme("elastic_net", l1_ratio=0.25).l1_ratio == 0.25
    with pytest.raises(ValueError, match="`scheme` must be one of .*decoupled.*got 'lasso'"):
        get_scheme("lasso")
    with pytest.raises(ValueError, match="l1_ratio"):
        get_scheme("elastic_net", l1_ratio=1.5)
    with pytest.raises(ValueError, match="l1_ratio"):
        ElasticNet(l1_ratio=-0.1)
    with pytest.raises(ValueError, match="l1_ratio"):
        ElasticNet(l1_ratio=True)
    with pytest.raises(ValueError, match="l1_ratio"):
        ElasticNet(l1_ratio="0.5")


def test_native_strengths():
    assert get_scheme("decoupled").native == "decoupled"
    assert get_scheme("l2").native == "coupled" and get_scheme("elastic_net").native == "coupled"
    assert get_scheme("elastic_net", l1_ratio=0.25).native_strength(2.0) == 1.5
    assert all(get_scheme(n).native is None for n in ("l1", "group_lasso", "l2_sp", "cautious"))


# ----------------------------------------------------------------------------- geometric decay (Table 4)
class _ZeroGrad(L.LightningModule):
    """One 2-D weight (decayed by the default rules), loss = 0 * sum: every gradient is exactly 0."""

    def __init__(self, optimizer: str, lr: float, w0: float = 0.875) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((1, 1), w0, dtype=DT))
        self.optimizer, self.lr, self.trace = optimizer, lr, [w0]

    def training_step(self, batch, batch_idx):
        return 0.0 * self.w.sum()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.trace.append(self.w.item())

    def configure_optimizers(self):
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[self.optimizer]
        return cls(self.parameters(), lr=self.lr, weight_decay=0.0)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_geometric_decay_table4(optimizer):
    lr, strength = 0.1, 2.0  # lr * strength = 0.2: w_t = w0 * 0.8 ** t
    model = _ZeroGrad(optimizer, lr)
    data = DataLoader(TensorDataset(torch.zeros(4, 1, dtype=DT)), batch_size=1)
    callback = WeightDecay(scheme="decoupled", strength=strength, print_audit=False)
    trainer = L.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback], accelerator="cpu")
    trainer.fit(model, data)
    assert model.trace == pytest.approx([0.875, 0.7, 0.56, 0.448, 0.3584], rel=1e-14, abs=0)
    assert [round(w, 2) for w in model.trace[1:]] == [0.7, 0.56, 0.45, 0.36]  # as the article prints them
    bucket = callback.decays[0].buckets[0]
    assert bucket.native == (optimizer == "adamw")  # AdamW decays natively, SGD/Adam get the self-applied pass


class _PartlyUsed(L.LightningModule):
    """Two decayed weights; ``unused`` never enters the loss, so its ``.grad`` stays None."""

    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Parameter(torch.full((2, 2), 0.875, dtype=DT))
        self.unused = nn.Parameter(torch.full((2, 2), 0.5, dtype=DT))

    def training_step(self, batch, batch_idx):
        return 0.0 * self.used.sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_l2_sp_through_callback_with_a_tensor_without_gradient():
    model = _PartlyUsed()
    reference = {"used": torch.zeros(2, 2, dtype=DT), "unused": torch.ones(2, 2, dtype=DT)}
    callback = WeightDecay(scheme="l2_sp", strength=2.0, reference=reference, print_audit=False)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[callback], accelerator="cpu")
    trainer.fit(model, DataLoader(TensorDataset(torch.zeros(3, 1, dtype=DT)), batch_size=1))
    # the used weight decays toward its reference (0) by lr * strength = 0.2 per step; the other is untouched
    torch.testing.assert_close(model.used.detach(), torch.full((2, 2), 0.875 * 0.8**3, dtype=DT), rtol=1e-14, atol=0)
    assert torch.equal(model.unused.detach(), torch.full((2, 2), 0.5, dtype=DT))
    assert callback.compute_stats()["wd/penalty"] == pytest.approx(
        0.5 * 2.0 * (4 * (0.875 * 0.8**3) ** 2 + 4 * 0.5**2), rel=1e-12)


# Shapes that take every path of the fast formulations: large tensors (>= 4096 elements: their own kernel
# calls), several small tensors of one shape (stacked into one block), singletons, 1-D/0-d and empty ones.
MIXED = [(80, 64), (4096,), (6, 4), (6, 4), (6, 4), (7,), (7,), (), (), (2, 3, 3), (2, 3, 3), (0,), (3, 0), (1, 5)] \
    + [(2, 3)] * 8  # (cautious stacks 8 or more of one shape)
BIG = (512, 256)  # 2^17 elements: cautious's in-place passes of its own (too large for the for-loop references)


def _mixed_problem(seed, shapes=MIXED):
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(s, generator=gen, dtype=DT) for s in shapes]
    targets = [torch.randn(s, generator=gen, dtype=DT) * (torch.rand(s, generator=gen, dtype=DT) > 0.4)
               for s in shapes]
    for t in targets:
        if t.ndim >= 2 and t.shape[0] > 1:
            t[0] = 0.0  # a whole unit pulled to 0
    return weights, targets, gen


def _step_with(scheme, params, opt, state, targets, noise, rate, strength) -> None:
    """One optimizer step of ``opt`` with ``scheme``'s passes around it, on gradients ``(p - target) + noise``."""
    for p, t, n in zip(params, targets, noise):
        p.grad = (p.detach() - t) + n
    with torch.no_grad():
        scheme.before_update(params, [p.grad for p in params], rate, strength, state)
        opt.step()
        scheme.after_update(params, rate, strength, state)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["l1", "elastic_net", "group_lasso", "cautious"])
def test_fast_passes_match_the_previous_code_every_step(name, optimizer):
    """The rewritten passes against the code they replaced (tests/previous_schemes.py), step by step, float64."""
    from previous_schemes import PREVIOUS

    shapes = MIXED + [BIG]
    weights, targets, gen = _mixed_problem(seed=3 + (optimizer == "adam"), shapes=shapes)
    runs = []
    for scheme in (get_scheme(name, l1_ratio=L1_RATIO), PREVIOUS[name]()):
        params = [nn.Parameter(w.clone()) for w in weights]
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.9) if optimizer == "sgd" else torch.optim.Adam(params, 0.02)
        state: dict = {}
        scheme.prepare(params, state)
        runs.append((scheme, params, opt, state))
    for step in range(60):
        noise = [0.1 * torch.randn(s, generator=gen, dtype=DT) for s in shapes]
        strength = 0.4 * (1.0 + 0.5 * math.sin(0.3 * step))
        rate = (0.05 if optimizer == "sgd" else 0.02) * strength
        for scheme, params, opt, state in runs:
            _step_with(scheme, params, opt, state, targets, noise, rate, strength)
        for new, old in zip(runs[0][1], runs[1][1]):
            torch.testing.assert_close(new, old, rtol=0, atol=1e-12)
            assert torch.equal(new == 0, old == 0), f"step {step}: zero pattern differs for shape {tuple(new.shape)}"
    if name != "cautious":
        assert 0 < sum(int((p == 0).sum()) for p in runs[0][1]) < sum(p.numel() for p in runs[0][1])


@pytest.mark.parametrize("name", ["l1", "group_lasso", "cautious", "l2_sp"])
def test_fast_passes_match_the_reference_on_mixed_shapes(name):
    """The for-loop references (tests/reference_impl.py) on shapes that take the large and the stacked paths."""
    weights, targets, gen = _mixed_problem(seed=11)
    steps, lr = 8, 0.05
    noises = [[0.1 * torch.randn(s, generator=gen, dtype=DT) for s in MIXED] for _ in range(steps)]
    strengths = [0.4 * (1.0 + 0.5 * math.sin(0.3 * t)) for t in range(steps)]
    scheme, state = get_scheme(name), {}
    params = [nn.Parameter(w.clone()) for w in weights]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    scheme.prepare(params, state)
    ws, references = [w.clone() for w in weights], [w.clone() for w in weights]
    opts = [ref.SGDMomentum(lr, 0.9) for _ in ws]
    for noise, strength in zip(noises, strengths):
        rate = lr * strength
        _step_with(scheme, params, opt, state, targets, noise, rate, strength)
        for i in range(len(ws)):
            extra = {"reference": references[i]} if name == "l2_sp" else {}
            ws[i] = ref.SCHEMES[name](ws[i], (ws[i] - targets[i]) + noise[i], opts[i], rate, strength, **extra)
        for p, w in zip(params, ws):
            torch.testing.assert_close(p.detach(), w, rtol=0, atol=1e-12)
            assert torch.equal(p == 0, w == 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_passes_in_low_precision(dtype):
    """float32: the stacked and large paths give what the previous code gave (zeros included). bfloat16: the
    result of the same pass in float64, rounded (the previous code summed squares in bfloat16, the new norms
    accumulate in float32, so there the float64 result is the judge)."""
    from previous_schemes import PREVIOUS

    gen = torch.Generator().manual_seed(2)
    base = [torch.randn(s, generator=gen, dtype=DT).to(dtype) for s in MIXED]
    for name in ("l1", "group_lasso"):
        new = [b.clone() for b in base]
        get_scheme(name).after_update(new, 0.3, 1.0, {})
        if dtype == torch.float32:
            judge = [b.clone() for b in base]
            PREVIOUS[name]().after_update(judge, 0.3, 1.0, {})
            tol = 0.0 if name == "l1" else 1e-6
        else:
            judge = [b.double() for b in base]
            get_scheme(name).after_update(judge, 0.3, 1.0, {})
            judge, tol = [j.to(dtype) for j in judge], 8e-3
        for a, b in zip(new, judge):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
            assert torch.equal(a == 0, b == 0)
