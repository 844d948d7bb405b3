"""Drop-in compatibility with Lightning's own callbacks (issue 11): SWA, LearningRateMonitor, ModelPruning.

Each runs unchanged with ``WeightDecay`` added; the optimizer's groups are recorded as without it, the weights
equal a reference that decays by hand (``RefDecay``), and the statistics follow what the callback does to the
model. See ``test_compat.py`` for the scheme of the suite.
"""

from __future__ import annotations

import csv

import pytest
import torch
from compat_models import LR, MLP, Classifier, RefDecay, S, Watch, assert_same_log, assert_same_weights, fit, wd
from lightning.pytorch.callbacks import LearningRateMonitor, ModelPruning, StochasticWeightAveraging
from lightning.pytorch.loggers import CSVLogger
from lit_net import float64  # noqa: F401  (float64: fixture)
from torch.optim.lr_scheduler import StepLR

pytestmark = pytest.mark.usefixtures("float64")


def adamw(weight_decay, groups: int = 1):
    def make(m):
        params = [{"params": m.backbone.parameters()}, {"params": m.head.parameters()}] if groups == 2 \
            else m.parameters()
        return torch.optim.AdamW(params, lr=LR, weight_decay=weight_decay, foreach=True)
    return make


# -- 5. StochasticWeightAveraging ---------------------------------------------------------------------


def swa() -> StochasticWeightAveraging:
    return StochasticWeightAveraging(swa_lrs=[0.01], swa_epoch_start=2, annealing_epochs=1)


def test_swa_with_one_lr_per_group_of_a_one_group_optimizer():
    got, watch = Classifier(adamw(0.01)), Watch()
    t = fit(got, [watch, swa(), wd(strength=S)], max_epochs=4)
    assert [g["lr"] for g in t.optimizers[0].param_groups] == [0.01]
    ref = Classifier(adamw(0.0))
    fit(ref, [swa(), RefDecay(S)], max_epochs=4)
    plain = Watch()
    fit(Classifier(adamw(0.01)), [plain, swa()], max_epochs=4)
    assert_same_log(watch, plain)
    assert_same_weights(got, ref)  # the averaged weights of a decayed run


# -- 8. LearningRateMonitor ---------------------------------------------------------------------------


def lr_columns(tmp_path, name: str) -> dict[str, list[str]]:
    """The ``lr-*`` columns of one run's CSV log (their non-empty values)."""
    (path,) = (tmp_path / name).rglob("metrics.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {k: [r[k] for r in rows if r[k]] for k in rows[0] if k.startswith("lr-")}


@pytest.mark.parametrize("groups", [1, 2])
def test_lr_monitor_names_and_values_unchanged(groups, tmp_path):
    def run(name, callbacks):
        monitor = LearningRateMonitor(logging_interval="step")
        model = Classifier(lambda m: {"optimizer": (opt := adamw(0.01, groups)(m)),
                                      "lr_scheduler": {"scheduler": StepLR(opt, 5, 0.5), "interval": "step"}})
        fit(model, [monitor, *callbacks], logger=CSVLogger(tmp_path, name=name), log_every_n_steps=1)
        return monitor.lrs, lr_columns(tmp_path, name)

    lrs, columns = run("with", [wd(strength=S)])
    plain_lrs, plain_columns = run("without", [])
    names = ["lr-AdamW"] if groups == 1 else ["lr-AdamW/pg1", "lr-AdamW/pg2"]
    assert list(plain_lrs) == names  # the premise
    assert list(lrs) == names
    assert lrs == plain_lrs
    assert columns == plain_columns


# -- 9. ModelPruning ----------------------------------------------------------------------------------


def pruning() -> ModelPruning:
    return ModelPruning("l1_unstructured", amount=0.5, make_pruning_permanent=False,
                        use_lottery_ticket_hypothesis=False)


def effective(module) -> dict[str, torch.Tensor]:
    """The weights the pruned model computes with (``weight_orig * weight_mask``), under their original names."""
    return {f"net.{i}.weight": module.net[i].weight_orig * module.net[i].weight_mask for i in (0, 2)}


@pytest.mark.parametrize("scheme", ["decoupled", "l2"])
def test_model_pruning_statistics_on_the_masked_weights(scheme):
    def user(weight_decay):
        def make(m):
            if scheme == "l2":
                return torch.optim.SGD(m.parameters(), lr=LR, momentum=0.9, weight_decay=weight_decay, foreach=True)
            return torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=weight_decay, foreach=True)
        return make

    cb = wd(scheme=scheme, strength=S, log_every_n_steps=2)
    got, watch = MLP(user(1e-3)), Watch()
    fit(got, [watch, pruning(), cb], max_epochs=3)
    assert hasattr(got.net[0], "weight_orig")  # the premise: re-parametrised
    ref = MLP(user(0.0))
    fit(ref, [pruning(), RefDecay(S, scheme)], max_epochs=3)
    plain = Watch()
    fit(MLP(user(1e-3)), [plain, pruning()], max_epochs=3)
    assert_same_log(watch, plain)
    assert_same_weights(got, ref)  # the decay went on on weight_orig

    stats = cb.compute_stats(got)
    weights = effective(got)
    assert not [k for k in stats if "_orig" in k or "_mask" in k]
    for name, w in weights.items():
        assert stats[f"wd/nonzero_fraction/{name}"] == pytest.approx((w != 0).double().mean().item(), abs=0)
        assert stats[f"wd/weight_norm/{name}"] == pytest.approx(w.norm().item(), rel=1e-12)
    total = sum(w.numel() for w in weights.values())
    assert stats["wd/nonzero_fraction"] == pytest.approx(sum(int((w != 0).sum()) for w in weights.values()) / total)
    assert stats["wd/nonzero_fraction"] < 0.9  # the masks show
    if scheme == "l2":  # S/2 * ||w||^2 of the effective weights
        penalty = 0.5 * S * sum(float(w.pow(2).sum()) for w in weights.values())
        assert stats["wd/penalty"] == pytest.approx(penalty, rel=1e-12)

    pruned = [entry["metrics"] for entry in cb.history if entry["epoch"] >= 1]  # logged after the first pruning
    assert pruned
    for metrics in pruned:
        assert {"wd/nonzero_fraction", "wd/weight_norm", "wd/nonzero_fraction/net.0.weight",
                "wd/nonzero_fraction/net.2.weight"} <= set(metrics)
    assert pruned[-1]["wd/nonzero_fraction"] < 1.0
