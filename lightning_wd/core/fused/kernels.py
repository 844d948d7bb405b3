"""The fused per-tensor update: torch's Adam arithmetic (weight_decay 0) with a scheme's decay, compiled once.

One function reads ``p, g, exp_avg, exp_avg_sq`` (and ``max_exp_avg_sq``, the reference) once and writes
``p`` and the moments once. It follows torch's eager Adam/AdamW step operation by operation (``lerp`` of
the first moment, ``mul`` + ``addcmul`` of the second, ``sqrt / bias_correction2_sqrt + eps``, ``addcdiv``
with ``-lr / bias_correction1``) with the scheme's decay where the general path applies it:

=========  ==============================================================  =========================
pre        before the update                                               schemes
=========  ==============================================================  =========================
``mul``    ``w <- w * (1 - rate)``                                         decoupled (not native)
``grad``   ``g <- g + c * w`` (coupled L2, on the gradient)                l2, elastic_net
``lerp``   ``w <- lerp(w, w0, rate)`` (torch's two-branch lerp)            l2_sp
=========  ==============================================================  =========================

=============  ======================================================  ===========================
post           after the update                                        schemes
=============  ======================================================  ===========================
``shrink``     ``softshrink(w, t)`` (exact zeros, as ``softshrink``)    l1, elastic_net
``cautious``   ``w <- w_new - rate * w * 1[(w_new - w) * w <= 0]``      cautious
=============  ======================================================  ===========================

The scalars come in one coefficient tensor (:data:`SLOTS`; float32 for float32 tensors, as torch's eager
kernels round their scalar arguments, float64 for float64) so that neither a new lr nor a new step
recompiles. Tensors are passed flattened, with dynamic shapes: one compilation per variant whatever the
sizes (:func:`compiled`), timed and kept in :data:`COMPILE_SECONDS`.
"""

from __future__ import annotations

import threading
import time
import types
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["COMPILE_SECONDS", "SGD_SLOTS", "SLOTS", "Variant", "compiled", "eager", "sgd_update_fn", "update_fn"]

#: Positions in the coefficient tensor.
SLOTS = {"one_minus_beta1": 0, "beta1": 1, "beta2": 2, "one_minus_beta2": 3, "bc2_sqrt": 4, "eps": 5,
         "neg_step_size": 6, "sign": 7, "a": 8, "b": 9}
#: The same positions as SGD with momentum's kernel reads them (``buf * keep + grad_weight * g``).
SGD_SLOTS = {"keep": 0, "grad_weight": 1, "momentum": 2, "neg_lr": 6, "a": 8, "b": 9}

#: ``(pre, post, amsgrad, maximize, m_low, ref_low)``; ``m_low``/``ref_low``: the weight of the first moment's lerp
#: (``1 - beta1``) / of l2_sp's lerp (the rate) is below 0.5, so that it takes the first of torch's two lerp
#: formulas (a variant with the other one is compiled where it is needed).
Variant = tuple[str, str, bool, bool, bool, bool]

#: Seconds each variant's compilation took in this process (compiled on first use, on one device type).
COMPILE_SECONDS: dict[tuple[Variant, str], float] = {}

_LOCK = threading.Lock()
_COMPILED: dict[tuple[Variant, str], Callable] = {}


def update_fn(variant: Variant) -> Callable[..., None]:
    """The update of ``variant`` as a plain torch function ``fn(p, g, m, v, vmax, ref, c)`` (in place).

    ``vmax`` (amsgrad) and ``ref`` (``lerp``) may be any tensor where the variant does not read them. Every branch
    is decided here, in Python, so that the compiled kernel does only the variant's arithmetic.

    Example:
        >>> p, g = torch.tensor([1.0, 0.105]), torch.tensor([0.5, 0.5])
        >>> m, v = torch.zeros(2), torch.zeros(2)
        >>> c = torch.tensor([0.1, 0.9, 0.999, 0.001, 0.001 ** 0.5, 1e-8, -0.1 / 0.1, 1.0, 0.0, 0.01])
        >>> update = update_fn(("none", "shrink", False, False, True, True))  # l1
        >>> update(p, g, m, v, p, p, c); p  # one Adam step of lr 0.1, then a soft threshold of 0.01
        tensor([0.8900, 0.0000])
    """
    pre, post, amsgrad, maximize, m_low, ref_low = variant

    def update(p: Tensor, g: Tensor, m: Tensor, v: Tensor, vmax: Tensor, ref: Tensor, c: Tensor) -> None:
        w = p
        if pre == "grad":
            g = g + c[8] * w  # grad.add_(param, alpha=c)
        if maximize:
            g = -g
        if pre == "mul":
            w = w * c[8]
        elif pre == "lerp":  # torch.lerp(w, ref, rate): weight < 0.5 ? w + weight * d : ref - d * (1 - weight)
            w = w + c[8] * (ref - w) if ref_low else ref - (ref - w) * c[9]
        # exp_avg.lerp_(grad, 1 - beta1)
        m_new = m + c[0] * (g - m) if m_low else g - (g - m) * c[1]
        v_new = v * c[2] + c[3] * g * g  # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m.copy_(m_new)
        v.copy_(v_new)
        if amsgrad:
            v_new = torch.maximum(vmax, v_new)
            vmax.copy_(v_new)
        # addcdiv_(exp_avg, denom, value=-step_size): self + value * t1 / t2, in ATen's order
        w_new = w + c[6] * m_new / (v_new.sqrt() / c[4] + c[5])
        if post == "shrink":
            t = c[9]
            w_new = torch.where(w_new > t, w_new - t, torch.where(w_new < -t, w_new + t, torch.zeros_like(w_new)))
        elif post == "cautious":  # addcmul_(w_old, 1[delta * w_old <= 0], value=-rate)
            keep = ((w_new - w) * w <= 0).to(w.dtype)
            w_new = w_new + c[9] * w * keep
        p.copy_(w_new)

    flags = [f for f, on in (("amsgrad", amsgrad), ("max", maximize), ("mhigh", not m_low), ("rhigh", not ref_low))
             if on]
    name = "_".join(["fused_adam", pre, post, *flags])
    # a code object of its own per variant: torch.compile caches (and limits) compilations per code object
    code = update.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, update.__globals__, name, None, update.__closure__)


