"""Statistics: what is logged, when, under which names, and that the numbers are the naive ones."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lit_net import Net, make_loader
from torch import nn

from lightning_wd.core import callback as callback_module
from lightning_wd.core.callback import WeightDecay
from lightning_wd.core.stats import nonzero_counts, weight_stats

DECAYED = ("body.0.weight", "head.weight")  # the default rules' decayed tensors of Net


pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def fit(quiet_trainer, tiny_loader):
    """``fit(callback, epochs=3, logger=False, **trainer_options) -> (model, trainer)``: 6 steps an epoch."""
    def fit(cb: WeightDecay, epochs: int = 3, logger=False, callbacks=(), **kwargs) -> tuple[Net, L.Trainer]:
        trainer = quiet_trainer([cb, *callbacks], max_epochs=epochs, logger=logger, **kwargs)
        model = Net(hidden=16)
        trainer.fit(model, tiny_loader)
        return model, trainer

    return fit


def naive(model: nn.Module, names=DECAYED, tolerance: float = 0.0) -> tuple[float, float]:
    """(non-zero fraction, L2 norm) of the named tensors, element by element in Python."""
    named = dict(model.named_parameters())
    values = [float(v) for n in names for v in named[n].detach().reshape(-1)]
    nonzero = sum(1 for v in values if abs(v) > tolerance)
    return nonzero / len(values), math.sqrt(sum(v * v for v in values))


def read_metrics(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_logged_nonzero_fraction_equals_the_final_model(fit, tmp_path):
    cb = WeightDecay(scheme="l1", strength=0.5, print_audit=False, log_every_n_steps=5)
    model, _ = fit(cb, logger=CSVLogger(tmp_path, name="", version=""))
    rows = [r for r in read_metrics(tmp_path / "metrics.csv") if r.get("wd/nonzero_fraction")]
    last = rows[-1]
    fraction, norm = naive(model)
    assert 0.0 < fraction < 1.0  # proximal L1 made exact zeros, not all
    assert float(last["wd/nonzero_fraction"]) == pytest.approx(fraction, rel=1e-15, abs=0)
    assert float(last["wd/weight_norm"]) == pytest.approx(norm, rel=1e-12)
    assert int(last["step"]) == 18
    for name in DECAYED:
        assert float(last[f"wd/nonzero_fraction/{name}"]) == pytest.approx(naive(model, [name])[0], rel=1e-15)
        assert float(last[f"wd/weight_norm/{name}"]) == pytest.approx(naive(model, [name])[1], rel=1e-12)
    assert cb.history[-1]["metrics"]["wd/nonzero_fraction"] == pytest.approx(fraction, rel=1e-15)


@pytest.mark.parametrize(
    ("scheme", "extra"),
    [("decoupled", set()), ("l1", {"wd/penalty"}), ("l2", {"wd/penalty"}),
     ("group_lasso", {"wd/penalty", "wd/dead_units"})],
)
def test_metric_names(fit, scheme, extra):
    cb = WeightDecay(scheme=scheme, strength=0.1, print_audit=False, diagnostics=False)  # see test_diagnostics
    fit(cb, epochs=1)
    per_tensor = {f"wd/{kind}/{name}" for kind in ("nonzero_fraction", "weight_norm") for name in DECAYED}
    expected = {"wd/nonzero_fraction", "wd/weight_norm", "wd/strength"} | per_tensor | extra
    assert set(cb.history[-1]["metrics"]) == expected
    assert set(cb.history[-1]) == {"step", "epoch", "metrics"}
    assert cb.history[-1]["metrics"]["wd/strength"] == 0.1


def test_per_layer_stats_false_drops_the_per_tensor_keys(fit):
    cb = WeightDecay(scheme="l1", strength=0.1, per_layer_stats=False, print_audit=False, diagnostics=False)
    fit(cb, epochs=1)
    assert set(cb.history[-1]["metrics"]) == {"wd/nonzero_fraction", "wd/weight_norm", "wd/strength", "wd/penalty"}


@pytest.mark.parametrize(
    ("every", "trainer_every", "accumulate", "steps"),
    [
        (4, 50, 1, [4, 8, 12, 16, 18]),  # every 4 steps, and once at the end
        (None, 5, 1, [5, 10, 15, 18]),  # the Trainer's log_every_n_steps by default
        (6, 50, 1, [6, 12, 18]),  # the end coincides with a multiple: logged once
        (2, 50, 3, [2, 4, 6]),  # optimizer steps, not batches (accumulation), and never step 0
    ],
)
def test_stats_only_every_log_every_n_steps(fit, every, trainer_every, accumulate, steps):
    cb = WeightDecay(strength=0.1, log_every_n_steps=every, print_audit=False)
    fit(cb, log_every_n_steps=trainer_every, accumulate_grad_batches=accumulate)
    assert [h["step"] for h in cb.history] == steps
    assert [h["epoch"] for h in cb.history][-1] == 2


def test_default_interval_doubles_while_statistics_cost_too_much(fit, monkeypatch, caplog):
    monkeypatch.setattr(callback_module, "STATS_BUDGET", 1e-12)  # every call costs too much
    cb = WeightDecay(strength=0.1, print_audit=False)
    with caplog.at_level("INFO"):
        fit(cb, log_every_n_steps=2)
    # the first call is not judged (warm-up); then the interval doubles up to the fit's 18 steps: only the end
    assert [h["step"] for h in cb.history] == [2, 4, 18]
    assert "WeightDecay: statistics every 32 steps instead of 2 (one call takes" in caplog.text
    assert cb.stats_seconds > 0
    explicit = WeightDecay(strength=0.1, log_every_n_steps=2, print_audit=False)
    fit(explicit, log_every_n_steps=50)  # an explicit interval is kept exactly
    assert [h["step"] for h in explicit.history] == list(range(2, 19, 2))


class _StopAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trainer.should_stop = trainer.global_step >= self.step


def test_interval_grows_up_to_the_steps_done_when_the_fit_length_is_unknown(fit, monkeypatch):
    monkeypatch.setattr(callback_module, "STATS_BUDGET", 1e-12)
    cb = WeightDecay(strength=0.1, print_audit=False)
    fit(cb, epochs=-1, max_steps=-1, log_every_n_steps=2, callbacks=[_StopAt(18)])
    assert cb._total_steps == float("inf")
    assert [h["step"] for h in cb.history] == [2, 4, 8, 16, 18]


class _Background(L.pytorch.loggers.Logger):
    """A logger whose points cost ``seconds`` each on a background thread (as ``BufferedMLFlowLogger`` says)."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__()
        self.background_seconds_per_point, self.points = seconds, 0

    name, version = "background", "0"

    def log_metrics(self, metrics, step=None):
        self.points += sum(key.startswith("wd/") for key in metrics)

    def log_hyperparams(self, params, *args, **kwargs):
        pass


