"""4. Scaling: the callback's per-step work as parameters (1e5 -> 1e8) and tensors (10 -> 10 000) grow.

Baseline: AdamW decaying the same tensors natively; native: the callback with AdamW regrouped;
self-applied: the callback's own ``_foreach_mul_`` pass with AdamW at ``weight_decay=0``.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.common import interleaved
from lightning_wd import WeightDecay, param_groups


class _Trainer:
    """The few trainer attributes ``WeightDecay.on_fit_start`` reads, for a model outside Lightning."""

    def __init__(self, optimizer) -> None:
        self.optimizers, self.lr_scheduler_configs = [optimizer], []
        self.estimated_stepping_batches, self.num_training_batches, self.accumulate_grad_batches = 1000, 10, 1


def _model(total: int, count: int) -> nn.Module:
    side = max(1, int((total / count) ** 0.5))
    return nn.ParameterList([nn.Parameter(torch.randn(side, side)) for _ in range(count)])


def _case(total: int, count: int, native: bool, repeats: int, number: int) -> dict:
    model = _model(total, count)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, foreach=True)
    callback = WeightDecay(strength=0.01, print_audit=False, native=native)
    callback.on_fit_start(_Trainer(opt), model)
    # the baseline decays the same tensors natively, so the difference is the callback's own work
    bare = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-3, foreach=True)
    def work():  # exactly what the callback adds around the optimizer's own step
        callback._before(0)
        callback._after(0)

    times = interleaved({"wrapped": lambda: opt.step(), "bare": lambda: bare.step(), "work": work},
                        repeats=repeats, number=number)
    callback._uninstall()
    return {"params": sum(p.numel() for p in model.parameters()), "tensors": count,
            "mode": "native" if native else "self-applied", "step_ms": times["wrapped"] * 1e3,
            "bare_step_ms": times["bare"] * 1e3, "step_difference_us": (times["wrapped"] - times["bare"]) * 1e6,
            "callback_work_us": times["work"] * 1e6, "callback_work_share": times["work"] / times["bare"],
            "callback_work_us_per_tensor": times["work"] * 1e6 / count}


def run(repeats: int = 5, number: int = 5, largest: int = 100_000_000) -> list[dict]:
    rows = []
    for total in (10**5, 10**6, 10**7, largest):
        rows.append(_case(total, 4, True, repeats, 2 if total >= 10**8 else number))
    for count in (10, 100, 1000, 10_000):
        for native in (True, False):
            rows.append(_case(1_000_000, count, native, repeats, number))
    return rows
