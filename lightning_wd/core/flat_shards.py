"""FSDP1 (``FSDPStrategy``, ``use_orig_params=True``): each original parameter as a flat piece of itself.

FSDP1 flattens the tensors of each wrapped module into one ``FlatParameter`` and gives every rank a
contiguous slice of it. With ``use_orig_params=True`` (Lightning's default) the optimizer still sees the
original ``nn.Parameter`` objects, but each one's data is this rank's piece of the *flattened* original:
a 1-D tensor, possibly empty, that starts anywhere (a row of a weight can be split between two ranks).
Grouping, statistics and group lasso need the original tensor: :func:`track` records, for every such
parameter, its original shape and where its piece starts (:class:`FlatShard`), read from FSDP's own
bookkeeping (``FlatParameter._shapes`` and ``_shard_param_infos``); :func:`flat_shard` looks it up.

Element-wise schemes run on the pieces as they are. Sums over elements (statistics) add up the ranks'
pieces (every element lives on exactly one rank under ``FULL_SHARD`` and ``SHARD_GRAD_OP``); a reduction
over an output row (group lasso) adds up the parts of the rows a piece boundary splits (one all-reduce).

Example:
    >>> import torch
    >>> flat_shard(torch.ones(3)) is None, logical_shape(torch.ones(2, 3)), clean_name("a._fsdp_wrapped_module.w")
    (True, torch.Size([2, 3]), 'a.w')
"""

from __future__ import annotations

import dataclasses
import math
import sys
import weakref

import torch
from torch import Tensor

__all__ = ["FlatShard", "clean_name", "flat_shard", "gather", "logical_numel", "logical_shape", "rows_of",
           "slice_of", "stepped", "grad_of", "track", "tracking"]

#: The name FSDP1 gives the module it wraps (it appears in ``named_parameters`` of the wrapped model).
WRAPPED = "_fsdp_wrapped_module."


