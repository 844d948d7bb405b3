"""Weight statistics: non-zero fractions and norms, vectorised over tensors with one host sync.

Under sharded training (FSDP2 ``DTensor`` parameters) every rank computes its shards' counts, squared
norms, penalty and extra statistics, packs them into one float64 tensor and all-reduces it once per
interval: the values equal those of one process holding the whole tensors (:func:`weight_stats`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lightning_wd.core.distributed import all_reduce_sum, contribution, local, needs_collective
from lightning_wd.core.flat_shards import logical_numel

__all__ = ["decay_stats", "effective_weights", "needs_all_ranks", "nonzero_counts", "weight_stats"]


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
    extra: Mapping[str, Tensor | float] | None = None,
) -> dict[str, float]:
    """``{prefix}/nonzero_fraction``, ``{prefix}/weight_norm`` and, per tensor, ``.../<name>`` of both.

    Counts (``count_nonzero``, exact), squared L2 norms (``torch._foreach_norm``) and the ``extra`` values
    are packed into one float64 tensor and brought to the host in one transfer. For sharded tensors
    (FSDP2 ``DTensor``s in a multi-process run) each rank packs what it holds and the packed tensor is
    all-reduced once: every rank must call this at the same step, and gets the whole tensors' values.

    Args:
        names: one name per tensor (used in the per-tensor keys).
        params: the tensors.
        zero_tolerance: count ``|w| <= zero_tolerance`` as zero (0: exact zeros only).
        per_tensor: also return the per-tensor series.
        prefix: metric name prefix.
        extra: more ``{key: number}`` to report, summed over ranks with the rest (penalty, dead units).

    Example:
        >>> stats = weight_stats(["a", "b"], [torch.tensor([0.0, 3.0]), torch.tensor([4.0, 0.0])])
        >>> stats["wd/nonzero_fraction"], stats["wd/weight_norm"], stats["wd/nonzero_fraction/a"]
        (0.5, 5.0, 0.5)
    """
    if not params:
        return {}
    collective = needs_collective(params)  # on the tensors themselves: FSDP1 pieces are known by identity
    numels = [logical_numel(p) for p in params]  # whole tensors (a DTensor's numel is global already)
    shares = [contribution(p) for p in params] if collective else None
    params = [p.detach() for p in params]
    pieces = [local(p) for p in params] if collective else params
    counts = torch.stack(nonzero_counts(pieces, zero_tolerance)).double()
    squares = torch.stack(_norms(pieces)).double().square()
    if shares is not None:  # a shard counts on its rank, a replica on rank 0 only
        weights = torch.tensor(shares, dtype=torch.float64, device=counts.device)
        counts, squares = counts * weights, squares * weights
    extra = dict(extra or {})
    tail = [torch.as_tensor(v, dtype=torch.float64).to(counts.device).reshape(1) for v in extra.values()]
    packed = torch.cat([counts, squares, *tail])
    values = (all_reduce_sum(packed) if collective else packed).cpu().tolist()  # the one host sync
    n = len(params)
    total = sum(numels)
    stats = {
        f"{prefix}/nonzero_fraction": sum(values[:n]) / total if total else 1.0,
        f"{prefix}/weight_norm": sum(values[n:2 * n]) ** 0.5,
    }
    if per_tensor:
        for name, count, square, numel in zip(names, values[:n], values[n:2 * n], numels):
            stats[f"{prefix}/nonzero_fraction/{name}"] = count / numel if numel else 1.0
            stats[f"{prefix}/weight_norm/{name}"] = square ** 0.5
    stats.update(zip(extra, values[2 * n:]))
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

    Non-zero fractions and norms, the scheme's penalty at the current strength (``wd/penalty``) and its own
    extra statistics (e.g. ``wd/dead_units``), on the effective weights of pruned tensors, in one host
    transfer (:func:`weight_stats`; for sharded tensors one all-reduce: call it on every rank).
    """
    effective = effective_weights(model)
    collective = needs_all_ranks(decays)
    names, params, penalties, extra = [], [], [], {}
    for decay in decays:
        for bucket in decay.buckets:
            tensors = [effective.get(id(p), p) for p in bucket.params]  # no_grad: no detach (FSDP1 pieces
            # are known by identity)
            names += bucket.names
            params += tensors
            value, extras = _terms(decay.scheme, tensors, decay.strength(bucket), bucket.state, collective)
            if value is not None:
                penalties.append(value)
            for key, number in extras.items():
                extra[key] = extra.get(key, 0.0) + torch.as_tensor(number, dtype=torch.float64)
    if penalties:
        device = penalties[0].device
        extra = {"wd/penalty": torch.stack([p.double().to(device) for p in penalties]).sum(), **extra}
    return weight_stats(names, params, zero_tolerance=zero_tolerance, per_tensor=per_tensor, extra=extra)


def needs_all_ranks(decays) -> bool:
    """Whether the statistics of ``decays`` are a collective (sharded tensors in a multi-process run): every
    rank must then call :func:`decay_stats` at the same step."""
    return needs_collective([p for decay in decays for bucket in decay.buckets for p in bucket.params])


def _local_state(state: dict, keep: list[int], n: int) -> dict:
    """``state`` for the tensors at ``keep`` of a bucket of ``n``, on their local shards."""
    out = {}
    for key, value in state.items():
        if isinstance(value, list) and len(value) == n and all(isinstance(v, Tensor) for v in value):
            out[key] = [local(value[i]) for i in keep]
        elif isinstance(value, Tensor | list | dict):
            continue  # caches keyed to the whole bucket (layouts, indices): the scheme rebuilds them
        else:
            out[key] = value
    return out


def _terms(scheme, tensors: list[Tensor], strength: float, state: dict, collective: bool):
    """The penalty and extra statistics of one bucket; under sharding, this rank's share of them: the scheme
    sees the DTensors when it is ``shard_aware``, else the local shards this rank counts."""
    if not collective or scheme.shard_aware:
        return scheme.penalty(tensors, strength, state), scheme.extra_stats(tensors, state)
    keep = [i for i, t in enumerate(tensors) if contribution(t)]
    pieces, sub = [local(tensors[i]) for i in keep], _local_state(state, keep, len(tensors))
    return scheme.penalty(pieces, strength, sub), scheme.extra_stats(pieces, sub)
