"""1. The callback vs the native optimizer doing the same decay, inside a Lightning training step."""

from __future__ import annotations

import statistics
import time

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

import lightning_wd

STRENGTH = 0.05


def few_large() -> nn.Module:
    return nn.Sequential(*[nn.Linear(1024, 1024, bias=False) for _ in range(4)])


def many_small() -> nn.Module:
    return nn.Sequential(*[nn.Linear(16, 16) for _ in range(120)])  # 240 tensors


def conv_bn() -> nn.Module:
    blocks = []
    for c_in, c_out in ((3, 32), (32, 64), (64, 64), (64, 128)):
        blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


SHAPES = {"4 x 1024^2": (few_large, (64, 1024)), "240 small tensors": (many_small, (64, 16)),
          "conv net + BatchNorm": (conv_bn, (16, 3, 16, 16))}


class StepTimer(Callback):
    """Wall time of every training step (batch start to batch end), after ``skip`` warm-up steps."""

    def __init__(self, skip: int = 5) -> None:
        self.skip, self.times, self._start = skip, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.skip:
            self.times.append(time.perf_counter() - self._start)


class Bench(LightningModule):
    def __init__(self, build, mode: str, impl: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net, self.mode, self.impl = build(), mode, impl

    def training_step(self, batch, batch_idx):
        return self.net(batch).float().square().mean()

    def configure_optimizers(self):
        kwargs = {"lr": 1e-3, self.impl: True}
        if self.mode == "native":
            return torch.optim.AdamW(lightning_wd.param_groups(self, STRENGTH), **kwargs)
        return torch.optim.AdamW(self.parameters(), weight_decay=0.0, **kwargs)


def _fit(build, input_shape, mode: str, impl: str, steps: int) -> list[float]:
    batch = input_shape[0]
    data = torch.utils.data.DataLoader(torch.randn(steps * batch, *input_shape[1:]), batch_size=batch)
    timer = StepTimer()
    callbacks = [timer]
    if mode != "native":
        callbacks.append(lightning_wd.WeightDecay(strength=STRENGTH, print_audit=False, native=mode == "callback"))
    trainer = Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=callbacks, num_sanity_val_steps=0)
    trainer.fit(Bench(build, mode, impl), data)
    return timer.times


QUICK = {"steps": StepTimer().skip + 1, "repeats": 1}  # the smoke test's sizes (one timed step per fit)


def run(steps: int = 60, repeats: int = 5) -> list[dict]:
    """Median step time: native AdamW groups vs the callback (native regroup) vs the callback self-applying."""
    rows = []
    for shape, (build, input_shape) in SHAPES.items():
        for impl in ("fused", "foreach"):
            samples = {"native": [], "callback": [], "callback (self-applied)": []}
            for _ in range(repeats):
                for mode in samples:
                    samples[mode] += _fit(build, input_shape, mode, impl, steps)
            med = {mode: statistics.median(times) for mode, times in samples.items()}
            rows.append({
                "shape": shape, "impl": impl, "native_ms": med["native"] * 1e3,
                "callback_ms": med["callback"] * 1e3, "self_applied_ms": med["callback (self-applied)"] * 1e3,
                "callback_ratio": med["callback"] / med["native"],
                "self_applied_ratio": med["callback (self-applied)"] / med["native"],
            })
    return rows
