"""Elastic net with scikit-learn's meaning of ``strength`` (alpha) and ``l1_ratio``."""

from __future__ import annotations

import torch

from lightning_wd.core.schemes.base import Scheme, l1_norm, soft_threshold_, squared_norm


class ElasticNet(Scheme):
    """Penalty ``strength * l1_ratio * ||w||_1 + strength * (1 - l1_ratio) / 2 * ||w||^2``.

    The L2 part is coupled (``grad += strength * (1 - l1_ratio) * w``, native in SGD-like optimizers);
    the L1 part is a proximal soft-threshold by ``rate * l1_ratio`` after the update.

    Args:
        l1_ratio: mixing parameter in [0, 1] (1 is the lasso, 0 is ridge).

    Raises:
        ValueError: ``l1_ratio`` outside [0, 1].

    Example:
        >>> w, g = [torch.tensor([1.0, 0.01])], [torch.zeros(2)]
        >>> s = ElasticNet(l1_ratio=0.5)
        >>> s.before_update(w, g, rate=0.1, strength=1.0, state={}); g[0]
        tensor([0.5000, 0.0050])
        >>> s.after_update(w, rate=0.1, strength=1.0, state={}); w[0]
        tensor([0.9500, 0.0000])
    """

    name = "elastic_net"
    native = "coupled"
    fused_variant = ("grad", "shrink")
    makes_exact_zeros = True

    def __init__(self, l1_ratio: float = 0.5) -> None:
        if isinstance(l1_ratio, bool) or not isinstance(l1_ratio, (int, float)) or not 0.0 <= l1_ratio <= 1.0:
            raise ValueError(f"`l1_ratio` must be a number in [0, 1], got {l1_ratio!r}")
        self.l1_ratio = float(l1_ratio)

    def hparams(self):
        return {"l1_ratio": self.l1_ratio}

    def native_strength(self, strength):
        return strength * (1.0 - self.l1_ratio)

    def before_update(self, params, grads, rate, strength, state):
        l2 = self.native_strength(strength)
        if l2 and params:
            torch._foreach_add_(grads, params, alpha=l2)

    def after_update(self, params, rate, strength, state):
        soft_threshold_(params, rate * self.l1_ratio)

    def penalty(self, params, strength, state):
        return strength * (self.l1_ratio * l1_norm(params) + 0.5 * (1 - self.l1_ratio) * squared_norm(params))

    def fused_coefficients(self, rate: float, strength: float) -> tuple[float, float | None]:
        return self.native_strength(strength), rate * self.l1_ratio
