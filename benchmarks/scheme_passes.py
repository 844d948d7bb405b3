"""2. Each self-applied scheme: its pass vs a bare ``_foreach_mul_`` (bandwidth floor), and the whole step."""

from __future__ import annotations

import torch

from benchmarks.common import interleaved
from lightning_wd.core.schemes import get_scheme

SELF_APPLIED = ("l1", "elastic_net", "group_lasso", "l2_sp", "cautious")


def tensors(kind: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    if kind == "4 x 1024^2":
        return [torch.randn(1024, 1024) for _ in range(4)]
    return [torch.randn(16, 16) for _ in range(240)]


QUICK = {"repeats": 1, "number": 1}  # the smoke test's sizes (tests/test_benchmarks.py, --quick)


def run(repeats: int = 5, number: int = 10) -> list[dict]:
    rows = []
    for kind in ("4 x 1024^2", "240 small tensors"):
        params = [p.requires_grad_() for p in tensors(kind)]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        grads = [p.grad for p in params]
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, foreach=True)
        with torch.no_grad():
            bare = lambda: torch._foreach_mul_(params, 0.9999)
            native = lambda: opt.step()
            for name in SELF_APPLIED:
                scheme, state = get_scheme(name), {}
                scheme.prepare(params, state)

                def apply(scheme=scheme, state=state):
                    scheme.before_update(params, grads, 1e-5, 1e-2, state)
                    scheme.after_update(params, 1e-5, 1e-2, state)

                def step(apply=apply):
                    apply()
                    opt.step()

                times = interleaved({"bare": bare, "pass": apply, "native": native, "step": step},
                                    repeats=repeats, number=number)
                rows.append({"tensors": kind, "scheme": name, "pass_us": times["pass"] * 1e6,
                             "bare_mul_us": times["bare"] * 1e6, "pass_vs_bare": times["pass"] / times["bare"],
                             "step_vs_native": times["step"] / times["native"]})
    return rows
