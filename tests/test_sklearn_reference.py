"""Through Lightning: full-batch SGD + the WeightDecay callback converges to scikit-learn's solutions.

A linear model (bias not decayed: the default rules exclude it), loss ``0.5 * mean squared error``
(scikit-learn's ``1 / (2n) ||y - Xw - b||^2``), plain SGD without momentum on the whole dataset each
step. Then proximal gradient (ISTA) with ``scheme="l1"`` solves the lasso, with ``elastic_net`` the
elastic net, and coupled ``l2`` the ridge problem ``||y - Xw - b||^2 + n a ||w||^2``.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.datasets import make_regression
from sklearn.linear_model import ElasticNet, Lasso, Ridge
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_wd.core.callback import WeightDecay

DT = torch.float64
N, FEATURES = 200, 8


@pytest.fixture(scope="module")
def data():
    X, y = make_regression(n_samples=N, n_features=FEATURES, n_informative=4, noise=5.0, bias=3.0,
                           random_state=0)
    X = (X - X.mean(0)) / X.std(0)  # well conditioned: X^T X / n has eigenvalues near 1
    y = y / y.std()
    return X, y


class _FullBatch(Dataset):
    """The whole dataset as one batch, ``steps`` times per epoch (no per-epoch overhead)."""

    def __init__(self, X, y, steps):
        self.X, self.y, self.steps = torch.tensor(X, dtype=DT), torch.tensor(y, dtype=DT), steps

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        return self.X, self.y


class _Linear(L.LightningModule):
    def __init__(self, lr):
        super().__init__()
        self.lr = lr
        self.linear = nn.Linear(FEATURES, 1, dtype=DT)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()

    def training_step(self, batch, batch_idx):
        X, y = batch
        return 0.5 * ((self.linear(X).squeeze(-1) - y) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)  # no momentum, no weight_decay


@pytest.fixture
def fit(quiet_trainer):
    """``fit(X, y, steps, **weight_decay_args) -> (w, b)``: ``steps`` full-batch SGD steps at lr 1 / L."""
    def fit(X, y, steps, **decay):
        hessian = X.T @ X / len(X)  # the loss' Hessian in w (the intercept's block is 1: X is centred)
        lipschitz = max(np.linalg.eigvalsh(hessian).max(), 1.0) + decay.pop("extra_curvature", 0.0)
        model = _Linear(lr=1.0 / lipschitz)
        callback = WeightDecay(print_audit=False, split_groups=decay.get("native", True), **decay)
        trainer = quiet_trainer([callback], max_steps=steps)
        trainer.fit(model, DataLoader(_FullBatch(X, y, steps), batch_size=None))
        assert trainer.global_step == steps
        buckets = callback.decays[0].buckets
        assert [b.names for b in buckets] == [["linear.weight"]]  # bias excluded
        native = callback.native and callback.scheme.native == "coupled"  # split into a homogeneous decay group
        assert buckets[0].native == native and len(trainer.optimizers[0].param_groups) == (2 if native else 1)
        return model.linear.weight.detach().squeeze(0).numpy(), float(model.linear.bias.detach())

    return fit


def _check(w, b, reference):
    # both converge to machine precision (about 1e-15 apart): 1e-12 leaves room for other BLAS builds
    np.testing.assert_allclose(w, reference.coef_, rtol=1e-10, atol=1e-12)
    assert b == pytest.approx(reference.intercept_, rel=1e-10, abs=1e-12)


def test_l1_is_lasso(fit, data):
    X, y = data
    alpha = 0.1
    w, b = fit(X, y, steps=600, scheme="l1", strength=alpha)
    lasso = Lasso(alpha=alpha, tol=1e-12, max_iter=100000).fit(X, y)
    _check(w, b, lasso)
    assert np.array_equal(w == 0, lasso.coef_ == 0)  # the same exact zeros
    assert 0 < (w == 0).sum() < FEATURES


@pytest.mark.parametrize("l1_ratio", [0.3, 0.8])
def test_elastic_net_is_sklearn_elastic_net(fit, data, l1_ratio):
    X, y = data
    alpha = 0.15
    w, b = fit(X, y, steps=600, scheme="elastic_net", strength=alpha, l1_ratio=l1_ratio,
                extra_curvature=alpha * (1 - l1_ratio))
    enet = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, tol=1e-12, max_iter=100000).fit(X, y)
    _check(w, b, enet)
    assert np.array_equal(w == 0, enet.coef_ == 0)
    assert 0 < (w == 0).sum() < FEATURES


@pytest.mark.parametrize("native", [True, False])  # SGD's own weight_decay, or the callback's pass
def test_l2_is_ridge(fit, data, native):
    X, y = data
    a = 0.2
    w, b = fit(X, y, steps=600, scheme="l2", strength=a, extra_curvature=a, native=native)
    ridge = Ridge(alpha=N * a, tol=1e-12, max_iter=100000, solver="cholesky").fit(X, y)
    _check(w, b, ridge)
    assert np.abs(ridge.coef_).sum() < np.abs(np.linalg.lstsq(np.c_[X, np.ones(N)], y, rcond=None)[0][:-1]).sum()
