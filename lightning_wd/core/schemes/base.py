"""The interface every decay scheme implements."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lightning_wd.core.distributed import local

__all__ = ["Scheme", "shape_groups", "soft_threshold_"]


class Scheme:
    """One decay rule, applied to a list of tensors that share a learning rate and a strength.

    The callback calls, around each real optimizer step (after the closure, backward and clipping):

    * :meth:`before_update` -- the part the optimizer can do itself when ``native`` matches it
      (``"decoupled"``: AdamW-style ``weight_decay``; ``"coupled"``: SGD/Adam-style L2 on the gradient);
      skipped when the optimizer does it natively: its ``weight_decay`` is then ``native_strength`` of the
      strength (coupled) or of the lr-coupling coefficient (decoupled, so that ``lr * weight_decay`` is the rate);
    * the optimizer's own update;
    * :meth:`after_update` -- proximal steps (exact zeros) and anything needing the update.

    ``rate`` is the decay multiplier of this step: ``lr * strength`` under the default lr coupling.
    ``state`` is the scheme's per-bucket dict (reference weights, snapshots, ...).

    A scheme declares what the rest of the package needs to know about it, so that nothing outside
    ``schemes/`` names a scheme (a scheme of your own is a subclass passed as ``WeightDecay(scheme=...)``):

    * ``native``: the optimizer decay it equals (``"decoupled"``, ``"coupled"``) or None;
    * ``uses_lr``: whether the learning rate enters the decay (False for coupled L2: ``lr_coupling``
      does not apply);
    * ``persistent_state``: keys of ``state`` (lists of tensors, one per tensor of the bucket) saved in
      checkpoints and restored on resume;
    * ``takes_reference``: whether a ``reference`` state dict (weights to decay toward) applies;
    * ``makes_exact_zeros``: whether the update sets weights to exactly 0 (a sparsity objective can vary);
    * ``search_range``: the default (low, high) log-uniform range of ``strength`` for tuning;
    * ``shard_aware``: under sharded training (FSDP2 ``DTensor``s) the scheme takes the DTensors as they are
      in :meth:`penalty` and :meth:`extra_stats` and returns this rank's share of a sum over ranks (see
      :mod:`lightning_wd.core.distributed`). Otherwise (the default) the statistics hand it this rank's local
      shards (and state), and its penalty and extra statistics must be sums over elements or rows.
      The update methods always receive the DTensors: element-wise ``torch._foreach_*`` work on them as is.
    * ``fused_variant``: ``(pre, post)`` of the compiled Adam/AdamW/SGD update that does this rule inside the
      optimizer's own step (:mod:`lightning_wd.core.fused.kernels`), with :meth:`fused_coefficients` its
      scalars; None: no fused form. Read from the class that declares it only (a subclass that changes the rule
      is not fused unless it declares its own).
    * ``fused_by_default``: whether ``fused="auto"`` takes the fused form (where it measured faster than the
      general path: benchmarks/RESULTS.md section 2); ``fused=True`` takes it regardless.
    """

    name: ClassVar[str]
    native: ClassVar[str | None] = None
    uses_lr: ClassVar[bool] = True
    persistent_state: ClassVar[tuple[str, ...]] = ()
    takes_reference: ClassVar[bool] = False
    makes_exact_zeros: ClassVar[bool] = False
    search_range: ClassVar[tuple[float, float]] = (1e-6, 1e-2)
    shard_aware: ClassVar[bool] = False
    fused_variant: ClassVar[tuple[str, str] | None] = None
    fused_by_default: ClassVar[bool] = True

    def fused_coefficients(self, rate: float, strength: float) -> tuple[float, float | None]:
        """Slots ``a`` and ``b`` of the fused kernel's coefficients at this step (the general path's scalars)."""
        raise NotImplementedError(f"scheme {self.name!r} has no fused form")

    def hparams(self) -> dict[str, float]:
        """The scheme's own settings (beyond ``strength``), for logs and checkpoints."""
        return {}

    def extra_stats(self, params: list[Tensor], state: dict) -> dict[str, float]:
        """Statistics of this scheme beyond the common ``wd/*`` ones, summed over buckets (e.g. dead units)."""
        return {}

    def native_strength(self, strength: float) -> float:
        """The ``weight_decay`` an optimizer of kind :attr:`native` needs to do :meth:`before_update`."""
        return strength

    def prepare(self, params: list[Tensor], state: dict) -> None:
        """Create per-bucket state once, at fit start."""

    def before_update(self, params: list[Tensor], grads: list[Tensor], rate: float, strength: float,
                      state: dict) -> None:
        """Runs after the gradients are final and before the optimizer's update."""

    def after_update(self, params: list[Tensor], rate: float, strength: float, state: dict) -> None:
        """Runs after the optimizer's update."""

    def penalty(self, params: list[Tensor], strength: float, state: dict) -> Tensor | None:
        """The value of the regularisation term this scheme minimises, or None if it has none."""
        return None


