"""Drop-in cost (issue 11): one optimizer step with the callback's default path (groups kept) and the opt-in
split, against AdamW on hand-built groups; thread time, interleaved, medians. Run: python -m benchmarks.drop_in
"""
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

torch.set_num_threads(1)
def model():
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(8) for m in (nn.Linear(512, 512), nn.LayerNorm(512))])

def setup(kind, impl):
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

def time_step(opt, n=20):
    opt.step()
    t0 = time.thread_time()
    for _ in range(n):
        opt.step()
    return (time.thread_time() - t0) / n

for impl in ("foreach", "fused"):
    opts = {k: setup(k, impl) for k in ("reference", "default", "split")}
    samples = {k: [] for k in opts}
    for _ in range(15):
        for k, o in opts.items():
            samples[k].append(time_step(o))
    ref = statistics.median(samples["reference"])
    print(impl, {k: f"{statistics.median(v)*1e3:.2f} ms ({statistics.median(v)/ref:.3f}x)" for k, v in samples.items()})
