"""The callback's view of the model: one grouping plan, the decision of each tensor, and what the audit shows.

The plan is made over every parameter as if it were trainable, so a tensor frozen now (unfrozen later
by a finetuning callback) already has its decision, and the decisions do not depend on freezing, on the
optimizer's groups or on the order of the callbacks (what the resume check compares).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from lightning_wd.core.audit import NO_DECAY, GroupPlan
from lightning_wd.core.coupling import timescale_unit
from lightning_wd.core.flat_shards import clean_name
from lightning_wd.core.grouping import plan_groups
from lightning_wd.core.normalized import normalized_tensors
from lightning_wd.core.retrofit import decay_kind
from lightning_wd.core.rules import GroupingRules
from lightning_wd.core.schemes import Scheme, scheme_for_native

__all__ = ["Planner", "steps_per_epoch"]


def steps_per_epoch(trainer) -> int:
    """Optimizer steps per epoch of a trainer (raises ``ValueError`` for an unsized train loader)."""
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        raise ValueError("`timescale_epochs` needs a sized train dataloader (epochs of known length)")
    return max(1, math.ceil(batches / trainer.accumulate_grad_batches))


class Planner:
    """Decisions for the tensors of ``model`` under ``rules`` (multipliers relative to the strength).

    Example:
        >>> from lightning_wd.core.schemes import get_scheme
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        >>> planner = Planner(model, GroupingRules(), get_scheme("decoupled"))
        >>> planner.assign(model[0].weight), planner.assign(model[1].weight)
        (('decay', 1.0), ('no_decay', 0.0))
    """

    def __init__(self, model: nn.Module, rules: GroupingRules, scheme: Scheme, per_group: bool = False,
                 timescale_epochs: float | None = None, coupling: str = "lr",
                 normalized_layers: list[str] | None = None) -> None:
        self.model, self.scheme, self.per_group = model, scheme, per_group
        self.timescale_epochs, self.coupling = timescale_epochs, coupling
        # AdamC per layer: "corrected" on tensors that feed a norm layer, "lr" on the others
        self.normalized = normalized_tensors(model, normalized_layers) if coupling == "corrected" else {}
        frozen = [p for p in model.parameters() if not p.requires_grad]
        self.frozen = {id(p) for p in frozen}
        for param in frozen:
            param.requires_grad_(True)
        try:
            self.plan = plan_groups(model, 1.0, rules)
        finally:
            for param in frozen:
                param.requires_grad_(False)
        named = {clean_name(n): p for n, p in model.named_parameters()}  # as in the unwrapped model (FSDP1)
        self.names = {id(p): n for n, p in named.items()}
        self._by_id = {id(named[r.name]): (r.group, r.strength) for r in self.plan.rows
                       if r.group is not None and r.name in named}
        self.order = [g["name"] for g in self.plan.groups]

    def assign(self, param: torch.Tensor) -> tuple[str, float]:
        """``(decision key, strength multiplier)`` of a tensor (unknown tensors do not decay)."""
        return self._by_id.get(id(param), (NO_DECAY, 0.0))

    def coupling_of(self, param: torch.Tensor) -> str:
        """The lr coupling of a tensor: under ``corrected``, AdamC's only on the tensors of normalised layers."""
        if self.coupling != "corrected":
            return self.coupling
        return self._coupling_of_name(self.names.get(id(param)))

    def key(self, param: torch.Tensor) -> str:
        return self.assign(param)[0]

    def decisions(self) -> dict[str, list]:
        """``{name: [multiplier, reason]}`` of every grouped tensor (what a resume must agree on)."""
        return {r.name: [r.strength, r.reason] + ([self._coupling_of_name(r.name)] if self.normalized else [])
                for r in self.plan.rows if r.group is not None}

    def _coupling_of_name(self, name: str | None) -> str:
        return "corrected" if name in self.normalized else "lr"

    @staticmethod
    def own_scheme(optimizers: Iterable[torch.optim.Optimizer], default: Scheme) -> Scheme:
        """The scheme the optimizers' own ``weight_decay`` means (e.g. coupled L2 for SGD), else ``default``."""
        kinds = {decay_kind(o, g) for o in optimizers for g in o.param_groups if g.get("weight_decay")}
        if len(kinds) == 1 and None not in kinds:
            return scheme_for_native(kinds.pop()) or default
        return default

    def timescale(self, trainer) -> Callable[[dict], float]:
        """``group -> 1 / (unit * tau * steps per epoch)``: the strength of a timescale of ``tau`` epochs."""
        tau, spe = self.timescale_epochs, steps_per_epoch(trainer)

        def scale(group: dict) -> float:
            lr0 = float(group.get("initial_lr", group["lr"]))
            unit = timescale_unit(self.coupling, lr0, max(float(group.get("max_lr", 0.0)), lr0))
            return 1.0 / (unit * tau * spe) if unit else 0.0

        return scale

    def shown_plan(self, decays, optimizers) -> GroupPlan:
        """The plan with the strength each tensor gets now, as the audit table and MLflow show it."""
        applied = {id(p): decay.strength(bucket) for decay in decays for bucket in decay.buckets
                   for p in bucket.params}
        held = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
        named = {clean_name(n): p for n, p in self.model.named_parameters()}
        rows = []
        for row in self.plan.rows:
            param = named.get(row.name)
            if row.group is None or param is None:
                rows.append(row)
            elif id(param) in self.frozen and id(param) not in held:
                rows.append(dataclasses.replace(row, group=None, strength=0.0, reason="frozen (requires_grad=False)"))
            elif id(param) not in held:
                rows.append(dataclasses.replace(row, strength=0.0, reason=f"{row.reason} (in no optimizer)"))
            else:
                reason = row.reason + (" (frozen now, held by the optimizer)" if id(param) in self.frozen else "")
                if self.coupling == "corrected" and row.strength:
                    why = self.normalized.get(row.name)
                    reason += f"; lr coupling corrected ({why})" if why else "; lr coupling lr (feeds no norm layer)"
                rows.append(dataclasses.replace(row, strength=applied.get(id(param), 0.0), reason=reason))
        strengths: dict[str, float] = {}
        for row in rows:
            if row.group is not None:
                strengths[row.group] = max(strengths.get(row.group, 0.0), row.strength)
        groups = [{**g, "weight_decay": strengths.get(g["name"], 0.0)} for g in self.plan.groups]
        return GroupPlan(groups=groups, rows=rows, weight_decay=max(strengths.values(), default=0.0),
                         group_of={r.name: r.group for r in rows if r.group is not None})

    def applied_strength(self, decays) -> float | None:
        """The strength of the first decayed tensor now, without its rule multiplier (``hparams['strength']``)."""
        for decay in decays:
            for bucket in decay.buckets:
                factor = self.assign(bucket.params[0])[1]
                return decay.strength(bucket) / factor if factor else 0.0
        return 0.0 if decays else None
