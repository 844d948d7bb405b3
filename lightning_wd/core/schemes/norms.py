"""Per-tensor sums (squared norms, inner products) that are whole-tensor values also under sharded training."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_wd.core.distributed import all_reduce_sum, contribution, local, needs_collective

__all__ = ["tensor_dots", "tensor_norms"]


def tensor_dots(params: list[Tensor], a: list[Tensor], b: list[Tensor]) -> Tensor:
    """``<a_i, b_i>`` per tensor as a float64 vector (``a``, ``b`` laid out like ``params``: local shards of the same
    DTensors, or plain tensors); under sharding the shards' sums are all-reduced once (call on every rank).

    Example:
        >>> tensor_dots([torch.ones(2)], [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 4.0])])
        tensor([11.], dtype=torch.float64)
    """
    if not params:
        return torch.zeros(0, dtype=torch.float64)
    sums = torch.stack([(local(x).double() * local(y).double()).sum() for x, y in zip(a, b)])
    return _reduce(params, sums)


def tensor_norms(params: list[Tensor], values: list[Tensor] | None = None) -> Tensor:
    """``‖v_i‖`` per tensor (``values`` default: ``params``) as a float64 vector, whole-tensor norms under sharding.

    Example:
        >>> tensor_norms([torch.tensor([3.0, 4.0])])
        tensor([5.], dtype=torch.float64)
    """
    if not params:
        return torch.zeros(0, dtype=torch.float64)
    pieces = [local(v) for v in (params if values is None else values)]
    squares = torch.stack(list(torch._foreach_norm(pieces))).double().square()
    return _reduce(params, squares).sqrt()


def _reduce(params: list[Tensor], sums: Tensor) -> Tensor:
    if not needs_collective(params):
        return sums
    weights = torch.tensor([contribution(p) for p in params], dtype=torch.float64, device=sums.device)
    return all_reduce_sum(sums * weights)
