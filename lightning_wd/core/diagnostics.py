"""Equilibrium diagnostics of weight decay: how far each tensor is from its steady state, at the statistics interval.

With ``w`` a decayed tensor before an optimizer step, ``w'`` after it, ``Δ = w' - w``, ``g`` the loss gradient
of that step (as ``on_before_optimizer_step`` sees it: after accumulation and AMP unscaling, before clipping),
``η`` the group's lr and ``r`` the decay rate of the step (the factor ``1 - r`` decoupled decay multiplies ``w``
by; ``r = η·λ`` under the default lr coupling, see :mod:`lightning_wd.core.coupling`):

========================  ==============================================  ==========================================
metric                    per tensor                                      over all decayed tensors
========================  ==============================================  ==========================================
``wd/grad_weight_ratio``  ``‖g‖ / ‖w‖``                                   ``sqrt(Σ‖g‖²) / sqrt(Σ‖w‖²)``
``wd/update_weight_ratio`` ``‖Δ‖ / ‖w‖``                                  ``sqrt(Σ‖Δ‖²) / sqrt(Σ‖w‖²)``
``wd/angular_update``     ``∠(w, w')`` in radians (Kosson et al. 2024)    the angle between the concatenations
``wd/equilibrium_ratio``  ``(‖g‖/‖w‖) / sqrt(2r/η²)``                     ``sqrt(Σ η²‖g‖² / Σ 2r‖w‖²)``
``wd/stable_rank``        ``‖W‖_F² / σ_max(W)²`` (ndim >= 2, as ``(out, -1)``)  the mean over matrices
========================  ==============================================  ==========================================

``equilibrium_ratio`` is reported for decoupled decay only (a scheme whose ``native`` is ``"decoupled"``). For
an SGD-like update ``w' = (1 - r) w - η g`` with ``g ⟂ w`` (scale-invariant layers), ``E‖w'‖² = (1-r)²‖w‖² +
η²‖g‖²``: the norm is at its steady state when ``η²‖g‖² = 2r‖w‖²``, i.e. ``‖g‖/‖w‖ = sqrt(2λ/η)`` with
``r = ηλ`` (Defazio 2025; Kosson et al. 2024). A ratio above 1 means the norm still grows, below 1 that it
shrinks. With AdamC's ``corrected`` coupling ``r = λη²/η_max`` and the target is ``sqrt(2λ/η_max)``.

The angle uses Kahan's formula for a needle-like triangle with sides ``‖w‖``, ``‖w'‖``, ``‖Δ‖`` (accurate for
angles far below ``sqrt(eps)``, where ``arccos`` of the cosine rounds to 0). Every norm is a sum of squares,
so under sharded training (FSDP2 ``DTensor``s) each rank sums its shards and one all-reduce per interval gives
the whole tensors' values. The stable rank's power iteration (10 iterations at the first interval, then one per
interval warm-started from the previous vector, so it converges over a run while the weights move slowly)
needs one all-reduce per iteration there; FSDP1's flat pieces hold no whole rows, so tensors kept as such
pieces have no stable rank.

Cost: ``w`` is copied only on the step before a logging step (a transient copy of the decayed tensors, freed at
the log); the other steps pay one integer comparison in the hook.

Example:
    >>> import math
    >>> round(angle_from_sides(1.0, 1.0, math.sqrt(2.0)), 12) == round(math.pi / 2, 12)
    True
    >>> w = torch.diag(torch.tensor([3.0, 1.0]))
    >>> round(stable_ranks([w], iterations=50)[0], 6)  # (9 + 1) / 9
    1.111111
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_wd.core.distributed import all_reduce_sum, contribution, flat_shard, local, needs_collective
from lightning_wd.core.flat_shards import grad_of, stepped

__all__ = ["DIAGNOSTICS", "Diagnostics", "angle_from_sides", "stable_ranks"]

DIAGNOSTICS = ("grad_weight_ratio", "update_weight_ratio", "angular_update", "equilibrium_ratio", "stable_rank")


def angle_from_sides(a: float, b: float, c: float) -> float:
    """The angle between the sides ``a`` and ``b`` of a triangle whose third side is ``c`` (radians).

    Kahan's stable form: with ``a >= b``, ``μ = c - (a - b)`` if ``b >= c`` else ``b - (a - c)``, and
    ``angle = 2 atan(sqrt(((a - b) + c) μ / ((a + (b + c)) ((a - c) + b))))``. NaN if ``a`` or ``b`` is 0.

    Example:
        >>> angle_from_sides(2.0, 2.0, 0.0), round(angle_from_sides(1.0, 1.0, 1.0), 12) == round(math.pi / 3, 12)
        (0.0, True)
    """
    if a < b:
        a, b = b, a
    if b <= 0.0:
        return math.nan
    mu = c - (a - b) if b >= c else b - (a - c)
    numerator = ((a - b) + c) * mu
    denominator = (a + (b + c)) * ((a - c) + b)
    if numerator <= 0.0:
        return 0.0 if denominator > 0.0 else math.pi  # rounding at the degenerate ends
    if denominator <= 0.0:
        return math.pi
    return 2.0 * math.atan(math.sqrt(numerator / denominator))


def _matrix(tensor: Tensor) -> Tensor:
    m = local(tensor.detach())
    m = m.reshape(m.shape[0], math.prod(tensor.shape[1:]))
    return m.float() if m.dtype in (torch.float16, torch.bfloat16) else m


@functools.lru_cache(maxsize=256)
def _fresh(side: int) -> Tensor:
    """A unit vector drawn from a generator seeded by ``side`` (the same on every rank and in every call)."""
    v = torch.randn(side, generator=torch.Generator().manual_seed(side), dtype=torch.float64)
    return v / v.norm()


def _start(vectors: dict, key, side: int, dtype: torch.dtype, device) -> Tensor:
    """The previous vector of ``key`` or the fresh one of ``side``, so that sharded and single-process runs iterate
    alike. Exact zeros of a previous vector (columns that were zero, e.g. under L1) are refilled from the fresh
    draw, so that directions that come back are found again."""
    fresh = _fresh(side).to(device=device, dtype=dtype)
    v = vectors.get(key)
    if v is None or v.shape != (side,):
        return fresh
    v = v.to(device=device, dtype=dtype)
    return _unit(torch.where(v == 0, fresh * 1e-3, v))  # on the device: no host sync


def _unit(v: Tensor) -> Tensor:
    return v / v.norm().clamp_min(torch.finfo(v.dtype).tiny)


def _batches(mats: list[Tensor], small: int = 1 << 16) -> list[list[int]]:
    """Indices of matrices iterated together: small ones of one shape, dtype and device are stacked (one ``bmm``
    for many), large ones alone (no copy: reading them in place is cheaper than stacking)."""
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(mats):
        key = (tuple(m.shape), m.dtype, m.device) if m.numel() <= small else (i,)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


@torch.no_grad()
def stable_ranks(matrices: list[Tensor], iterations: int = 10, vectors: dict | None = None,
                 keys: Iterable | None = None, warm_iterations: int | None = None) -> list[float]:
    """``‖W‖_F² / σ_max²`` of each tensor (``ndim >= 2``, viewed as ``(shape[0], -1)``), by power iteration.

    ``v <- WᵀW v / ‖WᵀW v‖`` from a fixed (or the previous) start, then ``σ_max² ≈ ‖W v‖²``. The estimate of
    ``σ_max`` grows monotonically toward the true value, so the stable rank is approached from above, with an
    error of order ``(σ_2/σ_1)^(2k)`` after ``k`` iterations. Two matrix-vector products per iteration, reading
    large weights in place; small matrices of one shape are stacked and iterated in one ``bmm``. ``vectors`` (a
    dict, updated in place, keyed by ``keys``) warm-starts the iteration from a previous call, with
    ``warm_iterations`` (default: ``iterations``) when every matrix has a previous vector. A zero matrix has no
    stable rank (NaN).

    Sharded tensors (FSDP2 ``DTensor``s, dim-0 shards: whole rows per rank) in a multi-process run: each rank
    multiplies its rows and the products ``W_rᵀ W_r v`` are summed over ranks, one all-reduce per iteration
    (every rank must call this at the same step).

    Example:
        >>> w = torch.tensor([[2.0, 0.0], [0.0, 2.0]])  # two equal singular values
        >>> [round(r, 6) for r in stable_ranks([w])]
        [2.0]
    """
    if not matrices:
        return []
    keys = list(range(len(matrices))) if keys is None else list(keys)
    vectors = {} if vectors is None else vectors
    collective = needs_collective(matrices)
    mats = [_matrix(w) for w in matrices]
    weights = [contribution(w) if collective else 1.0 for w in matrices]  # a replica counts once (on rank 0)
    warm = all(vectors.get(key) is not None and vectors[key].shape == (m.shape[1],) for key, m in zip(keys, mats))
    if warm and warm_iterations is not None:
        iterations = warm_iterations
    if collective:
        vs = [_start(vectors, key, m.shape[1], m.dtype, m.device) for key, m in zip(keys, mats)]
        for _ in range(iterations):
            products = [torch.mv(m.T, torch.mv(m, v)) for m, v in zip(mats, vs)]
            flat = all_reduce_sum(torch.cat([w * p for w, p in zip(weights, products)]))
            vs = [_unit(p) for p in torch.split(flat, [m.shape[1] for m in mats])]
        sigma_sq = torch.stack([torch.mv(m, v).double().square().sum() for m, v in zip(mats, vs)])
    else:  # one batch of small matrices of one shape at a time: starts, iterations and sigma in stacked ops
        vs, sigmas = [None] * len(mats), [None] * len(mats)
        for members in _batches(mats):
            first = mats[members[0]]
            stack = torch.stack([mats[i] for i in members]) if len(members) > 1 else first.unsqueeze(0)
            fresh = _fresh(first.shape[1]).to(device=first.device, dtype=first.dtype)
            previous = [vectors.get(keys[i]) for i in members]
            v = torch.stack([p.to(device=first.device, dtype=first.dtype) if p is not None and p.shape == fresh.shape
                             else fresh for p in previous])
            v = torch.where(v == 0, fresh * 1e-3, v).unsqueeze(2)  # refill exact zeros (see _start)
            v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
            for _ in range(iterations):
                v = torch.bmm(stack.transpose(1, 2), torch.bmm(stack, v))
                v = v / v.norm(dim=1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
            sigma = torch.bmm(stack, v).double().square().sum(dim=(1, 2))
            for j, i in enumerate(members):
                vs[i], sigmas[i] = v[j, :, 0], sigma[j]
        sigma_sq = torch.stack(sigmas)
    frobenius_sq = torch.stack(_norms(mats)).double().square()
    sums = torch.stack([sigma_sq, frobenius_sq]) * torch.tensor(weights, dtype=torch.float64, device=sigma_sq.device)
    sigma_sq, frobenius_sq = (all_reduce_sum(sums) if collective else sums).cpu().tolist()
    for key, v in zip(keys, vs):
        vectors[key] = v
    return [f / s if f > 0 and s > 0 else math.nan for s, f in zip(sigma_sq, frobenius_sq)]


@dataclass
class _Snapshot:
    after: int  # the global step this snapshot's update produces
    names: list[str]
    params: list[Tensor]
    before: list[Tensor]  # copies of the local parts (become -Δ in place at the log)
    w_sq: Tensor  # (n,) float64 ‖w‖² before the update, this rank's part
    grad_sq: Tensor  # (n,) float64, this rank's part
    lr: list[float]
    rate: list[float]
    decoupled: list[bool]


class Diagnostics:
    """The equilibrium diagnostics of the decayed tensors of ``OptimizerDecay`` objects (see the module docstring).

    Call :meth:`snapshot` in ``on_before_optimizer_step`` (it copies only when :meth:`due`) and :meth:`compute`
    at the logging step; under sharded training every rank must call both at the same steps.

    Args:
        per_tensor: also return ``wd/<metric>/<tensor name>``.
        iterations: power iterations of the stable rank at the first interval.
        warm_iterations: power iterations at each later interval, from the previous vector (each reads every
            matrix twice: at the default 1 the stable rank costs about what 2/7 of a training step does).

    Example:
        >>> d = Diagnostics()
        >>> d.due(step=49, every=50), d.due(step=48, every=50), d.due(step=98, every=50, total=99)
        (True, False, True)
    """

    def __init__(self, per_tensor: bool = True, iterations: int = 10, warm_iterations: int = 1) -> None:
        self.per_tensor, self.iterations, self.warm_iterations = per_tensor, iterations, warm_iterations
        self.snapshots: dict[int, _Snapshot] = {}
        self.vectors: dict[str, Tensor] = {}

    @staticmethod
    def due(step: int, every: int, total: float | None = None) -> bool:
        """Whether the update from ``step`` (global step before it) ends at a logging step (or at the last step)."""
        after = step + 1
        return after % max(1, every) == 0 or (total is not None and math.isfinite(total) and after == int(total))

    @torch.no_grad()
    def snapshot(self, decays, step: int) -> None:
        """Copy the decayed tensors of ``decays`` that have a gradient, their ``‖g‖²``, lr and decay rate."""
        names, params, lrs, rates, decoupled = [], [], [], [], []
        for decay in decays:
            for bucket in decay.buckets:
                lr = float(decay.optimizer.param_groups[bucket.index]["lr"])
                rate = decay.rate(bucket)
                index = {id(p): n for n, p in zip(bucket.names, bucket.params)}
                for p in stepped(bucket.params):  # every rank packs the same tensors for the all-reduce
                    names.append(index[id(p)])
                    params.append(p)
                    lrs.append(lr)
                    rates.append(rate)
                    decoupled.append(decay.scheme.native == "decoupled")
        if not params:
            return
        pieces = [local(p.detach()) for p in params]
        grads = [local(grad_of(p).detach()) for p in params]
        grad_sq = torch.stack(_norms(grads)).double().square()
        w_sq = torch.stack(_norms(pieces)).double().square()
        before = torch._foreach_mul(pieces, 1.0)  # the copies, in one foreach call
        key = id(decays[0].optimizer) if decays else 0
        self.snapshots[key] = _Snapshot(step + 1, names, params, before, w_sq, grad_sq, lrs, rates, decoupled)

    @torch.no_grad()
    def compute(self, decays, step: int) -> dict[str, float]:
        """The ``wd/*`` diagnostics at global step ``step`` (snapshots of other steps are dropped)."""
        snaps = [s for s in self.snapshots.values() if s.after == step]
        self.snapshots = {}
        stats: dict[str, float] = {}
        if snaps:
            stats.update(self._step_metrics(snaps))
        stats.update(self._stable_rank(decays))
        return stats

    def _step_metrics(self, snaps: list[_Snapshot]) -> dict[str, float]:
        names = [n for s in snaps for n in s.names]
        params = [p for s in snaps for p in s.params]
        before = [b for s in snaps for b in s.before]
        after = [local(p.detach()) for p in params]
        torch._foreach_sub_(before, after)  # -Δ, in the snapshot's own memory
        packed = torch.stack([
            torch.cat([s.w_sq for s in snaps]), torch.stack(_norms(after)).double().square(),
            torch.stack(_norms(before)).double().square(), torch.cat([s.grad_sq for s in snaps]),
        ])  # (4, n)
        if needs_collective(params):
            weights = torch.tensor([contribution(p) for p in params], dtype=torch.float64, device=packed.device)
            packed = all_reduce_sum(packed * weights)
        w_sq, w2_sq, d_sq, g_sq = packed.cpu().tolist()  # the one host sync
        lrs = [x for s in snaps for x in s.lr]
        rates = [x for s in snaps for x in s.rate]
        decoupled = [x for s in snaps for x in s.decoupled]
        stats = _ratios("", sum(w_sq), sum(w2_sq), sum(d_sq), sum(g_sq))
        growth = sum(lr * lr * g for lr, g, dec in zip(lrs, g_sq, decoupled) if dec)
        shrink = sum(2.0 * r * w for r, w, dec in zip(rates, w_sq, decoupled) if dec)
        if shrink > 0:
            stats["wd/equilibrium_ratio"] = math.sqrt(growth / shrink)
        if self.per_tensor:
            for i, name in enumerate(names):
                stats.update(_ratios(f"/{name}", w_sq[i], w2_sq[i], d_sq[i], g_sq[i]))
                if decoupled[i] and rates[i] > 0 and w_sq[i] > 0:
                    stats[f"wd/equilibrium_ratio/{name}"] = math.sqrt(lrs[i] ** 2 * g_sq[i] / (2 * rates[i] * w_sq[i]))
        return stats

    def _stable_rank(self, decays) -> dict[str, float]:
        names, mats = [], []
        for decay in decays:
            for bucket in decay.buckets:
                for name, p in zip(bucket.names, bucket.params):
                    if p.ndim >= 2 and p.numel() and flat_shard(p) is None:  # FSDP1 pieces hold no whole rows
                        names.append(name)
                        mats.append(p)
        if not mats:
            return {}
        ranks = stable_ranks(mats, self.iterations, self.vectors, names, self.warm_iterations)
        valid = [(n, r) for n, r in zip(names, ranks) if not math.isnan(r)]
        stats = {"wd/stable_rank": sum(r for _, r in valid) / len(valid)} if valid else {}
        if self.per_tensor:
            stats.update({f"wd/stable_rank/{n}": r for n, r in valid})
        return stats


def _ratios(suffix: str, w_sq: float, w2_sq: float, d_sq: float, g_sq: float) -> dict[str, float]:
    if w_sq <= 0:
        return {}
    norm = math.sqrt(w_sq)
    out = {f"wd/grad_weight_ratio{suffix}": math.sqrt(g_sq) / norm,
           f"wd/update_weight_ratio{suffix}": math.sqrt(d_sq) / norm}
    angle = angle_from_sides(norm, math.sqrt(w2_sq), math.sqrt(d_sq))
    if not math.isnan(angle):
        out[f"wd/angular_update{suffix}"] = angle
    return out


def _norms(tensors: list[Tensor]) -> list[Tensor]:
    low = [t.dtype in (torch.float16, torch.bfloat16) for t in tensors]
    return list(torch._foreach_norm([t.float() if lo else t for t, lo in zip(tensors, low)]))
