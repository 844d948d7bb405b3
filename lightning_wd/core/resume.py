"""What a checkpoint must agree on to resume: which tensor decays, under which rule, scheme and strength.

The check compares *decisions* (tensor name -> strength multiplier and the reason), computed over every
parameter of the model as if all were trainable, so that freezing, finetuning callbacks that add param
groups, and the order of the callbacks do not change them. A difference is one line naming the tensors
and what changed.

Example:
    >>> saved = {"scheme": "l1", "decisions": {"fc.weight": [1.0, "weight"], "fc.bias": [0.0, "bias"]}}
    >>> now = {"scheme": "l1", "decisions": {"fc.weight": [0.0, "user exclude 'fc.*'"], "fc.bias": [0.0, "bias"]}}
    >>> print(difference(saved, now))
    fc.weight: decayed x1 (weight) in the checkpoint, not decayed now (user exclude 'fc.*')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ResumeMismatchError", "difference"]


class ResumeMismatchError(ValueError):
    """The checkpoint was trained with other decay rules than the ones given now."""


def _describe(multiplier: float, reason: str, when: str) -> str:
    return f"decayed x{multiplier:g}{when} ({reason})" if multiplier else f"not decayed{when} ({reason})"


def difference(saved: Mapping[str, Any], now: Mapping[str, Any], limit: int = 3) -> str | None:
    """One line describing how ``now`` differs from ``saved`` (None when they agree on what matters)."""
    changes = []
    for key in ("scheme", "scheme_hparams", "strength", "lr_coupling", "timescale_epochs"):
        if key in saved and key in now and saved[key] != now[key]:
            changes.append(f"{key} {saved[key]!r} in the checkpoint, {now[key]!r} now")
    before, after = dict(saved.get("decisions") or {}), dict(now.get("decisions") or {})
    differing = [name for name in before if name in after and float(before[name][0]) != float(after[name][0])]
    for name in differing[:limit]:
        changes.append(f"{name}: {_describe(*before[name], '')} in the checkpoint, {_describe(*after[name], ' now')}")
    if len(differing) > limit:
        changes.append(f"and {len(differing) - limit} more tensors")
    return "; ".join(changes) or None
