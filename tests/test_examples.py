"""The example datamodules and models: shapes, determinism, a one-batch fit with the WeightDecay callback."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

import lightning_wd
from lightning_wd.examples import (
    CNN1D,
    MLP,
    DigitsDataModule,
    MNIST1DDataModule,
    TinyTransformer,
    load_digits_split,
    load_mnist1d,
    quantize,
)
from lightning_wd.examples import data as data_module

SMALL = {"num_train": 90, "num_test": 30}


@pytest.fixture
def fit_one_batch(quiet_trainer):
    """``fit_one_batch(model, datamodule) -> trainer``: one training and one validation batch, decay 0.1."""
    def fit_one_batch(model, datamodule) -> Trainer:
        trainer = quiet_trainer([lightning_wd.WeightDecay(strength=0.1, print_audit=False)], fast_dev_run=1)
        trainer.fit(model, datamodule=datamodule)
        return trainer

    return fit_one_batch


# ---------------------------------------------------------------------------------------------- data


def test_mnist1d_default_sizes():
    data = load_mnist1d()  # 4000/1000, generated once per machine (disk cache) and once per process
    assert data["x"].shape == (4000, 40) and data["x_test"].shape == (1000, 40)
    assert data["x"].dtype == np.float32 and data["y"].dtype == np.int64
    assert set(np.unique(data["y"])) == set(range(10))
    assert abs(float(data["x"].mean())) < 0.1


def test_mnist1d_deterministic_and_cached_on_disk(tmp_path):
    first = load_mnist1d(seed=3, cache_dir=tmp_path, **SMALL)
    files = list(tmp_path.glob("mnist1d_*.npz"))
    assert len(files) == 1
    data_module._MEMORY.clear()  # the next call reads the file
    again = load_mnist1d(seed=3, cache_dir=tmp_path, **SMALL)
    data_module._MEMORY.clear()
    fresh = load_mnist1d(seed=3, disk_cache=False, **SMALL)  # regenerated: the same arrays
    other = load_mnist1d(seed=4, disk_cache=False, **SMALL)
    for key in ("x", "y", "x_test", "y_test"):
        np.testing.assert_array_equal(first[key], again[key])
        np.testing.assert_array_equal(first[key], fresh[key])
    assert not np.array_equal(first["x"], other["x"])


def test_mnist1d_generation_leaves_global_rng_alone():
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    load_mnist1d(seed=11, disk_cache=False, **SMALL)
    assert (np.random.rand(), random.random()) == expected


def test_mnist1d_invalid_sizes():
    with pytest.raises(ValueError, match="multiple of 10"):
        load_mnist1d(num_train=91, num_test=10, disk_cache=False)
    with pytest.raises(ValueError, match="num_train"):
        MNIST1DDataModule(num_train=0)
    with pytest.raises(ValueError, match="batch_size"):
        MNIST1DDataModule(batch_size=0)


def test_mnist1d_datamodule_batches_and_sequence_tokens():
    dm = MNIST1DDataModule(batch_size=16, disk_cache=False, **SMALL)
    dm.prepare_data()
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 40) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(dm.val_dataloader().dataset) == 15 and len(dm.test_dataloader().dataset) == 15


@pytest.mark.parametrize("make", [lambda: MNIST1DDataModule(batch_size=8, disk_cache=False, **SMALL),
                                  lambda: DigitsDataModule(batch_size=8, val_fraction=0.3)])
def test_train_validation_and_test_splits_share_no_sample(make):
    dm = make()
    dm.setup("fit")
    rows = {name: {tuple(x.tolist()) for x in getattr(dm, f"{name}_set").tensors[0]}
            for name in ("train", "val", "test")}
    assert rows["val"] and rows["test"]
    assert not rows["val"] & rows["test"] and not rows["train"] & rows["val"] and not rows["train"] & rows["test"]
    held = len(rows["val"]) + len(rows["test"])
    assert abs(len(rows["val"]) - dm.val_fraction * held) <= 1
    again = make()
    again.setup("fit")
    assert torch.equal(again.test_set.tensors[0], dm.test_set.tensors[0])  # fixed by the seed
    with pytest.raises(ValueError, match="val_fraction"):
        MNIST1DDataModule(val_fraction=1.0)

    seq = MNIST1DDataModule(batch_size=16, as_sequence=True, vocab_size=8, disk_cache=False, **SMALL)
    seq.setup("fit")
    tokens, _ = next(iter(seq.val_dataloader()))
    assert tokens.dtype == torch.int64 and tokens.shape == (15, 40)  # the 15 validation samples
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 8


def test_quantize_equal_frequency():
    reference = np.random.default_rng(0).normal(size=10_000)
    tokens = quantize(reference, reference, 4)
    counts = np.bincount(tokens, minlength=4)
    assert counts.min() > 2400 and counts.max() < 2600
    with pytest.raises(ValueError, match="vocab_size"):
        quantize(reference, reference, 1)


def test_digits_split_is_fixed_and_standardized():
    x, y, x_test, y_test = load_digits_split()
    assert x.shape == (1437, 64) and x_test.shape == (360, 64)
    assert np.allclose(x.mean(axis=0), 0, atol=1e-5)
    assert np.bincount(y_test, minlength=10).min() >= 35  # stratified
    np.testing.assert_array_equal(load_digits_split()[3], y_test)
    dm = DigitsDataModule(batch_size=50)
    dm.setup("fit")
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (50, 64) and yb.shape == (50,)
    with pytest.raises(ValueError, match="test_fraction"):
        DigitsDataModule(test_fraction=1.5)


# -------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize(
    ("model", "inputs"),
    [
        (MLP(), torch.randn(5, 40)),
        (MLP(in_features=64, hidden=(32,), batchnorm=True), torch.randn(5, 64)),
        (CNN1D(), torch.randn(5, 40)),
        (TinyTransformer(), torch.randint(0, 32, (5, 40))),
    ],
    ids=["mlp", "bn-mlp", "cnn", "transformer"],
)
def test_forward_shapes(model, inputs):
    model.eval()
    assert model(inputs).shape == (5, 10)


def test_models_contain_the_layers_decay_rules_care_about():
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in CNN1D().modules())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in MLP().modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in MLP(batchnorm=True).modules())
    transformer = TinyTransformer()
    assert any(isinstance(m, torch.nn.Embedding) for m in transformer.modules())
    assert any(isinstance(m, torch.nn.LayerNorm) for m in transformer.modules())


@pytest.mark.parametrize(
    ("make_model", "make_data"),
    [
        (lambda: MLP(hidden=(16, 16)), lambda: MNIST1DDataModule(batch_size=30, disk_cache=False, **SMALL)),
        (lambda: MLP(in_features=64, hidden=(16,), batchnorm=True), lambda: DigitsDataModule(batch_size=30)),
        (lambda: CNN1D(channels=(8, 8)), lambda: MNIST1DDataModule(batch_size=30, disk_cache=False, **SMALL)),
        (lambda: TinyTransformer(vocab_size=8, d_model=16, nhead=2, dim_feedforward=32),
         lambda: MNIST1DDataModule(batch_size=30, as_sequence=True, vocab_size=8, disk_cache=False, **SMALL)),
    ],
    ids=["mlp", "bn-mlp-digits", "cnn", "transformer"],
)
def test_one_batch_fit_with_weight_decay(fit_one_batch, make_model, make_data):
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = fit_one_batch(model, make_data())
    assert {"train/loss", "val/loss", "val/acc"} <= set(trainer.callback_metrics)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("scheduler", ["cosine", "step", "onecycle"])
def test_lr_schedulers(fit_one_batch, scheduler):
    model = MLP(hidden=(8,), lr_scheduler=scheduler)
    trainer = fit_one_batch(model, MNIST1DDataModule(batch_size=30, disk_cache=False, **SMALL))
    assert len(trainer.lr_scheduler_configs) == 1
    interval = trainer.lr_scheduler_configs[0].interval
    assert interval == ("epoch" if scheduler == "step" else "step")


def test_test_step_logs_test_metrics(quiet_trainer):
    model = MLP(hidden=(8,))
    trainer = quiet_trainer(limit_test_batches=1)
    trainer.test(model, datamodule=MNIST1DDataModule(batch_size=30, disk_cache=False, **SMALL), verbose=False)
    assert {"test/loss", "test/acc"} <= set(trainer.callback_metrics)


def test_plain_optimizer_over_all_parameters():
    model = MLP(hidden=(8,), optimizer="adamw", lr=0.02)
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["weight_decay"] == 0.0  # explicit 0, not AdamW's 0.01
    assert optimizer.param_groups[0]["lr"] == 0.02
    assert sum(p.numel() for p in optimizer.param_groups[0]["params"]) == sum(
        p.numel() for p in model.parameters())
    sgd = MLP(hidden=(8,), optimizer="sgd", lr=0.1, optimizer_kwargs={"momentum": 0.9}).configure_optimizers()
    assert sgd.param_groups[0]["momentum"] == 0.9


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: MLP(lr=-1.0), "lr"),
        (lambda: MLP(weight_decay=-0.1), "weight_decay"),
        (lambda: MLP(lr_scheduler="linear"), "lr_scheduler"),
        (lambda: MLP(optimizer="nope"), "optimizer"),
        (lambda: MLP(activation="swishy"), "activation"),
        (lambda: MLP(hidden=(0,)), "hidden"),
        (lambda: CNN1D(kernel_size=4), "kernel_size"),
        (lambda: TinyTransformer(d_model=30, nhead=4), "nhead"),
    ],
)
def test_invalid_arguments_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        make()
