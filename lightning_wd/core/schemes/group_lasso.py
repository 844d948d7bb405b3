"""Group lasso over output units: whole rows (Linear) or output channels (Conv) shrink to exactly 0.

Sharded tensors (FSDP2 ``DTensor``s, sharded on dim 0) are handled on their local shards: a dim-0 shard
holds whole rows, so their norms need no communication; a 1-D tensor (one unit) split across ranks gets
its squared sum all-reduced (one collective for all such units of a call).

FSDP1 pieces (:mod:`lightning_wd.core.flat_shards`) start and end anywhere in the flattened tensor: the rows
a piece boundary splits get their squared sums all-reduced through one buffer indexed by every tracked
tensor's units (each rank joins that collective on every call, also with no tensor of its own in it).

Otherwise the unit norms are computed without concatenating the tensors: a large tensor (at least 4096
elements, :func:`~lightning_wd.core.schemes.base.shape_groups`) gets one row-wise ``vector_norm`` of its own
(one read), and small tensors of one shape, dtype and device are stacked and reduced in one call (per-call
overhead dominates there).
The shrink factors are then applied by one ``torch._foreach_mul_`` with a broadcast factor per tensor,
the views of a stacked group coming from one ``unbind``. Every per-unit quantity (norms, sizes, weights)
is kept in this *plan order* (group by group), which only sums and the element-wise shrink ever read.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_wd.core import flat_shards
from lightning_wd.core.distributed import all_reduce_sum, contribution, is_sharded, local, rank, split_unit
from lightning_wd.core.schemes.base import Scheme, shape_groups


def _units(p: Tensor, q: Tensor) -> tuple[int, int]:
    """``(units, elements per unit)`` of tensor ``p`` whose local piece is ``q`` (a 1-D/0-d tensor is one unit)."""
    rows = q.shape[0] if p.ndim > 1 else 1
    return rows, (q.numel() // rows if rows else 0)


def _layout(params: list[Tensor]) -> dict:
    if flat_shards.tracking():
        return _flat_layout(params)
    # A tensor of ndim >= 2 has one unit per output row/channel; a 1-D or 0-d tensor is a single unit.
    # Groups: (tensor indices, units per tensor, elements per unit, broadcast shape of a tensor's factors).
    pieces = [local(p) for p in params]
    sharded = any(is_sharded(p) for p in params)
    large, small = shape_groups(pieces)  # a local piece has its tensor's ndim: one shape, one unit layout
    groups = [[i] for i in large] + small
    groups = [g for g in groups if _units(params[g[0]], pieces[g[0]])[0]]  # (0, n) tensors: no unit at all
    plan, sizes, weight, split, unit_count = [], [], [], [], 0
    for indices in groups:
        p, q = params[indices[0]], pieces[indices[0]]
        rows, length = _units(p, q)
        shape = (rows,) + (1,) * (p.ndim - 1) if p.ndim > 1 else (1,) * p.ndim
        plan.append((indices, rows, length, shape))
        for i in indices:
            p = params[i]
            size = p.numel() // p.shape[0] if p.ndim > 1 else p.numel()  # elements of a unit of the whole tensor
            # Weight of each unit in a sum over ranks (only DTensors lead to one): rows of a shard count where
            # they live; a split unit (reduced to its global value) and a replica count on rank 0 only.
            w = (float(rank() == 0) if split_unit(p) else contribution(p)) if sharded else 1.0
            sizes += [size] * rows
            weight += [w] * rows
            if split_unit(p):
                split.append(unit_count)
            unit_count += rows
    size = torch.tensor(sizes, dtype=torch.long)
    return {"plan": plan, "sizes": size, "sqrt_sizes": size.double().sqrt(),
            "weight": torch.tensor(weight, dtype=torch.float64),
            "split": torch.tensor(split, dtype=torch.long) if split else None, "devices": {}}


def _flat_layout(params: list[Tensor]) -> dict:
    # FSDP1: each tensor a flat piece (or a whole tensor the strategy left alone); `expand` repeats each
    # unit's scale over its elements here, `split`/`where` map the split units to the shared buffer.
    rows, lengths, sizes, weight, shapes, expand, split, where = [], [], [], [], [], [], [], []
    for p in params:
        shard = flat_shards.flat_shard(p)
        if shard is None:  # a whole tensor on every rank: counted on rank 0
            r = p.shape[0] if p.ndim > 1 else 1
            rows.append(r)
            lengths += [p.numel() // r if r else 0] * r
            sizes += [p.numel() // r if r else 0] * r
            weight += [float(rank() == 0)] * r
            shapes.append((r,) + (1,) * (p.ndim - 1) if p.ndim > 1 else (1,) * p.ndim)
            expand.append(None)
            continue
        index, here, cut, counted = flat_shards.rows_of(shard)
        split += [len(lengths) + i for i, c in enumerate(cut) if c]
        where += [g for g, c in zip(index, cut) if c]
        rows.append(len(index))
        lengths += here
        sizes += [shard.unit_size] * len(index)
        weight += [float(c) for c in counted]
        shapes.append((-1,))
        expand.append(torch.tensor(here, dtype=torch.long))
    size = torch.tensor(sizes, dtype=torch.long)
    return {"rows": rows, "row_sizes": torch.tensor(lengths, dtype=torch.long), "sizes": size,
            "sqrt_sizes": size.double().sqrt(), "shapes": shapes, "weight": torch.tensor(weight, dtype=torch.float64),
            "split": None, "expand": expand, "flat_split": (torch.tensor(split, dtype=torch.long),
                                                            torch.tensor(where, dtype=torch.long)), "devices": {}}


def _flat_all_reduce(sums: Tensor, layout: dict) -> None:
    """The split units' squared sums, summed over ranks through one buffer of every tracked unit."""
    position, where = (t.to(sums.device) for t in layout["flat_split"])
    buffer = torch.zeros(flat_shards.total_units(), dtype=sums.dtype, device=sums.device)
    buffer[where] = sums[position]
    all_reduce_sum(buffer)
    sums[position] = buffer[where]


