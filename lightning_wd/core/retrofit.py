"""Retrofit a user's optimizer: split its groups so it can decay natively, keeping LR schedulers right.

A torch optimizer can only decay a whole param group. To decay some tensors of a group and not
others natively, the group is split into homogeneous sub-groups (deterministically: in plan order,
tensors keeping their order). Every scheduler that keeps one value per group must then be expanded
the same way; this module knows the per-group lists of ``torch.optim.lr_scheduler``'s classes and
refuses (``regroup_is_safe`` is False) for any scheduler it cannot prove it rewrites correctly, in
which case the callback keeps the user's groups and applies the decay itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import lr_scheduler

__all__ = ["decay_kind", "expand_schedulers", "regroup_is_safe", "split_groups"]

_COUPLED = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.NAdam, torch.optim.RAdam, torch.optim.RMSprop,
    torch.optim.Adagrad, torch.optim.Adamax, torch.optim.ASGD, torch.optim.Adadelta,
)
PER_GROUP = ("base_lrs", "_last_lr", "lr_lambdas", "min_lrs", "max_lrs", "base_momentums", "max_momentums")
_NOT_PER_GROUP = ("_schedulers", "_milestones", "_schedule_phases")
_ALIGNED_KEYS = ("param_names",)  # group entries with one value per tensor


def decay_kind(optimizer: torch.optim.Optimizer, group: dict) -> str | None:
    """``"decoupled"`` (AdamW-style), ``"coupled"`` (L2 on the gradient) or None for ``group``'s decay.

    Only torch's own optimizers are classified; anything else returns None (never assumed).

    Example:
        >>> p = [torch.nn.Parameter(torch.zeros(1))]
        >>> o = torch.optim.AdamW(p)
        >>> decay_kind(o, o.param_groups[0]), decay_kind(torch.optim.SGD(p, lr=0.1), {"weight_decay": 0})
        ('decoupled', 'coupled')
    """
    if "weight_decay" not in group or type(optimizer).__module__.split(".")[:2] != ["torch", "optim"]:
        return None
    if isinstance(optimizer, torch.optim.AdamW) or group.get("decoupled_weight_decay", False):
        return "decoupled"
    return "coupled" if isinstance(optimizer, _COUPLED) else None


def _optimizer_of(scheduler) -> torch.optim.Optimizer | None:
    optimizer = getattr(scheduler, "optimizer", None)
    return getattr(optimizer, "_optimizer", optimizer)  # a LightningOptimizer wraps the torch one


def _schedulers_of(schedulers: Iterable, optimizer: torch.optim.Optimizer | None) -> list:
    """The schedulers (nested ones of SequentialLR/ChainedScheduler included) that drive ``optimizer``."""
    found = []
    for scheduler in schedulers:
        children = getattr(scheduler, "_schedulers", None)
        if children:
            found += _schedulers_of(children, optimizer)
        if _optimizer_of(scheduler) is optimizer:
            found.append(scheduler)
    return found


def regroup_is_safe(schedulers: Iterable, optimizer: torch.optim.Optimizer) -> tuple[bool, str]:
    """Whether every scheduler of ``optimizer`` is one whose per-group state this module can expand."""
    count = len(optimizer.param_groups)
    schedulers = list(schedulers)
    for scheduler in _schedulers_of(schedulers, None):  # no optimizer attribute: it may be ours
        return False, f"scheduler {type(scheduler).__name__} does not tell which optimizer it drives"
    for scheduler in _schedulers_of(schedulers, optimizer):
        cls = type(scheduler)
        if cls.__module__ != lr_scheduler.__name__:
            return False, f"scheduler {cls.__name__} is not one of torch.optim.lr_scheduler's"
        for key, value in vars(scheduler).items():
            if isinstance(value, (list, tuple)) and len(value) == count and key not in PER_GROUP + _NOT_PER_GROUP:
                return False, f"scheduler {cls.__name__} keeps an unknown per-group list {key!r}"
    return True, ""


def split_groups(optimizer: torch.optim.Optimizer, key: Callable[[torch.Tensor], str], order: list[str]) -> list[int]:
    """Split each group of ``optimizer`` in place by ``key(param)``; return, per new group, its old index.

    Sub-groups come in the order of ``order`` (keys not in it last, sorted), tensors keep their order,
    every other entry of the group dict (lr, betas, initial_lr, ...) is copied. A group whose tensors
    all share one key is kept as it is. The list object ``optimizer.param_groups`` is mutated, not
    replaced, so wrappers holding it (Lightning's) see the change.

    Example:
        >>> w, b = torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2))
        >>> opt = torch.optim.SGD([w, b], lr=0.1)
        >>> split_groups(opt, lambda p: "decay" if p.ndim > 1 else "no_decay", ["decay", "no_decay"])
        [0, 0]
        >>> [len(g["params"]) for g in opt.param_groups]
        [1, 1]
    """
    rank = {name: i for i, name in enumerate(order)}
    new_groups, origin = [], []
    for index, group in enumerate(optimizer.param_groups):
        keys = [key(p) for p in group["params"]]
        distinct = sorted(set(keys), key=lambda k: (rank.get(k, len(rank)), k))
        if len(distinct) <= 1:
            new_groups.append(group)
            origin.append(index)
            continue
        for sub in distinct:
            picked = [i for i, k in enumerate(keys) if k == sub]
            part = {k: v for k, v in group.items() if k != "params" and k not in _ALIGNED_KEYS}
            part["params"] = [group["params"][i] for i in picked]
            for aligned in _ALIGNED_KEYS:
                if aligned in group:
                    part[aligned] = [group[aligned][i] for i in picked]
            if "name" in group:
                part["name"] = f"{group['name']}/{sub}"
            new_groups.append(part)
            origin.append(index)
    optimizer.param_groups[:] = new_groups
    return origin


def expand_schedulers(schedulers: Iterable, optimizer: torch.optim.Optimizer, origin: list[int]) -> None:
    """Rewrite the per-group lists of ``optimizer``'s schedulers after :func:`split_groups`."""
    if origin == list(range(len(origin))):
        return
    old_count = max(origin) + 1
    unique = {id(s): s for s in _schedulers_of(schedulers, optimizer)}  # one listed twice is expanded once
    for scheduler in unique.values():
        for key in PER_GROUP:
            value = getattr(scheduler, key, None)
            if isinstance(value, (list, tuple)) and len(value) == old_count:
                setattr(scheduler, key, type(value)(value[i] for i in origin))
