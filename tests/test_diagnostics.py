"""Equilibrium diagnostics (issue 16, item 1): every metric against a for-loop / closed-form reference."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Callback
from lit_net import Net
from torch import nn

from lightning_wd.core.callback import WeightDecay
from lightning_wd.core.diagnostics import DIAGNOSTICS, Diagnostics, angle_from_sides, stable_ranks

pytestmark = pytest.mark.usefixtures("float64")

DECAYED = ("body.0.weight", "head.weight")
LR, STRENGTH = 0.05, 0.3


# -- the formulas ---------------------------------------------------------------------------------------------------


def test_angle_from_sides_matches_arccos_and_stays_exact_for_tiny_angles():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        a, b = torch.randn(30, generator=g), torch.randn(30, generator=g)
        cos = float(a @ b / (a.norm() * b.norm()))
        got = angle_from_sides(float(a.norm()), float(b.norm()), float((a - b).norm()))
        assert got == pytest.approx(math.acos(cos), rel=1e-12, abs=1e-12)
    # w and w + eps * u with u orthogonal to w: the angle is atan(eps |u| / |w|); arccos of the cosine gives 0
    w = torch.zeros(10)
    w[0] = 3.0
    u = torch.zeros(10)
    u[1] = 1.0
    for eps in (1e-6, 1e-9, 1e-12):
        w2 = w + eps * u
        expected = math.atan(eps / 3.0)
        assert angle_from_sides(float(w.norm()), float(w2.norm()), float((w2 - w).norm())) == pytest.approx(
            expected, rel=1e-9)
    assert math.isnan(angle_from_sides(0.0, 1.0, 1.0))
    assert angle_from_sides(1.0, 1.0, 2.0) == pytest.approx(math.pi)


def known_spectrum(m: int, n: int, sigmas: list[float], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(m, len(sigmas), generator=g))
    v, _ = torch.linalg.qr(torch.randn(n, len(sigmas), generator=g))
    return u @ torch.diag(torch.tensor(sigmas)) @ v.T


def test_stable_rank_against_its_closed_form():
    sigmas = [4.0, 2.0, 1.0, 0.5]
    expected = sum(s * s for s in sigmas) / sigmas[0] ** 2
    tall, wide = known_spectrum(12, 6, sigmas, 1), known_spectrum(5, 9, sigmas, 2)
    same_shape = known_spectrum(12, 6, [3.0, 1.0, 1.0], 3)  # stacked with `tall` in one bmm
    conv = known_spectrum(6, 8, sigmas, 4).reshape(6, 2, 2, 2)  # viewed as (6, 8)
    got = stable_ranks([tall, wide, same_shape, conv, torch.zeros(3, 3)], iterations=40)
    assert got[:4] == pytest.approx([expected, expected, 11 / 9, expected], rel=1e-12)
    assert math.isnan(got[4])
    for w, value in zip((tall, wide, same_shape, conv), got):
        svd = torch.linalg.svdvals(w.reshape(w.shape[0], -1))
        assert value == pytest.approx(float(svd.square().sum() / svd[0] ** 2), rel=1e-12)


def test_stable_rank_warm_start_converges_from_above_over_calls():
    w = known_spectrum(20, 20, [1.0, 0.95, 0.5], 5)  # a small gap: slow convergence from a cold start
    exact = (1 + 0.95 ** 2 + 0.25) / 1.0
    vectors: dict = {}
    values = [stable_ranks([w], iterations=3, vectors=vectors, keys=["w"])[0] for _ in range(60)]
    assert all(v >= exact - 1e-12 for v in values)
    assert all(b <= a + 1e-12 for a, b in zip(values, values[1:]))  # monotone toward the truth
    assert values[0] - exact > 1e-3 and values[-1] == pytest.approx(exact, rel=1e-9)


def test_due_is_the_step_before_a_logging_step_or_the_last():
    assert [s for s in range(20) if Diagnostics.due(s, 5)] == [4, 9, 14, 19]
    assert [s for s in range(20) if Diagnostics.due(s, 5, total=18)] == [4, 9, 14, 17, 19]
    assert Diagnostics.due(3, 5, total=float("inf")) is False


# -- through the callback, against a for-loop reference ---------------------------------------------------------------


class Recorder(Callback):
    """Every step: w and g before the update (for-loop copies), w after it."""

    def __init__(self) -> None:
        self.before, self.after = {}, {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        named = dict(pl_module.named_parameters())
        self.before[trainer.global_step + 1] = {n: (named[n].detach().clone(), named[n].grad.detach().clone())
                                                for n in DECAYED}
        self.lr = optimizer.param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        named = dict(pl_module.named_parameters())
        self.after[trainer.global_step] = {n: named[n].detach().clone() for n in DECAYED}


def reference(recorder: Recorder, step: int, names=DECAYED, rate: float = LR * STRENGTH, lr: float = LR) -> dict:
    """The metrics of ``step`` over ``names``, element by element in Python."""
    w = [float(x) for n in names for x in recorder.before[step][n][0].reshape(-1)]
    g = [float(x) for n in names for x in recorder.before[step][n][1].reshape(-1)]
    w2 = [float(x) for n in names for x in recorder.after[step][n].reshape(-1)]
    norm = math.sqrt(sum(x * x for x in w))
    norm2 = math.sqrt(sum(x * x for x in w2))
    gnorm = math.sqrt(sum(x * x for x in g))
    dnorm = math.sqrt(sum((b - a) ** 2 for a, b in zip(w, w2)))
    cos = sum(a * b for a, b in zip(w, w2)) / (norm * norm2)
    return {"grad_weight_ratio": gnorm / norm, "update_weight_ratio": dnorm / norm,
            "angular_update": math.acos(min(1.0, cos)),
            "equilibrium_ratio": (gnorm / norm) / math.sqrt(2 * rate / lr ** 2)}


def fit(quiet_trainer, tiny_loader, cb, recorder=None, epochs=3, **kwargs):
    trainer = quiet_trainer([cb] + ([recorder] if recorder else []), max_epochs=epochs, **kwargs)
    model = Net(hidden=16)
    trainer.fit(model, tiny_loader)
    return model, trainer


def test_callback_diagnostics_equal_the_for_loop_reference(quiet_trainer, tiny_loader):
    recorder = Recorder()
    cb = WeightDecay(strength=STRENGTH, print_audit=False, log_every_n_steps=4)
    model, _ = fit(quiet_trainer, tiny_loader, cb, recorder)
    assert [h["step"] for h in cb.history] == [4, 8, 12, 16, 18]
    for entry in cb.history:  # every interval, the final (18, not a multiple of 4) included
        metrics, step = entry["metrics"], entry["step"]
        expected = reference(recorder, step)
        for key, value in expected.items():
            tolerance = 1e-6 if key == "angular_update" else 1e-12  # acos loses digits near 0; Kahan does not
            assert metrics[f"wd/{key}"] == pytest.approx(value, rel=tolerance), (step, key)
        for name in DECAYED:
            per_tensor = reference(recorder, step, names=[name])
            for key, value in per_tensor.items():
                tolerance = 1e-6 if key == "angular_update" else 1e-12
                assert metrics[f"wd/{key}/{name}"] == pytest.approx(value, rel=tolerance), (step, key, name)
            w = dict(model.named_parameters())[name].detach() if step == 18 else recorder.after[step][name]
            svd = torch.linalg.svdvals(w)
            assert metrics[f"wd/stable_rank/{name}"] >= float(svd.square().sum() / svd[0] ** 2) - 1e-12
        ranks = [metrics[f"wd/stable_rank/{n}"] for n in DECAYED]
        assert metrics["wd/stable_rank"] == pytest.approx(sum(ranks) / 2, rel=1e-15)


def test_equilibrium_ratio_follows_the_coupling_and_the_multipliers(quiet_trainer, tiny_loader):
    recorder = Recorder()
    cb = WeightDecay(strength=STRENGTH, print_audit=False, log_every_n_steps=6, multipliers={"head.*": 3.0},
                     lr_coupling="none")
    fit(quiet_trainer, tiny_loader, cb, recorder, epochs=1)
    metrics = cb.history[-1]["metrics"]
    g = {n: float(recorder.before[6][n][1].norm()) for n in DECAYED}
    w = {n: float(recorder.before[6][n][0].norm()) for n in DECAYED}
    rate = {"body.0.weight": STRENGTH, "head.weight": 3 * STRENGTH}  # coupling "none": the rate is lambda
    for n in DECAYED:
        assert metrics[f"wd/equilibrium_ratio/{n}"] == pytest.approx(
            math.sqrt(LR ** 2 * g[n] ** 2 / (2 * rate[n] * w[n] ** 2)), rel=1e-12)
    total = math.sqrt(sum(LR ** 2 * g[n] ** 2 for n in DECAYED) / sum(2 * rate[n] * w[n] ** 2 for n in DECAYED))
    assert metrics["wd/equilibrium_ratio"] == pytest.approx(total, rel=1e-12)


def test_equilibrium_ratio_only_for_decoupled_decay(quiet_trainer, tiny_loader):
    cb = WeightDecay(scheme="l1", strength=0.01, print_audit=False, log_every_n_steps=6)
    fit(quiet_trainer, tiny_loader, cb, epochs=1)
    keys = set(cb.history[-1]["metrics"])
    assert "wd/grad_weight_ratio" in keys and not [k for k in keys if k.startswith("wd/equilibrium_ratio")]


def test_switches_drop_the_keys(quiet_trainer, tiny_loader):
    cb = WeightDecay(strength=0.1, print_audit=False, per_layer_stats=False)
    fit(quiet_trainer, tiny_loader, cb, epochs=1)
    assert set(cb.history[-1]["metrics"]) == {"wd/nonzero_fraction", "wd/weight_norm", "wd/strength"} | {
        f"wd/{m}" for m in DIAGNOSTICS}
    cb = WeightDecay(strength=0.1, print_audit=False, diagnostics=False)
    fit(quiet_trainer, tiny_loader, cb, epochs=1)
    assert not [k for k in cb.history[-1]["metrics"] if k.split("/")[1] in DIAGNOSTICS]
    with pytest.raises(ValueError, match="diagnostics"):
        WeightDecay(diagnostics="yes")


def test_snapshot_only_on_the_step_before_a_logging_step(quiet_trainer, tiny_loader, monkeypatch):
    taken = []
    original = Diagnostics.snapshot
    monkeypatch.setattr(Diagnostics, "snapshot", lambda self, decays, step: (taken.append(step),
                                                                             original(self, decays, step)))
    cb = WeightDecay(strength=0.1, print_audit=False, log_every_n_steps=5)
    fit(quiet_trainer, tiny_loader, cb)  # 18 steps
    assert taken == [4, 9, 14, 17]
    assert cb._diagnostics.snapshots == {}  # the copies are freed at the log


def test_tensor_without_gradient_and_zeroed_tensor_are_left_out():
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 2, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    from lightning_wd.core.decay_step import OptimizerDecay
    from lightning_wd.core.schedules import StrengthSchedule
    from lightning_wd.core.schemes import get_scheme

    names = {id(p): n for n, p in model.named_parameters()}
    decay = OptimizerDecay(opt, get_scheme("decoupled"), StrengthSchedule("constant", 0.5), lambda p: ("d", 1.0), names)
    with torch.no_grad():
        model[1].weight.zero_()
    model(torch.ones(1, 3)).sum().backward()
    model[1].weight.grad = None
    d = Diagnostics()
    d.snapshot([decay], step=0)
    decay.install()
    opt.step()
    decay.uninstall()
    stats = d.compute([decay], step=1)
    assert "wd/grad_weight_ratio/0.weight" in stats and not [k for k in stats if k.endswith("/1.weight")
                                                               and "stable_rank" not in k]
    assert "wd/stable_rank/1.weight" not in stats  # a zero matrix has no stable rank


def test_diagnostics_reach_mlflow(quiet_trainer, tiny_loader, mlflow_sqlite):
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.tracking import MlflowClient

    logger = MLFlowLogger(experiment_name="diagnostics", tracking_uri=mlflow_sqlite)
    cb = WeightDecay(strength=0.1, print_audit=False, log_every_n_steps=3)
    fit(quiet_trainer, tiny_loader, cb, epochs=1, logger=logger)
    metrics = MlflowClient(mlflow_sqlite).get_run(logger.run_id).data.metrics
    for name in DIAGNOSTICS:
        assert metrics[f"wd/{name}"] == pytest.approx(cb.history[-1]["metrics"][f"wd/{name}"], rel=1e-12)
    assert "wd/angular_update/head.weight" in metrics
