"""The search space of a study, declared in the recipe's ``tune:`` section.

The recipe (see :mod:`~lightning_wd.apps.tuning.recipe`) has one :class:`~lightning_wd.WeightDecay`
entry; its ``tune:`` section may declare ``space:`` with any of the
study parameters ``strength``, ``scheme``, ``l1_ratio``, ``final_strength``, ``timescale_epochs``:

* a mapping ``{low: 1e-6, high: 1e-2, log: true, points: 16}`` (any key may be left out: the default
  range of the scheme fills it), or ``true`` / ``{}``: the defaults;
* a list of numbers: the grid values (the range is their min..max);
* a single number: a fixed value (set in the recipe, not tuned);
* ``scheme``: a list of schemes (categorical), or one (fixed): a name (``l1``) or a
  :class:`~lightning_wd.core.schemes.Scheme` subclass of your own by class path (``mypkg.MyScheme``, or
  ``{class_path: mypkg.MyScheme}``); the recipe's WeightDecay may name its scheme either way too.

Without a ``space`` the study tunes ``strength`` over the default range of the recipe's scheme: the
``search_range`` the scheme declares. ``strength`` is tuned unless it is fixed or ``timescale_epochs`` is
tuned instead. When ``scheme`` is categorical and the strength range is not given, each scheme samples
strength over its own range (the grid sampler uses their union); ``l1_ratio`` is then sampled only for the
schemes it applies to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning_wd.apps.errors import TuneError
from lightning_wd.apps.tuning.recipe import (
    DEFAULT_SCHEME,
    l1_ratio_schemes,
    scheme_class,
    scheme_label,
    trial_recipe,
    wd_init_args,
    wd_scheme_value,
)

__all__ = ["DEFAULT_GRID_POINTS", "SPARSITY_KEY", "STUDY_PARAMS", "FloatRange", "SearchSpace", "best_recipe"]

STUDY_PARAMS = ("strength", "scheme", "l1_ratio", "final_strength", "timescale_epochs")
DEFAULT_GRID_POINTS = 16
_DEFAULTS = {  # low, high, log, grid points of the params whose range does not depend on the scheme
    "l1_ratio": (0.05, 0.95, False, 5),
    "timescale_epochs": (1.0, 1000.0, True, DEFAULT_GRID_POINTS),
}
SPARSITY_KEY = "wd/nonzero_fraction"  # the statistic minimised by the ``sparsity`` objective


@dataclass(frozen=True)
class FloatRange:
    """A float study parameter: sampled in ``[low, high]`` (log-uniform if ``log``), or from ``grid``.

    Args:
        low: lower bound (> 0 when ``log``).
        high: upper bound (>= ``low``).
        log: sample log-uniformly.
        points: number of grid points for the grid sampler (log- or linearly spaced).
        grid: explicit grid values (override ``points``).

    Raises:
        TuneError: bounds out of order, non-finite, or ``<= 0`` with ``log``.

    Example:
        >>> FloatRange(1e-4, 1e-2, points=3).grid_values()
        [0.0001, 0.001, 0.01]
    """

    low: float
    high: float
    log: bool = True
    points: int = DEFAULT_GRID_POINTS
    grid: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise TuneError(f"a range needs finite low <= high, got low={self.low!r}, high={self.high!r}")
        if self.log and self.low <= 0:
            raise TuneError(f"a log range needs low > 0, got low={self.low!r}")
        if not isinstance(self.points, int) or self.points < 1:
            raise TuneError(f"`points` must be an integer >= 1, got {self.points!r}")

    def grid_values(self) -> list[float]:
        """The grid sampler's values: ``grid`` if given, else ``points`` evenly spaced (in log if ``log``)."""
        if self.grid is not None:
            return list(self.grid)
        if self.points == 1 or self.low == self.high:
            return [self.low]
        steps = [i / (self.points - 1) for i in range(self.points)]
        if self.log:
            a, b = math.log10(self.low), math.log10(self.high)
            values = [10 ** (a + (b - a) * t) for t in steps]
        else:
            values = [self.low + (self.high - self.low) * t for t in steps]
        return [min(max(float(f"{v:.6g}"), self.low), self.high) for v in values]

    def describe(self) -> str:
        """Compact text, e.g. ``log[1e-06, 1]``."""
        text = f"{'log' if self.log else 'uniform'}[{self.low:g}, {self.high:g}]"
        return text + (f" grid={list(self.grid)}" if self.grid is not None else "")


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TuneError(f"space.{name}: expected a number, got {value!r}")
    try:
        return float(value)  # YAML 1.1 reads 1e-6 (no dot) as a string
    except ValueError:
        raise TuneError(f"space.{name}: expected a number, got {value!r}") from None


