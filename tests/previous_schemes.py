"""The self-applied passes as they were before the fast formulations (main at 5085dfa), frozen for the tests.

Each one-process pass of ``l1``/``elastic_net`` (soft-threshold), ``group_lasso`` (concatenation and a
segment reduction) and ``cautious`` (a snapshot and a six-pass mask), so that tests/test_schemes.py can check
the rewrites step by step against the code they replaced, besides the for-loop references.
"""

from __future__ import annotations

import torch

from lightning_wd.core.schemes import L1, Cautious, ElasticNet, GroupLasso


def soft_threshold_(params, threshold):
    if threshold <= 0 or not params:
        return
    small = []
    for p in params:
        if p.numel() >= 4096:
            torch._C._nn.softshrink(p, threshold, out=p)
        else:
            small.append(p)
    if small:
        clipped = torch._foreach_clamp_min(small, -threshold)
        torch._foreach_clamp_max_(clipped, threshold)
        torch._foreach_sub_(small, clipped)


class PreviousL1(L1):
    def after_update(self, params, rate, strength, state):
        soft_threshold_(params, rate)


class PreviousElasticNet(ElasticNet):
    def after_update(self, params, rate, strength, state):
        soft_threshold_(params, rate * self.l1_ratio)


class PreviousGroupLasso(GroupLasso):
    def after_update(self, params, rate, strength, state):
        if rate <= 0 or not params:
            return
        rows = [p.shape[0] if p.ndim > 1 else 1 for p in params]
        lengths = torch.tensor([p.numel() // r if r else 0 for p, r in zip(params, rows) for _ in range(r)])
        sizes = torch.tensor([(p.numel() // p.shape[0] if p.ndim > 1 else p.numel())
                              for p, r in zip(params, rows) for _ in range(r)])
        shapes = [(r,) + (1,) * (p.ndim - 1) if p.ndim > 1 else (1,) * p.ndim for p, r in zip(params, rows)]
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        norms = torch.segment_reduce(flat.square_(), "sum", lengths=lengths).sqrt_()
        scale = (1.0 - rate * sizes.double().sqrt().to(norms) / norms).nan_to_num_(0.0, 0.0, 0.0).clamp_min_(0.0)
        torch._foreach_mul_(params, [s.view(shape) for s, shape in zip(scale.split(rows), shapes)])


class PreviousCautious(Cautious):
    def before_update(self, params, grads, rate, strength, state):
        if not rate or not params:
            return
        old = state.get("old")
        if old is None or [o.shape for o in old] != [p.shape for p in params]:
            old = state["old"] = [torch.empty_like(p) for p in params]
        torch._foreach_copy_(old, params)
        state["pending"] = True

    def after_update(self, params, rate, strength, state):
        if not state.pop("pending", False):
            return
        old = state["old"]
        moved_away = torch._foreach_sub(params, old)
        torch._foreach_mul_(moved_away, old)
        torch._foreach_clamp_min_(moved_away, 0.0)
        torch._foreach_sign_(moved_away)
        torch._foreach_add_(params, old, alpha=-rate)
        torch._foreach_addcmul_(params, old, moved_away, value=rate)


PREVIOUS = {"l1": PreviousL1, "elastic_net": lambda: PreviousElasticNet(0.3), "group_lasso": PreviousGroupLasso,
            "cautious": PreviousCautious}
