"""7. Drop-in cost (issue 11): one optimizer step with the callback's default path (groups kept) and the opt-in
split, against AdamW on hand-built groups; thread time, interleaved, medians. Run: python -m benchmarks.drop_in
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from lightning_wd import param_groups
from lightning_wd.core.decay_step import OptimizerDecay
from lightning_wd.core.planning import Planner
from lightning_wd.core.retrofit import split_groups
from lightning_wd.core.rules import GroupingRules
from lightning_wd.core.schedules import StrengthSchedule
from lightning_wd.core.schemes import get_scheme

KINDS = ("reference", "default", "split")
QUICK = {"repeats": 1, "number": 1}  # the smoke test's sizes (tests/test_benchmarks.py, --quick)


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(512, 512), nn.LayerNorm(512))])


def setup(kind: str, impl: str) -> torch.optim.Optimizer:
    """AdamW on hand-built groups (``reference``), or on the user's one group with the callback's decay installed
    (``default``: groups kept; ``split``: groups split first)."""
    m = model()
    flag = {impl: True}
    if kind == "reference":
        opt = torch.optim.AdamW(param_groups(m, 0.05), lr=1e-3, **flag)
    else:
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.05, **flag)
        planner = Planner(m, GroupingRules(), get_scheme("decoupled"))
        if kind == "split":
            split_groups(opt, planner.key, planner.order)
        decay = OptimizerDecay(opt, get_scheme("decoupled"), StrengthSchedule("constant", 0.05), planner.assign,
                               planner.names)
        decay.install()
    for p in m.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    return opt


def time_step(opt: torch.optim.Optimizer, n: int = 20) -> float:
    """Thread seconds per ``opt.step()``, after one warm-up step."""
    opt.step()
    t0 = time.thread_time()
    for _ in range(n):
        opt.step()
    return (time.thread_time() - t0) / n


def run(repeats: int = 15, number: int = 20) -> list[dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        for impl in ("foreach", "fused"):
            opts = {k: setup(k, impl) for k in KINDS}
            samples = {k: [] for k in opts}
            for _ in range(repeats):
                for k, o in opts.items():
                    samples[k].append(time_step(o, number))
            med = {k: statistics.median(v) for k, v in samples.items()}
            rows.append({"impl": impl, **{f"{k}_ms": med[k] * 1e3 for k in KINDS},
                         "default_ratio": med["default"] / med["reference"],
                         "split_ratio": med["split"] / med["reference"]})
        return rows
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    for row in run():
        print(row["impl"], {k: f"{row[f'{k}_ms']:.2f} ms ({row[f'{k}_ms'] / row['reference_ms']:.3f}x)"
                            for k in KINDS})