def _parse_range(name: str, spec: Any, default: tuple[float, float, bool, int]) -> FloatRange | float:
    """A :class:`FloatRange`, or a float when ``spec`` fixes the value."""
    low, high, log, points = default
    if spec is True or spec is None:
        return FloatRange(low, high, log, points)
    if isinstance(spec, (int, float, str)) and not isinstance(spec, bool):
        return _as_float(spec, name)
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise TuneError(f"space.{name}: an empty grid")
        values = tuple(sorted(_as_float(v, name) for v in spec))
        return FloatRange(values[0], values[-1], log and values[0] > 0, len(values), values)
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"low", "high", "log", "points", "grid"}
        if unknown:
            raise TuneError(f"space.{name}: unknown key(s) {sorted(unknown)}; use low, high, log, points, grid")
        grid = spec.get("grid")
        if grid is not None:
            grid = tuple(sorted(_as_float(v, name) for v in grid))
        log = spec.get("log", log)
        if not isinstance(log, bool):
            raise TuneError(f"space.{name}.log: expected true or false, got {log!r}")
        try:
            return FloatRange(
                _as_float(spec.get("low", low if grid is None else grid[0]), name),
                _as_float(spec.get("high", high if grid is None else grid[-1]), name),
                log, spec.get("points", points), grid,
            )
        except TuneError as error:
            raise TuneError(f"space.{name}: {error}") from None
    raise TuneError(f"space.{name}: expected a mapping (low/high/log), a list, a number or true, got {spec!r}")


