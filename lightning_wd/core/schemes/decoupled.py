"""Decoupled decay, as ``torch.optim.AdamW``: ``w <- w * (1 - lr * strength)`` before the update."""

from __future__ import annotations

import torch

from lightning_wd.core.schemes.base import Scheme


class Decoupled(Scheme):
    """``w <- w * (1 - rate)`` with ``rate = lr * strength`` (see ``lr_coupling``), before the update.

    Native in AdamW (and Adam/NAdam/RAdam with ``decoupled_weight_decay=True``).

    Example:
        >>> w = [torch.ones(2)]
        >>> Decoupled().before_update(w, [torch.zeros(2)], rate=0.2, strength=2.0, state={}); w[0]
        tensor([0.8000, 0.8000])
    """

    name = "decoupled"
    native = "decoupled"
    fused_variant = ("mul", "none")
    fused_by_default = False  # not measured faster than its one general pass (RESULTS.md section 2)
    search_range = (1e-6, 1.0)

    def before_update(self, params, grads, rate, strength, state):
        if rate and params:
            torch._foreach_mul_(params, 1.0 - rate)

    def fused_coefficients(self, rate: float, strength: float) -> tuple[float, float | None]:
        return 1.0 - rate, 0.0