def _scales(scale: Tensor, layout: dict) -> list[Tensor]:
    parts = scale.split(layout["rows"])
    expand = layout.get("expand") or [None] * len(parts)
    return [s.view(shape) if e is None else s.repeat_interleave(e.to(s.device))
            for s, shape, e in zip(parts, layout["shapes"], expand)]


def _cached(params: list[Tensor], state: dict) -> dict:
    key = tuple((tuple(p.shape), tuple(local(p).shape), local(p).dtype, flat_shards.flat_shard(p)) for p in params)
    if state.get("layout_key") != key:
        state["layout_key"] = key
        state["layout"] = _layout(params)
    return state["layout"]


def _on(layout: dict, name: str, like: Tensor) -> Tensor:
    """``layout[name]`` on ``like``'s device and dtype, converted once and cached."""
    key = (name, like.device, like.dtype)
    found = layout["devices"].get(key)
    if found is None:
        found = layout["devices"][key] = layout[name].to(device=like.device, dtype=like.dtype)
    return found


def row_norms(params: list[Tensor], state: dict) -> Tensor:
    """L2 norm of every output unit of every tensor (this rank's units of sharded ones), in plan order.

    The layout (units per tensor, groups) is cached in ``state``, keyed by the tensors' shapes, so a call with
    another subset of a bucket's tensors (some without a gradient this step) lays it out afresh. The order of
    the units is the layout's (``state["layout"]``), the same for ``sizes``, ``sqrt_sizes`` and ``weight``.
    """
    layout = _cached(params, state)
    if "flat_split" in layout:  # FSDP1 pieces: units cut anywhere, in the order of the tensors
        return _flat_row_norms(params, layout)
    pieces = [local(p).detach() for p in params]
    parts = []
    for indices, rows, length, _ in layout["plan"]:
        if len(indices) == 1:
            block = pieces[indices[0]].reshape(1, rows, length)
        else:
            block = torch.stack([pieces[i] for i in indices]).reshape(len(indices), rows, length)
        parts.append(torch.linalg.vector_norm(block, dim=2).reshape(-1))
    if not parts:
        return torch.zeros(0, dtype=torch.float64)
    norms = torch.cat(parts) if len(parts) > 1 else parts[0]
    if layout["split"] is not None:  # 1-D tensors split across ranks: their units' sums, summed over ranks
        index = layout["split"].to(norms.device)
        norms[index] = all_reduce_sum(norms[index].square().contiguous()).sqrt_()
    return norms


def _flat_row_norms(params: list[Tensor], layout: dict) -> Tensor:
    if not params:  # FSDP1, no tensor of this call here: still join the collective the other ranks make
        empty = torch.zeros(0, dtype=torch.float64)
        _flat_all_reduce(empty, layout)
        return empty
    flat = torch.cat([local(p).detach().reshape(-1) for p in params])
    sums = torch.segment_reduce(flat.square_(), "sum", lengths=layout["row_sizes"].to(flat.device))
    _flat_all_reduce(sums, layout)
    return sums.sqrt_()


def _factors(scale: Tensor, layout: dict) -> list[Tensor]:
    """The shrink factors of plan-order ``scale``, one broadcastable tensor per tensor of the plan."""
    out, start = [], 0
    for indices, rows, _, shape in layout["plan"]:
        n = len(indices) * rows
        block = scale[start:start + n]
        start += n
        out += [block.view(shape)] if len(indices) == 1 else block.view(len(indices), *shape).unbind(0)
    return out


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
    shard_aware = True

    def after_update(self, params, rate, strength, state):
        if rate <= 0 or not (params or flat_shards.tracking()):
            return
        norms = row_norms(params, state)
        layout = state["layout"]
        if not params or not layout.get("plan", True):
            return
        # 1 - rate * sqrt(p) / norm
        scale = torch.mul(_on(layout, "sqrt_sizes", norms), rate).div_(norms).neg_().add_(1.0)
        scale.nan_to_num_(0.0, 0.0, 0.0).clamp_min_(0.0)
        if "flat_split" in layout:
            torch._foreach_mul_([local(p) for p in params], _scales(scale, layout))
            return
        pieces = [local(params[i]) for indices, *_ in layout["plan"] for i in indices]
        torch._foreach_mul_(pieces, _factors(scale, layout))

    def penalty(self, params, strength, state):
        if not params:
            return torch.zeros(())
        norms = row_norms(params, state)
        layout = state["layout"]
        return strength * (norms * _on(layout, "sqrt_sizes", norms) * _on(layout, "weight", norms)).sum()

    def extra_stats(self, params, state):
        return {"wd/dead_units": self._dead(params, state) if params else 0.0}

    @staticmethod
    def _dead(params: list[Tensor], state: dict) -> Tensor:
        norms = row_norms(params, state)
        layout = state["layout"]
        dead = (norms == 0) & (layout["sizes"].to(norms.device) > 0)
        return (dead.double() * layout["weight"].to(norms.device)).sum()

    @staticmethod
    def dead_units(params: list[Tensor], state: dict) -> int:
        """How many output units are exactly zero (units with no weights at all are not counted)."""
        if not params:
            return 0
        return int(GroupLasso._dead(params, state))


__all__ = ["GroupLasso", "row_norms"]