def sgd_update_fn(variant: tuple) -> Callable[..., None]:
    """SGD with momentum (weight_decay 0) and the scheme's decay: ``fn(p, g, buf, _, _, ref, c)``, in place.

    ``variant`` is ``("sgd", pre, post, nesterov, maximize, ref_low)``; ``c`` holds ``momentum`` and
    ``1 - dampening`` in slots 0 and 1 (0 and 1 at the first step, where torch sets ``buf = grad``), the
    momentum in slot 2 (nesterov's, at every step), ``-lr`` in slot 6, the scheme's ``a`` and ``b`` in 8 and 9.
    torch's order: ``buf.mul_(momentum).add_(grad, alpha=1 - dampening)``, ``grad.add(buf, alpha=momentum)``
    (nesterov), ``param.add_(grad, alpha=-lr)``.

    Example:
        >>> p, g, buf = torch.tensor([1.0]), torch.tensor([0.5]), torch.zeros(1)
        >>> c = torch.tensor([0.0, 1.0, 0, 0, 0, 0, -0.1, 0, 0.99, 0])  # first step, lr 0.1, decoupled rate 0.01
        >>> sgd_update_fn(("sgd", "mul", "none", False, False, True))(p, g, buf, p, p, p, c); p, buf
        (tensor([0.9400]), tensor([0.5000]))
    """
    _, pre, post, nesterov, maximize, ref_low = variant

    def update(p: Tensor, g: Tensor, buf: Tensor, unused: Tensor, unused2: Tensor, ref: Tensor, c: Tensor) -> None:
        w = p
        if pre == "grad":
            g = g + c[8] * w
        if maximize:
            g = -g
        if pre == "mul":
            w = w * c[8]
        elif pre == "lerp":
            w = w + c[8] * (ref - w) if ref_low else ref - (ref - w) * c[9]
        buf_new = buf * c[0] + c[1] * g
        buf.copy_(buf_new)
        step = g + c[2] * buf_new if nesterov else buf_new  # c[2]: momentum, also at the first step
        w_new = w + c[6] * step
        if post == "shrink":
            t = c[9]
            w_new = torch.where(w_new > t, w_new - t, torch.where(w_new < -t, w_new + t, torch.zeros_like(w_new)))
        elif post == "cautious":
            keep = ((w_new - w) * w <= 0).to(w.dtype)
            w_new = w_new + c[9] * w * keep
        p.copy_(w_new)

    flags = [f for f, on in (("nesterov", nesterov), ("max", maximize), ("rhigh", not ref_low)) if on]
    name = "_".join(["fused_sgd", pre, post, *flags])
    code = update.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, update.__globals__, name, None, update.__closure__)


def eager(variant: Variant) -> Callable[..., None]:
    """The same update, not compiled."""
    return sgd_update_fn(variant) if variant[0] == "sgd" else update_fn(variant)


def compiled(variant: Variant, device_type: str) -> Callable[..., None]:
    """The compiled update of ``variant`` for tensors on ``device_type``, compiled and run once on small tensors
    here (so that a missing or broken compiler shows now, before any real tensor is touched).

    Raises:
        Exception: whatever the compiler raised (the caller falls back to the general path).
    """
    key = (variant, device_type)
    with _LOCK:
        found = _COMPILED.get(key)
        if found is not None:
            return found
        fn = torch.compile(eager(variant), dynamic=True, fullgraph=True)
        start = time.perf_counter()
        for dtype in (torch.float32, torch.float64):
            probe = [torch.zeros(64, dtype=dtype, device=device_type) for _ in range(6)]
            with torch.no_grad():
                fn(*probe, torch.ones(len(SLOTS), dtype=dtype, device=device_type))
        COMPILE_SECONDS[key] = time.perf_counter() - start
        _COMPILED[key] = fn
        return fn
