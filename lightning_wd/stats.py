"""Weight statistics: non-zero fractions and norms, vectorised over tensors with one host sync."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["nonzero_counts", "weight_stats"]


def nonzero_counts(params: list[Tensor], zero_tolerance: float = 0.0) -> list[Tensor]:
    """Per tensor, how many elements have ``|w| > zero_tolerance`` (0-d tensors, no host sync).

    Example:
        >>> [int(c) for c in nonzero_counts([torch.tensor([0.0, 1e-9, 2.0])], zero_tolerance=1e-6)]
        [1]
    """
    if zero_tolerance <= 0:
        return list(torch._foreach_norm(params, 0))
    shifted = torch._foreach_abs(params)
    torch._foreach_sub_(shifted, zero_tolerance)
    torch._foreach_clamp_min_(shifted, 0.0)
    return list(torch._foreach_norm(shifted, 0))


@torch.no_grad()
def weight_stats(
    names: list[str],
    params: list[Tensor],
    *,
    zero_tolerance: float = 0.0,
    per_tensor: bool = True,
    prefix: str = "wd",
) -> dict[str, float]:
    """``{prefix}/nonzero_fraction``, ``{prefix}/weight_norm`` and, per tensor, ``.../<name>`` of both.

    Counts and L2 norms are computed with ``torch._foreach_norm`` (ord 0 and 2) over all tensors at
    once and brought to the host in one transfer.

    Args:
        names: one name per tensor (used in the per-tensor keys).
        params: the tensors.
        zero_tolerance: count ``|w| <= zero_tolerance`` as zero (0: exact zeros only).
        per_tensor: also return the per-tensor series.
        prefix: metric name prefix.

    Example:
        >>> stats = weight_stats(["a", "b"], [torch.tensor([0.0, 3.0]), torch.tensor([4.0, 0.0])])
        >>> stats["wd/nonzero_fraction"], stats["wd/weight_norm"], stats["wd/nonzero_fraction/a"]
        (0.5, 5.0, 0.5)
    """
    if not params:
        return {}
    params = [p.detach() for p in params]
    counts = torch.stack([c.to(torch.float64) for c in nonzero_counts(params, zero_tolerance)])
    norms = torch.stack([n.to(torch.float64) for n in torch._foreach_norm(params, 2)])
    values = torch.cat([counts, norms]).cpu().tolist()  # the one host sync
    n = len(params)
    numels = [p.numel() for p in params]
    total = sum(numels)
    stats = {
        f"{prefix}/nonzero_fraction": sum(values[:n]) / total if total else 1.0,
        f"{prefix}/weight_norm": sum(v * v for v in values[n:]) ** 0.5,
    }
    if per_tensor:
        for name, count, norm, numel in zip(names, values[:n], values[n:], numels):
            stats[f"{prefix}/nonzero_fraction/{name}"] = count / numel if numel else 1.0
            stats[f"{prefix}/weight_norm/{name}"] = norm
    return stats
