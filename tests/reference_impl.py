"""Naive reference implementations of the decay schemes and of two optimizers, for the tests.

Deliberately slow and obvious: one function per scheme, acting on ONE tensor, with Python loops over
elements (or rows). Each scheme function does a whole optimizer step for its tensor:

    new_w = scheme(w, g, update, rate, strength, ...)

where ``g`` is the loss gradient and ``update(grad)`` is the optimizer's step for that tensor: it
advances the optimizer's state and returns the change ``delta`` the optimizer makes to ``w``
(``w <- w + delta``). ``rate`` is the decay multiplier of the step (``lr * strength``).
"""

from __future__ import annotations

import math

from torch import Tensor


# ----------------------------------------------------------------------------- helpers
def soft(x: float, t: float) -> float:
    """Soft-thresholding of one number: ``sign(x) * max(|x| - t, 0)``."""
    if x > t:
        return x - t
    if x < -t:
        return x + t
    return 0.0


def units(w: Tensor) -> list[Tensor]:
    """The output units of ``w`` (views): rows/channels of an ndim >= 2 tensor; else the whole tensor."""
    if w.ndim >= 2:
        return [w[i] for i in range(w.shape[0])]
    return [w]


# ----------------------------------------------------------------------------- schemes
def decoupled(w, g, update, rate, strength):
    w = w * (1 - rate)  # AdamW: shrink first, then the optimizer's update (from the unmodified gradient)
    return w + update(g)


def l2(w, g, update, rate, strength):
    return w + update(g + strength * w)  # the gradient of strength/2 ||w||^2 added to the loss gradient


def l1(w, g, update, rate, strength):
    w = (w + update(g)).clone()
    flat = w.view(-1)
    for k in range(flat.numel()):
        flat[k] = soft(flat[k].item(), rate)
    return w


def elastic_net(w, g, update, rate, strength, l1_ratio):
    w = (w + update(g + strength * (1 - l1_ratio) * w)).clone()
    flat = w.view(-1)
    for k in range(flat.numel()):
        flat[k] = soft(flat[k].item(), rate * l1_ratio)
    return w


def group_lasso(w, g, update, rate, strength):
    w = (w + update(g)).clone()
    for unit in units(w):
        size = unit.numel()
        norm = math.sqrt(sum(x * x for x in unit.reshape(-1).tolist()))
        scale = max(0.0, 1 - rate * math.sqrt(size) / norm) if norm > 0 else 0.0
        unit.mul_(scale)
    return w


def l2_sp(w, g, update, rate, strength, reference):
    w = w - rate * (w - reference)  # a step toward the reference, then the optimizer's update
    return w + update(g)


def cautious(w, g, update, rate, strength):
    delta = update(g)
    new = (w + delta).clone()
    for k in range(w.numel()):
        # u = -delta / lr is the update direction; decay where u * w >= 0, i.e. delta * w <= 0
        if delta.reshape(-1)[k].item() * w.reshape(-1)[k].item() <= 0:
            new.view(-1)[k] -= rate * w.reshape(-1)[k].item()
    return new


def _norm(values: list[float]) -> float:
    return math.sqrt(sum(x * x for x in values))


def target_norm(w, g, update, rate, strength, target):
    """Weight norm control (Loshchilov 2023): w <- w - rate * (w - target * w / |w|), then the update."""
    norm = _norm(w.reshape(-1).tolist())
    factor = 1 - rate + (rate * target / norm if norm > 0 else 0.0)
    w = w.clone()
    flat = w.view(-1)
    for k in range(flat.numel()):
        flat[k] = flat[k].item() * factor
    return w + update(g)


def selective_projection(w, g, update, rate, strength, reference):
    """SPD (Tian et al. 2024), one layer: c = <g, w - w0>; after the update, if c > 0, project the deviation back
    by r = strength * max(0, |w~ - w0| - |w - w0|) / |w~ - w0|."""
    flat_w, flat_g, flat_r = w.reshape(-1).tolist(), g.reshape(-1).tolist(), reference.reshape(-1).tolist()
    c = sum(gk * (wk - rk) for gk, wk, rk in zip(flat_g, flat_w, flat_r))
    before = _norm([wk - rk for wk, rk in zip(flat_w, flat_r)])
    new = (w + update(g)).clone()
    after = _norm([nk - rk for nk, rk in zip(new.reshape(-1).tolist(), flat_r)])
    if c > 0 and after > 0:
        r = strength * max(0.0, after - before) / after
        flat = new.view(-1)
        for k in range(flat.numel()):
            flat[k] = flat[k].item() - r * (flat[k].item() - flat_r[k])
    return new


SCHEMES = {
    "decoupled": decoupled, "l2": l2, "l1": l1, "elastic_net": elastic_net, "group_lasso": group_lasso,
    "l2_sp": l2_sp, "cautious": cautious, "target_norm": target_norm, "selective_projection": selective_projection,
}


# ----------------------------------------------------------------------------- penalties
def penalty(name: str, ws: list[Tensor], strength: float, l1_ratio: float = 0.5, references=None) -> float:
    total = 0.0
    for i, w in enumerate(ws):
        values = w.reshape(-1).tolist()
        if name == "l2":
            total += 0.5 * strength * sum(x * x for x in values)
        elif name == "l1":
            total += strength * sum(abs(x) for x in values)
        elif name == "elastic_net":
            total += strength * (l1_ratio * sum(abs(x) for x in values)
                                 + 0.5 * (1 - l1_ratio) * sum(x * x for x in values))
        elif name == "group_lasso":
            for unit in units(w):
                total += strength * math.sqrt(unit.numel()) * math.sqrt(sum(x * x for x in unit.reshape(-1).tolist()))
        elif name == "l2_sp":
            ref = references[i].reshape(-1).tolist()
            total += 0.5 * strength * sum((x - r) ** 2 for x, r in zip(values, ref))
    return total


# ----------------------------------------------------------------------------- optimizers (per tensor)
class SGDMomentum:
    """torch.optim.SGD(lr, momentum) for one tensor: ``buf <- mu * buf + g`` (``buf = g`` at first)."""

    def __init__(self, lr: float, momentum: float) -> None:
        self.lr, self.momentum, self.buf = lr, momentum, None

    def __call__(self, g: Tensor) -> Tensor:
        self.buf = g.clone() if self.buf is None else self.momentum * self.buf + g
        return -self.lr * self.buf


class Adam:
    """torch.optim.Adam(lr, betas, eps) for one tensor, with bias correction."""

    def __init__(self, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = self.v = None
        self.t = 0

    def __call__(self, g: Tensor) -> Tensor:
        self.t += 1
        self.m = (1 - self.b1) * g if self.m is None else self.b1 * self.m + (1 - self.b1) * g
        self.v = (1 - self.b2) * g * g if self.v is None else self.b2 * self.v + (1 - self.b2) * g * g
        m_hat = self.m / (1 - self.b1 ** self.t)
        v_hat = self.v / (1 - self.b2 ** self.t)
        return -self.lr * m_hat / (v_hat.sqrt() + self.eps)
