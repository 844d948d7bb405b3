"""8. GPU (CUDA): every self-applied scheme's pass and whole step vs fused AdamW with its own decay, in
float32 and bfloat16, on the 23 M-parameter transformer's tensors and on 240 small tensors.

``fused_step_vs_native`` is the callback's step with the fused path on (``OptimizerDecay(fused=True)``: the
scheme's decay inside one compiled update per tensor of 2^18 elements and more, float32 only; bfloat16 tensors
take the general path, ``fused_tensors`` says how many were fused); ``compile_s`` its compilation, once.

Timed with CUDA events around ``number`` calls (the device is synchronised before reading them),
candidates interleaved, medians. Where no CUDA device is present, :func:`run` returns one row saying so and
measures nothing: these figures are not measured until the benchmarks run where a GPU is lent
(``python -m benchmarks.run --only gpu_fused``).
"""

from __future__ import annotations

import statistics

import torch

from benchmarks.common import TinyGPT
from benchmarks.scheme_passes import fused_step
from lightning_wd.core.schemes import get_scheme

SCHEMES = ("decoupled", "l1", "elastic_net", "group_lasso", "l2_sp", "cautious")
QUICK = {"repeats": 1, "number": 1, "dtypes": ("float32",), "sets": ("240 small tensors",)}


def available() -> bool:
    """Whether a CUDA device is there to measure on."""
    return torch.cuda.is_available()


def _tensors(kind: str, dtype: torch.dtype) -> list[torch.Tensor]:
    torch.manual_seed(0)
    if kind == "240 small tensors":
        base = [torch.randn(16, 16) for _ in range(240)]
    else:
        base = [p.detach() for p in TinyGPT().parameters()]
    return [p.to("cuda", dtype).requires_grad_() for p in base]


def _time(candidates: dict, repeats: int, number: int) -> dict[str, float]:
    samples = {name: [] for name in candidates}
    for fn in candidates.values():
        fn()
    torch.cuda.synchronize()
    for _ in range(repeats):
        for name, fn in candidates.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(number):
                fn()
            end.record()
            torch.cuda.synchronize()
            samples[name].append(start.elapsed_time(end) / 1e3 / number)
    return {name: statistics.median(v) for name, v in samples.items()}


def run(repeats: int = 11, number: int = 20, dtypes: tuple[str, ...] = ("float32", "bfloat16"),
        sets: tuple[str, ...] = ("transformer (23 M)", "240 small tensors")) -> list[dict]:
    if not available():
        return [{"status": "skipped: no CUDA device here, GPU figures not measured", "device": "-"}]
    rows = []
    device = torch.cuda.get_device_name()
    for kind in sets:
        for dtype_name in dtypes:
            params = _tensors(kind, getattr(torch, dtype_name))
            for p in params:
                p.grad = torch.randn_like(p) * 1e-3
            grads = [p.grad for p in params]
            native_opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=True)
            bare_opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=True)
            with torch.no_grad():
                for name in SCHEMES:
                    scheme, state = get_scheme(name), {}
                    scheme.prepare(params, state)

                    def apply(scheme=scheme, state=state, params=params, grads=grads):
                        scheme.before_update(params, grads, 1e-5, 1e-2, state)
                        scheme.after_update(params, 1e-5, 1e-2, state)

                    def step(scheme=scheme, state=state, params=params, grads=grads, bare_opt=bare_opt):
                        scheme.before_update(params, grads, 1e-5, 1e-2, state)
                        bare_opt.step()
                        scheme.after_update(params, 1e-5, 1e-2, state)

                    fast_opt, decay, compile_s = fused_step(params, name)
                    t = _time({"bare": lambda params=params: torch._foreach_mul_(params, 0.99999), "pass": apply,
                               "native": native_opt.step, "step": step, "fused": fast_opt.step}, repeats, number)
                    decay.uninstall()
                    rows.append({"status": "measured", "device": device, "tensors": kind, "dtype": dtype_name,
                                 "scheme": name, "pass_us": t["pass"] * 1e6, "pass_vs_bare": t["pass"] / t["bare"],
                                 "native_step_us": t["native"] * 1e6, "step_vs_native": t["step"] / t["native"],
                                 "fused_step_vs_native": t["fused"] / t["native"],
                                 "fused_tensors": f"{decay.fused.count}/{len(params)}", "compile_s": compile_s})
                    del fast_opt, decay
            del params, native_opt, bare_opt
            torch.cuda.empty_cache()
    return rows
