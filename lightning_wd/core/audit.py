"""The outcome of grouping as data (:class:`GroupPlan`, one :class:`AuditRow` per tensor) and as a table."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["DECAY", "NO_DECAY", "AuditRow", "GroupPlan", "render"]

DECAY = "decay"
NO_DECAY = "no_decay"


@dataclass(frozen=True)
class AuditRow:
    """One parameter's decision: where it went and why."""

    name: str
    shape: tuple[int, ...]
    numel: int
    group: str | None  # None: not in any group (frozen, or an alias of a tied tensor)
    strength: float
    reason: str

    @property
    def decayed(self) -> bool:
        return self.group is not None and self.strength > 0


@dataclass
class GroupPlan:
    """The outcome of grouping: torch param-group dicts plus one audit row per named parameter."""

    groups: list[dict]
    rows: list[AuditRow]
    weight_decay: float
    group_of: dict[str, str] = field(default_factory=dict)  # canonical param name -> group name

    def render(self, max_notable: int = 12) -> str:
        """A compact table: counts per group, then the notable exclusions (see :func:`render`)."""
        return render(self, max_notable=max_notable)

    def __str__(self) -> str:
        return self.render()


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def render(plan, max_notable: int = 12) -> str:
    """Counts per group, the reasons for the exclusions, then the decisions worth knowing about.

    The last part lists every row whose reason is not a plain weight, bias, 1-D tensor or norm layer:
    user rules, multipliers, the model's ``no_weight_decay()``, ``_no_weight_decay`` marks, embeddings,
    tied aliases and frozen tensors.

    Example:
        >>> from torch import nn
        >>> from lightning_wd import explain
        >>> print(explain(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), 0.1))
        group     tensors  params  strength
        decay           1      16       0.1
        no_decay        3      12         0
        excluded (reason: tensors): bias: 1, norm layer LayerNorm: 2
    """
    lines = [f"{'group':<{_width(plan)}} {'tensors':>7} {'params':>7}  strength"]
    for group in plan.groups:
        rows = [r for r in plan.rows if r.group == group["name"]]
        numel = sum(r.numel for r in rows)
        lines.append(f"{group['name']:<{_width(plan)}} {len(rows):>7} {_count(numel):>7} "
                     f"{group['weight_decay']:>9.4g}")
    skipped = [r for r in plan.rows if r.group is None]
    if skipped:
        lines.append(f"{'(not grouped)':<{_width(plan)}} {len(skipped):>7} "
                     f"{_count(sum(r.numel for r in skipped)):>7}")
    # Tensors the rules put in the no-decay group (not those of a decay group whose strength is 0).
    excluded = Counter(r.reason for r in plan.rows if r.group == NO_DECAY)
    if excluded:
        lines.append("excluded (reason: tensors): " + ", ".join(f"{k}: {v}" for k, v in sorted(excluded.items())))
    notable = [r for r in plan.rows if r.reason not in ("weight", "bias", "ndim<=1")
               and not r.reason.startswith("norm layer")]
    for row in notable[:max_notable]:
        lines.append(f"  {row.name} {list(row.shape)} -> {row.group or '-'}: {row.reason}")
    if len(notable) > max_notable:
        lines.append(f"  ... and {len(notable) - max_notable} more (see .rows)")
    return "\n".join(lines)


def _width(plan) -> int:
    return max([len("(not grouped)") if any(r.group is None for r in plan.rows) else 5]
               + [len(g["name"]) for g in plan.groups])
