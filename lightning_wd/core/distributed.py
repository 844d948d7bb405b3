"""Sharded and multi-process training: the strategies the decay is proven on, and the shard helpers.

Under FSDP2 (``fully_shard``, Lightning's ``ModelParallelStrategy``) every parameter is a ``DTensor``
sharded on dim 0 over a 1-D data-parallel mesh: the module keeps its original names and the tensors their
global shapes, so grouping decides exactly as in one process. Element-wise schemes run on the DTensors
as they are (no communication). What reduces over several elements works on the local shard
(:func:`local`): a dim-0 shard holds whole output rows, so only a unit that the shard splits (a 1-D
tensor) needs a collective. Statistics are sums of per-rank contributions (:func:`contribution`:
a shard counts on its rank, a replica on rank 0 only), packed into one tensor and all-reduced once
(:func:`all_reduce_sum`).

Under FSDP1 (``FSDPStrategy`` with ``use_orig_params=True``) every original parameter is a flat piece of
itself on each rank (:mod:`lightning_wd.core.flat_shards`): grouping reads the original names and shapes,
element-wise schemes run on the pieces, sums add up the pieces (:func:`contribution` is 1 for each).

Under DDP every rank holds the same full tensors: nothing here communicates and statistics are
computed on rank 0 alone, as in one process.

Example:
    >>> import torch
    >>> local(torch.ones(2)).shape, is_sharded(torch.ones(2)), contribution(torch.ones(2))
    (torch.Size([2]), False, 1.0)
    >>> all_reduce_sum(torch.tensor([1.0, 2.0]))  # one process: the tensor itself
    tensor([1., 2.])
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor

from lightning_wd.core.flat_shards import flat_shard, gather, slice_of

__all__ = ["SUPPORTED", "UnsupportedStrategyError", "all_reduce_sum", "check_placements", "check_strategy",
           "contribution", "full", "is_sharded", "like", "local", "needs_collective", "rank", "split_unit",
           "track_flat_shards"]

#: What the refusals offer instead (one line).
SUPPORTED = ("single device, 'ddp' / 'ddp_spawn' (DDPStrategy), FSDPStrategy(use_orig_params=True) with "
             "FULL_SHARD, SHARD_GRAD_OP or NO_SHARD, or FSDP2: ModelParallelStrategy(tensor_parallel_size=1) "
             "with fully_shard")


class UnsupportedStrategyError(ValueError):
    """A strategy the decay is not proven correct on (raised at fit start, one line)."""


def is_sharded(tensor: Tensor) -> bool:
    """Whether ``tensor`` is a ``DTensor`` (a shard of a larger logical tensor, or a replica of one).

    No import: a DTensor can only exist once ``torch.distributed.tensor`` is loaded, so the check is a
    dictionary lookup and an ``isinstance`` (it runs per tensor on the step).
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(tensor, module.DTensor)


def local(tensor: Tensor) -> Tensor:
    """This rank's part of ``tensor`` (its local shard for a ``DTensor``; the tensor itself otherwise).

    The local tensor shares storage with the DTensor: in-place updates on it update the DTensor.
    """
    return tensor._local_tensor if is_sharded(tensor) else tensor


def rank() -> int:
    """The global rank (0 without an initialised process group)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _shard_dim0(tensor: Tensor) -> bool:
    from torch.distributed.tensor import Shard

    return tensor.device_mesh.size() > 1 and isinstance(tensor.placements[0], Shard)


def contribution(tensor: Tensor) -> float:
    """The weight of this rank's part of ``tensor`` in a sum over ranks: 1 for a shard; for a replica (a
    plain tensor in a multi-process run, a replicated ``DTensor``) 1 on rank 0 and 0 elsewhere."""
    if (is_sharded(tensor) and _shard_dim0(tensor)) or flat_shard(tensor) is not None:
        return 1.0
    return 1.0 if rank() == 0 else 0.0


def split_unit(tensor: Tensor) -> bool:
    """Whether a dim-0 shard of ``tensor`` splits its single output unit (a 1-D tensor over > 1 rank).

    A tensor of ``ndim >= 2`` sharded on dim 0 keeps whole rows (units) on each rank; a 1-D tensor is one
    unit, split across the ranks: reductions over it need a collective.
    """
    return is_sharded(tensor) and tensor.ndim <= 1 and _shard_dim0(tensor)


def needs_collective(tensors: list[Tensor]) -> bool:
    """Whether sums over ``tensors`` need an all-reduce (some are DTensors or FSDP1 pieces in a multi-process
    run)."""
    dist = torch.distributed
    return (any(is_sharded(t) or flat_shard(t) is not None for t in tensors) and dist.is_available()
            and dist.is_initialized() and dist.get_world_size() > 1)


def all_reduce_sum(packed: Tensor) -> Tensor:
    """``packed`` summed over all ranks, in one collective (returned as is without a process group)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return packed


def full(tensor: Tensor, layout: Tensor | None = None) -> Tensor:
    """The whole logical tensor (a collective for a sharded ``DTensor`` or an FSDP1 piece: call it on every
    rank). ``layout``: the parameter whose piece ``tensor`` is laid out like (a scheme's state of an FSDP1
    parameter is a plain tensor of the piece's size)."""
    if is_sharded(tensor):
        return tensor.full_tensor()
    shard = flat_shard(tensor if layout is None else layout)
    return tensor if shard is None else gather(tensor, shard)