@dataclass
class SearchSpace:
    """What a study samples, and how a sample becomes the WeightDecay callback's arguments.

    Build it with :meth:`from_recipe`. ``schemes`` has one name when the scheme is fixed.

    Example:
        >>> space = SearchSpace.from_recipe({"trainer": {"callbacks": [
        ...     {"class_path": "lightning_wd.WeightDecay", "init_args": {"scheme": "l2"}}]}})
        >>> space.names, space.strength_range("l2").describe()
        (['strength'], 'log[1e-06, 0.01]')
    """

    schemes: tuple[str, ...]
    strength: FloatRange | None = None
    strength_explicit: bool = False
    l1_ratio: FloatRange | None = None
    final_strength: FloatRange | None = None
    timescale_epochs: FloatRange | None = None
    fixed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_recipe(cls, recipe: Mapping, space: Mapping | None = None) -> SearchSpace:
        """The space of ``space`` (default: the recipe's ``tune.space``), with the recipe's scheme as default.

        Raises:
            TuneError: unknown parameter, bad range, or a combination the WeightDecay callback refuses.
        """
        if space is None:
            space = (recipe.get("tune") or {}).get("space") or {}
        if not isinstance(space, Mapping):
            raise TuneError(f"tune.space must be a mapping of {', '.join(STUDY_PARAMS)}, got {space!r}")
        unknown = set(space) - set(STUDY_PARAMS)
        if unknown:
            raise TuneError(f"tune.space: unknown parameter(s) {sorted(unknown)}; tunable: {', '.join(STUDY_PARAMS)}")
        base = wd_init_args(recipe)
        fixed: dict[str, Any] = {}
        scheme_spec = space.get("scheme", base.get("scheme") or DEFAULT_SCHEME)
        if isinstance(scheme_spec, Mapping) and "class_path" not in scheme_spec:
            scheme_spec = scheme_spec.get("choices")
        choices = list(scheme_spec) if isinstance(scheme_spec, (list, tuple)) else [scheme_spec]
        if not choices or scheme_spec is None:
            raise TuneError(f"space.scheme: expected a scheme or a list of schemes, got {scheme_spec!r}")
        schemes = tuple(scheme_label(c) for c in choices)
        if len(set(schemes)) != len(schemes):
            raise TuneError(f"space.scheme: repeated choices in {list(schemes)}")
        if len(schemes) == 1 and "scheme" in space:
            fixed["scheme"] = choices[0] if isinstance(choices[0], Mapping) else wd_scheme_value(schemes[0])
        out = cls(schemes=schemes, fixed=fixed)

        ranges = [scheme_class(s).search_range for s in schemes]
        union = (min(r[0] for r in ranges), max(r[1] for r in ranges), True, DEFAULT_GRID_POINTS)
        for name in ("timescale_epochs", "final_strength", "l1_ratio", "strength"):
            if name not in space:
                continue
            default = _DEFAULTS.get(name, union)
            parsed = _parse_range(name, space[name], default)
            if isinstance(parsed, float):
                fixed[name] = parsed
            else:
                setattr(out, name, parsed)
        spec = space.get("strength")
        out.strength_explicit = isinstance(spec, (list, tuple)) or (
            isinstance(spec, Mapping) and ("low" in spec or "high" in spec or "grid" in spec)
        )
        if out.timescale_epochs is not None and out.strength is not None:
            raise TuneError("space: tune either `strength` or `timescale_epochs`, not both")
        if out.timescale_epochs is None and out.strength is None and "strength" not in fixed:
            if "timescale_epochs" not in fixed:
                out.strength = FloatRange(*union)
        if not out.names:
            raise TuneError("tune.space fixes every parameter: nothing to tune")
        if out.l1_ratio is not None:
            if not set(schemes) & set(l1_ratio_schemes()):
                raise TuneError(f"space.l1_ratio applies to scheme {' or '.join(l1_ratio_schemes())} only; "
                                "add it to space.scheme")
            if not 0 <= out.l1_ratio.low <= out.l1_ratio.high <= 1:
                raise TuneError("space.l1_ratio must lie in [0, 1]")
        schedule = base.get("schedule", "constant")
        if out.final_strength is not None and schedule in ("constant", "lr"):
            raise TuneError("space.final_strength needs a decaying schedule (e.g. cosine); "
                            f"the recipe's is {schedule!r}")
        if out.timescale_epochs is not None and schedule not in ("constant", "lr"):
            raise TuneError(f"space.timescale_epochs works with schedule 'constant' or 'lr', not {schedule!r}")
        return out

    @property
    def names(self) -> list[str]:
        """The study parameter names, in sampling order."""
        names = ["scheme"] if len(self.schemes) > 1 else []
        names += [n for n in ("timescale_epochs", "strength", "l1_ratio", "final_strength") if getattr(self, n)]
        return names

    def strength_range(self, scheme: str, grid: bool = False) -> FloatRange:
        """The strength range used with ``scheme`` (per-scheme default unless given, or for grids)."""
        if self.strength is None:
            raise TuneError("strength is not tuned in this space")
        if self.strength_explicit or grid or len(self.schemes) == 1:
            return self.strength
        low, high = scheme_class(scheme).search_range
        return FloatRange(low, high, self.strength.log, self.strength.points)

    def suggest(self, trial: Any, grid: bool = False) -> dict[str, Any]:
        """Sample one point with an Optuna ``trial``; returns the study parameters."""
        params: dict[str, Any] = {}
        scheme = self.schemes[0]
        if len(self.schemes) > 1:
            scheme = params["scheme"] = trial.suggest_categorical("scheme", list(self.schemes))
        if self.timescale_epochs is not None:
            r = self.timescale_epochs
            params["timescale_epochs"] = trial.suggest_float("timescale_epochs", r.low, r.high, log=r.log)
        if self.strength is not None:
            r = self.strength_range(scheme, grid)
            params["strength"] = trial.suggest_float("strength", r.low, r.high, log=r.log)
        if self.l1_ratio is not None and scheme in l1_ratio_schemes():
            r = self.l1_ratio
            params["l1_ratio"] = trial.suggest_float("l1_ratio", r.low, r.high, log=r.log)
        if self.final_strength is not None:
            r = self.final_strength
            params["final_strength"] = trial.suggest_float("final_strength", r.low, r.high, log=r.log)
        return params

    def grid(self) -> dict[str, list]:
        """The grid sampler's search space (strength: 16 log-spaced points by default).

        Raises:
            TuneError: ``l1_ratio`` is tuned conditionally (scheme elastic_net among others).
        """
        if self.l1_ratio is not None and len(self.schemes) > 1:
            raise TuneError("the grid sampler needs an unconditional space: "
                            f"with l1_ratio tuned, fix scheme: {' or '.join(l1_ratio_schemes())}")
        out: dict[str, list] = {}
        if len(self.schemes) > 1:
            out["scheme"] = list(self.schemes)
        for name in ("timescale_epochs", "strength", "l1_ratio", "final_strength"):
            r = getattr(self, name)
            if r is not None:
                out[name] = r.grid_values()
        return out

    def wd_args(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The WeightDecay ``init_args`` of a sample (fixed values included).

        Example:
            >>> SearchSpace(schemes=("l1",), strength=FloatRange(1e-6, 1e-2)).wd_args({"strength": 1e-3})
            {'strength': 0.001}
        """
        args = {**self.fixed, **{k: v for k, v in params.items() if k in STUDY_PARAMS}}
        if isinstance(args.get("scheme"), str):
            args["scheme"] = wd_scheme_value(args["scheme"])
        if "timescale_epochs" in args:
            args["strength"] = 0.0
        return args

    def describe(self) -> dict[str, str]:
        """The space as short strings, one per parameter (for MLflow params)."""
        out: dict[str, str] = {}
        if len(self.schemes) > 1:
            out["scheme"] = "choice" + str(list(self.schemes))
        for name in ("timescale_epochs", "strength", "l1_ratio", "final_strength"):
            r = getattr(self, name)
            if r is not None:
                per_scheme = name == "strength" and len(self.schemes) > 1 and not self.strength_explicit
                out[name] = "per-scheme default range" if per_scheme else r.describe()
        out.update({k: f"fixed {v}" for k, v in self.fixed.items()})
        return out


def best_recipe(recipe: Mapping, space: SearchSpace, params: Mapping[str, Any]) -> dict:
    """The recipe with a trial's parameters filled in and the ``tune:`` section removed.

    Example:
        >>> space = SearchSpace(schemes=("decoupled",), strength=FloatRange(1e-6, 1.0))
        >>> best_recipe({"tune": {}, "model": {"lr": 0.1}}, space, {"strength": 0.01})["trainer"]["callbacks"]
        [{'class_path': 'lightning_wd.core.callback.WeightDecay', 'init_args': {'strength': 0.01}}]
    """
    return trial_recipe(recipe, space.wd_args(params))
