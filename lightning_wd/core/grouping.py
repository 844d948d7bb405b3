"""Which parameters decay: the rules, the parameter groups, and the reason behind each decision.

The decision for one trainable tensor is the first rule that matches, in this order of precedence:

1. ``include`` (user globs): decays, whatever the defaults say;
2. ``exclude`` (user globs): does not decay;
3. the tensor carries ``_no_weight_decay = True`` (as state-space models mark ``A_log``, ``D``);
4. a ``no_weight_decay()`` (globs) or ``no_weight_decay_keywords()`` (substrings) method of the model
   or of the submodule that owns it, as timm models declare;
5. it belongs to a normalisation layer (BatchNorm*, LayerNorm, GroupNorm, InstanceNorm*,
   LocalResponseNorm, RMSNorm, or any class whose name ends in ``Norm``/``Norm1d``/``Norm2d``/...);
6. it belongs to an embedding layer and ``exclude_embeddings=True``;
7. its name ends in ``bias``;
8. ``ndim <= 1``;
9. otherwise it decays.

Decayed tensors matching a ``multipliers`` pattern (first match wins) go to an extra group whose
strength is ``weight_decay * multiplier``. Frozen tensors are left out; a tied tensor appears once,
under the first name ``named_parameters()`` gives it.

Patterns are :func:`fnmatch` globs on the full parameter name (``"head.*"``), or on the class name of
the owning module when prefixed with ``type:`` (``"type:Embedding"``, ``"type:*Norm2d"``).
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

from torch import nn

from lightning_wd.core.audit import DECAY, NO_DECAY, AuditRow, GroupPlan
from lightning_wd.core.flat_shards import clean_name, logical_numel, logical_shape
from lightning_wd.core.rules import GroupingRules
from lightning_wd.core.validation import check_strength

__all__ = ["AuditRow", "GroupPlan", "explain", "fingerprint", "is_norm_module", "param_groups", "plan_groups"]

TYPE_PREFIX = "type:"

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
_NORM_NAME = re.compile(r"Norm(\d*d?|Act\d*d?)$")
_EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)


def is_norm_module(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer (a known torch norm or a class named ``...Norm``).

    Example:
        >>> is_norm_module(nn.LayerNorm(4)), is_norm_module(nn.Linear(2, 2))
        (True, False)
    """
    return isinstance(module, _NORM_TYPES) or bool(_NORM_NAME.search(type(module).__name__))


def _matches(pattern: str, names: Iterable[str], types: Iterable[str]) -> bool:
    if pattern.startswith(TYPE_PREFIX):
        target = pattern[len(TYPE_PREFIX) :]
        return any(fnmatchcase(t, target) for t in types)
    return any(fnmatchcase(n, pattern) for n in names)


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning raised in this package at the first frame outside it."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1  # level 1: the function that calls warnings.warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _named_parameters(model: nn.Module):
    """``(name, param)`` of every parameter, tied ones under each name, named as in the unwrapped model (FSDP1
    wrappers left out of the names)."""
    for name, param in model.named_parameters(remove_duplicate=False):
        yield clean_name(name), param


