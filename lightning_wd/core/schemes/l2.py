"""Coupled L2, as ``torch.optim.SGD(weight_decay=...)``: ``grad <- grad + strength * w``."""

from __future__ import annotations

import torch

from lightning_wd.core.schemes.base import Scheme, squared_norm


class L2(Scheme):
    """``grad <- grad + strength * w``: the gradient of the penalty ``strength / 2 * ||w||^2``.

    Native in SGD, Adam, NAdam, RAdam (without decoupling), RMSprop, Adagrad, Adamax, ASGD, Adadelta.

    Example:
        >>> w, g = [torch.ones(2)], [torch.zeros(2)]
        >>> L2().before_update(w, g, rate=0.0, strength=0.1, state={}); g[0]
        tensor([0.1000, 0.1000])
    """

    name = "l2"
    native = "coupled"
    fused_variant = ("grad", "none")
    fused_by_default = False  # not measured faster than its one general pass (RESULTS.md section 2)
    uses_lr = False

    def before_update(self, params, grads, rate, strength, state):
        if strength and params:
            torch._foreach_add_(grads, params, alpha=strength)

    def penalty(self, params, strength, state):
        return 0.5 * strength * squared_norm(params)

    def fused_coefficients(self, rate: float, strength: float) -> tuple[float, float | None]:
        return strength, 0.0
