"""Which tensors take the fused step, and the step itself (see :mod:`lightning_wd.core.fused`)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lightning_wd.core import flat_shards
from lightning_wd.core.distributed import is_sharded
from lightning_wd.core.fused.kernels import COMPILE_SECONDS, SGD_SLOTS, SLOTS, compiled
from lightning_wd.core.messages import one_line
from lightning_wd.core.schemes import Scheme

__all__ = ["FUSED_CHOICES", "MIN_NUMEL", "FusedPath", "check_fused", "scheme_variant"]

#: Allowed values of ``fused``.
FUSED_CHOICES = ("auto", True, False)

#: Tensors below this many elements keep the general path: there a compiled call's fixed cost (about 30 µs on
#: CPU) outweighs the pass it saves (measured, benchmarks/RESULTS.md section 2).
MIN_NUMEL = 1 << 18

_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
_DTYPES = (torch.float32, torch.float64)
_NOTICED: set[str] = set()
_NATIVE = "native"  # the optimizer decays the group itself


def check_fused(value) -> str | bool:
    """``value`` if it is one of :data:`FUSED_CHOICES`.

    Raises:
        ValueError: naming ``fused`` and the allowed values.

    Example:
        >>> check_fused("auto"), check_fused(False)
        ('auto', False)
    """
    if not any(value is c or (isinstance(c, str) and value == c) for c in FUSED_CHOICES):
        raise ValueError(f"`fused` must be 'auto', True or False, got {value!r}")
    return value


def scheme_variant(scheme: Scheme) -> tuple[str, str] | None:
    """``(pre, post)`` of the fused kernel that does ``scheme`` (:mod:`~lightning_wd.core.fused.kernels`), or None.

    The ``fused_variant`` that the scheme's own class declares (a subclass may change the rule: not inherited).

    Example:
        >>> from lightning_wd.core.schemes import get_scheme
        >>> scheme_variant(get_scheme("l1")), scheme_variant(get_scheme("group_lasso"))
        (('none', 'shrink'), None)
    """
    return vars(type(scheme)).get("fused_variant")


def _notice(message: str) -> None:
    if message not in _NOTICED:
        _NOTICED.add(message)
        warnings.warn(message, stacklevel=3)


@dataclass
class GroupPath:
    """How the decayed tensors of one optimizer group are stepped, and why."""

    index: int
    fused: list[Tensor] = field(default_factory=list)
    general: dict[str, int] = field(default_factory=dict)  # reason -> tensors

    def describe(self) -> str:
        numel = sum(p.numel() for p in self.fused)
        parts = [f"{len(self.fused)} fused ({numel / 1e6:.1f}M elements)"] if self.fused else []
        parts += [f"{n} native" if why == _NATIVE else f"{n} general ({why})" for why, n in self.general.items()]
        return f"group {self.index}: " + ", ".join(parts)


class FusedPath:
    """The fused Adam/AdamW + decay step of some tensors of one :class:`~lightning_wd.core.decay_step.OptimizerDecay`.

    Args:
        optimizer: the user's optimizer (its groups stay as they are; during the step the fused tensors' gradients
            are held aside, so that its own update skips them, and given back right after).
        scheme: the decay rule.
        mode: ``"auto"``, True (as auto, and the groups that cannot take it are warned about) or False.
        min_numel: smallest tensor that takes the fused step (default :data:`MIN_NUMEL`).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheme: Scheme, mode: str | bool = "auto",
                 min_numel: int | None = None) -> None:
        self.optimizer, self.scheme, self.mode = optimizer, scheme, check_fused(mode)
        self.min_numel = MIN_NUMEL if min_numel is None else int(min_numel)
        self.variant = scheme_variant(scheme)
        self._sgd = type(optimizer) is torch.optim.SGD
        self.groups: dict[int, GroupPath] = {}
        self._fused_ids: set[int] = set()
        self._kernels: dict = {}
        self._held: list[tuple[Tensor, Tensor]] = []
        self.compile_seconds = 0.0

    # ------------------------------------------------------------------ plan
    def _group_reason(self, group: dict, native: bool) -> str | None:
        if self.mode is False:
            return "fused=False"
        if type(self.optimizer) not in _OPTIMIZERS:
            return f"no fused form for {type(self.optimizer).__name__} (Adam, AdamW and SGD with momentum have one)"
        if self.variant is None:
            return f"no fused form for scheme {self.scheme.name}"
        if self.mode == "auto" and not self.scheme.fused_by_default:
            return f"fused='auto' keeps {self.scheme.name} general: its fused step is not measured faster (fused=True)"
        if native:
            return _NATIVE
        for option in ("capturable", "differentiable"):
            if group.get(option):
                return f"{option}=True"
        if any(torch.is_tensor(group.get(k)) for k in ("lr", "eps", "momentum", "dampening")) or any(
                torch.is_tensor(b) for b in group.get("betas", ())):
            return "a tensor lr/betas/eps/momentum"
        if self._sgd and not group["momentum"]:
            return "SGD without momentum"
        if flat_shards.tracking():
            return "FSDP1 flat pieces"
        return None

    def _tensor_reason(self, p: Tensor) -> str | None:
        if is_sharded(p):
            return "sharded DTensor"
        if p.dtype not in _DTYPES:
            return f"{p.dtype} (float32 and float64 are fused)"
        if p.numel() < self.min_numel:
            return f"under {self.min_numel} elements"
        if not p.is_contiguous() or p.is_sparse or p.device.type not in ("cpu", "cuda"):
            return "layout or device"
        if self.mode == "auto" and p.device.type != "cpu":
            return f"fused='auto' fuses on CPU only: not yet verified on {p.device.type} (fused=True)"
        return None

    def add(self, buckets: Iterable) -> None:
        """Decide the path of the tensors of ``buckets`` (new buckets of the decay)."""
        for bucket in buckets:
            group = self.optimizer.param_groups[bucket.index]
            path = self.groups.setdefault(bucket.index, GroupPath(bucket.index))
            reason = self._group_reason(group, bucket.native)
            for p in bucket.params:
                why = reason or self._tensor_reason(p)
                if why is None and not self._kernel(self._variant(group, 0.0), p.device.type):
                    why = "no compiler"
                if why is None:
                    path.fused.append(p)
                    self._fused_ids.add(id(p))
                else:
                    path.general[why] = path.general.get(why, 0) + 1
            if self.mode is True and set(path.general) - {_NATIVE}:
                _notice(f"WeightDecay(fused=True): {path.describe()}")

    def _variant(self, group: dict, rate: float) -> tuple:
        if self._sgd:
            return ("sgd", *self.variant, bool(group["nesterov"]), bool(group["maximize"]), rate < 0.5)
        return (*self.variant, bool(group["amsgrad"]), bool(group["maximize"]), 1 - float(group["betas"][0]) < 0.5,
                rate < 0.5)

    def _kernel(self, variant: tuple, device_type: str):
        """The compiled kernel of ``variant`` (compiled now if it is new; None where compiling failed)."""
        key = variant, device_type
        if key not in self._kernels:
            try:
                self._kernels[key] = compiled(*key)
                self.compile_seconds += COMPILE_SECONDS.get(key, 0.0)
            except Exception as error:  # no compiler, or it failed: the general path, said once
                self._kernels[key] = None
                _notice(f"WeightDecay: the fused step could not be compiled ({one_line(error, 200)}); the general "
                        "path runs instead")
        return self._kernels[key]

    def describe(self) -> list[str]:
        """One line per group with decayed tensors: how many are fused, how many general and why."""
        return [path.describe() for _, path in sorted(self.groups.items())]

    @property
    def active(self) -> bool:
        """Whether any tensor takes the fused step."""
        return bool(self._fused_ids)

    @property
    def count(self) -> int:
        """How many tensors take the fused step (when they have a gradient)."""
        return len(self._fused_ids)

    # ------------------------------------------------------------------ step
    def split(self, bucket, params: list[Tensor], rate: float) -> tuple[list[Tensor], list[Tensor]]:
        """``(general, fused)``: this step's tensors of ``bucket`` (at decay rate ``rate``) that take each path."""
        group = self.optimizer.param_groups[bucket.index]
        if not self._fused_ids or self._step_reason() or self._group_reason(group, bucket.native):
            return params, []
        general, fused = [], []
        for p in params:
            (fused if id(p) in self._fused_ids and self._ready(p) else general).append(p)
        variant = self._variant(group, rate)
        if any(self._kernel(variant, t) is None for t in {p.device.type for p in fused}):
            return params, []  # a variant first needed now, which did not compile (said once)
        return general, fused

    def _step_reason(self) -> str | None:
        opt = self.optimizer
        if getattr(opt, "grad_scale", None) is not None or getattr(opt, "found_inf", None) is not None:
            return "gradient scaler"
        return None

    def _ready(self, p: Tensor) -> bool:
        g = p.grad
        if g is None or g.is_sparse or g.dtype != p.dtype or not g.is_contiguous() or not p.is_contiguous():
            return False
        state = self.optimizer.state.get(p)
        return not state or all(not torch.is_tensor(t) or t.dim() == 0 or (t.is_contiguous() and t.dtype == p.dtype)
                                for t in state.values())

    @torch.no_grad()
    def step(self, index: int, params: list[Tensor], rate: float, strength: float, state: dict) -> None:
        """The fused update of ``params`` (of group ``index``); their gradients are held aside until
        :meth:`restore`, so that the optimizer's own step leaves them out."""
        if not params:
            return
        opt, group = self.optimizer, self.optimizer.param_groups[index]
        if self._sgd:
            return self._sgd_step(group, params, rate, strength, state)
        grads, m, v, vmax, steps = [], [], [], [], []
        opt._init_group({**group, "params": params}, [], grads, m, v, vmax, steps)
        torch._foreach_add_(steps, 1)
        values = torch.stack([s.detach().to("cpu", torch.float64) for s in steps]).tolist()
        amsgrad, variant = bool(group["amsgrad"]), self._variant(group, rate)
        beta1, beta2 = (float(b) for b in group["betas"])
        lr, eps = float(group["lr"]), float(group["eps"])
        a, b = self.scheme.fused_coefficients(rate, strength)
        references = self.scheme._references(params, state) if self.variant[0] == "lerp" else params
        cache: dict = {}
        for i, p in enumerate(params):
            key = (values[i], p.dtype, p.device)
            c = cache.get(key)
            if c is None:
                c = cache[key] = _coefficient_tensor(values[i], lr, beta1, beta2, eps, bool(group["maximize"]), a, b,
                                                     p.dtype, p.device)
            kernel = self._kernel(variant, p.device.type)
            flat = p.detach().view(-1)  # detached views share the storage (the kernel writes in place)
            kernel(flat, grads[i].detach().view(-1), m[i].view(-1), v[i].view(-1),
                   vmax[i].view(-1) if amsgrad else flat,
                   references[i].detach().view(-1) if references is not params else flat, c)
        self._hold(params)

    def _hold(self, params: list[Tensor]) -> None:
        for p in params:  # the optimizer's own step skips a tensor without a gradient
            self._held.append((p, p.grad))
            p.grad = None

    def _sgd_step(self, group: dict, params: list[Tensor], rate: float, strength: float, state: dict) -> None:
        """SGD with momentum: the buffer is the optimizer's ``momentum_buffer`` (created at the first step, where
        torch sets it to the gradient: ``0 * 0 + 1 * grad`` here)."""
        variant, (a, b) = self._variant(group, rate), self.scheme.fused_coefficients(rate, strength)
        momentum, dampening, lr = float(group["momentum"]), float(group["dampening"]), float(group["lr"])
        references = self.scheme._references(params, state) if self.variant[0] == "lerp" else params
        cache: dict = {}
        for p, ref in zip(params, references):
            own = self.optimizer.state[p]
            first = own.get("momentum_buffer") is None
            if first:
                own["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format).detach()
            key = (first, p.dtype, p.device)
            c = cache.get(key)
            if c is None:
                values = [0.0] * len(SLOTS)
                keep, grad_weight = (0.0, 1.0) if first else (momentum, 1 - dampening)
                values[SGD_SLOTS["keep"]], values[SGD_SLOTS["grad_weight"]] = keep, grad_weight
                values[SGD_SLOTS["momentum"]], values[SGD_SLOTS["neg_lr"]] = momentum, -lr
                values[SGD_SLOTS["a"]] = a
                values[SGD_SLOTS["b"]] = 1 - _rounded(a, p.dtype) if b is None else b
                c = cache[key] = torch.tensor(values, dtype=p.dtype).to(p.device, non_blocking=True)
            flat = p.detach().view(-1)
            self._kernel(variant, p.device.type)(flat, p.grad.detach().view(-1), own["momentum_buffer"].view(-1),
                                                 flat, flat, ref.detach().view(-1) if ref is not p else flat, c)
        self._hold(params)
    def restore(self) -> None:
        """Give the fused tensors their gradients back (the same tensors), after the optimizer's step."""
        for p, grad in self._held:
            p.grad = grad
        self._held = []


def _coefficient_tensor(step: float, lr: float, beta1: float, beta2: float, eps: float, maximize: bool, a: float,
                        b: float | None, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The step's scalars as torch's eager kernels see them: each rounded to the tensors' dtype as it is passed
    (the ``1 - weight`` of a lerp from the rounded weight, as the kernel forms it)."""
    def rounded(x: float) -> float:
        return _rounded(x, dtype)

    bias_correction1, bias_correction2 = 1 - beta1 ** step, 1 - beta2 ** step
    w1 = rounded(1 - beta1)
    values = [0.0] * len(SLOTS)
    values[SLOTS["one_minus_beta1"]], values[SLOTS["beta1"]] = w1, 1 - w1
    values[SLOTS["beta2"]], values[SLOTS["one_minus_beta2"]] = beta2, 1 - beta2
    values[SLOTS["bc2_sqrt"]], values[SLOTS["eps"]] = bias_correction2 ** 0.5, eps
    values[SLOTS["neg_step_size"]] = -(lr / bias_correction1)
    values[SLOTS["sign"]] = -1.0 if maximize else 1.0
    values[SLOTS["a"]], values[SLOTS["b"]] = a, 1 - rounded(a) if b is None else b
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def _rounded(x: float, dtype: torch.dtype) -> float:
    """``x`` as a tensor of ``dtype`` holds it (how torch's eager kernels see a Python scalar argument)."""
    return float(torch.tensor(x, dtype=dtype))