def _declared_no_decay(model: nn.Module) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(glob, source) pairs from ``no_weight_decay()`` and (keyword, source) from ``..._keywords()``."""
    globs, keywords = [], []
    for prefix, module in model.named_modules():
        dotted = clean_name(f"{prefix}.") if prefix else ""
        owner = f"{prefix}.no_weight_decay" if prefix else "model.no_weight_decay"
        if callable(getattr(module, "no_weight_decay", None)):
            globs += [(dotted + str(n), owner) for n in module.no_weight_decay()]
        if callable(getattr(module, "no_weight_decay_keywords", None)):
            keywords += [(str(k), owner + "_keywords") for k in module.no_weight_decay_keywords()]
    return globs, keywords


def plan_groups(
    model: nn.Module,
    weight_decay: float,
    rules: GroupingRules | Mapping | None = None,
    **rule_kwargs,
) -> GroupPlan:
    """Decide which parameters of ``model`` decay; return the groups and the audit together.

    Args:
        model: any ``nn.Module``.
        weight_decay: strength for the decayed group (finite, >= 0).
        rules: a :class:`~lightning_wd.core.rules.GroupingRules`, or give the rules as keywords:
            ``exclude`` (globs of parameters, or ``type:`` globs of module classes, that must not decay),
            ``include`` (globs that decay even where a default rule would exclude them), ``multipliers``
            (``{glob: factor}``; matching decayed tensors go to a group with ``weight_decay * factor``),
            ``exclude_bias``, ``exclude_1d``, ``exclude_norm``, ``exclude_embeddings``,
            ``use_model_no_weight_decay`` (the default rules' switches; see the module docstring for the
            order of precedence).

    Raises:
        ValueError: ``weight_decay`` or a multiplier is negative, NaN or infinite.
        TypeError: ``model`` is not an ``nn.Module``, a pattern is not a non-empty string, or a rule is unknown.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
        >>> plan = plan_groups(model, 0.1, multipliers={"2.*": 0.5})
        >>> [(g["name"], g["param_names"], g["weight_decay"]) for g in plan.groups]
        [('decay', ['0.weight'], 0.1), ('decay[2.*]', ['2.weight'], 0.05), \
('no_decay', ['0.bias', '1.weight', '1.bias', '2.bias'], 0.0)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    weight_decay = check_strength(weight_decay)
    rules = GroupingRules.of(rules, **rule_kwargs)
    exclude_patterns, include_patterns, multipliers = rules.exclude, rules.include, dict(rules.multipliers)
    exclude_norm, exclude_embeddings = rules.exclude_norm, rules.exclude_embeddings
    exclude_bias, exclude_1d = rules.exclude_bias, rules.exclude_1d

    owners: dict[str, nn.Module] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for local, _ in module.named_parameters(recurse=False):
            owners[clean_name(f"{prefix}.{local}") if prefix else local] = module
    aliases: dict[int, list[str]] = {}
    for name, param in _named_parameters(model):
        aliases.setdefault(id(param), []).append(name)

    globs, keywords = _declared_no_decay(model) if rules.use_model_no_weight_decay else ([], [])
    used: set[str] = set()
    shadowed: set[str] = set()  # multiplier patterns that matched, but after an earlier one
    undecayed: set[str] = set()  # multiplier patterns that matched tensors that do not decay
    rows: list[AuditRow] = []
    members: dict[str, list[tuple[str, nn.Parameter]]] = {}
    seen: set[int] = set()

    def decide(name: str, param: nn.Parameter) -> tuple[bool, str]:
        names = aliases[id(param)]
        types = [type(owners[n]).__name__ for n in names]
        # Every matching user pattern counts as used, also one overridden by an include that wins.
        included = [p for p in include_patterns if _matches(p, names, types)]
        excluded = [p for p in exclude_patterns if _matches(p, names, types)]
        used.update(included, excluded)
        if included:
            return True, f"user include {included[0]!r}"
        if excluded:
            return False, f"user exclude {excluded[0]!r}"
        if getattr(param, "_no_weight_decay", False):
            return False, "marked _no_weight_decay"
        for pattern, source in globs:
            if any(fnmatchcase(n, pattern) for n in names):
                return False, f"{source}: {pattern}"
        for keyword, source in keywords:
            if any(keyword in n for n in names):
                return False, f"{source}: {keyword}"
        owner = owners[name]
        if exclude_norm and is_norm_module(owner):
            return False, f"norm layer {type(owner).__name__}"
        if exclude_embeddings and isinstance(owner, _EMBEDDING_TYPES):
            return False, f"embedding {type(owner).__name__}"
        if exclude_bias and name.endswith("bias"):
            return False, "bias"
        if exclude_1d and len(logical_shape(param)) <= 1:
            return False, "ndim<=1"
        return True, "weight"

    for name, param in _named_parameters(model):
        shape, numel = tuple(logical_shape(param)), logical_numel(param)
        if id(param) in seen:
            rows.append(AuditRow(name, shape, numel, None, 0.0, f"tied to {aliases[id(param)][0]}"))
            continue
        seen.add(id(param))
        if not param.requires_grad:
            rows.append(AuditRow(name, shape, numel, None, 0.0, "frozen (requires_grad=False)"))
            continue
        decays, reason = decide(name, param)
        group, strength = (DECAY, weight_decay) if decays else (NO_DECAY, 0.0)
        names = aliases[id(param)]
        types = [type(owners[n]).__name__ for n in names]
        hits = [pattern for pattern in multipliers if _matches(pattern, names, types)]
        if hits and decays:  # the first matching pattern scales; later ones are shadowed here
            pattern, factor = hits[0], multipliers[hits[0]]
            used.add(pattern)
            shadowed.update(hits[1:])
            group, strength = f"{DECAY}[{pattern}]", weight_decay * factor
            reason += f", x{factor:g} by {pattern!r}"
        else:  # a multiplier scales decay: it has nothing to scale on a tensor that does not decay
            undecayed.update(hits)
        members.setdefault(group, []).append((name, param))
        rows.append(AuditRow(name, shape, numel, group, strength, reason))

    for pattern in dict.fromkeys((*include_patterns, *exclude_patterns, *multipliers)):
        if pattern in used:
            continue
        if pattern in shadowed:
            message = (f"weight-decay multiplier pattern {pattern!r} matched only parameters that an earlier "
                       "multiplier pattern already scales")
        elif pattern in undecayed:
            message = f"weight-decay multiplier pattern {pattern!r} matched only parameters that do not decay"
        else:
            message = f"weight-decay pattern {pattern!r} matched no trainable parameter"
        warnings.warn(message, UserWarning, stacklevel=_user_stacklevel())

    by_user = sorted({r.reason.removeprefix("user exclude ") for r in rows if r.reason.startswith("user exclude")})
    if weight_decay > 0 and by_user and not any(r.decayed for r in rows):
        warnings.warn(f"weight-decay rule exclude=[{', '.join(by_user)}] leaves no tensor to decay although the "
                      f"strength is {weight_decay:g}", UserWarning, stacklevel=_user_stacklevel())

    order = [DECAY, *(f"{DECAY}[{p}]" for p in multipliers), NO_DECAY]
    strengths = {row.group: row.strength for row in rows if row.group is not None}
    groups = [
        {
            "name": group,
            "params": [p for _, p in members[group]],
            "param_names": [n for n, _ in members[group]],
            "weight_decay": strengths[group],
        }
        for group in order
        if members.get(group)
    ]
    group_of = {row.name: row.group for row in rows if row.group is not None}
    return GroupPlan(groups=groups, rows=rows, weight_decay=weight_decay, group_of=group_of)


def param_groups(model: nn.Module, weight_decay: float, rules: GroupingRules | None = None, **kwargs) -> list[dict]:
    """Torch param-group dicts for ``model``: each has ``name``, ``params``, ``param_names``, ``weight_decay``.

    Takes the same arguments as :func:`plan_groups` (which also returns the audit).

    Example:
        >>> groups = param_groups(nn.Linear(3, 2), 0.01)
        >>> [(g["name"], g["param_names"]) for g in groups]
        [('decay', ['weight']), ('no_decay', ['bias'])]
        >>> import torch
        >>> opt = torch.optim.AdamW(groups, lr=1e-3)
    """
    return plan_groups(model, weight_decay, rules, **kwargs).groups


def explain(model: nn.Module, weight_decay: float = 1.0, rules: GroupingRules | None = None, **kwargs) -> GroupPlan:
    """The grouping of ``model`` with one :class:`AuditRow` per parameter; ``print()`` it for a table.

    Example:
        >>> plan = explain(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), 0.1)
        >>> [(r.name, r.group, r.reason) for r in plan.rows]
        [('0.weight', 'decay', 'weight'), ('0.bias', 'no_decay', 'bias'), \
('1.weight', 'no_decay', 'norm layer BatchNorm1d'), ('1.bias', 'no_decay', 'norm layer BatchNorm1d')]
    """
    return plan_groups(model, weight_decay, rules, **kwargs)


def fingerprint(groups: Iterable[Mapping]) -> str:
    """A short stable hash of which named tensors sit in which group, in order (for resume checks)."""
    import hashlib

    text = "|".join(f"{g.get('name', i)}:{','.join(g.get('param_names', []))}" for i, g in enumerate(groups))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
