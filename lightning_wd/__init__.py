"""lightning_wd: weight decay as a first-class, measured part of PyTorch Lightning training.

Three ways in: :class:`WeightDecay` (a callback that retrofits the user's optimizer),
:func:`build_optimizer` (native param groups) and the ``lightning-wd`` command.
MLflow and Optuna are imported only where they are used.
"""

from lightning_wd.core.audit import AuditRow, GroupPlan
from lightning_wd.core.grouping import explain, param_groups, plan_groups
from lightning_wd.core.optim import GroupedOptimizer, build_optimizer
from lightning_wd.core.version import __version__

__all__ = [
    "AuditRow",
    "GroupPlan",
    "GroupedOptimizer",
    "WeightDecay",
    "__version__",
    "build_optimizer",
    "explain",
    "param_groups",
    "plan_groups",
]


def __getattr__(name: str):
    if name == "WeightDecay":  # the callback imports lightning (~4 s): load it on first use
        from lightning_wd.core.callback import WeightDecay

        return WeightDecay
    raise AttributeError(f"module 'lightning_wd' has no attribute {name!r}")
