"""Cautious weight decay (2025): decoupled decay only where the update and the weight agree in sign."""

from __future__ import annotations

import torch

from lightning_wd.core.distributed import local
from lightning_wd.core.schemes.base import Scheme, shape_groups

_OWN_PASS_NUMEL = 1 << 17  # from here on a tensor keeps a scratch tensor and takes in-place passes of its own
_STACK_MIN = 8  # small tensors of one shape are stacked from this many on; fewer go through _foreach_* passes


class Cautious(Scheme):
    """``w <- w - lr * u - rate * w * 1[u * w >= 0]`` where ``u`` is the optimizer's update direction.

    Decoupled decay (as AdamW) masked to the coordinates where the optimizer already moves the weight
    toward zero. The pre-step weights are snapshotted before the update; after it, ``u * w >= 0`` is
    read off the change ``delta = w_new - w_old`` as ``delta * w_old <= 0``. Exact for any optimizer.

    Large tensors (2^17 elements and more) keep their snapshot and a scratch tensor between steps (no
    allocation on the step) and take four in-place passes after the update (``delta``, ``delta * w_old``, the
    mask, ``w -= rate * w_old * mask``); small tensors of one shape, 8 or more of them, are snapshotted as one
    stacked block, so that the mask is a handful of calls whatever their number, and corrected by one
    ``torch._foreach_add_``; the others take six ``torch._foreach_*`` passes. Coordinates that do not decay
    are left bit-for-bit as the optimizer wrote them.

    Example:
        >>> w = [torch.tensor([1.0, 1.0])]
        >>> s, state = Cautious(), {}
        >>> s.before_update(w, [torch.zeros(2)], rate=0.1, strength=1.0, state=state)
        >>> w[0] += torch.tensor([-0.5, 0.5])  # the optimizer: moves w[0] toward 0, w[1] away
        >>> s.after_update(w, rate=0.1, strength=1.0, state=state); w[0]
        tensor([0.4000, 1.5000])
    """

    name = "cautious"
    fused_variant = ("none", "cautious")
    search_range = (1e-6, 1.0)

    def before_update(self, params, grads, rate, strength, state):
        if not rate or not params:
            return
        pieces = [local(p) for p in params]  # element-wise: a sharded DTensor's local shard, in place
        key = [(q.shape, q.dtype, q.device) for q in pieces]
        if state.get("key") != key:  # first step, or another subset of the bucket
            large, groups = shape_groups(pieces, _OWN_PASS_NUMEL)
            rest = [i for group in groups if len(group) < _STACK_MIN for i in group]
            groups = [group for group in groups if len(group) >= _STACK_MIN]
            state.update(key=key, large=large, groups=groups, rest=rest,
                         old=[torch.empty_like(pieces[i]) for i in large + rest],
                         scratch=[torch.empty_like(pieces[i]) for i in large],
                         blocks=[torch.empty((len(g), *pieces[g[0]].shape), dtype=pieces[g[0]].dtype,
                                             device=pieces[g[0]].device) for g in groups])
        if state["old"]:
            torch._foreach_copy_(state["old"], [pieces[i] for i in state["large"] + state["rest"]])
        for group, block in zip(state["groups"], state["blocks"]):
            torch.stack([pieces[i] for i in group], out=block)
        state["pending"] = True

    def after_update(self, params, rate, strength, state):
        if not state.pop("pending", False):
            return
        pieces = [local(p) for p in params]
        large, rest = state["large"], state["rest"]
        for i, old, scratch in zip(large, state["old"], state["scratch"]):
            q = pieces[i]
            torch.sub(q, old, out=scratch)  # delta
            scratch.mul_(old).le_(0.0)  # 1 where delta * w_old <= 0: the update moves toward zero (or not at all)
            q.addcmul_(old, scratch, value=-rate)
        if rest:
            members, old = [pieces[i] for i in rest], state["old"][len(large):]
            keep = torch._foreach_sub(members, old)  # delta
            torch._foreach_mul_(keep, old)
            torch._foreach_clamp_min_(keep, 0.0)
            torch._foreach_sign_(keep)  # 1 where the update moves away from zero: no decay there
            torch._foreach_sub_(keep, 1.0)  # 0 there, -1 where the weight decays
            torch._foreach_addcmul_(members, old, keep, value=rate)
        targets, corrections = [], []
        for group, old in zip(state["groups"], state["blocks"]):
            members = [pieces[i] for i in group]
            mask = torch.stack(members).sub_(old).mul_(old).le_(0.0)
            corrections += mask.mul_(old).mul_(-rate).unbind(0)
            targets += members
        if targets:
            torch._foreach_add_(targets, corrections)

    def fused_coefficients(self, rate: float, strength: float) -> tuple[float, float | None]:
        return 0.0, -rate
