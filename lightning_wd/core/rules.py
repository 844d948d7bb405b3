"""The grouping rules as one value: what decides which tensors decay (see :mod:`lightning_wd.core.grouping`).

Every entry point (``plan_groups``, ``build_optimizer``, ``GroupedOptimizer``, ``WeightDecay``) takes the
same rules, as keyword arguments or as one :class:`GroupingRules`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from lightning_wd.core.validation import check_bool, check_multipliers, check_patterns

__all__ = ["RULE_NAMES", "GroupingRules"]


@dataclass(frozen=True)
class GroupingRules:
    """Which parameters decay: user globs, multipliers and the default rules' switches.

    Args:
        exclude: globs on parameter names (or ``type:`` globs on module class names) that do not decay.
        include: globs that decay even where a default rule would exclude them.
        multipliers: ``{glob: factor}``: matching decayed tensors decay with ``strength * factor``.
        exclude_bias: biases do not decay.
        exclude_1d: tensors with ``ndim <= 1`` do not decay.
        exclude_norm: parameters of normalisation layers do not decay.
        exclude_embeddings: embedding tables do not decay.
        use_model_no_weight_decay: honour the model's ``no_weight_decay()`` / ``no_weight_decay_keywords()``.

    Raises:
        TypeError: a pattern is not a non-empty string, or a multiplier not a number.
        ValueError: a multiplier is negative or not finite, or a switch is not a bool.

    Example:
        >>> rules = GroupingRules(exclude="head.*", multipliers={"emb.*": 0.1})
        >>> rules.exclude, rules.kwargs()["multipliers"]
        (('head.*',), {'emb.*': 0.1})
    """

    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    multipliers: Mapping[str, float] = field(default_factory=dict)
    exclude_bias: bool = True
    exclude_1d: bool = True
    exclude_norm: bool = True
    exclude_embeddings: bool = False
    use_model_no_weight_decay: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", check_patterns(self.exclude, "exclude"))
        object.__setattr__(self, "include", check_patterns(self.include, "include"))
        object.__setattr__(self, "multipliers", check_multipliers(self.multipliers))
        for name in RULE_NAMES[3:]:
            check_bool(getattr(self, name), name)

    @classmethod
    def of(cls, rules: GroupingRules | Mapping[str, Any] | None = None, **kwargs: Any) -> GroupingRules:
        """``rules`` itself, or rules built from a mapping and/or keyword arguments (not both with a value).

        Example:
            >>> GroupingRules.of(exclude=["a"]) == GroupingRules.of(GroupingRules(exclude=("a",)))
            True
        """
        if isinstance(rules, GroupingRules):
            if kwargs:
                raise TypeError(f"give the grouping rules either as `rules` or as {sorted(kwargs)}, not both")
            return rules
        merged = {**dict(rules or {}), **kwargs}
        unknown = sorted(set(merged) - set(RULE_NAMES))
        if unknown:
            raise TypeError(f"unknown grouping rule(s) {unknown}; the rules are {', '.join(RULE_NAMES)}")
        return cls(**{k: v for k, v in merged.items() if v is not None or k in ("exclude", "include")})

    def kwargs(self) -> dict[str, Any]:
        """The rules as plain keyword arguments (lists and dicts, for loggers and YAML)."""
        values = asdict(self)
        values["exclude"], values["include"] = list(self.exclude), list(self.include)
        values["multipliers"] = dict(self.multipliers)
        return values

    def __hash__(self) -> int:
        return hash((self.exclude, self.include, tuple(sorted(self.multipliers.items())),
                     *(getattr(self, n) for n in RULE_NAMES[3:])))


RULE_NAMES: tuple[str, ...] = (
    "exclude", "include", "multipliers", "exclude_bias", "exclude_1d", "exclude_norm", "exclude_embeddings",
    "use_model_no_weight_decay",
)
