"""Build an optimizer whose parameter groups carry the decay (the optimizer decays natively)."""

from __future__ import annotations

import importlib
import inspect

import torch
from torch import nn

from lightning_wd.core.grouping import plan_groups
from lightning_wd.core.rules import RULE_NAMES, GroupingRules
from lightning_wd.core.validation import check_strength

__all__ = ["OPTIMIZERS", "GroupedOptimizer", "build_optimizer", "resolve_optimizer"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "adamax": torch.optim.Adamax,
}


def resolve_optimizer(optimizer: str | type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """An optimizer class from a short name, a ``torch.optim`` class name, an import path or a class.

    Raises:
        ValueError: the name is unknown (the message lists the short names).

    Example:
        >>> resolve_optimizer("adamw"), resolve_optimizer("torch.optim.SGD")
        (<class 'torch.optim.adamw.AdamW'>, <class 'torch.optim.sgd.SGD'>)
    """
    if inspect.isclass(optimizer) and issubclass(optimizer, torch.optim.Optimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"`optimizer` must be a name or an Optimizer class, got {optimizer!r}")
    if optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]
    candidate = getattr(torch.optim, optimizer, None)
    if candidate is None and "." in optimizer:
        module, _, attr = optimizer.rpartition(".")
        try:
            candidate = getattr(importlib.import_module(module), attr, None)
        except (ImportError, ValueError):  # ValueError: an empty module name, as in ".Adam"
            candidate = None
    if inspect.isclass(candidate) and issubclass(candidate, torch.optim.Optimizer):
        return candidate
    raise ValueError(
        f"`optimizer` must be one of {sorted(OPTIMIZERS)}, a torch.optim class name or an import path "
        f"to an Optimizer subclass, got {optimizer!r}"
    )


def _fast_implementation(cls: type[torch.optim.Optimizer], groups: list[dict], kwargs: dict) -> dict:
    """Ask for the fused (else foreach) implementation when torch offers it for these tensors."""
    if "fused" in kwargs or "foreach" in kwargs:
        return kwargs
    if kwargs.get("differentiable"):  # neither fused nor foreach kernels support autograd through step()
        return kwargs
    accepted = inspect.signature(cls.__init__).parameters
    params = [p for g in groups for p in g["params"]]
    if not params:
        return kwargs
    devices = {p.device.type for p in params}
    floating = all(p.is_floating_point() for p in params)
    if "fused" in accepted and floating and cls in (torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD,
                                                     torch.optim.Adagrad):
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        if devices <= set(_get_fused_kernels_supported_devices()):
            return {**kwargs, "fused": True}
    if "foreach" in accepted:
        return {**kwargs, "foreach": True}
    return kwargs


def build_optimizer(
    model: nn.Module,
    optimizer: str | type[torch.optim.Optimizer] = "adamw",
    *,
    lr: float,
    weight_decay: float = 0.0,
    rules: GroupingRules | None = None,
    **kwargs,
) -> torch.optim.Optimizer:
    """An optimizer over ``model`` whose groups decay exactly the tensors the rules select.

    Order of precedence of the rules (first match decides, see :mod:`lightning_wd.core.grouping`):
    user ``include`` > user ``exclude`` > ``_no_weight_decay`` attribute > the model's
    ``no_weight_decay()`` > norm layers > embeddings (if ``exclude_embeddings``) > biases > 1-D tensors >
    decay; then ``multipliers`` scale the strength of matching decayed tensors.

    The decay is the optimizer's own (``weight_decay`` per group): decoupled for AdamW, coupled L2 for
    SGD/Adam/RMSprop/... -- no extra pass over the weights. Fused (else foreach) kernels are requested
    where torch has them for these tensors, unless ``fused``/``foreach`` is given.

    Args:
        model: the module whose trainable parameters are optimised.
        optimizer: a short name (adamw, adam, sgd, rmsprop, adagrad, nadam, radam, adamax), a
            ``torch.optim`` class name, an import path, or an Optimizer class.
        lr: learning rate.
        weight_decay: strength for decayed tensors.
        rules: a :class:`~lightning_wd.core.rules.GroupingRules`; or give the rules among ``kwargs``
            (``exclude``, ``include``, ``multipliers``, ``exclude_bias``, ``exclude_1d``, ``exclude_norm``,
            ``exclude_embeddings``, ``use_model_no_weight_decay``).
        **kwargs: grouping rules, and the rest passed to the optimizer (``momentum``, ``betas``, ...).

    Raises:
        ValueError: unknown ``optimizer``, or an invalid ``weight_decay``.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        >>> opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4, momentum=0.9)
        >>> [(g["name"], len(g["params"]), g["weight_decay"], g["momentum"]) for g in opt.param_groups]
        [('decay', 1, 0.0001, 0.9), ('no_decay', 3, 0.0, 0.9)]
    """
    cls = resolve_optimizer(optimizer)
    rule_kwargs = {k: kwargs.pop(k) for k in RULE_NAMES if k in kwargs}
    plan = plan_groups(model, weight_decay, GroupingRules.of(rules, **rule_kwargs))
    groups = plan.groups
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    if "weight_decay" not in accepted and not takes_any:
        if any(g["weight_decay"] for g in groups):
            raise ValueError(f"`optimizer` {cls.__name__} has no weight_decay; use the WeightDecay callback")
        groups = [{k: v for k, v in g.items() if k != "weight_decay"} for g in groups]
    return cls(groups, lr=lr, **_fast_implementation(cls, groups, kwargs))


