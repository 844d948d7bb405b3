"""Group lasso over output units: whole rows (Linear) or output channels (Conv) shrink to exactly 0."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_wd.core.schemes.base import Scheme


def _layout(params: list[Tensor]) -> tuple[list[int], Tensor, Tensor, list[tuple[int, ...]]]:
    # A tensor of ndim >= 2 has one unit per output row/channel; a 1-D or 0-d tensor is a single unit.
    rows = [p.shape[0] if p.ndim > 1 else 1 for p in params]
    row_sizes = torch.tensor([p.numel() // r for p, r in zip(params, rows) for _ in range(r)], dtype=torch.long)
    shapes = [(r,) + (1,) * (p.ndim - 1) if p.ndim > 1 else (1,) * p.ndim for p, r in zip(params, rows)]
    return rows, row_sizes, row_sizes.double().sqrt(), shapes


def row_norms(params: list[Tensor], state: dict) -> Tensor:
    """L2 norm of every output unit of every tensor, concatenated (one vectorised pass).

    The layout (units per tensor) is cached in ``state``, keyed by the tensors' shapes, so a call with
    another subset of a bucket's tensors (some without a gradient this step) lays it out afresh.
    """
    key = tuple(tuple(p.shape) for p in params)
    if state.get("layout_key") != key:
        state["layout_key"] = key
        state["rows"], state["row_sizes"], state["sqrt_sizes"], state["shapes"] = _layout(params)
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    sums = torch.segment_reduce(flat.square_(), "sum", lengths=state["row_sizes"].to(flat.device))
    return sums.sqrt_()


class GroupLasso(Scheme):
    """``w_g <- max(0, 1 - rate * sqrt(p_g) / ||w_g||) * w_g`` after the update, ``g`` an output unit.

    ``p_g`` is the number of weights in unit ``g`` (a row of a Linear weight, an output channel of a
    Conv weight); the penalty is ``strength * sum_g sqrt(p_g) * ||w_g||``. A unit whose norm falls
    below the threshold dies (becomes exactly 0); ``dead_units`` counts them.

    Example:
        >>> import math
        >>> w = [torch.tensor([[3.0, 4.0], [0.1, 0.0]])]
        >>> GroupLasso().after_update(w, rate=0.5 / math.sqrt(2), strength=1.0, state={}); w[0]
        tensor([[2.7000, 3.6000],
                [0.0000, 0.0000]])
    """

    name = "group_lasso"
    makes_exact_zeros = True

    def after_update(self, params, rate, strength, state):
        if rate <= 0 or not params:
            return
        norms = row_norms(params, state)
        sqrt_sizes = state["sqrt_sizes"].to(norms)
        scale = (1.0 - rate * sqrt_sizes / norms).nan_to_num_(0.0, 0.0, 0.0).clamp_min_(0.0)
        scales = [s.view(shape) for s, shape in zip(scale.split(state["rows"]), state["shapes"])]
        torch._foreach_mul_(params, scales)

    def penalty(self, params, strength, state):
        if not params:
            return torch.zeros(())
        norms = row_norms(params, state)
        return strength * (norms * state["sqrt_sizes"].to(norms)).sum()

    def extra_stats(self, params, state):
        return {"wd/dead_units": float(self.dead_units(params, {}))}

    @staticmethod
    def dead_units(params: list[Tensor], state: dict) -> int:
        """How many output units are exactly zero (units with no weights at all are not counted)."""
        if not params:
            return 0
        norms = row_norms(params, state)
        return int(((norms == 0) & (state["row_sizes"].to(norms.device) > 0)).sum())


__all__ = ["GroupLasso", "row_norms"]
