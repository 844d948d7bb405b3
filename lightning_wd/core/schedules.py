"""Strength over time: the decay strength at each optimizer step (steps, not batches).

With ``t`` the 0-based index of the optimizer step, ``T`` the run's total optimizer steps, ``W`` the
warmup steps, ``lam`` the initial strength and ``f`` the final strength:

* warmup (any schedule, a callable included, ``W > 0``): the value is multiplied by ``min(1, (t + 1) / W)``;
* progress ``p = clip((t - W) / (T - W), 0, 1)``;
* ``constant``: ``lam``;
* ``linear``: ``f + (lam - f) * (1 - p)``;
* ``cosine``: ``f + (lam - f) * (1 + cos(pi * p)) / 2``;
* ``warmup_cosine``: ``cosine`` with ``W`` defaulting to 5 % of ``T``;
* ``step``: ``lam * g**k``, ``k`` the number of milestones passed (``p >= 0.5``, ``p >= 0.75``: 50 % and
  75 % of the run after warmup) and ``g = sqrt(f / lam)`` (``g = 0.1`` when ``f`` is not given);
* ``lr``: ``lam * lr_t / lr_0``: the strength follows the shape of the learning-rate schedule;
* a callable ``fn(t) -> strength``.

``final_strength`` only applies to the decaying schedules (linear, cosine, warmup_cosine, step); they
need ``T`` (:meth:`StrengthSchedule.set_total_steps`) for any step past the warmup.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lightning_wd.core.validation import check_strength

__all__ = ["SCHEDULES", "StrengthSchedule"]

SCHEDULES = ("constant", "linear", "cosine", "warmup_cosine", "step", "lr")
DECAYING = ("linear", "cosine", "warmup_cosine", "step")
_MILESTONES = (0.5, 0.75)


class StrengthSchedule:
    """Strength at optimizer step ``t``.

    Args:
        schedule: one of :data:`SCHEDULES` or a callable ``fn(step) -> strength``.
        strength: initial strength (>= 0).
        final_strength: strength at the end (default: ``strength`` for constant, 0 for linear/cosine,
            two 10x drops for step).
        warmup_steps: linear warmup length in optimizer steps.
        total_steps: the run's optimizer steps (set later with :meth:`set_total_steps` if unknown).

    Raises:
        ValueError: unknown ``schedule`` (lists the names), negative ``warmup_steps``, a negative or
            non-finite ``strength``/``final_strength``, ``final_strength`` with a schedule that does not
            decay (constant, lr, a callable).

    Example:
        >>> s = StrengthSchedule("cosine", 1.0, final_strength=0.0, total_steps=3)
        >>> [round(s(t), 3) for t in range(4)]
        [1.0, 0.75, 0.25, 0.0]
    """

    def __init__(
        self,
        schedule: str | Callable[[int], float] = "constant",
        strength: float = 0.0,
        final_strength: float | None = None,
        warmup_steps: int = 0,
        total_steps: int | None = None,
    ) -> None:
        if not callable(schedule) and schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {', '.join(SCHEDULES)} or a callable, got {schedule!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be an integer >= 0, got {warmup_steps!r}")
        check_strength(strength, "strength", error=ValueError)
        if final_strength is not None:
            check_strength(final_strength, "final_strength", error=ValueError)
            if schedule not in DECAYING and not (schedule == "constant" and final_strength == strength):
                raise ValueError("`final_strength` needs a decaying `schedule` (linear, cosine, warmup_cosine, step)")
        self.schedule = schedule
        self.strength = float(strength)
        self.final_strength = final_strength
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    @property
    def is_constant(self) -> bool:
        """True when the strength never changes (no per-step work is needed)."""
        return self.schedule == "constant" and self.warmup_steps == 0

    def set_total_steps(self, total_steps: float | int) -> None:
        """Set ``T``; an unbounded run (``inf``) only admits schedules that do not need it."""
        if not math.isfinite(total_steps):
            if self.schedule in DECAYING:
                raise ValueError(f"`schedule={self.schedule!r}` needs a bounded run: set max_epochs or max_steps")
            total_steps = 0
        self.total_steps = int(total_steps)

    def _final(self) -> float:
        if self.final_strength is not None:
            return float(self.final_strength)
        return self.strength if self.schedule in ("constant", "lr") else 0.0

    def __call__(self, step: int, lr_ratio: float = 1.0) -> float:
        """Strength at optimizer step ``step``; ``lr_ratio`` is ``lr_t / lr_0`` (used by ``"lr"``)."""
        lam, warmup = self.strength, self.warmup_steps
        if self.schedule == "warmup_cosine" and warmup == 0:
            warmup = max(1, round(0.05 * (self.total_steps or 0)))
        factor = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        if callable(self.schedule):
            return float(self.schedule(step)) * factor
        if self.schedule == "constant":
            return lam * factor
        if self.schedule == "lr":
            return lam * lr_ratio * factor
        if self.total_steps is None and step > warmup:
            raise ValueError(f"`schedule={self.schedule!r}` needs the run's length: call set_total_steps first")
        total = self.total_steps or 0
        progress = min(max((step - warmup) / max(1, total - warmup), 0.0), 1.0)
        final = self._final()
        if self.schedule == "linear":
            value = final + (lam - final) * (1.0 - progress)
        elif self.schedule == "step":
            gamma = 0.1 if self.final_strength is None else (math.sqrt(final / lam) if lam > 0 else 0.0)
            value = lam * gamma ** sum(progress >= m for m in _MILESTONES)
        else:
            value = final + (lam - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return value * factor

    def __repr__(self) -> str:
        name = getattr(self.schedule, "__name__", self.schedule)
        return f"StrengthSchedule({name!r}, strength={self.strength}, final_strength={self.final_strength})"