def like(value: Tensor, param: Tensor) -> Tensor:
    """``value`` (a full tensor, or a DTensor) as a fresh tensor laid out like ``param``: its device, dtype
    and, for a ``DTensor`` ``param``, its mesh and placements (this rank's slice; no communication). A 0-d
    ``value`` (a per-tensor number such as a target norm) stays a plain 0-d tensor on ``param``'s device."""
    if value.ndim == 0 and not is_sharded(value):
        return value.to(device=param.device, dtype=param.dtype).clone()
    shard = flat_shard(param)
    if shard is not None:
        return slice_of(full(value).to(device=param.device, dtype=param.dtype), shard)
    if not is_sharded(param):
        return full(value).to(device=param.device, dtype=param.dtype).clone()
    if is_sharded(value):
        value = value.redistribute(param.device_mesh, param.placements)
        return value.to(dtype=param.dtype).clone()
    from torch.distributed.tensor import DTensor, Shard

    value = value.to(device=param.device, dtype=param.dtype)
    mesh, placements = param.device_mesh, param.placements
    coordinate = mesh.get_coordinate() or [0] * mesh.ndim
    for dim, placement in enumerate(placements):
        if isinstance(placement, Shard):
            chunks = torch.chunk(value, mesh.size(dim), dim=placement.dim)  # DTensor's own (uneven) split
            value = chunks[coordinate[dim]] if coordinate[dim] < len(chunks) else value.narrow(placement.dim, 0, 0)
    return DTensor.from_local(value.clone(), mesh, placements, run_check=False, shape=param.shape,
                              stride=param.stride())


# ---------------------------------------------------------------------------------------------- fit start
def _names(strategy: Any) -> list[str]:
    return [cls.__name__ for cls in type(strategy).__mro__]


def check_strategy(trainer: Any, module: torch.nn.Module | None = None) -> None:
    """Refuse, with one line naming the strategy and what works instead, a strategy not proven correct.

    Proven (parity tests on 2 ranks): single device, ``DDPStrategy`` (``ddp``, ``ddp_spawn``, ...) and
    ``ModelParallelStrategy`` with FSDP2 data parallelism only (parameters sharded on dim 0 over a 1-D mesh).
    ``FSDPStrategy`` (FSDP1) with ``use_orig_params=True`` and ``FULL_SHARD``, ``SHARD_GRAD_OP`` or
    ``NO_SHARD``. Refused: DeepSpeed (it owns the optimizer step and flattens parameters), XLA, FSDP1 with
    ``use_orig_params=False`` (the optimizer gets flat parameters: names and shapes are lost) or a hybrid
    sharding (elements replicated over some ranks only), tensor parallelism, anything else.

    Raises:
        UnsupportedStrategyError: the strategy (or a parameter's layout) is not supported.
    """
    strategy = getattr(trainer, "strategy", None)
    if strategy is None:
        return
    names = _names(strategy)
    name = type(strategy).__name__
    refused = None
    if any("DeepSpeed" in n for n in names):
        refused = "DeepSpeed runs the optimizer step itself on flattened (ZeRO) partitions"
    elif any("XLA" in n for n in names):
        refused = "it is not verified on XLA devices"
    elif "FSDPStrategy" in names:
        sharding = str(getattr(getattr(strategy, "sharding_strategy", None), "name", "FULL_SHARD"))
        if not getattr(strategy, "kwargs", {}).get("use_orig_params", True):
            refused = ("FSDP1 with use_orig_params=False hands the optimizer flat parameters (names and shapes "
                       "are lost)")
        elif "HYBRID" in sharding:
            refused = f"sharding_strategy={sharding} replicates each shard over some ranks only"
    elif "ModelParallelStrategy" in names:
        tensor_parallel = getattr(strategy, "_tensor_parallel_size", 1)
        if tensor_parallel not in (1, "auto"):
            refused = f"tensor_parallel_size={tensor_parallel} shards tensors on other dims than 0"
    elif not ({"SingleDeviceStrategy", "DDPStrategy"} & set(names)):
        refused = "it is not verified"
    if refused:
        raise UnsupportedStrategyError(f"WeightDecay does not support strategy {name}: {refused}; use {SUPPORTED}")
    if module is not None:
        check_placements(module, name)


def track_flat_shards(trainer: Any) -> int:
    """Record the FSDP1 pieces of the wrapped model (:func:`lightning_wd.core.flat_shards.track`); every
    rank, at fit start. Any other strategy clears what an earlier fit recorded."""
    from lightning_wd.core import flat_shards

    strategy = getattr(trainer, "strategy", None)
    wrapped = getattr(strategy, "model", None) if "FSDPStrategy" in _names(strategy) else None
    return flat_shards.track(wrapped)


def check_placements(module: torch.nn.Module, strategy: str = "this strategy") -> None:
    """Every ``DTensor`` parameter is on a 1-D mesh, sharded on dim 0 or replicated (FSDP2 data parallel).

    Raises:
        UnsupportedStrategyError: naming the first parameter laid out otherwise.
    """
    from torch.distributed.tensor import Replicate, Shard

    for name, param in module.named_parameters():
        if not is_sharded(param):
            continue
        placements = param.placements
        ok = len(placements) == 1 and (isinstance(placements[0], Replicate)
                                       or (isinstance(placements[0], Shard) and placements[0].dim == 0))
        if not ok:
            raise UnsupportedStrategyError(
                f"WeightDecay does not support strategy {strategy} with parameter {name!r} laid out as "
                f"{tuple(placements)} (only dim-0 shards on a 1-D mesh are verified); use {SUPPORTED}")
