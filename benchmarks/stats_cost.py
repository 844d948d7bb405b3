"""3. Statistics: one pass vs a bare ``count_nonzero`` per tensor; share of training time at the default interval.

Thread time with one intra-op thread, interleaved medians (see ``benchmarks.common``).
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import TinyGPT, interleaved, one_thread
from benchmarks.step_overhead import SHAPES
from lightning_wd.core.stats import weight_stats

QUICK = {"repeats": 1, "number": 1, "transformer": False}  # the smoke test's sizes (tests/test_benchmarks.py, --quick)


def _shapes(transformer: bool) -> dict:
    shapes = dict(SHAPES)
    if transformer:
        shapes["transformer (23 M)"] = (TinyGPT, None)
    return shapes


def run(interval: int = 50, repeats: int = 7, number: int = 10, transformer: bool = True) -> list[dict]:
    rows = []
    with one_thread():
        for shape, (build, input_shape) in _shapes(transformer).items():
            torch.manual_seed(0)
            model = build()
            params = [p for p in model.parameters()]
            names = [n for n, _ in model.named_parameters()]
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
            x = torch.randint(0, 8192, (4, 32)) if input_shape is None else torch.randn(*input_shape)

            def train_step():
                opt.zero_grad()
                model(x).float().square().mean().backward()
                opt.step()

            with torch.no_grad():
                bare = lambda: [torch.count_nonzero(p) for p in params]
                stats = lambda: weight_stats(names, params)
            n = number if input_shape is not None else max(1, number // 5)
            times = interleaved({"step": train_step, "stats": stats, "bare": bare}, repeats=repeats, number=n,
                                warmup=1, clock=time.thread_time)
            rows.append({"shape": shape, "stats_ms": times["stats"] * 1e3, "count_nonzero_ms": times["bare"] * 1e3,
                         "stats_vs_count_nonzero": times["stats"] / times["bare"], "step_ms": times["step"] * 1e3,
                         "share_at_interval": times["stats"] / (interval * times["step"] + times["stats"]),
                         "interval": interval})
    return rows
