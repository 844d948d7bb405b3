"""The fused fast path: a self-applied scheme's decay inside one compiled Adam/AdamW/SGD update per tensor.

The general path (:mod:`lightning_wd.core.decay_step`) runs the scheme's passes before and after the
optimizer's own step: exact for any optimizer, but each pass reads and writes the tensors once more. Where
the optimizer is ``torch.optim.Adam``, ``AdamW`` or ``SGD`` with momentum and the scheme is ``decoupled``
or ``l2`` (where not native), ``l1``, ``elastic_net``, ``l2_sp`` or ``cautious``, the large tensors of a group
(2^18 elements and more) are instead updated by one compiled kernel (``torch.compile``, dynamic shapes: one
compilation per variant, paid once at fit start) that reads each tensor and its moments once, in torch's own
arithmetic, with the optimizer's own state (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, ``step``; SGD's
``momentum_buffer``): checkpoints are the same as the general path's.

The user's groups stay as they are: during the optimizer's own step the fused tensors' gradients are held
aside (it skips a tensor without one, as any tensor that got no gradient) and given back right after, so
the optimizer, its hooks and its state see the groups as built (a step post-hook sees no gradient on the
fused tensors). :class:`~lightning_wd.core.fused.path.FusedPath` says for each group which tensors took
which path and why: other optimizers, other schemes, native groups, capturable or differentiable groups,
sharded tensors (DTensor, FSDP1 pieces), 16-bit dtypes, small tensors, a gradient scaler and a missing
compiler mean the general path.
"""

from lightning_wd.core.fused.kernels import COMPILE_SECONDS
from lightning_wd.core.fused.path import FUSED_CHOICES, MIN_NUMEL, FusedPath, check_fused, scheme_variant

__all__ = ["COMPILE_SECONDS", "FUSED_CHOICES", "MIN_NUMEL", "FusedPath", "check_fused", "scheme_variant"]
