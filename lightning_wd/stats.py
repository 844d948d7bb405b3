"""Weight statistics: non-zero fractions and norms, vectorised over tensors with one host sync."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["nonzero_counts", "weight_stats"]


def _accumulator(params: list[Tensor]) -> torch.dtype:
    """float64 (exact counts up to 2**53; MPS has no float64: float32 there)."""
    return torch.float32 if any(p.device.type == "mps" for p in params) else torch.float64


def _norms(params: list[Tensor], ord: float) -> list[Tensor]:
    """``torch._foreach_norm`` accumulated and returned in :func:`_accumulator`'s dtype.

    In the tensors' own dtype a count is inexact: bfloat16 holds integers exactly only up to 256, float32
    up to 2**24, so a large bf16 (or huge fp32) tensor would report a wrong non-zero fraction.
    """
    dtype = _accumulator(params)
    try:
        return list(torch._foreach_norm(params, ord, dtype=dtype))
    except (RuntimeError, TypeError, NotImplementedError):  # a backend without the dtype overload
        return [torch.linalg.vector_norm(p, ord, dtype=dtype) for p in params]


def nonzero_counts(params: list[Tensor], zero_tolerance: float = 0.0) -> list[Tensor]:
    """Per tensor, how many elements have ``|w| > zero_tolerance`` (0-d float64 tensors, no host sync).

    Example:
        >>> [int(c) for c in nonzero_counts([torch.tensor([0.0, 1e-9, 2.0])], zero_tolerance=1e-6)]
        [1]
    """
    if not params:
        return []
    if zero_tolerance <= 0:
        return _norms(params, 0)
    shifted = torch._foreach_abs(params)
    torch._foreach_sub_(shifted, zero_tolerance)
    torch._foreach_clamp_min_(shifted, 0.0)
    return _norms(shifted, 0)


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
    counts = torch.stack(nonzero_counts(params, zero_tolerance))
    norms = torch.stack(_norms(params, 2))
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
