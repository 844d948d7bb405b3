"""A decay scheme defined outside the package, as a user would write one (importable as ``custom_scheme``).

Used by ``test_custom_scheme.py``: a recipe names it by class path, WeightDecay applies it, and a study
tunes its strength over the range it declares.
"""

from __future__ import annotations

import torch

from lightning_wd.core.schemes import Scheme


class HalfDecoupled(Scheme):
    """Decoupled decay at half the rate: ``w <- w * (1 - rate / 2)`` before each update (no native form).

    Example:
        >>> w = [torch.tensor([2.0, -4.0])]
        >>> HalfDecoupled().before_update(w, [torch.zeros(2)], rate=0.5, strength=1.0, state={}); w[0]
        tensor([ 1.5000, -3.0000])
    """

    name = "half_decoupled"
    search_range = (1e-4, 1e-1)

    def before_update(self, params, grads, rate, strength, state):
        if rate and params:
            torch._foreach_mul_(params, 1.0 - rate / 2)