@pytest.mark.parametrize(("seconds", "steps"), [(None, [2, 4, 6, 8, 10, 12, 14, 16, 18]), (10.0, [2, 4, 18])])
def test_a_background_loggers_cost_per_point_counts_toward_the_interval(fit, monkeypatch, seconds, steps):
    monkeypatch.setattr(callback_module, "STATS_BUDGET", 1.0)  # the training thread's own cost is far under it
    cb = WeightDecay(strength=0.1, print_audit=False, diagnostics=False, per_layer_stats=False)
    logger = _Background(seconds)
    fit(cb, logger=logger, log_every_n_steps=2)
    assert [h["step"] for h in cb.history] == steps
    assert logger.points == sum(len(h["metrics"]) for h in cb.history)


def test_zero_tolerance_counts_small_weights_as_zero(fit):
    cb = WeightDecay(strength=0.1, zero_tolerance=0.1, print_audit=False)
    model, _ = fit(cb, epochs=1)
    fraction, _ = naive(model, tolerance=0.1)
    assert 0.0 < fraction < 1.0
    assert cb.history[-1]["metrics"]["wd/nonzero_fraction"] == pytest.approx(fraction, rel=1e-15)
    assert cb.compute_stats(model)["wd/nonzero_fraction"] == pytest.approx(fraction, rel=1e-15)


def test_nothing_is_logged_off_rank_zero(fit, tmp_path, monkeypatch):
    monkeypatch.setattr(L.Trainer, "is_global_zero", property(lambda self: False))
    cb = WeightDecay(strength=0.1, log_every_n_steps=1, print_audit=False)
    fit(cb, epochs=1, logger=CSVLogger(tmp_path, name="", version=""))
    assert cb.history == []
    path = tmp_path / "metrics.csv"
    rows = read_metrics(path) if path.exists() else []
    assert not [k for row in rows for k in row if k.startswith("wd/")]


def test_penalties_against_naive_values(fit):
    for scheme, strength in (("l1", 0.3), ("l2", 0.3), ("elastic_net", 0.3), ("group_lasso", 0.3)):
        cb = WeightDecay(scheme=scheme, strength=strength, print_audit=False, l1_ratio=0.25)
        model, _ = fit(cb, epochs=1)
        named = dict(model.named_parameters())
        ws = [named[n].detach() for n in DECAYED]
        l1 = sum(float(w.abs().sum()) for w in ws)
        l2 = sum(float(w.square().sum()) for w in ws)
        rows = sum(float(r.norm()) * math.sqrt(r.numel()) for w in ws for r in w)
        expected = {"l1": strength * l1, "l2": 0.5 * strength * l2,
                    "elastic_net": strength * (0.25 * l1 + 0.5 * 0.75 * l2), "group_lasso": strength * rows}[scheme]
        assert cb.compute_stats(model)["wd/penalty"] == pytest.approx(expected, rel=1e-12), scheme
    dead = sum(int((w.reshape(w.shape[0], -1).norm(dim=1) == 0).sum()) for w in ws)
    assert cb.compute_stats(model)["wd/dead_units"] == dead


