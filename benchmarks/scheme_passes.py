"""2. Each self-applied scheme: its pass vs a bare ``_foreach_mul_`` (bandwidth floor), and the whole step
vs fused AdamW doing its own decay, on four parameter sets, for both paths side by side:

* ``step_vs_native``: the general path (the scheme's passes around fused AdamW without decay);
* ``fused_step_vs_native``: the callback's step (:class:`~lightning_wd.core.decay_step.OptimizerDecay` with
  ``fused=True``): tensors of 2^18 elements and more in the compiled fused update
  (:mod:`lightning_wd.core.fused`), the others as in the general path (``fused_tensors`` says how many);
  ``decoupled`` is native there (the optimizer's own decay). ``compile_s`` is the compilation of the
  scheme's fused kernel (once per process, not in the step times).

Thread time (``time.thread_time``) with one intra-op thread, candidates interleaved, medians: on a shared
machine what other processes do is left out of the figures.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import TinyGPT, interleaved, one_thread
from benchmarks.step_overhead import conv_bn
from lightning_wd.core.decay_step import OptimizerDecay
from lightning_wd.core.fused import COMPILE_SECONDS
from lightning_wd.core.schedules import StrengthSchedule
from lightning_wd.core.schemes import get_scheme

SELF_APPLIED = ("decoupled", "l1", "elastic_net", "group_lasso", "l2_sp", "cautious")
SETS = ("4 x 1024^2", "240 small tensors", "conv net + BatchNorm", "transformer (23 M)")


def tensors(kind: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    if kind == "4 x 1024^2":
        return [torch.randn(1024, 1024) for _ in range(4)]
    if kind == "240 small tensors":
        return [torch.randn(16, 16) for _ in range(240)]
    model = conv_bn() if kind.startswith("conv") else TinyGPT()
    return [p.detach().clone() for p in model.parameters()]


def fused_step(params: list[torch.Tensor], name: str):
    """A fused AdamW without decay, with the scheme installed through OptimizerDecay(fused=True); the seconds
    its fused kernel took to compile (0 where it was already compiled in this process, or has none)."""
    before = dict(COMPILE_SECONDS)
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=True)
    decay = OptimizerDecay(opt, get_scheme(name), StrengthSchedule("constant", 1e-2), assign=lambda p: ("decay", 1.0),
                           fused=True)
    decay.install()
    return opt, decay, sum(v for k, v in COMPILE_SECONDS.items() if k not in before)


QUICK = {"repeats": 1, "number": 1, "sets": SETS[:2]}  # the smoke test's sizes (tests/test_benchmarks.py, --quick)


def run(repeats: int = 7, number: int = 5, sets: tuple[str, ...] = SETS) -> list[dict]:
    rows = []
    with one_thread():
        for kind in sets:
            params = [p.requires_grad_() for p in tensors(kind)]
            for p in params:
                p.grad = torch.randn_like(p) * 1e-3
            grads = [p.grad for p in params]
            native_opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=True)
            bare_opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=True)
            times = max(1, number if kind != SETS[3] else number // 2)
            with torch.no_grad():
                bare = lambda: torch._foreach_mul_(params, 0.99999)
                native = lambda: native_opt.step()
                for name in SELF_APPLIED:
                    scheme, state = get_scheme(name), {}
                    scheme.prepare(params, state)

                    def apply(scheme=scheme, state=state):
                        scheme.before_update(params, grads, 1e-5, 1e-2, state)
                        scheme.after_update(params, 1e-5, 1e-2, state)

                    def step(scheme=scheme, state=state):
                        scheme.before_update(params, grads, 1e-5, 1e-2, state)
                        bare_opt.step()
                        scheme.after_update(params, 1e-5, 1e-2, state)

                    fast_opt, decay, compile_s = fused_step(params, name)
                    t = interleaved({"bare": bare, "pass": apply, "native": native, "step": step,
                                     "fused": fast_opt.step}, repeats=repeats, number=times, warmup=1,
                                    clock=time.thread_time)
                    decay.uninstall()
                    rows.append({"tensors": kind, "scheme": name, "pass_us": t["pass"] * 1e6,
                                 "bare_mul_us": t["bare"] * 1e6, "pass_vs_bare": t["pass"] / t["bare"],
                                 "native_step_us": t["native"] * 1e6, "step_vs_native": t["step"] / t["native"],
                                 "fused_step_vs_native": t["fused"] / t["native"],
                                 "fused_tensors": f"{decay.fused.count}/{len(params)}",
                                 "compile_s": compile_s})
    return rows
