"""Helpers of the compatibility suite: a small model, a reference decay, and a recorder of optimizer structure.

The references are what a user would have without ``WeightDecay``:

- ``RefDecay`` decays the user's own optimizer by hand, in torch's arithmetic (``w * (1 - lr * s)`` as AdamW
  before its update, ``grad + s * w`` as SGD), on the tensors the default rules decay (``ndim >= 2`` in these
  models: Linear/Conv/Embedding weights); the user's optimizer must then have ``weight_decay=0``.
  ``test_reference_decay_matches_torch`` checks it against torch on hand-built groups.
- ``Watch`` records every optimizer's param groups (tensor names and every group key) after each batch, i.e.
  outside ``optimizer.step``: a run with the callback must record exactly what the same code records without it.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_wd.core.callback import WeightDecay

LR = 0.05
S = 0.1  # decay strength

TRAINER = dict(  # the suite's Trainer: CPU, quiet, no files unless a test asks for checkpoints
    accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
    enable_model_summary=False, num_sanity_val_steps=0,
)


def loader(n: int = 48, batch_size: int = 8, dtype: torch.dtype | None = None) -> DataLoader:
    """``n`` samples of 4 features and 3 classes, fixed by seed, not shuffled (6 batches by default)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g, dtype=dtype or torch.get_default_dtype())
    y = torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


class _Lit(L.LightningModule):
    """Cross-entropy on ``self(x)``, logged as ``train_loss``; ``make_opt(self)`` is what ``configure_optimizers``
    returns; ``lr`` is there for ``Tuner.lr_find``."""

    def __init__(self, make_opt) -> None:
        super().__init__()
        self.make_opt = make_opt
        self.lr = LR

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return self.make_opt(self)


class Classifier(_Lit):
    """``backbone`` (Linear -> LayerNorm -> Tanh) and ``head`` (Linear); ``lazy=True`` makes the first layer an
    unmaterialised ``LazyLinear``."""

    def __init__(self, make_opt, seed: int = 0, lazy: bool = False) -> None:
        super().__init__(make_opt)
        torch.manual_seed(seed)
        self.backbone = nn.Sequential(nn.LazyLinear(8) if lazy else nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh())
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.backbone(x))


class MLP(_Lit):
    """``net = Sequential(Linear, Tanh, Linear)``: tensors ``net.0.weight``, ``net.0.bias``, ``net.2.*``."""

    def __init__(self, make_opt, seed: int = 0) -> None:
        super().__init__(make_opt)
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)


def trainer(callbacks=(), **kwargs) -> L.Trainer:
    """The suite's Trainer; ``max_steps=24`` (4 epochs of 6 batches) unless ``max_epochs``/``max_steps`` given."""
    options = dict(TRAINER)
    if "max_epochs" not in kwargs:
        options["max_steps"] = 24
    options.update(kwargs)
    return L.Trainer(callbacks=list(callbacks), **options)


def checkpointing(ckpt_dir, callbacks=(), **kwargs) -> L.Trainer:
    """A Trainer that saves ``last.ckpt`` in ``ckpt_dir`` at every epoch end."""
    callbacks = [*callbacks, ModelCheckpoint(dirpath=ckpt_dir, save_last=True)]
    return trainer(callbacks, enable_checkpointing=True, **kwargs)


def fit(model: L.LightningModule, callbacks=(), data=None, ckpt_dir=None, ckpt_path=None, **kwargs) -> L.Trainer:
    """Train ``model`` on ``data`` (default: ``loader()``); with ``ckpt_dir``, save ``last.ckpt`` there."""
    t = checkpointing(ckpt_dir, callbacks, **kwargs) if ckpt_dir is not None else trainer(callbacks, **kwargs)
    t.fit(model, loader() if data is None else data, ckpt_path=ckpt_path)
    after_fit(t, model)
    return t


def after_fit(t: L.Trainer, model: nn.Module) -> None:
    """Give every ``Watch`` of ``t`` its last record: the groups as the user finds them once ``fit`` returned."""
    for callback in t.callbacks:
        if isinstance(callback, Watch):
            callback.records.append(signatures(t, model))


def wd(**kwargs) -> WeightDecay:
    kwargs.setdefault("print_audit", False)
    return WeightDecay(**kwargs)


def decayed(param: torch.Tensor) -> bool:
    """The default rules on the suite's models: weights of Linear/Conv/Embedding (``ndim >= 2``) decay."""
    return param.ndim >= 2


class RefDecay(Callback):
    """The reference decay, by hand on the user's optimizer (built with ``weight_decay=0``).

    ``decoupled``: ``w <- w * (1 - lr * s)`` before the update, as AdamW's own first operation;
    ``l2``: ``grad <- grad + s * w``, as SGD's. Only tensors with a gradient (as torch's optimizers skip the rest).
    """

    def __init__(self, strength: float = S, scheme: str = "decoupled") -> None:
        assert scheme in ("decoupled", "l2")
        self.strength, self.scheme = strength, scheme

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for group in optimizer.param_groups:
            assert not group.get("weight_decay"), "RefDecay needs an optimizer with weight_decay=0"
            for param in group["params"]:
                if param.grad is None or not decayed(param):
                    continue
                if self.scheme == "decoupled":
                    param.mul_(1 - group["lr"] * self.strength)
                else:
                    param.grad.add_(param, alpha=self.strength)


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def signature(optimizer, names: dict[int, str]) -> tuple:
    """Per group: the names of its tensors, in order, and every other key with its value."""
    return tuple(
        (tuple(names.get(id(p), "?") for p in group["params"]),
         tuple(sorted((k, _plain(v)) for k, v in group.items() if k != "params")))
        for group in optimizer.param_groups
    )


def signatures(trainer: L.Trainer, module: nn.Module) -> tuple:
    names = {id(p): n for n, p in module.named_parameters()}
    return tuple(signature(getattr(o, "_optimizer", o), names) for o in trainer.optimizers)


class Watch(Callback):
    """Records the optimizers' param groups (``signatures``) at fit start, after every batch, at train end and (by
    ``fit``/``after_fit``) once fit returned."""

    def __init__(self) -> None:
        self.records: list[tuple] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self.records.append(signatures(trainer, pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.records.append(signatures(trainer, pl_module))

    def on_train_end(self, trainer, pl_module) -> None:
        self.records.append(signatures(trainer, pl_module))


def _without(record: tuple, ignore: tuple[str, ...]) -> tuple:
    return tuple(tuple((names, tuple(kv for kv in items if kv[0] not in ignore)) for names, items in sig)
                 for sig in record)


def assert_same_log(got: Watch, want: Watch, ignore: tuple[str, ...] = ()) -> None:
    """Same optimizer structure and group values (but the keys in ``ignore``) at every record."""
    assert len(got.records) == len(want.records), (len(got.records), len(want.records))
    for step, (a, b) in enumerate(zip(got.records, want.records)):
        a, b = _without(a, ignore), _without(b, ignore)
        assert a == b, f"record {step}: param groups differ:\n got {a}\nwant {b}"


def named_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def assert_same_weights(a: nn.Module, b: nn.Module, exact: bool = True) -> None:
    """Every parameter and buffer, by name: ``torch.equal``, or ``allclose(rtol=1e-12, atol=0)``."""
    got, want = named_state(a), named_state(b)
    assert got.keys() == want.keys()
    for name, p in got.items():
        q = want[name]
        same = torch.equal(p, q) if exact else torch.allclose(p, q, rtol=1e-12, atol=0)
        assert same, f"{name}: max |diff| {(p - q).abs().max().item():.3g}"
