"""``WeightDecay``: exact, explainable weight decay for an existing Lightning project, in one line."""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_wd.core.grouping import GroupPlan, _as_patterns, check_strength, fingerprint, plan_groups
from lightning_wd.core.retrofit import decay_kind, expand_schedulers, regroup_is_safe, split_groups
from lightning_wd.core.schedules import SCHEDULES, StrengthSchedule
from lightning_wd.core.schemes import SCHEMES, GroupLasso, Scheme, get_scheme
from lightning_wd.core.stats import weight_stats

__all__ = ["LR_COUPLINGS", "WeightDecay"]

LR_COUPLINGS = ("lr", "lr_ratio", "none", "corrected")


def _number(value: float, argument: str) -> float:
    """``check_strength`` with a ValueError also for a value of the wrong type (constructor arguments)."""
    try:
        return check_strength(value, argument)
    except TypeError as error:
        raise ValueError(str(error)) from None


@dataclass
class _Bucket:
    """Tensors of one optimizer group that share a strength multiplier."""

    optimizer: torch.optim.Optimizer
    index: int  # of the group in optimizer.param_groups
    names: list[str]
    params: list[torch.Tensor]
    multiplier: float
    native: bool
    lr0: float
    lr_max: float
    state: dict = field(default_factory=dict)
    step: tuple = ()  # (active params, rate, strength) between before and after the update

    @property
    def group(self) -> dict:
        # Looked up each time, never held: `optimizer.load_state_dict` (a resumed fit restores the optimizer
        # after fit start) replaces the group dicts, and a stale one would neither see the LR scheduler's lr
        # nor pass our weight_decay to the optimizer.
        return self.optimizer.param_groups[self.index]


