"""Weight statistics: non-zero fractions and norms, vectorised over tensors with one host sync."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["decay_stats", "effective_weights", "nonzero_counts", "weight_stats"]


def _norms(params: list[Tensor]) -> list[Tensor]:
    """L2 norm per tensor with ``torch._foreach_norm``: in the tensors' dtype for float32/float64 (measured
    7x faster on CPU than accumulating in float64), in float32 for 16-bit tensors."""
    low = [p.dtype in (torch.float16, torch.bfloat16) for p in params]
    if not any(low):
        return list(torch._foreach_norm(params))
    return [n.float() for n in torch._foreach_norm([p.float() if lo else p for p, lo in zip(params, low)])]


def nonzero_counts(params: list[Tensor], zero_tolerance: float = 0.0) -> list[Tensor]:
    """Per tensor, how many elements have ``|w| > zero_tolerance`` (exact int64 0-d tensors, no host sync).

    ``torch.count_nonzero`` per tensor: exact in every dtype, and measured faster on CPU than
    ``torch._foreach_norm(..., ord=0)`` for both few large and many small tensors. It runs only at the
    statistics interval, never on the step.

    Example:
        >>> [int(c) for c in nonzero_counts([torch.tensor([0.0, 1e-9, 2.0])], zero_tolerance=1e-6)]
        [1]
    """
    if zero_tolerance > 0:
        params = torch._foreach_abs(params)
        torch._foreach_sub_(params, zero_tolerance)
        torch._foreach_clamp_min_(params, 0.0)
    return [torch.count_nonzero(p) for p in params]


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

    Counts (``count_nonzero``, exact) and L2 norms (``torch._foreach_norm``) are brought to the host in one
    transfer.

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
    counts = torch.stack(nonzero_counts(params, zero_tolerance)).double()
    norms = torch.stack(_norms(params)).double()
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


def effective_weights(model: torch.nn.Module | None) -> dict[int, Tensor]:
    """``id(weight_orig) -> weight_orig * weight_mask`` for tensors re-parametrised by ``torch.nn.utils.prune``.

    Pruning (Lightning's ``ModelPruning``) moves a parameter to ``<name>_orig`` and multiplies it by a
    ``<name>_mask`` buffer at each forward; statistics and penalties are about the effective weight.

    Example:
        >>> from torch.nn.utils import prune
        >>> layer = torch.nn.Linear(4, 1)
        >>> _ = prune.l1_unstructured(layer, "weight", amount=0.5)
        >>> int(effective_weights(layer)[id(layer.weight_orig)].count_nonzero())
        2
    """
    found: dict[int, Tensor] = {}
    for module in model.modules() if model is not None else ():
        for hook in module._forward_pre_hooks.values():
            name = getattr(hook, "_tensor_name", None)
            orig, mask = getattr(module, f"{name}_orig", None), getattr(module, f"{name}_mask", None)
            if name and orig is not None and mask is not None:
                found[id(orig)] = orig.detach() * mask
    return found


@torch.no_grad()
def decay_stats(decays, model: torch.nn.Module | None = None, *, zero_tolerance: float = 0.0,
                per_tensor: bool = True) -> dict[str, float]:
    """The ``wd/*`` statistics of the decayed tensors of ``decays`` (``OptimizerDecay`` objects).

    Non-zero fractions and norms (:func:`weight_stats`), the scheme's penalty at the current strength
    (``wd/penalty``, one host transfer) and the scheme's own extra statistics (e.g. ``wd/dead_units``),
    on the effective weights of pruned tensors.
    """
    effective = effective_weights(model)
    names, params, penalties, extra = [], [], [], {}
    for decay in decays:
        for bucket in decay.buckets:
            tensors = [effective.get(id(p), p) for p in bucket.params]
            names += bucket.names
            params += tensors
            value = decay.scheme.penalty(tensors, decay.strength(bucket), bucket.state)
            if value is not None:
                penalties.append(value)
            for key, number in decay.scheme.extra_stats(tensors, bucket.state).items():
                extra[key] = extra.get(key, 0.0) + float(number)
    stats = weight_stats(names, params, zero_tolerance=zero_tolerance, per_tensor=per_tensor)
    if penalties:
        stats["wd/penalty"] = torch.stack([p.double().cpu() for p in penalties]).sum().item()
    stats.update(extra)
    return stats
