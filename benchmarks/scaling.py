"""4. Scaling: the callback's per-step work as parameters (1e5 -> 1e8) and tensors (10 -> 10 000) grow.

Baseline: AdamW decaying the same tensors natively; native: the callback with AdamW regrouped;
self-applied: the callback's own ``_foreach_mul_`` pass with AdamW at ``weight_decay=0``.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from benchmarks.common import interleaved
from lightning_wd import WeightDecay, param_groups


class _Trainer(L.Trainer):
    """A real (quiet, CPU) Trainer holding ``optimizer``, for a model stepped outside ``fit``.

    Only what ``fit`` would have computed from a dataloader is fixed here (1000 steps of 10 batches); every
    other attribute the callback reads (precision plugin, schedulers, accumulation, loggers, ...) is the
    Trainer's own, so the benchmark keeps running when the callback starts reading one more.
    """

    estimated_stepping_batches = 1000
    num_training_batches = 10

    def __init__(self, optimizer) -> None:
        super().__init__(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
        self.optimizers = [optimizer]


def _model(total: int, count: int) -> nn.Module:
    side = max(1, int((total / count) ** 0.5))
    return nn.ParameterList([nn.Parameter(torch.randn(side, side)) for _ in range(count)])


def _case(total: int, count: int, native: bool, repeats: int, number: int) -> dict:
    model = _model(total, count)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, foreach=True)
    callback = WeightDecay(strength=0.01, print_audit=False, native=native)
    trainer = _Trainer(opt)
    callback.on_fit_start(trainer, model)
    # the baseline decays the same tensors natively, so the difference is the callback's own work
    bare = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-3, foreach=True)
    decay = callback.decays[0]

    def work():  # exactly what the callback adds around the optimizer's own step
        decay.before()
        decay.after()

    times = interleaved({"wrapped": lambda: opt.step(), "bare": lambda: bare.step(), "work": work},
                        repeats=repeats, number=number)
    callback.on_fit_end(trainer, model)
    return {"params": sum(p.numel() for p in model.parameters()), "tensors": count,
            "mode": "native" if native else "self-applied", "step_ms": times["wrapped"] * 1e3,
            "bare_step_ms": times["bare"] * 1e3, "step_difference_us": (times["wrapped"] - times["bare"]) * 1e6,
            "callback_work_us": times["work"] * 1e6, "callback_work_share": times["work"] / times["bare"],
            "callback_work_us_per_tensor": times["work"] * 1e6 / count}


QUICK = {"repeats": 1, "number": 1, "totals": (10**4,), "counts": (10,), "count_total": 10**4}  # smoke-test sizes


def run(repeats: int = 5, number: int = 5, totals: tuple[int, ...] = (10**5, 10**6, 10**7, 10**8),
        counts: tuple[int, ...] = (10, 100, 1000, 10_000), count_total: int = 1_000_000) -> list[dict]:
    """Parameters growing over ``totals`` in 4 tensors, then ``count_total`` parameters over ``counts`` tensors."""
    rows = []
    for total in totals:
        rows.append(_case(total, 4, True, repeats, 2 if total >= 10**8 else number))
    for count in counts:
        for native in (True, False):
            rows.append(_case(count_total, count, native, repeats, number))
    return rows
