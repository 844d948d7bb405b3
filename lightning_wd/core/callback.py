"""``WeightDecay``: exact, explainable weight decay for an existing Lightning project, in one line."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_wd.core.audit import GroupPlan
from lightning_wd.core.coupling import LR_COUPLINGS
from lightning_wd.core.decay_step import OptimizerDecay, refuse_scaled_fused
from lightning_wd.core.diagnostics import Diagnostics
from lightning_wd.core.distributed import check_strategy, track_flat_shards
from lightning_wd.core.fused import check_fused
from lightning_wd.core.planning import Planner
from lightning_wd.core.resume import ResumeMismatchError, difference
from lightning_wd.core.retrofit import decay_kind, expand_schedulers, regroup_is_safe, split_groups
from lightning_wd.core.rules import GroupingRules
from lightning_wd.core.schedules import SCHEDULES, StrengthSchedule
from lightning_wd.core.schemes import Scheme, get_scheme
from lightning_wd.core.searches import decay_searches_too, restore_searches
from lightning_wd.core.stats import decay_stats, needs_all_ranks
from lightning_wd.core.validation import check_bool, check_choice, check_fraction, check_int, check_strength

__all__ = ["LR_COUPLINGS", "STATS_BUDGET", "WeightDecay"]

#: Share of the training steps' time the statistics may take at the default interval (see ``log_every_n_steps``).
STATS_BUDGET = 0.005


def _number(value: Any, argument: str) -> float:
    return check_strength(value, argument, error=ValueError)


class WeightDecay(Callback):
    """Decay exactly the right tensors of the user's own optimizer(s), leaving the optimizer as it was built.

    The optimizer keeps its param groups (count, order, tensors and every key): per group, the decay is
    done by the optimizer itself where a whole group shares one decision and the optimizer does the
    scheme (its ``weight_decay`` holds the strength during the step only), and otherwise by vectorised
    passes in the optimizer's own arithmetic (see :mod:`lightning_wd.core.decay_step`), after the
    gradients are final (accumulation, clipping) and around the update. ``split_groups=True`` is the
    opt-in to split the groups for native decay instead (it changes the group count: per-group lists
    of schedulers are rewritten; ``LearningRateMonitor`` keys and code indexing ``param_groups`` change).

    Checkpoints keep the step counters, the scheme's persistent state (``l2_sp``'s reference) and the
    decisions (which tensor decays, how strongly); resuming with other rules raises
    :class:`~lightning_wd.core.resume.ResumeMismatchError` with one line naming what changed. A
    checkpoint saved with WeightDecay resumes without it.

    Args:
        scheme: ``decoupled``, ``l2``, ``l1``, ``elastic_net``, ``group_lasso``, ``l2_sp``, ``cautious``,
            ``target_norm`` (weight norm control), ``selective_projection`` (SPD), or
            a :class:`~lightning_wd.core.schemes.Scheme` (instance or subclass) of your own. Default
            (None): ``decoupled``; with ``strength=None``, the optimizer's own kind (AdamW: decoupled;
            SGD, Adam, RMSprop, ...: ``l2``).
        strength: the decay strength lambda (>= 0). None: keep the decay the optimizer already has (each
            group's ``weight_decay``), moved onto the tensors the rules select.
        l1_ratio: ``elastic_net`` mixing parameter in [0, 1] (scikit-learn's meaning).
        schedule: ``constant``, ``linear``, ``cosine``, ``warmup_cosine``, ``step``, ``lr`` or a callable
            ``fn(optimizer_step) -> strength``.
        final_strength: strength at the end of a decaying schedule.
        warmup_steps: linear warmup of the strength, in optimizer steps.
        timescale_epochs: instead of ``strength``: the EMA timescale ``1 / (lr * lambda)`` in epochs
            (Wang & Aitchison 2024); lambda is derived per group from its initial lr and the optimizer
            steps per epoch, so a setting transfers across dataset and batch size.
        lr_coupling: how lr enters the decay rate: ``lr`` (``lr * lambda``, PyTorch), ``lr_ratio``
            (``lambda * lr / lr0``), ``none`` (``lambda``), ``corrected`` (AdamC as its paper defines it:
            ``lambda * lr^2 / lr_max`` on the tensors of layers that feed a normalisation layer, ``lr * lambda`` on
            the others; the audit shows which), ``corrected_all`` (``lambda * lr^2 / lr_max`` everywhere, timm).
        normalized_layers: with ``lr_coupling="corrected"``: globs of the parameter names that get the corrected
            decay, instead of detecting the layers that feed a norm layer (:mod:`lightning_wd.core.normalized`).
        exclude: globs of parameter names (or ``type:`` globs of module classes) that do not decay.
        include: globs that decay even where a default rule excludes them.
        multipliers: ``{glob: factor}``: matching decayed tensors decay with ``strength * factor``.
        exclude_bias: biases do not decay.
        exclude_1d: tensors with ``ndim <= 1`` do not decay.
        exclude_norm: parameters of normalisation layers do not decay.
        exclude_embeddings: embedding tables do not decay.
        use_model_no_weight_decay: honour the model's ``no_weight_decay()`` declarations.
        reference: for schemes that decay toward reference weights (``l2_sp``, ``selective_projection``): a state
            dict (or a path to one); default: the weights at the start of training.
        zero_tolerance: statistics count ``|w| <= zero_tolerance`` as zero.
        log_every_n_steps: statistics interval in optimizer steps. Default (None): the Trainer's
            ``log_every_n_steps``, doubled (so that the statistics stay on steps Lightning logs too) while one
            statistics call would cost more than :data:`STATS_BUDGET` (0.5 %) of the training steps' time over
            the interval (the median cost of the last five calls, the first one left out). A call's cost is
            the training thread's time computing and logging it (the diagnostics' copy on the step before
            included) plus, for a logger that writes from a background thread and says what a point costs
            it (``background_seconds_per_point``, e.g. ``BufferedMLFlowLogger``), that thread's time for the
            call's points. The interval only grows (up to the fit's length: then only the end of training
            is logged), and each change is announced. Sharded tensors (FSDP2)
            keep the Trainer's interval (every rank must agree).
            The statistics are also logged once at the end of training (rank zero only; each entry goes to
            ``history``).
        per_layer_stats: also log ``wd/nonzero_fraction/<tensor>`` and ``wd/weight_norm/<tensor>``.
        diagnostics: also log the equilibrium diagnostics at the statistics interval (per tensor too with
            ``per_layer_stats``): ``wd/grad_weight_ratio``, ``wd/update_weight_ratio``, ``wd/angular_update``,
            ``wd/equilibrium_ratio``, ``wd/stable_rank`` (:mod:`lightning_wd.core.diagnostics`; the decayed
            tensors are copied on the step before each logging step only).
        print_audit: print the grouping table at fit start (rank zero).
        native: let the optimizer decay whole groups itself where it can (False: always the callback's passes).
        split_groups: split the optimizer's groups so that it decays natively (changes the groups; opt-in).
        fused: ``"auto"`` (default): with ``torch.optim.Adam``/``AdamW``/``SGD`` (with momentum) and
            ``elastic_net`` or ``cautious``, CPU tensors of 2^18 elements and more take one compiled update that
            does the optimizer's step and the decay together (:mod:`lightning_wd.core.fused`; compiled once at
            fit start; same results and optimizer state as the general path); the other schemes with a fused
            form (``l1``, ``l2_sp``: measured no faster; self-applied ``decoupled``, ``l2``: not measured) and
            CUDA tensors (not yet verified) keep the general path. True: every scheme with a fused form, on any
            device, and a warning about the tensors that cannot take it; False: the general path only. The audit
            says which path each group took and why.

    Raises:
        ValueError: an argument out of range, with its name and the allowed values.

    Example:
        >>> cb = WeightDecay(scheme="l1", strength=1e-3, schedule="cosine", exclude=["head.*"])
        >>> cb.hparams["scheme"], cb.hparams["schedule"]
        ('l1', 'cosine')
    """

    def __init__(
        self,
        scheme: str | Scheme | None = None,
        strength: float | None = None,
        l1_ratio: float = 0.5,
        schedule: str | Callable[[int], float] = "constant",
        final_strength: float | None = None,
        warmup_steps: int = 0,
        timescale_epochs: float | None = None,
        lr_coupling: str = "lr",
        normalized_layers: list[str] | None = None,
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
        diagnostics: bool = True,
        print_audit: bool = True,
        native: bool = True,
        split_groups: bool = False,
        fused: bool | str = "auto",
    ) -> None:
        check_fraction(l1_ratio, "l1_ratio")
        self.fused = check_fused(fused)
        for argument, value in (("per_layer_stats", per_layer_stats), ("diagnostics", diagnostics),
                                ("print_audit", print_audit),
                                ("native", native), ("split_groups", split_groups)):
            check_bool(value, argument)
        self._scheme_given = scheme is not None
        self.scheme = get_scheme("decoupled" if scheme is None else scheme, l1_ratio)
        self.strength = None if strength is None else _number(strength, "strength")
        if final_strength is not None:
            _number(final_strength, "final_strength")
        check_choice(lr_coupling, "lr_coupling", LR_COUPLINGS)
        if not self.scheme.uses_lr and lr_coupling != "lr":
            raise ValueError(f"`lr_coupling` does not apply to scheme={self.scheme.name!r} (the lr never enters "
                             "its decay); leave it 'lr'")
        if normalized_layers is not None and lr_coupling != "corrected":
            raise ValueError("`normalized_layers` applies to lr_coupling='corrected' only")
        if normalized_layers is not None and (isinstance(normalized_layers, str)
                                              or not all(isinstance(g, str) for g in normalized_layers)):
            raise ValueError(f"`normalized_layers` must be a list of glob strings, got {normalized_layers!r}")
        self.normalized_layers = None if normalized_layers is None else list(normalized_layers)
        relative = timescale_epochs is not None or self.strength is None
        if timescale_epochs is not None:
            if _number(timescale_epochs, "timescale_epochs") == 0:
                raise ValueError("`timescale_epochs` must be > 0")
            if self.strength:
                raise ValueError("give either `strength` or `timescale_epochs`, not both")
            if schedule not in ("constant", "lr") or final_strength is not None:
                raise ValueError("`timescale_epochs` works with schedule 'constant' or 'lr' and no `final_strength`")
            self.strength = self.strength or 0.0
        elif self.strength is None and final_strength is not None:
            raise ValueError("`final_strength` needs a `strength` (strength=None keeps the optimizer's own decay)")
        if not callable(schedule):
            check_choice(schedule, "schedule", SCHEDULES)
        self.schedule = StrengthSchedule(schedule, 1.0 if relative else self.strength, final_strength, warmup_steps)
        if reference is not None and not self.scheme.takes_reference:
            raise ValueError(f"`reference` does not apply to scheme={self.scheme.name!r} (it decays toward zero)")
        check_int(log_every_n_steps, "log_every_n_steps", minimum=1, allow_none=True)
        try:
            self.rules = GroupingRules(
                exclude=exclude, include=include, multipliers=multipliers, exclude_bias=exclude_bias,
                exclude_1d=exclude_1d, exclude_norm=exclude_norm, exclude_embeddings=exclude_embeddings,
                use_model_no_weight_decay=use_model_no_weight_decay,
            )
        except TypeError as error:
            raise ValueError(str(error)) from None
        self.timescale_epochs = timescale_epochs
        self.lr_coupling = lr_coupling
        self.reference = reference
        self.zero_tolerance = _number(zero_tolerance, "zero_tolerance")
        self.log_every_n_steps = log_every_n_steps
        self.per_layer_stats = per_layer_stats
        self.diagnostics = diagnostics
        self.print_audit = print_audit
        self.native = native
        self.split_groups = split_groups
        self.plan: GroupPlan | None = None
        self.history: list[dict] = []
        self._loaded: dict = {}
        self._shown_audit: str | None = None
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self.decays: list[OptimizerDecay] = []
        self._planner: Planner | None = None
        self._optimizer_ids: list[int] = []
        self._deferred = False
        self._last_logged = -1
        self._last_epoch = 0
        self._fitting = False
        self._module: LightningModule | None = None
        self._trainer: Trainer | None = None
        self._applied: float | None = None
        self._diagnostics = Diagnostics(per_tensor=self.per_layer_stats) if self.diagnostics else None
        self._total_steps: float | None = None
        self._every_factor = 1
        self._stats_seconds = 0.0  # computing and logging the statistics, on the training thread
        self._snapshot_seconds = 0.0  # the diagnostics' copies since the last statistics call
        self._stats_calls = 0
        self._recent_costs: list[float] = []  # of the last calls (their median is what a call costs)
        self._step_seconds = 0.0  # the training batches (between on_train_batch_start and _end)
        self._batch_start = 0.0

    # ------------------------------------------------------------------ description
    @property
    def hparams(self) -> dict[str, Any]:
        """The decay settings as plain values (for loggers and MLflow params); ``strength`` is the applied one."""
        schedule = self.schedule.schedule
        strength = self._applied if self.strength is None or self.timescale_epochs else self.strength
        return {
            "scheme": self.scheme.name, "strength": strength, **self.scheme.hparams(),
            "schedule": schedule if isinstance(schedule, str) else getattr(schedule, "__name__", "callable"),
            "final_strength": self.schedule.final_strength, "warmup_steps": self.schedule.warmup_steps,
            "timescale_epochs": self.timescale_epochs, "lr_coupling": self.lr_coupling,
            "zero_tolerance": self.zero_tolerance, **self.rules.kwargs(),
        }

    @property
    def state_key(self) -> str:
        return "WeightDecay"

    @property
    def steps(self) -> list[int]:
        """Optimizer steps taken with the decay, per optimizer."""
        return [decay.step_count for decay in self.decays]

    @property
    def _active(self) -> bool:
        return self.strength is None or bool(self.strength or self.schedule.final_strength or self.timescale_epochs
                                              or callable(self.schedule.schedule))

    # ------------------------------------------------------------------ fit start
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # a learning-rate or batch-size search trains the decayed model too
            self._shown_audit = None
            decay_searches_too(trainer, self.on_fit_start)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        restore_searches(trainer)
        if self.decays:  # set up for a search that ran before this hook (core/searches.py): set up afresh
            self._uninstall()
        check_strategy(trainer, pl_module)  # one line naming a strategy not proven correct, and what works
        track_flat_shards(trainer)  # FSDP1: each tensor a flat piece of itself; its original shape and offset
        self._reset_runtime()
        self.history = []
        self._module, self._trainer = pl_module, trainer
        for optimizer in trainer.optimizers:
            if isinstance(optimizer, torch.optim.LBFGS):
                raise ValueError("WeightDecay does not support LBFGS (it evaluates the closure several times per step)")
        self.schedule.set_total_steps(trainer.estimated_stepping_batches)
        self._total_steps = trainer.estimated_stepping_batches
        self._fitting = True
        if any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in pl_module.parameters()):
            self._deferred = True  # lazy modules: plan at the first step, once the forward has shaped them
            self._install_deferred(trainer)
            return
        self._build(trainer, pl_module)

    def _build(self, trainer: Trainer, pl_module: LightningModule, steps: list[int] | None = None) -> None:
        """Plan, check the checkpoint's decisions, and set up the decay of every optimizer."""
        # the strength that exclude rules leaving nothing to decay are warned about (the optimizer's own: none)
        shown = (self.strength or self.schedule.final_strength or 1.0) if self.strength is not None and self._active \
            else 0.0
        self._planner = Planner(pl_module, self.rules, self.scheme, self.strength is None,
                                self.timescale_epochs, self.lr_coupling, self.normalized_layers, strength=shown)
        self._check_resume()
        if self.strength is None and not self._scheme_given:
            self.scheme = self._planner.own_scheme(trainer.optimizers, self.scheme)
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
        self.decays = []
        for index, optimizer in enumerate(trainer.optimizers):
            if self._active and self.split_groups:
                self._split(optimizer, schedulers)
            decay = OptimizerDecay(
                optimizer, self.scheme, self.schedule, self._planner.assign, self._planner.names,
                coupling=self.lr_coupling, native=self.native, per_group_strength=self.strength is None,
                lr_max_of=lambda group: float(group.get("max_lr", 0.0)),
                group_scale=self._planner.timescale(trainer) if self.timescale_epochs else None,
                coupling_of=self._planner.coupling_of, fused=self.fused,
            ) if self._active else None
            if decay is None:
                continue
            if steps and index < len(steps):
                decay.step_count = steps[index]
            self.decays.append(decay)
        self._optimizer_ids = [id(o) for o in trainer.optimizers]
        self._restore_loaded()
        if self.reference is not None and self.scheme.takes_reference:
            reference = self.reference
            if isinstance(reference, str):
                reference = torch.load(reference, map_location="cpu", weights_only=True)
            for decay in self.decays:
                decay.load_persistent_state("reference", reference)
        refuse_scaled_fused(trainer, self.decays, self.scheme)
        self.plan = self._planner.shown_plan(self.decays, trainer.optimizers)
        self._applied = self._planner.applied_strength(self.decays)
        self._announce(trainer)
        for decay in self.decays:
            decay.install()

    def _split(self, optimizer: torch.optim.Optimizer, schedulers: list) -> None:
        kinds = {decay_kind(optimizer, g) for g in optimizer.param_groups}
        if self.scheme.native is None or kinds != {self.scheme.native}:
            return  # the optimizer cannot do this scheme natively: splitting would gain nothing
        if self._loaded.get("foreign_layout"):
            rank_zero_info("WeightDecay keeps the optimizer's groups: the checkpoint being resumed was saved "
                           "without split groups")
            return
        safe, why = regroup_is_safe(schedulers, optimizer)
        if not safe:
            rank_zero_info(f"WeightDecay keeps the optimizer's groups (split_groups needs schedulers it can rewrite): "
                           f"{why}")
            return
        key = self._planner.key
        expand_schedulers(schedulers, optimizer, split_groups(optimizer, key, self._planner.order))

    def _announce(self, trainer: Trainer) -> None:
        paths = "".join(f"\nstep of optimizer {i} {line}" for i, d in enumerate(self.decays)
                        for line in d.fused.describe())
        shown = f"WeightDecay ({self.scheme.name}) grouping:\n{self.plan.render()}{paths}"
        if self.print_audit and shown != self._shown_audit:  # once per fit, searches included
            self._shown_audit = shown
            rank_zero_info(shown)
        if not self._active:
            return
        if self.strength is None and not self._applied:
            rank_zero_warn("WeightDecay(strength=None) keeps the optimizer's own decay, but its weight_decay is 0 in "
                           "every group: nothing decays; pass strength=")
            return
        if self.strength is not None:
            own = [(i, g["weight_decay"]) for opt in trainer.optimizers for i, g in enumerate(opt.param_groups)
                   if g.get("weight_decay")]
            if own:
                rank_zero_warn(
                    f"WeightDecay applies {self.scheme.name} decay with strength {self.hparams['strength']:g} to the "
                    f"tensors its rules select instead of the optimizer's weight_decay ("
                    f"{', '.join(f'group {i}: {wd:g}' for i, wd in own)}), which stays in its groups, unused while "
                    "WeightDecay is on"
                )

    # ------------------------------------------------------------------ lazy modules and replaced optimizers
    def _install_deferred(self, trainer: Trainer) -> None:
        """Wrap each optimizer's step to build the decay once the lazy tensors exist (after the first closure)."""
        import types

        callback = self
        for optimizer in trainer.optimizers:
            original = optimizer.step

            def step(opt, closure=None, _original=original, **kwargs):
                result = None
                if closure is not None:
                    with torch.enable_grad():
                        result = closure()
                opt.__dict__.pop("step", None)
                if callback._deferred:
                    callback._deferred = False
                    callback._build(trainer, callback._module)
                if closure is None:
                    return opt.step(**kwargs)
                return opt.step(closure=lambda: result, **kwargs)

            step._wrapped_by_lr_sched = getattr(original, "_wrapped_by_lr_sched", False)
            optimizer.step = types.MethodType(step, optimizer)

    def _follow_optimizers(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._deferred or not self._fitting or [id(o) for o in trainer.optimizers] == self._optimizer_ids:
            return
        # An optimizer replaced during fit (trainer.strategy.setup_optimizers): follow it, schedule position kept.
        steps = self.steps
        self._uninstall()
        self._fitting = True
        rank_zero_info("WeightDecay: the trainer's optimizers changed during fit; the decay now runs on the new ones")
        self._build(trainer, pl_module, steps=steps)

    # ------------------------------------------------------------------ resume
    def _decisions(self) -> dict[str, Any]:
        return {"scheme": self.scheme.name, "scheme_hparams": self.scheme.hparams(),
                "strength": "optimizer" if self.strength is None else self.strength,
                "lr_coupling": self.lr_coupling, "timescale_epochs": self.timescale_epochs,
                "decisions": self._planner.decisions() if self._planner else {}}

    def _check_resume(self) -> None:
        saved = self._loaded.get("decisions")
        if not saved or not self._active:
            return
        if self.strength is None and not self._scheme_given:
            saved = {k: v for k, v in saved.items() if k != "scheme"}  # resolved from the optimizer at build
        changed = difference(saved, self._decisions())
        if changed:
            raise ResumeMismatchError(
                f"WeightDecay: the checkpoint was trained with other decay rules: {changed}; resume with the same "
                "rules (exclude, include, multipliers, exclude_* switches, scheme, strength) or start a new run"
            )

    def _restore_loaded(self) -> None:
        loaded, self._loaded = self._loaded, {}
        for decay, step in zip(self.decays, loaded.get("steps") or []):
            decay.step_count = int(step)
        for key, values in (loaded.get("persistent") or {}).items():
            if key in self.scheme.persistent_state and values:
                for decay in self.decays:
                    decay.load_persistent_state(key, values, argument=f"checkpoint state {key!r}")

    # ------------------------------------------------------------------ statistics
    def current_strength(self) -> float:
        """The strength lambda at the current step (of the first decayed group)."""
        for decay in self.decays:
            for bucket in decay.buckets:
                return decay.strength(bucket)
        return 0.0

    @torch.no_grad()
    def compute_stats(self, pl_module: LightningModule | None = None) -> dict[str, float]:
        """All ``wd/*`` statistics of the decayed tensors now (on the effective weights of pruned tensors)."""
        if not self.decays:
            return {}
        stats = decay_stats(self.decays, pl_module or self._module, zero_tolerance=self.zero_tolerance,
                            per_tensor=self.per_layer_stats)
        stats["wd/strength"] = self.current_strength()
        if self._diagnostics is not None:
            step = self._trainer.global_step if self._trainer is not None else -1
            stats.update(self._diagnostics.compute(self.decays, step))
        return stats

    @override
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # The diagnostics' snapshot of w (before the update), on the step before a logging step only.
        if self._diagnostics is None or not self.decays:
            return
        if not self._diagnostics.due(trainer.global_step, self._interval(trainer), self._total_steps):
            return
        if trainer.is_global_zero or needs_all_ranks(self.decays):
            start = time.perf_counter()
            self._diagnostics.snapshot([d for d in self.decays if d.optimizer is optimizer], trainer.global_step)
            self._snapshot_seconds += time.perf_counter() - start  # part of the next statistics call's cost

    def _log_stats(self, trainer: Trainer, pl_module: LightningModule) -> None:
        step = trainer.global_step
        # Sharded tensors: every rank computes (one all-reduce), rank zero logs.
        if step == self._last_logged or not (trainer.is_global_zero or needs_all_ranks(self.decays)):
            return
        self._last_logged = step
        start = time.perf_counter()
        stats = self.compute_stats(pl_module)
        if not stats or not trainer.is_global_zero:
            return
        self.history.append({"step": step, "epoch": self._last_epoch, "metrics": dict(stats)})
        for logger in trainer.loggers:
            logger.log_metrics(stats, step=step)  # one call per interval; the tracking logger batches it
        cost = time.perf_counter() - start + self._snapshot_seconds
        self._snapshot_seconds = 0.0
        self._stats_seconds += cost
        self._stats_calls += 1
        background = sum(getattr(logger, "background_seconds_per_point", None) or 0.0 for logger in trainer.loggers)
        if self._stats_calls > 1:  # the first call warms up
            self._recent_costs = [*self._recent_costs[-4:], cost + background * len(stats)]
        if self.log_every_n_steps is None and self._recent_costs and self._fitting:
            self._adapt_interval(trainer, sorted(self._recent_costs)[len(self._recent_costs) // 2])

    def _interval(self, trainer: Trainer) -> int:
        """The statistics interval now (optimizer steps)."""
        return self.log_every_n_steps or max(1, trainer.log_every_n_steps) * self._every_factor

    def _adapt_interval(self, trainer: Trainer, cost: float) -> None:
        """Double the default interval while one statistics call (``cost``: the median of the last five, the
        first call left out, a background logger's time for its points included) exceeds STATS_BUDGET of its
        steps' time; at most up to the fit's steps (the steps done so far when the fit's length is unknown):
        beyond, only the end of training is logged."""
        steps = max(1, trainer.global_step)
        per_step = self._step_seconds / steps
        if per_step <= 0 or needs_all_ranks(self.decays):
            return
        total = self._total_steps
        limit = total if total is not None and 0 < total < float("inf") else steps
        before = self._interval(trainer)
        while cost > STATS_BUDGET * self._interval(trainer) * per_step and self._interval(trainer) < limit:
            self._every_factor *= 2
        if self._interval(trainer) != before:
            rank_zero_info(
                f"WeightDecay: statistics every {self._interval(trainer)} steps instead of {before} (one call takes "
                f"{cost * 1e3:.2f} ms, a step {per_step * 1e3:.2f} ms: more than {STATS_BUDGET:.1%} of training); "
                "pass log_every_n_steps= to choose"
            )

    @property
    def stats_seconds(self) -> float:
        """Seconds the training thread spent computing and logging statistics in this fit (the diagnostics' copies
        on the steps before included)."""
        return self._stats_seconds

    @override
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()
        self._follow_optimizers(trainer, pl_module)

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Every interval of optimizer steps (not at step 0, which accumulation batches would hit).
        self._step_seconds += time.perf_counter() - self._batch_start
        self._last_epoch = trainer.current_epoch
        step = trainer.global_step
        if step > 0 and step % self._interval(trainer) == 0:
            self._log_stats(trainer, pl_module)

    @override
    def on_train_end(self, trainer, pl_module) -> None:
        self._log_stats(trainer, pl_module)  # the final weights, once

    def _uninstall(self) -> None:
        self._fitting = False
        for decay in self.decays:
            decay.uninstall()

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
        state: dict[str, Any] = {"steps": self.steps, "hparams": {k: v for k, v in self.hparams.items()
                                                                   if k != "multipliers"}}
        if self._planner is not None:
            state["decisions"] = self._decisions()
        persistent: dict[str, dict] = {}
        for decay in self.decays:
            for key, values in decay.persistent_state().items():
                persistent.setdefault(key, {}).update(values)
        if persistent:
            state["persistent"] = persistent
        return state

    @override
    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # Called before `load_state_dict` (which only runs when the checkpoint holds this callback's state).
        ours = self.state_key in (checkpoint.get("callbacks") or {})
        self._loaded = {"foreign_layout": bool(checkpoint.get("optimizer_states")) and not ours}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        persistent = dict(state_dict.get("persistent") or {})
        if state_dict.get("reference"):  # checkpoints of lightning_wd 0.1
            persistent.setdefault("reference", state_dict["reference"])
        self._loaded = {"steps": state_dict.get("steps", []), "decisions": state_dict.get("decisions"),
                        "persistent": persistent}
        if self._fitting and self.decays:  # a strategy that restores after fit start: check and apply now
            self._check_resume()
            self._restore_loaded()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["decays"], state["_planner"], state["_fitting"] = [], None, False
        state["_module"], state["_trainer"] = None, None
        # Lightning attaches the module's `log`/`log_dict` to every callback at fit: bound to the model, they
        # would drag it (and its optimizer closures) into the pickle.
        state.pop("log", None)
        state.pop("log_dict", None)
        return state
