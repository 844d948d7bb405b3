"""Issue 16, item 2: weight norm control (target_norm) and selective projection decay (SPD) beyond the shared
100-step for-loop reference of test_schemes.py: AdamW as target 0, both SPD branches, checkpoints, errors."""

from __future__ import annotations

import math

import pytest
import reference_impl as ref
import torch
from lit_net import Net
from torch import nn

from lightning_wd.core.callback import WeightDecay
from lightning_wd.core.schemes import SelectiveProjection, TargetNorm, get_scheme

DT = torch.float64
SHAPES = [(5, 3), (7,), (2, 2, 3), (1, 4)]


def problem(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return ([torch.randn(s, generator=gen, dtype=DT) for s in SHAPES],
            [torch.randn(s, generator=gen, dtype=DT) for s in SHAPES], gen)


def test_target_norm_zero_is_torch_adamw_over_300_steps():
    weights, targets, gen = problem(0)
    ours = [nn.Parameter(w.clone()) for w in weights]
    theirs = [nn.Parameter(w.clone()) for w in weights]
    lr, strength = 0.01, 0.3
    adam = torch.optim.Adam(ours, lr=lr, betas=(0.9, 0.99))
    adamw = torch.optim.AdamW(theirs, lr=lr, betas=(0.9, 0.99), weight_decay=strength)
    scheme, state = TargetNorm(target=0.0), {}
    scheme.prepare(ours, state)
    for _ in range(300):
        noise = [0.1 * torch.randn(s, generator=gen, dtype=DT) for s in SHAPES]
        for params in (ours, theirs):
            for p, t, n in zip(params, targets, noise):
                p.grad = (p.detach() - t) + n
        with torch.no_grad():
            scheme.before_update(ours, [p.grad for p in ours], lr * strength, strength, state)
        adam.step()
        adamw.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-13, atol=1e-15)


def test_target_norm_moves_the_norm_a_fraction_rate_toward_the_target():
    gen = torch.Generator().manual_seed(1)
    w = [torch.randn(4, 6, generator=gen, dtype=DT), torch.zeros(3, dtype=DT)]
    direction = w[0] / w[0].norm()
    norm = float(w[0].norm())
    TargetNorm(target=2.5).before_update(w, [torch.zeros_like(x) for x in w], rate=0.2, strength=1.0, state={})
    assert float(w[0].norm()) == pytest.approx(0.8 * norm + 0.2 * 2.5, rel=1e-14)
    torch.testing.assert_close(w[0] / w[0].norm(), direction, rtol=1e-14, atol=1e-15)
    assert torch.equal(w[1], torch.zeros(3, dtype=DT))  # a zero tensor has no direction: it stays 0


def test_target_norm_penalty_and_default_targets_are_the_initial_norms():
    weights, _, _ = problem(2)
    scheme, state = TargetNorm(scale=0.5), {}
    scheme.prepare(weights, state)
    assert [float(t) for t in state["target_norm"]] == pytest.approx([0.5 * float(w.norm()) for w in weights])
    moved = [w * 3 for w in weights]
    state["index"] = {id(p): i for i, p in enumerate(moved)}
    expected = 0.5 * 0.7 * sum((3 * float(w.norm()) - 0.5 * float(w.norm())) ** 2 for w in weights)
    assert float(scheme.penalty(moved, 0.7, state)) == pytest.approx(expected, rel=1e-12)
    assert scheme.hparams() == {"target_norm_scale": 0.5} and TargetNorm(1.0).hparams() == {"target_norm": 1.0}
    for bad in ({"target": -1.0}, {"scale": "x"}, {"target": True}):
        with pytest.raises(ValueError, match=f"`{next(iter(bad))}` must be a number >= 0"):
            TargetNorm(**bad)


def test_selective_projection_takes_both_branches_like_the_for_loop_reference():
    weights, targets, gen = problem(3)
    params = [nn.Parameter(w.clone()) for w in weights]
    ws, references = [w.clone() for w in weights], [w.clone() for w in weights]
    opt = torch.optim.Adam(params, lr=0.05)
    opts = [ref.Adam(0.05) for _ in ws]
    scheme, state, chosen = SelectiveProjection(), {}, []
    scheme.prepare(params, state)
    for _ in range(80):
        noise = [0.5 * torch.randn(s, generator=gen, dtype=DT) for s in SHAPES]
        for p, t, n in zip(params, targets, noise):
            p.grad = (p.detach() - t) + n
        with torch.no_grad():
            scheme.before_update(params, [p.grad for p in params], 0.0, 0.8, state)
            opt.step()
            scheme.after_update(params, 0.0, 0.8, state)
        chosen.append(scheme.extra_stats(params, state)["wd/spd_selected"])
        for i in range(len(ws)):
            ws[i] = ref.selective_projection(ws[i], (ws[i] - targets[i]) + noise[i], opts[i], 0.0, 0.8, references[i])
    for got, want in zip(params, ws):
        torch.testing.assert_close(got.detach(), want, rtol=1e-10, atol=1e-12)
    assert 0 < sum(chosen) < 80 * len(SHAPES)  # projected on some steps and layers, free on others


def test_selective_projection_with_strength_one_keeps_the_deviation_norm():
    w0 = torch.zeros(3, dtype=DT)
    w = [torch.tensor([1.0, 0.0, 0.0], dtype=DT)]
    scheme, state = SelectiveProjection(), {}
    scheme.prepare([w0], state)
    scheme.before_update(w, [torch.tensor([1.0, 0.0, 0.0], dtype=DT)], 0.0, 1.0, state)  # <g, w - w0> = 1 > 0
    w[0] += torch.tensor([0.5, 2.0, 0.0], dtype=DT)
    scheme.after_update(w, 0.0, 1.0, state)
    assert float(w[0].norm()) == pytest.approx(1.0, rel=1e-14)  # deviation norm back to gamma_{t-1}
    scheme.before_update(w, [-w[0].clone()], 0.0, 1.0, state)  # <g, w - w0> < 0: the deviation helps
    before = w[0].clone()
    w[0] *= 3
    scheme.after_update(w, 0.0, 1.0, state)
    assert torch.equal(w[0], 3 * before)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("scheme", ["target_norm", "selective_projection"])
def test_through_the_callback_and_a_checkpoint(scheme, quiet_trainer, tiny_loader, tmp_path):
    cb = WeightDecay(scheme=scheme, strength=0.5, print_audit=False, log_every_n_steps=3)
    trainer = quiet_trainer([cb], max_epochs=1, enable_checkpointing=False)
    model = Net(make_opt=lambda m: torch.optim.Adam(m.parameters(), lr=0.05))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.fit(model, tiny_loader)
    state = cb.state_dict()
    key = get_scheme(scheme).persistent_state[0]
    saved = state["persistent"][key]
    assert set(saved) == {"body.0.weight", "head.weight"}
    for name, value in saved.items():
        expected = start[name] if key == "reference" else start[name].norm()
        torch.testing.assert_close(value.double(), expected.double())
    metrics = cb.history[-1]["metrics"]
    assert ("wd/penalty" in metrics) == (scheme == "target_norm")
    assert ("wd/spd_selected" in metrics) == (scheme == "selective_projection")
    assert not math.isnan(metrics["wd/weight_norm"])


def test_lr_coupling_does_not_apply_to_spd():
    with pytest.raises(ValueError, match="`lr_coupling` does not apply to scheme='selective_projection'"):
        WeightDecay(scheme="selective_projection", lr_coupling="corrected")
