"""Weight norm control (Loshchilov 2023): decoupled decay toward a target norm instead of toward zero."""

from __future__ import annotations

import torch

from lightning_wd.core.distributed import local, needs_collective, rank
from lightning_wd.core.schemes.base import Scheme
from lightning_wd.core.schemes.norms import tensor_norms


class TargetNorm(Scheme):
    """``w <- w - rate * (w - k * w / ‖w‖)`` per tensor, before the update (``rate = lr * strength``).

    The decoupled step of the penalty ``strength / 2 * (‖w‖ - k)²`` (its gradient is ``w - k w/‖w‖``): the
    direction of ``w`` is kept and its norm moves a fraction ``rate`` of the way to ``k``,
    ``‖w'‖ = (1 - rate) ‖w‖ + rate * k``. ``k = 0`` is AdamW's decoupled decay exactly (AdamWN with target 0
    is AdamW); a zero tensor stays zero.

    Args:
        target: the target norm ``k`` of every decayed tensor; None: each tensor's norm at the start of training
            times ``scale`` (kept in checkpoints).
        scale: with ``target=None``, the target as a multiple of the initial norm.

    Raises:
        ValueError: ``target`` or ``scale`` negative.

    Example:
        >>> w = [torch.tensor([3.0, 4.0])]  # norm 5
        >>> TargetNorm(target=1.0).before_update(w, [torch.zeros(2)], rate=0.5, strength=1.0, state={}); w[0]
        tensor([1.8000, 2.4000])
    """

    name = "target_norm"
    persistent_state = ("target_norm",)
    search_range = (1e-6, 1.0)
    shard_aware = True

    def __init__(self, target: float | None = None, scale: float = 1.0) -> None:
        for argument, value in (("target", target), ("scale", scale)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ValueError(f"`{argument}` must be a number >= 0, got {value!r}")
        self.target, self.scale = (None if target is None else float(target)), float(scale)

    def hparams(self) -> dict[str, float]:
        return {"target_norm": self.target} if self.target is not None else {"target_norm_scale": self.scale}

    def prepare(self, params, state):
        if self.target is None:
            norms = tensor_norms(params).mul(self.scale).tolist()
            state.setdefault("target_norm", [torch.tensor(n, dtype=torch.float64) for n in norms])
        state["index"] = {id(p): i for i, p in enumerate(params)}

    def _targets(self, params, state, norms: torch.Tensor) -> torch.Tensor:
        """The target norm of each tensor of ``params`` (a float64 vector on the norms' device)."""
        if self.target is not None:
            return torch.full_like(norms, self.target)
        targets = state["target_norm"]
        if len(targets) != len(params):  # the subset of the bucket that stepped
            targets = [targets[state["index"][id(p)]] for p in params]
        return torch.stack([t.to(device=norms.device, dtype=torch.float64) for t in targets])

    def before_update(self, params, grads, rate, strength, state):
        if not rate or not params:
            return
        norms = tensor_norms(params)  # per-tensor factors stay on the device: no host sync on the step
        pull = torch.where(norms > 0, rate * self._targets(params, state, norms) / norms.clamp_min(1e-300), 0.0)
        factors = (1.0 - rate + pull).to(params[0].dtype)
        torch._foreach_mul_([local(p) for p in params], list(factors.unbind()))

    def penalty(self, params, strength, state):
        if not params:
            return torch.zeros((), dtype=torch.float64)
        norms = tensor_norms(params)
        targets = self._targets(params, state, norms)
        value = 0.5 * strength * (norms - targets).square().sum()
        return value if not needs_collective(params) or rank() == 0 else value * 0.0  # counted once over ranks
