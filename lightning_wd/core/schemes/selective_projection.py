"""Selective projection decay (SPD, Tian et al. 2024): pull a tensor back toward its reference only when its
deviation from the reference works against the loss."""

from __future__ import annotations

import torch

from lightning_wd.core.distributed import local, needs_collective, rank
from lightning_wd.core.schemes.l2_sp import L2SP
from lightning_wd.core.schemes.norms import tensor_dots, tensor_norms


class SelectiveProjection(L2SP):
    """Per tensor (layer), with ``w0`` the reference (the weights at the start, or a given state dict):

    * before the update: ``c = <g, w - w0>`` and ``γ = ‖w - w0‖``;
    * the optimizer's update gives ``w̃`` and ``γ̃ = ‖w̃ - w0‖``;
    * if ``c > 0`` (growing the deviation increases the loss: ``-g`` points back toward ``w0``) the tensor is
      projected toward the reference, ``w <- w̃ - r (w̃ - w0)`` with ``r = strength * max(0, γ̃ - γ) / γ̃``;
      otherwise ``w <- w̃``.

    With ``strength = 1`` the projection keeps the deviation norm at ``γ`` (the update may rotate the
    deviation but not grow it); smaller strengths let it grow by the fraction ``1 - strength``. The rate does
    not involve the lr (``uses_lr = False``, as in the paper's Adam-SPD). The reference is kept in checkpoints.
    ``wd/spd_selected`` counts the tensors projected at the last step.

    Example:
        >>> w, s, state = [torch.tensor([1.0, 0.0])], SelectiveProjection(), {}
        >>> s.prepare([torch.zeros(2)], state)  # reference w0 = 0
        >>> s.before_update(w, [torch.tensor([1.0, 0.0])], rate=0.0, strength=1.0, state=state)  # c = 1 > 0
        >>> w[0] += torch.tensor([1.0, 0.0])  # the optimizer moves away: γ = 1, γ̃ = 2
        >>> s.after_update(w, rate=0.0, strength=1.0, state=state); w[0]  # r = 1 * (2 - 1) / 2
        tensor([1., 0.])
    """

    name = "selective_projection"
    uses_lr = False
    search_range = (1e-3, 1.0)
    shard_aware = True

    def before_update(self, params, grads, rate, strength, state):
        state.pop("pending", None)
        if not strength or not params:
            return
        deviation = torch._foreach_sub([local(p) for p in params], [local(r) for r in self._references(params, state)])
        state["pending"] = (tensor_dots(params, grads, deviation) > 0, tensor_norms(params, deviation))

    def after_update(self, params, rate, strength, state):
        pending = state.pop("pending", None)
        if pending is None:
            return
        selected, before = pending
        pieces, references = [local(p) for p in params], [local(r) for r in self._references(params, state)]
        deviation = torch._foreach_sub(pieces, references)
        after = tensor_norms(params, deviation)
        # r per tensor, on the device (no host sync on the step): 0 where not selected or not grown
        ratios = torch.where(selected & (after > 0), strength * (after - before).clamp_min(0) / after.clamp_min(1e-300),
                             0.0)
        state["selected"] = (ratios > 0).sum()
        torch._foreach_mul_(deviation, list(ratios.to(pieces[0].dtype).unbind()))
        torch._foreach_sub_(pieces, deviation)

    def penalty(self, params, strength, state):
        return None

    def extra_stats(self, params, state):
        counted = not needs_collective(params) or rank() == 0  # every rank knows the count: rank 0 reports it
        return {"wd/spd_selected": state.get("selected", 0.0) if counted else 0.0}