_FUSED_MIN_NUMEL = 4096


def shape_groups(pieces: list[Tensor], min_large: int = _FUSED_MIN_NUMEL) -> tuple[list[int], list[list[int]]]:
    """``(large, groups)``: indices of the tensors of at least ``min_large`` elements (worth a kernel call of
    their own), and the others grouped by shape, dtype and device (each group can be stacked into one block,
    so that a pass over many small tensors is a few calls instead of one per tensor).

    Example:
        >>> shape_groups([torch.zeros(64, 64), torch.zeros(3), torch.zeros(2, 2), torch.zeros(3)])
        ([0], [[1, 3], [2]])
    """
    large, groups = [], {}
    for i, q in enumerate(pieces):
        if q.numel() >= min_large:
            large.append(i)
        else:
            groups.setdefault((tuple(q.shape), q.dtype, q.device), []).append(i)
    return large, list(groups.values())


def soft_threshold_(params: list[Tensor], threshold: float) -> None:
    """In place ``w <- sign(w) * max(|w| - threshold, 0)`` (exact zeros where ``|w| <= threshold``).

    Large tensors use ``softshrink`` in place (one read and one write; measured 4x faster on CPU than the
    three-pass ``w - clamp(w, -t, t)``); small ones share that three-pass form in ``torch._foreach_*``
    calls, where per-call overhead dominates (measured: stacking them into one ``softshrink`` and copying
    back is no faster). Both are bit-identical in float32/float64 (in 16-bit dtypes
    ``softshrink`` subtracts the threshold at float32 precision, the three-pass form a rounded threshold).

    Example:
        >>> w = [torch.tensor([-1.0, -0.2, 0.0, 0.3, 2.0])]
        >>> soft_threshold_(w, 0.5); w[0]
        tensor([-0.5000,  0.0000,  0.0000,  0.0000,  1.5000])
    """
    if threshold <= 0 or not params:
        return
    params = [local(p) for p in params]  # element-wise: on a sharded DTensor, its local shard in place
    small = []
    for p in params:
        if p.numel() >= _FUSED_MIN_NUMEL:
            torch._C._nn.softshrink(p, threshold, out=p)
        else:
            small.append(p)
    if small:
        clipped = torch._foreach_clamp_min(small, -threshold)
        torch._foreach_clamp_max_(clipped, threshold)
        torch._foreach_sub_(small, clipped)


def squared_norm(params: list[Tensor]) -> Tensor:
    """``sum ||w||^2`` over the tensors, as a 0-d tensor."""
    if not params:
        return torch.zeros(())
    return torch.stack(torch._foreach_norm(params, 2)).square().sum()


def l1_norm(params: list[Tensor]) -> Tensor:
    """``sum ||w||_1`` over the tensors, as a 0-d tensor."""
    if not params:
        return torch.zeros(())
    return torch.stack(torch._foreach_norm(params, 1)).sum()