class GroupedOptimizer:
    """An optimizer callable for LightningCLI: configured from YAML, called with the model.

    Declare it as a ``LightningModule.__init__`` argument typed ``GroupedOptimizer``, e.g.
    ``optimizer: GroupedOptimizer = lazy_instance(GroupedOptimizer, weight_decay=0.05)``, and call
    ``self.hparams.optimizer(self)`` in ``configure_optimizers``. Do not type it
    ``Callable[[nn.Module], Optimizer]``: jsonargparse (4.53) then accepts as ``class_path`` only
    subclasses of ``Optimizer``. Prefer ``jsonargparse.lazy_instance`` to a plain instance as the default:
    with a plain one, overriding a single field (``--model.optimizer.lr 0.1``) resets the others to the
    class defaults. In YAML::

        model:
          optimizer:
            class_path: lightning_wd.GroupedOptimizer
            init_args: {optimizer: adamw, lr: 0.001, weight_decay: 0.01, exclude: ["head.*"]}

    Example:
        >>> factory = GroupedOptimizer("adamw", lr=1e-3, weight_decay=0.05)
        >>> opt = factory(nn.Linear(3, 3))
        >>> [g["weight_decay"] for g in opt.param_groups]
        [0.05, 0.0]
    """

    def __init__(
        self,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        exclude: list[str] | None = None,
        include: list[str] | None = None,
        multipliers: dict[str, float] | None = None,
        exclude_bias: bool = True,
        exclude_1d: bool = True,
        exclude_norm: bool = True,
        exclude_embeddings: bool = False,
        use_model_no_weight_decay: bool = True,
        options: dict | None = None,
    ) -> None:
        resolve_optimizer(optimizer)
        check_strength(weight_decay)
        check_strength(lr, "lr")
        self.optimizer, self.lr, self.weight_decay = optimizer, lr, weight_decay
        self.rules = GroupingRules(
            exclude=exclude, include=include, multipliers=multipliers, exclude_bias=exclude_bias,
            exclude_1d=exclude_1d, exclude_norm=exclude_norm, exclude_embeddings=exclude_embeddings,
            use_model_no_weight_decay=use_model_no_weight_decay,
        )
        self.options = dict(options or {})
        clash = sorted(set(self.options) & {"lr", "weight_decay", *RULE_NAMES})
        if clash:
            raise ValueError(f"`options` must not repeat {clash}: give them as GroupedOptimizer arguments")

    def __call__(self, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(model, self.optimizer, lr=self.lr, weight_decay=self.weight_decay, rules=self.rules,
                               **self.options)

    def __repr__(self) -> str:
        return f"GroupedOptimizer({self.optimizer!r}, lr={self.lr}, weight_decay={self.weight_decay})"