class WeightDecay(Callback):
    """Retrofit the user's optimizer(s) with the decay asked for, on exactly the right tensors.

    Where the optimizer can do the scheme natively and exactly (AdamW for ``decoupled``; SGD, Adam,
    RMSprop, ... for ``l2`` and the L2 part of ``elastic_net``), its groups are split so it does
    (zero extra passes) and its LR schedulers are rewritten to match; if a scheduler cannot be proven
    to survive that, the groups are kept and the decay is applied in one ``torch._foreach_*`` pass.
    Everything else (proximal L1, group lasso, L2-SP, cautious) runs as vectorised passes around each
    real optimizer step: after the gradients are final (after accumulation and clipping) and before
    the update, and after the update.

    A tensor that the optimizer holds but that is frozen at fit start (unfrozen later, as in finetuning)
    is grouped by the rules like a trainable one: it decays once it receives gradients. Checkpoints keep
    the step counters and the ``l2_sp`` reference weights; resuming with a different parameter ->
    optimizer-group layout (e.g. another ``exclude`` when the groups are split) raises ``RuntimeError``.

    Args:
        scheme: one of ``decoupled`` (default), ``l2``, ``l1``, ``elastic_net``, ``group_lasso``,
            ``l2_sp``, ``cautious``.
        strength: the decay strength lambda (>= 0).
        l1_ratio: ``elastic_net`` mixing parameter in [0, 1] (scikit-learn's meaning).
        schedule: ``constant``, ``linear``, ``cosine``, ``warmup_cosine``, ``step``, ``lr`` or a callable
            ``fn(optimizer_step) -> strength``.
        final_strength: strength at the end of a decaying schedule.
        warmup_steps: linear warmup of the strength, in optimizer steps.
        timescale_epochs: instead of ``strength``: the EMA timescale ``1 / (lr * lambda)`` in epochs
            (Wang & Aitchison 2024); lambda is derived per group from its initial lr and the optimizer
            steps per epoch, so a setting transfers across dataset and batch size.
        lr_coupling: how lr enters the decay rate: ``lr`` (``lr * lambda``, PyTorch), ``lr_ratio``
            (``lambda * lr / lr0``), ``none`` (``lambda``), ``corrected`` (``lambda * lr^2 / lr_max``, AdamC).
        exclude, include, multipliers, exclude_bias, exclude_1d, exclude_norm, exclude_embeddings,
            use_model_no_weight_decay: grouping rules (:func:`lightning_wd.plan_groups`).
        reference: ``l2_sp`` only: a state dict (or a path to one) of the weights to decay toward;
            default: the weights at the start of training.
        zero_tolerance: statistics count ``|w| <= zero_tolerance`` as zero.
        log_every_n_steps: statistics interval in optimizer steps (default: the Trainer's); the statistics
            are also logged once at the end of training (rank zero only; each entry goes to ``history``).
        per_layer_stats: also log ``wd/nonzero_fraction/<tensor>`` and ``wd/weight_norm/<tensor>``.
        print_audit: print the grouping table at fit start (rank zero).
        native: let the optimizer decay natively where it can (False: always self-applied).

    Raises:
        ValueError: an argument out of range, with its name and the allowed values.

    Example:
        >>> cb = WeightDecay(scheme="l1", strength=1e-3, schedule="cosine", exclude=["head.*"])
        >>> cb.hparams["scheme"], cb.hparams["schedule"]
        ('l1', 'cosine')
    """

    def __init__(
        self,
        scheme: str = "decoupled",
        strength: float = 0.0,
        l1_ratio: float = 0.5,
        schedule: str | Callable[[int], float] = "constant",
        final_strength: float | None = None,
        warmup_steps: int = 0,
        timescale_epochs: float | None = None,
        lr_coupling: str = "lr",
        exclude: list[str] | None = None,
        include: list[str] | None = None,
        multipliers: dict[str, float] | None = None,
        exclude_bias: bool = True,
        exclude_1d: bool = True,
        exclude_norm: bool = True,
        exclude_embeddings: bool = False,
        use_model_no_weight_decay: bool = True,
        reference: str | Mapping[str, torch.Tensor] | None = None,
        zero_tolerance: float = 0.0,
        log_every_n_steps: int | None = None,
        per_layer_stats: bool = True,
        print_audit: bool = True,
        native: bool = True,
    ) -> None:
        if not isinstance(scheme, str) or scheme not in SCHEMES:
            raise ValueError(f"`scheme` must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        if isinstance(l1_ratio, bool) or not isinstance(l1_ratio, (int, float)) or not 0.0 <= l1_ratio <= 1.0:
            raise ValueError(f"`l1_ratio` must be a number in [0, 1], got {l1_ratio!r}")  # for every scheme
        for argument, value in (
            ("exclude_bias", exclude_bias), ("exclude_1d", exclude_1d), ("exclude_norm", exclude_norm),
            ("exclude_embeddings", exclude_embeddings), ("use_model_no_weight_decay", use_model_no_weight_decay),
            ("per_layer_stats", per_layer_stats), ("print_audit", print_audit), ("native", native),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"`{argument}` must be True or False, got {value!r}")
        self.scheme = get_scheme(scheme, l1_ratio)
        self.strength = _number(strength, "strength")
        if final_strength is not None:
            _number(final_strength, "final_strength")
        if not isinstance(lr_coupling, str) or lr_coupling not in LR_COUPLINGS:
            raise ValueError(f"`lr_coupling` must be one of {', '.join(LR_COUPLINGS)}, got {lr_coupling!r}")
        if scheme == "l2" and lr_coupling != "lr":
            raise ValueError("`lr_coupling` does not apply to scheme='l2' (coupled: lr never enters); leave it 'lr'")
        if timescale_epochs is not None:
            if _number(timescale_epochs, "timescale_epochs") == 0:
                raise ValueError("`timescale_epochs` must be > 0")
            if strength:
                raise ValueError("give either `strength` or `timescale_epochs`, not both")
            if schedule not in ("constant", "lr") or final_strength is not None:
                raise ValueError("`timescale_epochs` works with schedule 'constant' or 'lr' and no `final_strength`")
        if not callable(schedule) and schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {', '.join(SCHEDULES)} or a callable, got {schedule!r}")
        self.schedule = StrengthSchedule(
            schedule, 1.0 if timescale_epochs else self.strength, final_strength, warmup_steps
        )
        if reference is not None and scheme != "l2_sp":
            raise ValueError("`reference` only applies to scheme='l2_sp'")
        if log_every_n_steps is not None and (
            isinstance(log_every_n_steps, bool) or not isinstance(log_every_n_steps, int) or log_every_n_steps < 1
        ):
            raise ValueError(f"`log_every_n_steps` must be an integer >= 1 or None, got {log_every_n_steps!r}")
        if multipliers is not None and not isinstance(multipliers, Mapping):
            raise ValueError(f"`multipliers` must be a dict {{glob: factor >= 0}}, got {multipliers!r}")
        for pattern in multipliers or {}:
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"`multipliers` keys must be non-empty glob strings, got {pattern!r}")
        try:
            exclude, include = list(_as_patterns(exclude, "exclude")), list(_as_patterns(include, "include"))
        except TypeError as error:
            raise ValueError(str(error)) from None
        self.rules = dict(
            exclude=exclude, include=include,
            multipliers=dict(multipliers or {}), exclude_bias=exclude_bias, exclude_1d=exclude_1d,
            exclude_norm=exclude_norm, exclude_embeddings=exclude_embeddings,
            use_model_no_weight_decay=use_model_no_weight_decay,
        )
        for pattern, factor in self.rules["multipliers"].items():
            _number(factor, f"multipliers[{pattern!r}]")
        self.timescale_epochs = timescale_epochs
        self.lr_coupling = lr_coupling
        self.reference = reference
        self.zero_tolerance = _number(zero_tolerance, "zero_tolerance")
        self.log_every_n_steps = log_every_n_steps
        self.per_layer_stats = per_layer_stats
        self.print_audit = print_audit
        self.native = native
        self._has_after = type(self.scheme).after_update is not Scheme.after_update
        self.plan: GroupPlan | None = None
        self.history: list[dict] = []
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._buckets: list[list[_Bucket]] = []
        self._installed: list[tuple[torch.optim.Optimizer, Any]] = []
        self._steps: list[int] = []
        self._loaded: dict = {}
        self._last_logged = -1
        self._last_epoch = 0
        self._names: dict[int, str] = {}
        self._held: set[str] = set()  # names of the tensors the optimizers hold
        self._fitting = False
        self._fingerprint: str | None = None
        self._optimizers: list[torch.optim.Optimizer] = []
        self._group_counts: list[int] = []
        self._module: LightningModule | None = None

    # ------------------------------------------------------------------ description
    @property
    def hparams(self) -> dict[str, Any]:
        """The decay settings as plain values (for loggers and MLflow params)."""
        schedule = self.schedule.schedule
        return {
            "scheme": self.scheme.name, "strength": self.strength,
            "l1_ratio": getattr(self.scheme, "l1_ratio", None),
            "schedule": schedule if isinstance(schedule, str) else getattr(schedule, "__name__", "callable"),
            "final_strength": self.schedule.final_strength, "warmup_steps": self.schedule.warmup_steps,
            "timescale_epochs": self.timescale_epochs, "lr_coupling": self.lr_coupling,
            "zero_tolerance": self.zero_tolerance, **{k: v for k, v in self.rules.items()},
        }

    @property
    def state_key(self) -> str:
        return "WeightDecay"

    @property
    def _active(self) -> bool:
        return bool(self.strength or self.schedule.final_strength or self.timescale_epochs
                    or callable(self.schedule.schedule))

    # ------------------------------------------------------------------ fit start: plan and retrofit
    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._reset_runtime_keep_loaded()
        self._module = pl_module
        self.plan = self._plan(trainer.optimizers, pl_module)
        self._names = {id(p): n for n, p in pl_module.named_parameters()}
        self._held = self._held_names(trainer.optimizers)
        if self.print_audit:
            rank_zero_info(f"WeightDecay ({self.scheme.name}) grouping:\n{self.plan.render()}")
        total = trainer.estimated_stepping_batches
        self.schedule.set_total_steps(total)
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        for optimizer in trainer.optimizers:
            if isinstance(optimizer, torch.optim.LBFGS):
                raise ValueError("WeightDecay does not support LBFGS (it evaluates the closure several times per step)")
        for optimizer in trainer.optimizers:
            self._take_over(optimizer)
            self._buckets.append(self._retrofit(optimizer, schedulers, trainer) if self._active else [])
            self._steps.append(0)
        self._fingerprint = fingerprint(
            {"name": f"{k}:{i}", "param_names": [self._names.get(id(p), "?") for p in g["params"]]}
            for k, opt in enumerate(trainer.optimizers) for i, g in enumerate(opt.param_groups)
        )
        self._fitting = True
        self._apply_loaded()
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        for optimizer, buckets in zip(trainer.optimizers, self._buckets):
            self_applied = self._has_after or any(not b.native for b in buckets)
            if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False) and self_applied:
                raise ValueError(
                    f"WeightDecay: {type(optimizer).__name__} with fused=True unscales gradients inside step() under "
                    f"16-mixed precision, so {self.scheme.name} decay would see scaled gradients; use fused=False or "
                    "precision='bf16-mixed'"
                )
        self._optimizers = list(trainer.optimizers)
        self._group_counts = [len(opt.param_groups) for opt in trainer.optimizers]
        for index, (optimizer, buckets) in enumerate(zip(trainer.optimizers, self._buckets)):
            if buckets or self._active:
                self._install(optimizer, index)

    def _plan(self, optimizers: list[torch.optim.Optimizer], pl_module: LightningModule) -> GroupPlan:
        """The grouping; a tensor the optimizer holds counts as trainable even while it is frozen.

        A tensor frozen at fit start but present in an optimizer (unfrozen later, as in finetuning) is
        classified by the rules like any other, so it decays once it gets gradients, exactly as it would
        in an optimizer built on :func:`lightning_wd.param_groups` of the unfrozen model.
        """
        held = {id(p): p for opt in optimizers for g in opt.param_groups for p in g["params"]}
        frozen = [p for p in held.values() if isinstance(p, torch.nn.Parameter) and not p.requires_grad]
        for param in frozen:
            param.requires_grad_(True)
        try:
            plan = plan_groups(pl_module, self.strength or 1.0, **self.rules)
        finally:
            for param in frozen:
                param.requires_grad_(False)
        if frozen:
            ids = {id(p) for p in frozen}
            named = dict(pl_module.named_parameters())
            plan.rows = [
                dataclasses.replace(row, reason=f"{row.reason} (frozen now, held by the optimizer)")
                if row.group is not None and id(named.get(row.name)) in ids else row
                for row in plan.rows
            ]
        return plan

    def _apply_loaded(self) -> None:
        """Check the checkpoint's layout against ours and restore the step counters and references."""
        loaded, self._loaded = self._loaded, {}
        saved = loaded.get("fingerprint")
        if saved is not None and saved != self._fingerprint:
            raise RuntimeError(
                "WeightDecay: the parameter -> optimizer-group mapping differs from the checkpoint's "
                f"(fingerprint {self._fingerprint} != {saved}); restoring optimizer state would attach it to the "
                "wrong tensors. Resume with the same model, optimizer and grouping rules "
                "(exclude, include, multipliers, exclude_* switches, scheme and strength)."
            )
        steps = list(loaded.get("steps") or [])
        if steps:
            self._steps = steps[: len(self._steps)] + self._steps[len(steps):]
        reference = loaded.get("reference")
        if reference and self.scheme.name == "l2_sp":
            self._set_reference(reference)

    def _reset_runtime_keep_loaded(self) -> None:
        loaded = self._loaded
        self._reset_runtime()
        self._loaded = loaded
        self.history = []

    def _take_over(self, optimizer: torch.optim.Optimizer) -> None:
        changed = [(i, g["weight_decay"]) for i, g in enumerate(optimizer.param_groups) if g.get("weight_decay")]
        if "weight_decay" in optimizer.defaults:  # groups added later (add_param_group) start from the defaults
            optimizer.defaults["weight_decay"] = 0.0
        for group in optimizer.param_groups:
            if "weight_decay" in group:
                group["weight_decay"] = 0.0
        if changed:
            rank_zero_warn(
                f"WeightDecay takes over the decay of {type(optimizer).__name__}: weight_decay set to 0 in "
                f"group(s) {', '.join(f'{i} (was {wd:g})' for i, wd in changed)}; it now applies "
                f"{self.scheme.name} decay with strength {self.strength:g} to the tensors its rules select."
            )

    def _plan_key(self, param: torch.Tensor) -> str:
        group = self.plan.group_of.get(self._names.get(id(param), ""))
        return group if group is not None else "no_decay"

    def _retrofit(self, optimizer, schedulers, trainer) -> list[_Bucket]:
        kinds = {decay_kind(optimizer, g) for g in optimizer.param_groups}
        native = (
            self.native and self.scheme.native is not None and kinds == {self.scheme.native}
            and not (self.scheme.native == "decoupled" and self.lr_coupling == "none")
        )
        if native and self._loaded.get("foreign_layout"):
            native = False
            rank_zero_info(
                f"WeightDecay applies {self.scheme.name} decay itself (one vectorised pass): the checkpoint being "
                "resumed was saved without WeightDecay, so the optimizer keeps its param groups"
            )
        if native:
            safe, why = regroup_is_safe(schedulers, optimizer)
            if safe:
                order = [g["name"] for g in self.plan.groups]
                expand_schedulers(schedulers, optimizer, split_groups(optimizer, self._plan_key, order))
            else:
                native = False
                rank_zero_info(f"WeightDecay applies {self.scheme.name} decay itself (one vectorised pass): {why}")
        self._steps_per_epoch_value = self._steps_per_epoch(trainer) if self.timescale_epochs else 1
        buckets = [b for index in range(len(optimizer.param_groups))
                   for b in self._group_buckets(optimizer, index, native)]
        self._prepare_reference(buckets)
        return buckets

    def _group_buckets(self, optimizer: torch.optim.Optimizer, index: int, native: bool) -> list[_Bucket]:
        """The buckets of one optimizer group: its decayed tensors, split by strength multiplier."""
        group = optimizer.param_groups[index]
        multipliers = {g["name"]: g["weight_decay"] / self.plan.weight_decay for g in self.plan.groups}
        by_key: dict[str, list[torch.Tensor]] = {}
        for param in group["params"]:
            by_key.setdefault(self._plan_key(param), []).append(param)
        buckets = []
        for key, params in by_key.items():
            multiplier = multipliers.get(key, 0.0)
            if not multiplier:
                continue
            lr0 = float(group.get("initial_lr", group["lr"]))
            lr_max = float(max(group.get("max_lr", 0.0), lr0))
            if self.timescale_epochs:  # lambda such that the rate at lr0 is 1 / (tau * steps per epoch)
                unit = {"lr": lr0, "lr_ratio": 1.0, "none": 1.0, "corrected": lr0 * lr0 / lr_max}[self.lr_coupling]
                multiplier /= unit * self.timescale_epochs * self._steps_per_epoch_value
            bucket = _Bucket(optimizer=optimizer, index=index, names=[self._names.get(id(p), "?") for p in params],
                             params=params, multiplier=multiplier, native=native, lr0=lr0, lr_max=lr_max)
            self.scheme.prepare(params, bucket.state)
            buckets.append(bucket)
        return buckets

    def _held_names(self, optimizers) -> set[str]:
        return {self._names[id(p)] for opt in optimizers for g in opt.param_groups for p in g["params"]
                if id(p) in self._names}

    def _adopt_new_groups(self, index: int) -> None:
        """Groups added during training (e.g. ``BaseFinetuning.unfreeze_and_add_param_group``): their tensors
        are classified by the same rules and decayed by the callback itself; their ``weight_decay`` is set to 0."""
        optimizer = self._optimizers[index]
        self.plan = self._plan(self._optimizers, self._module)
        self._held = self._held_names(self._optimizers)
        for group_index in range(self._group_counts[index], len(optimizer.param_groups)):
            group = optimizer.param_groups[group_index]
            if "weight_decay" in group:
                group["weight_decay"] = 0.0
            new = self._group_buckets(optimizer, group_index, native=False)
            self._prepare_reference(new)
            self._buckets[index] += new
        self._group_counts[index] = len(optimizer.param_groups)

    @staticmethod
    def _steps_per_epoch(trainer: Trainer) -> int:
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            raise ValueError("`timescale_epochs` needs a sized train dataloader (epochs of known length)")
        return max(1, math.ceil(batches / trainer.accumulate_grad_batches))

    def _prepare_reference(self, buckets: list[_Bucket]) -> None:
        if self.scheme.name != "l2_sp" or not self.reference:
            return
        reference = self.reference
        if isinstance(reference, str):
            reference = torch.load(reference, map_location="cpu", weights_only=True)
        self._set_reference(reference, buckets)

    def _set_reference(self, reference: Mapping[str, torch.Tensor], buckets: list[_Bucket] | None = None) -> None:
        for bucket in self._iter_buckets() if buckets is None else buckets:
            missing = [n for n in bucket.names if n not in reference]
            if missing:
                raise ValueError(f"`reference` has no tensor for {missing[:3]} (and {len(missing)} in all)")
            bucket.state["reference"] = [
                reference[n].to(device=p.device, dtype=p.dtype).clone() for n, p in zip(bucket.names, bucket.params)
            ]

    # ------------------------------------------------------------------ the step
    def _install(self, optimizer: torch.optim.Optimizer, index: int) -> None:
        original = optimizer.step
        had_own = "step" in optimizer.__dict__
        callback = self

        def step(opt, closure=None, **kwargs):
            if closure is None:
                callback._before(index)
                output = original(**kwargs)
            else:
                ran = []

                def wrapped():
                    result = closure()
                    if not ran:
                        ran.append(True)
                        callback._before(index)
                    return result

                output = original(closure=wrapped, **kwargs)
                if not ran:
                    callback._before(index)
            callback._after(index)
            return output

        if hasattr(original, "_wrapped_by_lr_sched"):
            # torch's LR schedulers mark the step they patched and warn ("optimizer.step() has been overridden
            # after learning rate scheduler initialization") when the mark is gone: keep it, as we call theirs.
            step._wrapped_by_lr_sched = True
        optimizer.step = types.MethodType(step, optimizer)
        self._installed.append((optimizer, original if had_own else None))

    def _uninstall(self) -> None:
        self._fitting = False
        for optimizer, original in self._installed:
            if original is None:
                optimizer.__dict__.pop("step", None)
            else:
                optimizer.step = original
        self._installed = []

    def _strength(self, bucket: _Bucket, step: int, lr: float) -> float:
        return self.schedule(step, lr / bucket.lr0 if bucket.lr0 else 1.0) * bucket.multiplier

    def _coefficient(self, bucket: _Bucket, strength: float, lr: float) -> float:
        """``c`` such that the decay rate of this step is ``lr * c``."""
        if self.lr_coupling == "lr":
            return strength
        if self.lr_coupling == "lr_ratio":
            return strength / bucket.lr0 if bucket.lr0 else 0.0
        if self.lr_coupling == "corrected":
            return strength * lr / bucket.lr_max if bucket.lr_max else 0.0
        return strength / lr if lr else 0.0

    @torch.no_grad()
    def _before(self, index: int) -> None:
        if len(self._optimizers[index].param_groups) != self._group_counts[index]:
            self._adopt_new_groups(index)
        step = self._steps[index]
        for bucket in self._buckets[index]:
            lr = float(bucket.group["lr"])
            strength = self._strength(bucket, step, lr)
            coefficient = self._coefficient(bucket, strength, lr)
            rate = strength if self.lr_coupling == "none" else lr * coefficient
            if bucket.native:
                native = coefficient if self.scheme.native == "decoupled" else strength
                bucket.group["weight_decay"] = self.scheme.native_strength(native)
                if not self._has_after:
                    continue
                active = [p for p in bucket.params if p.grad is not None]
            else:
                active = [p for p in bucket.params if p.grad is not None]
                grads = [p.grad for p in active]
                self.scheme.before_update(active, grads, rate, strength, bucket.state)
            bucket.step = (active, rate, strength)

    @torch.no_grad()
    def _after(self, index: int) -> None:
        for bucket in self._buckets[index]:
            if bucket.step:
                active, rate, strength = bucket.step
                self.scheme.after_update(active, rate, strength, bucket.state)
                bucket.step = ()
        self._steps[index] += 1

    # ------------------------------------------------------------------ statistics
    def current_strength(self) -> float:
        """The strength lambda at the current step (of the first decayed group)."""
        for index, buckets in enumerate(self._buckets):
            for bucket in buckets:
                return self._strength(bucket, self._steps[index], float(bucket.group["lr"]))
        return self.schedule(self._steps[0] if self._steps else 0) if self._active else 0.0

    @torch.no_grad()
    def compute_stats(self, pl_module: LightningModule | None = None) -> dict[str, float]:
        """All ``wd/*`` statistics of the decayed tensors now (exact, one host sync for the counts)."""
        if self.plan is None:
            return {}
        if pl_module is not None:
            named = dict(pl_module.named_parameters())
            held = self._held or set(named)  # a tensor no optimizer holds is decayed by no one
            names = [r.name for r in self.plan.rows if r.decayed and r.name in named and r.name in held]
            params = [named[n] for n in names]
        else:
            names = [n for b in self._iter_buckets() for n in b.names]
            params = [p for b in self._iter_buckets() for p in b.params]
        stats = weight_stats(names, params, zero_tolerance=self.zero_tolerance, per_tensor=self.per_layer_stats)
        stats["wd/strength"] = self.current_strength()
        penalties = []
        for index, buckets in enumerate(self._buckets):
            for bucket in buckets:
                strength = self._strength(bucket, self._steps[index], float(bucket.group["lr"]))
                value = self.scheme.penalty(bucket.params, strength, bucket.state)
                if value is not None:
                    penalties.append(value)
        if penalties:
            stats["wd/penalty"] = torch.stack([p.double() for p in penalties]).sum().item()
        if isinstance(self.scheme, GroupLasso):
            stats["wd/dead_units"] = float(sum(GroupLasso.dead_units(b.params, {}) for b in self._iter_buckets()))
        return stats

    def _iter_buckets(self):
        return (b for buckets in self._buckets for b in buckets)

    def _log_stats(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_logged or not trainer.is_global_zero:
            return
        self._last_logged = step
        stats = self.compute_stats(pl_module)
        self.history.append({"step": step, "epoch": self._last_epoch, "metrics": dict(stats)})
        for logger in trainer.loggers:
            logger.log_metrics(stats, step=step)

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Every `log_every_n_steps` optimizer steps (not at step 0, which accumulation batches would hit).
        # The epoch of the last batch: at train end `current_epoch` already counts the finished epoch.
        self._last_epoch = trainer.current_epoch
        every = self.log_every_n_steps or trainer.log_every_n_steps
        step = trainer.global_step
        if step > 0 and step % max(1, every) == 0:
            self._log_stats(trainer, pl_module)

    @override
    def on_train_start(self, trainer, pl_module) -> None:
        self._last_epoch = trainer.current_epoch  # restored by now when resuming
        # A resumed optimizer's load_state_dict (after fit start) brings back the checkpoint's weight_decay
        # values, which for a checkpoint saved without this callback decay every tensor of the group. Native
        # groups get their value again before every step, so all can be zeroed here.
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                if "weight_decay" in group:
                    group["weight_decay"] = 0.0

    @override
    def on_train_end(self, trainer, pl_module) -> None:
        self._log_stats(trainer, pl_module)  # the final weights, once

    @override
    def on_fit_end(self, trainer, pl_module) -> None:
        self._uninstall()

    @override
    def on_exception(self, trainer, pl_module, exception) -> None:
        self._uninstall()

    @override
    def teardown(self, trainer, pl_module, stage) -> None:
        self._uninstall()
        self._loaded = {}  # a checkpoint restored for validate/test must not leak into a later fit

    # ------------------------------------------------------------------ checkpoints
    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"steps": list(self._steps), "fingerprint": getattr(self, "_fingerprint", None),
                                 "hparams": {k: v for k, v in self.hparams.items() if k != "multipliers"}}
        if self.scheme.name == "l2_sp":
            state["reference"] = {
                n: r for b in self._iter_buckets() for n, r in zip(b.names, b.state.get("reference", []))
            }
        return state

    @override
    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # Called before `load_state_dict` (which only runs when the checkpoint holds this callback's state).
        ours = self.state_key in (checkpoint.get("callbacks") or {})
        self._loaded = {"foreign_layout": bool(checkpoint.get("optimizer_states")) and not ours}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = {
            "steps": state_dict.get("steps", []),
            "fingerprint": state_dict.get("fingerprint"),
            "reference": state_dict.get("reference"),
        }
        if self._fitting:  # a strategy that restores after setup: fit start has passed, check now
            self._apply_loaded()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_installed"], state["_buckets"], state["_fitting"] = [], [], False
        state["_optimizers"], state["_module"] = [], None
        # Lightning attaches the module's `log`/`log_dict` to every callback at fit: bound to the model, they
        # would drag it (and its optimizer closures) into the pickle.
        state.pop("log", None)
        state.pop("log_dict", None)
        return state
