"""L2-SP: decay toward reference weights (the start of training, or a given state dict)."""

from __future__ import annotations

import torch

from lightning_wd.core.schemes.base import Scheme, squared_norm


class L2SP(Scheme):
    """``w <- w - rate * (w - w0)`` before the update (penalty ``strength / 2 * ||w - w0||^2``).

    ``state["reference"]`` holds ``w0`` for each tensor (the callback fills it at fit start from the
    weights, or from a given state dict, and keeps it in checkpoints). Computed as one ``lerp`` pass.

    Example:
        >>> w = [torch.tensor([2.0])]
        >>> L2SP().before_update(w, [torch.zeros(1)], rate=0.25, strength=1.0,
        ...                      state={"reference": [torch.tensor([1.0])]}); w[0]
        tensor([1.7500])
    """

    name = "l2_sp"
    fused_variant = ("lerp", "none")
    fused_by_default = False  # its fused step measured no faster than the general path (RESULTS.md section 2)
    persistent_state = ("reference",)
    takes_reference = True
    search_range = (1e-6, 1e-1)

    def prepare(self, params, state):
        state.setdefault("reference", [p.detach().clone() for p in params])
        state["index"] = {id(p): i for i, p in enumerate(params)}

    @staticmethod
    def _references(params, state):
        """The reference of each tensor of ``params``: all of the bucket's, or the subset that stepped."""
        reference = state["reference"]
        if len(reference) == len(params):
            return reference
        index = state.get("index")
        if index is None or any(id(p) not in index for p in params):
            raise ValueError(f"l2_sp: {len(params)} tensors but {len(reference)} reference tensors")
        return [reference[index[id(p)]] for p in params]

    def before_update(self, params, grads, rate, strength, state):
        if rate and params:
            torch._foreach_lerp_(params, self._references(params, state), rate)

    def penalty(self, params, strength, state):
        if not params:
            return torch.zeros(())
        return 0.5 * strength * squared_norm(torch._foreach_sub(params, self._references(params, state)))

    def fused_coefficients(self, rate: float, strength: float) -> tuple[float, float | None]:
        return rate, None  # b: 1 - rate, formed from the rounded rate as torch's lerp forms it
