"""The decay of one optimizer, applied around its step: functional, usable without a Trainer.

:class:`OptimizerDecay` leaves the optimizer's param groups as they are (count, order, tensors, every
key) and decides, group by group, how each tensor's decay is done:

* a group whose tensors all share one decision, on an optimizer that does the scheme itself
  (``Scheme.native`` equals :func:`~lightning_wd.core.retrofit.decay_kind`: AdamW for ``decoupled``,
  SGD/Adam/... for ``l2``), decays *natively*: during the step its ``weight_decay`` holds the strength
  (0 for an excluded group), so the optimizer's own kernel (fused, foreach or for-loop) does the work;
* any other group has ``weight_decay`` 0 during the step and its decayed tensors get the scheme's
  vectorised passes, in the arithmetic the optimizer would use (``w * (1 - lr * strength)`` before the
  update, as AdamW does; ``grad + strength * w``, as SGD does).

After the step every ``weight_decay`` is back to the user's value, so anything that reads the groups
(schedulers, callbacks, checkpoints, a resume without WeightDecay) sees the optimizer as it was built.

Example:
    >>> import torch
    >>> from lightning_wd.core.schemes import get_scheme
    >>> from lightning_wd.core.schedules import StrengthSchedule
    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)  # one group: weight and bias
    >>> decay = OptimizerDecay(opt, get_scheme("decoupled"), StrengthSchedule("constant", 0.5),
    ...                        assign=lambda p: ("decay", 1.0) if p.ndim > 1 else ("no_decay", 0.0))
    >>> before = model.weight.detach().clone()
    >>> model(torch.ones(1, 2)).sum().backward()
    >>> decay.install(); opt.step(); decay.uninstall()
    >>> torch.allclose(model.weight, before * (1 - 0.1 * 0.5) - 0.1 * model.weight.grad)
    True
    >>> len(opt.param_groups), opt.param_groups[0]["weight_decay"]
    (1, 0)
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lightning_wd.core.coupling import coefficient, decay_rate
from lightning_wd.core.distributed import full, like
from lightning_wd.core.flat_shards import grad_of, stepped
from lightning_wd.core.fused import FusedPath
from lightning_wd.core.retrofit import decay_kind
from lightning_wd.core.schedules import StrengthSchedule
from lightning_wd.core.schemes import Scheme

__all__ = ["Bucket", "OptimizerDecay", "refuse_scaled_fused"]

#: ``assign(param) -> (decision key, strength multiplier)``; a multiplier of 0 means "does not decay".
Assign = Callable[[Tensor], tuple[str, float]]


@dataclass
class Bucket:
    """Tensors of one optimizer group that share a decision (and so a strength multiplier)."""

    index: int  # of the group in optimizer.param_groups
    names: list[str]
    params: list[Tensor]
    multiplier: float
    lr0: float
    lr_max: float
    native: bool
    state: dict = field(default_factory=dict)
    pending: tuple = ()  # (active params, rate, strength) between before and after the update
    coupling: str = "lr"  # how the lr enters these tensors' decay (:mod:`lightning_wd.core.coupling`)


class OptimizerDecay:
    """Apply ``scheme`` at ``schedule``'s strength to the tensors of ``optimizer`` that ``assign`` decays.

    Args:
        optimizer: a torch optimizer; its groups are never split nor reordered.
        scheme: the decay rule.
        schedule: the strength over optimizer steps (relative to 1 when ``per_group_strength``).
        assign: ``param -> (key, multiplier)``; tensors of one group with the same key form one bucket.
        names: ``id(param) -> name``, for statistics and checkpoints.
        coupling: how the lr enters the rate (:mod:`lightning_wd.core.coupling`).
        native: let whole groups decay through the optimizer's own ``weight_decay`` where it does the scheme.
        per_group_strength: the strength of a group is its own ``weight_decay`` (the user's) times the
            schedule's value; otherwise the schedule's value is the strength.
        lr_max_of: ``group -> largest lr of the run`` (``corrected`` coupling; default: the group's lr0).
        group_scale: ``group -> factor`` on the multipliers of the group's tensors (``timescale_epochs``).
        coupling_of: ``param -> coupling`` per tensor (AdamC's per-layer ``corrected``); default: ``coupling``.
        fused: ``"auto"`` or True: the large tensors of Adam/AdamW/SGD groups take the fused step where the scheme has
            one (:mod:`lightning_wd.core.fused`; True also warns about the groups that cannot); False (the default
            here): the general path only.
        fused_min_numel: smallest tensor that takes the fused step (default
            :data:`~lightning_wd.core.fused.MIN_NUMEL`).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        scheme: Scheme,
        schedule: StrengthSchedule,
        assign: Assign,
        names: Mapping[int, str] | None = None,
        coupling: str = "lr",
        native: bool = True,
        per_group_strength: bool = False,
        lr_max_of: Callable[[dict], float] | None = None,
        group_scale: Callable[[dict], float] | None = None,
        coupling_of: Callable[[Tensor], str] | None = None,
        fused: str | bool = False,
        fused_min_numel: int | None = None,
    ) -> None:
        self.optimizer, self.scheme, self.schedule, self.assign = optimizer, scheme, schedule, assign
        self.names = dict(names or {})
        self.coupling, self.native, self.per_group_strength = coupling, native, per_group_strength
        self.lr_max_of, self.group_scale, self.coupling_of = lr_max_of, group_scale, coupling_of
        self.step_count = 0
        self.buckets: list[Bucket] = []
        self.native_groups: set[int] = set()
        self._group_count = 0
        self._original_step = None
        self._user_decay: dict[int, float] = {}
        self._has_after = type(scheme).after_update is not Scheme.after_update
        self.fused = FusedPath(optimizer, scheme, fused, fused_min_numel)
        self.add_groups()

    # ------------------------------------------------------------------ buckets
    def add_groups(self) -> list[Bucket]:
        """Classify the groups added since the last call (all of them at first); return their buckets."""
        new = []
        for index in range(self._group_count, len(self.optimizer.param_groups)):
            new += self._group_buckets(index)
        self._group_count = len(self.optimizer.param_groups)
        self.buckets += new
        self.fused.add(new)
        return new

    def _group_buckets(self, index: int) -> list[Bucket]:
        group = self.optimizer.param_groups[index]
        decided: dict[tuple[str, str], tuple[float, list[Tensor]]] = {}
        for param in group["params"]:
            key, multiplier = self.assign(param)
            coupling = self.coupling_of(param) if self.coupling_of else self.coupling
            decided.setdefault((key, coupling), (multiplier, []))[1].append(param)
        couplings = {coupling for _, coupling in decided}
        native = (
            self.native and len(decided) == 1 and self.scheme.native is not None and "weight_decay" in group
            and decay_kind(self.optimizer, group) == self.scheme.native
            and not (self.scheme.native == "decoupled" and couplings == {"none"})
        )
        if native:
            self.native_groups.add(index)
        lr0 = float(group.get("initial_lr", group["lr"]))
        lr_max = float(self.lr_max_of(group)) if self.lr_max_of else lr0
        scale = float(self.group_scale(group)) if self.group_scale else 1.0
        buckets = []
        for (_, coupling), (multiplier, params) in decided.items():
            if not multiplier:
                continue
            bucket = Bucket(index=index, names=[self.names.get(id(p), "?") for p in params], params=params,
                            multiplier=multiplier * scale, lr0=lr0, lr_max=max(lr_max, lr0), native=native,
                            coupling=coupling)
            self.scheme.prepare(params, bucket.state)
            buckets.append(bucket)
        return buckets

    # ------------------------------------------------------------------ strength
    def strength(self, bucket: Bucket, user_decay: float | None = None) -> float:
        """The strength lambda of ``bucket`` at the current step (its group's lr as it is now)."""
        group = self.optimizer.param_groups[bucket.index]
        lr = float(group["lr"])
        value = self.schedule(self.step_count, lr / bucket.lr0 if bucket.lr0 else 1.0) * bucket.multiplier
        if self.per_group_strength:
            value *= float(group.get("weight_decay", 0.0) if user_decay is None else user_decay)
        return value

    def rate(self, bucket: Bucket) -> float:
        """The decay rate of ``bucket`` at this step (``1 - rate`` is a decoupled scheme's factor), also inside a
        step, while the user's ``weight_decay`` is held aside."""
        lr = float(self.optimizer.param_groups[bucket.index]["lr"])
        strength = self.strength(bucket, self._user_decay.get(bucket.index))
        return decay_rate(bucket.coupling, strength, lr, bucket.lr0, bucket.lr_max)

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def before(self, fused: bool = True) -> None:
        """After the gradients are final, before the update: native ``weight_decay``, the passes and the fused
        updates (whose tensors the optimizer's own step then leaves out, until :meth:`FusedPath.restore`)."""
        if len(self.optimizer.param_groups) != self._group_count:
            self.add_groups()
        groups = self.optimizer.param_groups
        for bucket in self.buckets:
            group = groups[bucket.index]
            lr = float(group["lr"])
            strength = self.strength(bucket, self._user_decay.get(bucket.index))
            rate = decay_rate(bucket.coupling, strength, lr, bucket.lr0, bucket.lr_max)
            if bucket.native:
                value = coefficient(bucket.coupling, strength, lr, bucket.lr0, bucket.lr_max) \
                    if self.scheme.native == "decoupled" else strength
                group["weight_decay"] = self.scheme.native_strength(value)
                if not self._has_after:
                    continue
                active = stepped(bucket.params)
            else:
                active, fast = self.fused.split(bucket, stepped(bucket.params), rate) if fused else \
                    (stepped(bucket.params), [])
                self.scheme.before_update(active, [grad_of(p) for p in active], rate, strength, bucket.state)
                self.fused.step(bucket.index, fast, rate, strength, bucket.state)
            bucket.pending = (active, rate, strength)

    @torch.no_grad()
    def after(self) -> None:
        """After the update: proximal steps and anything that needs the update."""
        for bucket in self.buckets:
            if bucket.pending:
                active, rate, strength = bucket.pending
                self.scheme.after_update(active, rate, strength, bucket.state)
                bucket.pending = ()
        self.step_count += 1

    def _hold_decay(self) -> None:
        """Keep the user's ``weight_decay`` values aside and zero them for the step."""
        self._user_decay = {}
        for index, group in enumerate(self.optimizer.param_groups):
            if "weight_decay" in group:
                self._user_decay[index] = group["weight_decay"]
                group["weight_decay"] = 0.0

    def _give_back_decay(self) -> None:
        groups = self.optimizer.param_groups
        for index, value in self._user_decay.items():
            if index < len(groups):
                groups[index]["weight_decay"] = value
        self._user_decay = {}

    def step(self, original: Callable, closure: Callable | None = None, **kwargs):
        """One optimizer step with the decay: ``before`` after the closure, ``after`` after the update."""
        self._hold_decay()
        if closure is None and self.fused.active:  # the fused updates run inside the step, after its pre-hooks
            closure = _no_closure
        try:
            if closure is None:
                self.before()
                output = original(**kwargs)
            else:
                ran = []

                def wrapped():
                    result = closure()
                    if not ran:
                        ran.append(True)
                        self.before()
                    return result

                output = original(closure=wrapped, **kwargs)
                if not ran:  # an optimizer that did not call the closure has stepped every tensor already
                    self.before(fused=False)
        finally:
            self.fused.restore()
            self._give_back_decay()
        self.after()
        return output

    def install(self) -> None:
        """Wrap ``optimizer.step`` so that every call applies the decay (undo with :meth:`uninstall`)."""
        if self._original_step is not None:
            return
        optimizer = self.optimizer
        original = optimizer.step
        self._original_step = (original, "step" in optimizer.__dict__)
        decay = self

        def step(opt, closure=None, **kwargs):
            return decay.step(original, closure, **kwargs)

        if hasattr(original, "_wrapped_by_lr_sched"):
            # torch's LR schedulers mark the step they patched and warn ("optimizer.step() has been overridden
            # after learning rate scheduler initialization") when the mark is gone: keep it, as we call theirs.
            step._wrapped_by_lr_sched = True
        optimizer.step = types.MethodType(step, optimizer)

    def uninstall(self) -> None:
        """Give the optimizer its own ``step`` back."""
        if self._original_step is None:
            return
        original, had_own = self._original_step
        if had_own:
            self.optimizer.step = original
        else:
            self.optimizer.__dict__.pop("step", None)
        self._original_step = None

    # ------------------------------------------------------------------ state
    def persistent_state(self) -> dict[str, dict[str, Tensor]]:
        """``{state key: {tensor name: tensor}}`` for the keys the scheme keeps in checkpoints."""
        out: dict[str, dict[str, Tensor]] = {}
        for key in self.scheme.persistent_state:
            for bucket in self.buckets:
                # full tensors (a collective for sharded ones: every rank saves): checkpoints hold whole tensors
                values = bucket.state.get(key, [])
                out.setdefault(key, {}).update((n, full(v, p)) for n, v, p in zip(bucket.names, values, bucket.params))
        return out

    def load_persistent_state(self, key: str, values: Mapping[str, Tensor], argument: str = "reference") -> None:
        """Set ``state[key]`` of every bucket from ``{name: tensor}`` (laid out like each tensor: device, dtype, shard).

        Raises:
            ValueError: a decayed tensor has no entry (the message names ``argument`` and the tensors).
        """
        for bucket in self.buckets:
            missing = [n for n in bucket.names if n not in values]
            if missing:
                raise ValueError(f"`{argument}` has no tensor for {missing[:3]} (and {len(missing)} in all)")
            bucket.state[key] = [like(values[n], p) for n, p in zip(bucket.names, bucket.params)]


def _no_closure() -> None:
    return None


def refuse_scaled_fused(trainer, decays: list[OptimizerDecay], scheme: Scheme) -> None:
    """Raise where a ``fused=True`` torch optimizer would unscale the gradients inside its step under 16-mixed
    precision: the decay passes, which run before the step, would see scaled gradients.

    Raises:
        ValueError: naming the optimizer and what works instead.
    """
    scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
    if scaler is None:
        return
    self_applied = type(scheme).after_update is not Scheme.after_update
    for decay in decays:
        passes = self_applied or any(not b.native for b in decay.buckets)
        if passes and getattr(decay.optimizer, "_step_supports_amp_scaling", False):
            raise ValueError(
                f"WeightDecay: {type(decay.optimizer).__name__} with fused=True unscales gradients inside step() "
                f"under 16-mixed precision, so {scheme.name} decay would see scaled gradients; use "
                "fused=False or precision='bf16-mixed'"
            )
