"""3. Statistics: one pass vs a bare ``count_nonzero``; share of training time at the default interval."""

from __future__ import annotations

import torch

from benchmarks.common import interleaved
from benchmarks.step_overhead import SHAPES
from lightning_wd.core.stats import weight_stats

QUICK = {"repeats": 1, "number": 1}  # the smoke test's sizes (tests/test_benchmarks.py, --quick)


def run(interval: int = 50, repeats: int = 7, number: int = 10) -> list[dict]:
    rows = []
    for shape, (build, input_shape) in SHAPES.items():
        torch.manual_seed(0)
        model = build()
        params = [p for p in model.parameters()]
        names = [n for n, _ in model.named_parameters()]
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        x = torch.randn(*input_shape)

        def train_step():
            opt.zero_grad()
            model(x).float().square().mean().backward()
            opt.step()

        with torch.no_grad():
            bare = lambda: [torch.count_nonzero(p) for p in params]
            stats = lambda: weight_stats(names, params)
        times = interleaved({"step": train_step, "stats": stats, "bare": bare}, repeats=repeats, number=number)
        rows.append({"shape": shape, "stats_ms": times["stats"] * 1e3, "count_nonzero_ms": times["bare"] * 1e3,
                     "stats_vs_count_nonzero": times["stats"] / times["bare"], "step_ms": times["step"] * 1e3,
                     "share_at_interval": times["stats"] / (interval * times["step"] + times["stats"]),
                     "interval": interval})
    return rows
