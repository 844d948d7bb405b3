"""Proximal L1: soft-thresholding after the update, which produces exact zeros."""

from __future__ import annotations

from lightning_wd.core.schemes.base import Scheme, l1_norm, soft_threshold_


class L1(Scheme):
    """``w <- sign(w) * max(|w| - rate, 0)`` after the update (penalty ``strength * ||w||_1``).

    The proximal step of the L1 penalty: unlike a subgradient step it sets small weights to exactly 0.

    Example:
        >>> import torch
        >>> w = [torch.tensor([0.05, -0.3])]
        >>> L1().after_update(w, rate=0.1, strength=1.0, state={}); w[0]
        tensor([ 0.0000, -0.2000])
    """

    name = "l1"
    fused_variant = ("none", "shrink")
    fused_by_default = False  # its fused step measured no faster than the general path (RESULTS.md section 2)
    makes_exact_zeros = True

    def after_update(self, params, rate, strength, state):
        soft_threshold_(params, rate)

    def penalty(self, params, strength, state):
        return strength * l1_norm(params)

    def fused_coefficients(self, rate: float, strength: float) -> tuple[float, float | None]:
        return 0.0, rate