# -- weight_stats directly ------------------------------------------------------------------------------


def test_weight_stats_against_a_naive_count_and_norm():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(5, 7, generator=g)
    a[a.abs() < 0.5] = 0.0
    b = torch.randn(11, generator=g)
    b[::3] = 0.0
    b[1] = 1e-9
    stats = weight_stats(["a", "b"], [a, b])
    flat = torch.cat([a.reshape(-1), b])
    assert stats["wd/nonzero_fraction"] == int((flat != 0).sum()) / flat.numel()
    assert stats["wd/weight_norm"] == pytest.approx(float(flat.norm()), rel=1e-14)
    assert stats["wd/nonzero_fraction/a"] == int((a != 0).sum()) / a.numel()
    assert stats["wd/nonzero_fraction/b"] == int((b != 0).sum()) / b.numel()
    assert stats["wd/weight_norm/b"] == pytest.approx(float(b.norm()), rel=1e-14)
    tolerant = weight_stats(["a", "b"], [a, b], zero_tolerance=1e-6, per_tensor=False)
    assert tolerant["wd/nonzero_fraction"] == int((flat.abs() > 1e-6).sum()) / flat.numel()
    assert set(tolerant) == {"wd/nonzero_fraction", "wd/weight_norm"}
    assert weight_stats([], []) == {}
    assert set(weight_stats(["a"], [a], prefix="x")) == {"x/nonzero_fraction", "x/weight_norm", "x/nonzero_fraction/a",
                                                         "x/weight_norm/a"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_counts_are_exact_in_low_precision(dtype):
    w = torch.ones(1001, dtype=dtype)
    w[::100] = 0  # 11 zeros: 990 non-zero, not representable in bf16 (which rounds it to 992)
    assert [int(c) for c in nonzero_counts([w])] == [990]
    assert weight_stats(["w"], [w])["wd/nonzero_fraction"] == 990 / 1001
    assert weight_stats(["w"], [w])["wd/weight_norm"] == pytest.approx(math.sqrt(990), rel=1e-6)
    assert weight_stats(["w"], [w * 1e-3], zero_tolerance=1e-2)["wd/nonzero_fraction"] == 0.0


def test_stats_cover_only_tensors_an_optimizer_holds(quiet_trainer):
    cb = WeightDecay(strength=0.1, print_audit=False)
    model = Net(lambda m: torch.optim.SGD(m.head.parameters(), lr=0.05), hidden=16)
    quiet_trainer([cb]).fit(model, make_loader(n=16))
    metrics = cb.history[-1]["metrics"]
    assert "wd/weight_norm/head.weight" in metrics and "wd/weight_norm/body.0.weight" not in metrics
    assert metrics["wd/weight_norm"] == pytest.approx(naive(model, ["head.weight"])[1], rel=1e-12)


@pytest.mark.parametrize("zero_tolerance", [0.0, 1e-3])
def test_counts_equal_one_count_nonzero_per_tensor(zero_tolerance):
    """The counts (with and without a tolerance) are those of one ``count_nonzero`` per tensor of the
    previous code (``_foreach_abs``/``_foreach_sub_``/``_foreach_clamp_min_`` for the tolerance), in every dtype."""
    gen = torch.Generator().manual_seed(4)
    params = []
    for _k, (shape, dtype) in enumerate([((64, 80), torch.float32), ((16, 16), torch.float32), ((16,), torch.float32),
                                        ((16, 16), torch.float32), ((), torch.float64), ((3, 3, 3), torch.bfloat16),
                                        ((0,), torch.float32), ((5,), torch.float64), ((4096,), torch.bfloat16),
                                        ((7, 0), torch.float64), ((9,), torch.bfloat16)]
                                       + [((4, 4), torch.float32)] * 9 + [((3,), torch.float64)] * 8):
        t = torch.randn(shape, generator=gen, dtype=torch.float64) * 1e-2
        t = (t * (torch.rand(shape, generator=gen, dtype=torch.float64) > 0.3)).to(dtype)
        params.append(t)

    def one(p):
        if zero_tolerance > 0:
            p = torch.clamp_min(p.abs() - zero_tolerance, 0.0)
        return int(torch.count_nonzero(p))

    got = nonzero_counts(params, zero_tolerance)
    assert [int(c) for c in got] == [one(p) for p in params]
    assert all(c.dtype == torch.int64 and c.ndim == 0 for c in got)
    assert 0 < sum(map(int, got)) < sum(p.numel() for p in params)
