"""Cautious weight decay (2025): decoupled decay only where the update and the weight agree in sign."""

from __future__ import annotations

import torch

from lightning_wd.core.distributed import local
from lightning_wd.core.schemes.base import Scheme


class Cautious(Scheme):
    """``w <- w - lr * u - rate * w * 1[u * w >= 0]`` where ``u`` is the optimizer's update direction.

    Decoupled decay (as AdamW) masked to the coordinates where the optimizer already moves the weight
    toward zero. The pre-step weights are snapshotted before the update; after it, ``u * w >= 0`` is
    read off the change ``delta = w_new - w_old`` as ``delta * w_old <= 0``. Exact for any optimizer.

    Example:
        >>> w = [torch.tensor([1.0, 1.0])]
        >>> s, state = Cautious(), {}
        >>> s.before_update(w, [torch.zeros(2)], rate=0.1, strength=1.0, state=state)
        >>> w[0] += torch.tensor([-0.5, 0.5])  # the optimizer: moves w[0] toward 0, w[1] away
        >>> s.after_update(w, rate=0.1, strength=1.0, state=state); w[0]
        tensor([0.4000, 1.5000])
    """

    name = "cautious"
    search_range = (1e-6, 1.0)

    def before_update(self, params, grads, rate, strength, state):
        if not rate or not params:
            return
        params = [local(p) for p in params]  # element-wise: a sharded DTensor's local shard, in place
        old = state.get("old")
        if old is None or [o.shape for o in old] != [p.shape for p in params]:  # first step, or another subset
            old = state["old"] = [torch.empty_like(p) for p in params]
        torch._foreach_copy_(old, params)
        state["pending"] = True

    def after_update(self, params, rate, strength, state):
        if not state.pop("pending", False):
            return
        old, params = state["old"], [local(p) for p in params]
        moved_away = torch._foreach_sub(params, old)  # delta
        torch._foreach_mul_(moved_away, old)  # delta * w_old
        torch._foreach_clamp_min_(moved_away, 0.0)
        torch._foreach_sign_(moved_away)  # 1 where the update moves away from zero: no decay there
        torch._foreach_add_(params, old, alpha=-rate)
        torch._foreach_addcmul_(params, old, moved_away, value=rate)
