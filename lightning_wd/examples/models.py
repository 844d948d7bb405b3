"""Example classifiers written as users typically write them: a plain optimizer over ``self.parameters()``.

None of them knows about weight decay beyond the optimizer's own ``weight_decay`` argument (0 by
default): the :class:`~lightning_wd.WeightDecay` callback retrofits the decay onto their optimizer. Every
model logs ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss`` and ``test/acc``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_wd.core.optim import resolve_optimizer

__all__ = ["CNN1D", "MLP", "LR_SCHEDULERS", "ClassifierModule", "TinyTransformer"]

LR_SCHEDULERS = ("cosine", "step", "onecycle")
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


def _positive(value: int | float, argument: str) -> None:
    if not value > 0:
        raise ValueError(f"`{argument}` must be positive, got {value!r}")


def _activation(name: str) -> type[nn.Module]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]


class ClassifierModule(LightningModule):
    """Base of the example classifiers: cross-entropy, accuracy metrics and the optimizer settings.

    Subclasses build ``self.net`` (or override :meth:`forward`) mapping a batch of inputs to logits.

    Args:
        num_classes: number of classes.
        optimizer: optimizer short name (``adam``, ``adamw``, ``sgd``, ...), ``torch.optim`` class name or
            import path, resolved by :func:`lightning_wd.core.optim.resolve_optimizer`.
        lr: learning rate.
        weight_decay: the optimizer's own ``weight_decay`` (leave 0 when the WeightDecay callback decays).
        lr_scheduler: ``None``, ``"cosine"`` (per step, to zero), ``"step"`` (x0.1 at each third of the
            epochs) or ``"onecycle"`` (per step).
        optimizer_kwargs: further optimizer arguments, e.g. ``{"momentum": 0.9}`` for SGD.
    """

    def __init__(
        self,
        num_classes: int = 10,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_scheduler: str | None = None,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        _positive(num_classes, "num_classes")
        _positive(lr, "lr")
        if not weight_decay >= 0:
            raise ValueError(f"`weight_decay` must be non-negative, got {weight_decay!r}")
        if lr_scheduler is not None and lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"`lr_scheduler` must be one of {list(LR_SCHEDULERS)} or None, got {lr_scheduler!r}")
        self.optimizer_class = resolve_optimizer(optimizer)  # an unknown name fails here, not at fit time
        self.num_classes = num_classes
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_scheduler = lr_scheduler
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, num_classes)."""
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, metric: MulticlassAccuracy):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metric(logits, y)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Cross-entropy on one batch; logs ``train/loss`` per step and ``train/acc`` per epoch."""
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch, batch_idx: int) -> None:
        """Logs ``val/loss`` and ``val/acc`` per epoch."""
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> None:
        """Logs ``test/loss`` and ``test/acc``."""
        self._step(batch, "test", self.test_acc)

    def configure_optimizers(self):
        """A plain torch optimizer over ``self.parameters()``, with the chosen learning-rate scheduler."""
        accepted = inspect.signature(self.optimizer_class.__init__).parameters
        kwargs = {"lr": self.lr, **self.optimizer_kwargs}
        if "weight_decay" in accepted:
            kwargs.setdefault("weight_decay", self.weight_decay)  # explicit 0 also overrides AdamW's 0.01
        optimizer = self.optimizer_class(self.parameters(), **kwargs)
        if self.lr_scheduler is None:
            return optimizer
        if self.lr_scheduler == "step":
            epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 30
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(f"`lr_scheduler={self.lr_scheduler!r}` needs `max_epochs` or `max_steps` to be set")
        total = max(1, int(total))
        if self.lr_scheduler == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        else:
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.lr, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class MLP(ClassifierModule):
    """A multilayer perceptron; with the defaults, the MNIST-1D model that overfits without decay.

    Args:
        in_features: input size (40 for MNIST-1D, 64 for digits).
        hidden: widths of the hidden layers.
        num_classes: number of classes.
        activation: ``relu``, ``gelu``, ``tanh`` or ``silu``.
        batchnorm: insert ``BatchNorm1d`` after each hidden linear layer.
        dropout: dropout probability after each hidden activation.
        optimizer: see :class:`ClassifierModule`.
        lr: learning rate.
        weight_decay: the optimizer's own decay (0: the callback decays).
        lr_scheduler: ``None``, ``"cosine"``, ``"step"`` or ``"onecycle"``.
        optimizer_kwargs: further optimizer arguments.

    Example:
        >>> model = MLP(hidden=(8,))
        >>> tuple(model(torch.zeros(3, 40)).shape)
        (3, 10)
    """

    def __init__(
        self,
        in_features: int = 40,
        hidden: tuple[int, ...] = (100, 100),
        num_classes: int = 10,
        activation: str = "relu",
        batchnorm: bool = False,
        dropout: float = 0.0,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_scheduler: str | None = None,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr, weight_decay, lr_scheduler, optimizer_kwargs)
        _positive(in_features, "in_features")
        for width in hidden:
            _positive(width, "hidden")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        act = _activation(activation)
        self.save_hyperparameters()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(act())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)


class CNN1D(ClassifierModule):
    """A 1-D convolutional classifier with ``BatchNorm1d`` (normalisation parameters the decay excludes).

    Each block is ``Conv1d(stride=2) -> BatchNorm1d -> ReLU``; the flattened features feed a linear head.

    Args:
        length: input length (40 for MNIST-1D).
        channels: output channels of the convolution blocks.
        kernel_size: odd kernel size of every convolution.
        num_classes: number of classes.
        batchnorm: use ``BatchNorm1d`` (convolutions then have no bias).
        optimizer: see :class:`ClassifierModule`.
        lr: learning rate.
        weight_decay: the optimizer's own decay (0: the callback decays).
        lr_scheduler: ``None``, ``"cosine"``, ``"step"`` or ``"onecycle"``.
        optimizer_kwargs: further optimizer arguments.

    Example:
        >>> model = CNN1D(channels=(4, 4))
        >>> tuple(model(torch.zeros(2, 40)).shape)
        (2, 10)
    """

    def __init__(
        self,
        length: int = 40,
        channels: tuple[int, ...] = (32, 32, 32),
        kernel_size: int = 5,
        num_classes: int = 10,
        batchnorm: bool = True,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_scheduler: str | None = None,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr, weight_decay, lr_scheduler, optimizer_kwargs)
        _positive(length, "length")
        if not channels:
            raise ValueError("`channels` must name at least one convolution block")
        for width in channels:
            _positive(width, "channels")
        if kernel_size <= 0 or kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be a positive odd number, got {kernel_size!r}")
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        width, size = 1, length
        for out in channels:
            layers.append(nn.Conv1d(width, out, kernel_size, stride=2, padding=kernel_size // 2,
                                    bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(out))
            layers.append(nn.ReLU())
            width, size = out, (size - 1) // 2 + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width * size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for inputs of shape (batch, length) or (batch, 1, length)."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.head(self.features(x).flatten(1))


class TinyTransformer(ClassifierModule):
    """A small Transformer encoder over token sequences (MNIST-1D with ``as_sequence=True``).

    Token and positional embeddings, pre-norm encoder layers, a final ``LayerNorm``, mean pooling and a
    linear head: embeddings, norms and biases are the parameters decay rules have opinions about.

    Args:
        vocab_size: number of input tokens.
        seq_len: maximum sequence length (positional embeddings).
        d_model: embedding width.
        nhead: attention heads (must divide ``d_model``).
        num_layers: encoder layers.
        dim_feedforward: hidden width of the feed-forward blocks.
        dropout: dropout in the encoder layers.
        num_classes: number of classes.
        optimizer: see :class:`ClassifierModule`.
        lr: learning rate.
        weight_decay: the optimizer's own decay (0: the callback decays).
        lr_scheduler: ``None``, ``"cosine"``, ``"step"`` or ``"onecycle"``.
        optimizer_kwargs: further optimizer arguments.

    Example:
        >>> model = TinyTransformer(d_model=8, nhead=2, dim_feedforward=16)
        >>> tuple(model(torch.zeros(2, 40, dtype=torch.long)).shape)
        (2, 10)
    """

    def __init__(
        self,
        vocab_size: int = 32,
        seq_len: int = 40,
        d_model: int = 32,
        nhead: int = 4,
        num_layers: int = 1,
        dim_feedforward: int = 64,
        dropout: float = 0.0,
        num_classes: int = 10,
        optimizer: str = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_scheduler: str | None = None,
        optimizer_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr, weight_decay, lr_scheduler, optimizer_kwargs)
        for value, argument in ((vocab_size, "vocab_size"), (seq_len, "seq_len"), (d_model, "d_model"),
                                (nhead, "nhead"), (num_layers, "num_layers"),
                                (dim_feedforward, "dim_feedforward")):
            _positive(value, argument)
        if d_model % nhead:
            raise ValueError(f"`nhead` must divide `d_model`, got nhead={nhead} and d_model={d_model}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}")
        self.save_hyperparameters()
        self.token = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(seq_len, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits for int64 tokens of shape (batch, length)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.encoder(self.token(tokens.long()) + self.position(positions))
        return self.head(self.norm(h).mean(dim=1))