@dataclasses.dataclass(frozen=True)
class FlatShard:
    """This rank's piece of an original parameter: elements ``start .. start + numel`` of it, flattened.

    ``units``: the tensor's output units (rows of ``shape[0]`` for ``ndim >= 2``, one unit otherwise);
    ``base``: the index of its first unit among the units of every tracked tensor (the same on every
    rank: FSDP builds its handles in the same order everywhere).
    """

    shape: torch.Size
    start: int
    numel: int
    base: int

    @property
    def units(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    @property
    def unit_size(self) -> int:
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else max(math.prod(self.shape), 1)


_TRACKED: dict[int, tuple[weakref.ref, FlatShard]] = {}
_TOTAL_UNITS = [0]


def clean_name(name: str) -> str:
    """A parameter's name without FSDP1's wrapper prefix (the name it has in the unwrapped model)."""
    return name.replace(WRAPPED, "") if WRAPPED in name else name


def track(model: torch.nn.Module | None) -> int:
    """Record the :class:`FlatShard` of every original parameter of the FSDP1 modules in ``model``.

    Call it on every rank once the model is wrapped (``trainer.strategy.model``: the root FSDP module holds
    the tensors of the modules that are not wrapped on their own). Returns how many were recorded; without
    FSDP1 modules it records nothing and clears what an earlier fit recorded.
    """
    _TRACKED.clear()
    _TOTAL_UNITS[0] = 0
    if model is None or "torch.distributed.fsdp" not in sys.modules:
        return 0
    from torch.distributed.fsdp import FullyShardedDataParallel

    base = 0
    for module in model.modules():
        handle = getattr(module, "_handle", None) if isinstance(module, FullyShardedDataParallel) else None
        if handle is None or not handle.uses_sharded_strategy:
            continue
        flat = handle.flat_param
        for param, shape, info in zip(flat._params or (), flat._shapes, flat._shard_param_infos):
            start = info.intra_param_start_idx if info.in_shard else 0
            numel = info.numel_in_shard if info.in_shard else 0
            shard = FlatShard(torch.Size(shape), int(start), int(numel), base)
            base += shard.units
            _TRACKED[id(param)] = (weakref.ref(param), shard)
    _TOTAL_UNITS[0] = base
    return len(_TRACKED)


def tracking() -> bool:
    """Whether FSDP1 pieces are tracked in this process (group lasso then joins one collective per call)."""
    return bool(_TRACKED)


def total_units() -> int:
    """Units of every tracked tensor together: the length of group lasso's all-reduced buffer."""
    return _TOTAL_UNITS[0]


def flat_shard(tensor: Tensor) -> FlatShard | None:
    """The :class:`FlatShard` of an FSDP1 original parameter (``None`` for any other tensor)."""
    if not _TRACKED:
        return None
    entry = _TRACKED.get(id(tensor))
    return entry[1] if entry is not None and entry[0]() is tensor else None


def stepped(params: list[Tensor]) -> list[Tensor]:
    """The tensors an optimizer step changes: those with a gradient, and FSDP1 pieces with no element on this
    rank (they have no gradient there, but every rank must hand the decay's collectives the same tensors:
    they are matched by position).

    Example:
        >>> w = torch.ones(2, requires_grad=True)
        >>> stepped([w]), (w.sum().backward(), len(stepped([w])))[1]
        ([], 1)
    """
    if not _TRACKED:
        return [p for p in params if p.grad is not None]
    return [p for p in params if p.grad is not None or (p.numel() == 0 and flat_shard(p) is not None)]


def grad_of(param: Tensor) -> Tensor:
    """``param.grad``, or an empty tensor for a piece :func:`stepped` keeps without one."""
    return param.grad if param.grad is not None else param.new_zeros(0)


def logical_shape(tensor: Tensor) -> torch.Size:
    """The shape of the original tensor (an FSDP1 piece's original; the tensor's own shape otherwise)."""
    shard = flat_shard(tensor)
    return shard.shape if shard is not None else tensor.shape


def logical_numel(tensor: Tensor) -> int:
    """Elements of the original tensor (see :func:`logical_shape`)."""
    shard = flat_shard(tensor)
    return math.prod(shard.shape) if shard is not None else tensor.numel()


def slice_of(value: Tensor, shard: FlatShard) -> Tensor:
    """This rank's piece of ``value``, a whole tensor of the original shape (a copy)."""
    return value.reshape(-1)[shard.start:shard.start + shard.numel].clone()


def gather(piece: Tensor, shard: FlatShard) -> Tensor:
    """The whole original tensor from every rank's piece (collectives: call it on every rank)."""
    dist = torch.distributed
    world = dist.get_world_size()
    where = torch.tensor([shard.start, shard.numel], dtype=torch.long, device=piece.device)
    spans = [torch.empty_like(where) for _ in range(world)]
    dist.all_gather(spans, where)
    longest = max(int(s[1]) for s in spans)
    padded = torch.zeros(longest, dtype=piece.dtype, device=piece.device)
    padded[:shard.numel] = piece.reshape(-1)
    pieces = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded)
    out = torch.zeros(math.prod(shard.shape), dtype=piece.dtype, device=piece.device)
    for span, part in zip(spans, pieces):
        start, numel = int(span[0]), int(span[1])
        out[start:start + numel] = part[:numel]
    return out.reshape(shard.shape)


def rows_of(shard: FlatShard) -> tuple[list[int], list[int], list[bool], list[bool]]:
    """The output units a piece touches: ``(global unit index, elements here, split, counted here)``.

    A unit is *split* when part of it lives on another rank (its sums must be all-reduced); a split unit is
    counted (in penalties and dead units) on the rank that holds its first element.

    Example:
        >>> rows_of(FlatShard(torch.Size([3, 4]), start=2, numel=7, base=10))  # rows 0 (2 of 4), 1, 2 (1 of 4)
        ([10, 11, 12], [2, 4, 1], [True, False, True], [False, True, True])
    """
    if shard.numel == 0:
        return [], [], [], []
    size, end = shard.unit_size, shard.start + shard.numel
    first, last = shard.start // size, (end - 1) // size
    index, lengths, split, counted = [], [], [], []
    for row in range(first, last + 1):
        lo, hi = max(shard.start, row * size), min(end, (row + 1) * size)
        index.append(shard.base + row)
        lengths.append(hi - lo)
        split.append(hi - lo < size)
        counted.append(lo == row * size)
    return index, lengths, split, counted
