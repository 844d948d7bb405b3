"""The settings of a study: arguments of ``tune``, else the recipe's ``tune:`` section, else the defaults.

The ``tune:`` section takes the keys of :data:`TUNE_KEYS`; ``sampler`` and ``pruner`` may be a name or a
mapping with ``name`` and the sampler's/pruner's keyword arguments, e.g.
``pruner: {name: median, n_startup_trials: 3}``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_wd.apps.tuning import storage as storage_mod
from lightning_wd.apps.tuning.space import SPARSITY_KEY, SearchSpace, TuneError

__all__ = ["OBJECTIVES", "PRUNERS", "SAMPLERS", "TUNE_KEYS", "Settings", "load_recipe", "make_pruner",
           "make_sampler", "resolve_settings"]

SAMPLERS = ("tpe", "random", "grid", "nsga2")
PRUNERS = ("median", "hyperband", "none")
OBJECTIVES = ("accuracy", "sparsity")
DEFAULT_METRIC = "val/acc"
DEFAULT_EXPERIMENT = "lightning_wd"
TUNE_KEYS = ("n_trials", "timeout", "study_name", "storage", "tracking_uri", "experiment", "sampler", "pruner",
             "objectives", "metric", "direction", "seed", "space", "out", "workers", "heartbeat_interval",
             "grace_period")


@dataclass
class Settings:
    """A study's settings: arguments, else the recipe's ``tune:`` section, else the defaults."""

    recipe: dict
    recipe_path: Path | None
    n_trials: int
    space: SearchSpace
    study_name: str
    storage: str
    out: Path
    metric: str = DEFAULT_METRIC
    direction: str = "maximize"
    objectives: list[str] = field(default_factory=lambda: ["accuracy"])
    sampler: Any = "tpe"
    sampler_options: dict = field(default_factory=dict)
    pruner: Any = "median"
    pruner_options: dict = field(default_factory=dict)
    timeout: float | None = None
    tracking_uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    seed: int | None = None
    workers: int = 1
    heartbeat_interval: int | None = storage_mod.DEFAULT_HEARTBEAT_INTERVAL
    grace_period: int | None = storage_mod.DEFAULT_GRACE_PERIOD
    overrides: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Objective (metric) names, as shown and stored: e.g. ``["val/acc", "wd/nonzero_fraction"]``."""
        return [self.metric if o == "accuracy" else SPARSITY_KEY for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        """Optuna directions of the objectives (``sparsity`` is minimised)."""
        return [self.direction if o == "accuracy" else "minimize" for o in self.objectives]

    def describe(self) -> dict[str, Any]:
        """The settings as MLflow params of the parent run."""
        params = {
            "recipe": str(self.recipe_path) if self.recipe_path else "(dict)", "study_name": self.study_name,
            "storage": storage_mod.redact(self.storage), "n_trials": self.n_trials, "timeout": self.timeout,
            "metric": self.metric, "direction": self.direction, "objectives": ",".join(self.objectives),
            "sampler": _name(self.sampler, self.sampler_options), "pruner": _name(self.pruner, self.pruner_options),
            "seed": self.seed, "workers": self.workers, "overrides": " ".join(self.overrides) or None,
            "heartbeat_interval": self.heartbeat_interval, "grace_period": self.grace_period,
        }
        params.update({f"space.{k}": v for k, v in self.space.describe().items()})
        return params


def _name(obj: Any, options: Mapping) -> str:
    if isinstance(obj, str):
        return obj + (f" {dict(options)}" if options else "")
    return type(obj).__name__


def load_recipe(config: str | Path | Mapping) -> tuple[dict, Path | None]:
    """The recipe as a dict, and its path (None for a dict).

    Raises:
        TuneError: missing file, bad YAML, or not a mapping.
    """
    if isinstance(config, Mapping):
        return dict(config), None
    import yaml

    path = Path(config)
    if not path.is_file():
        raise TuneError(f"recipe not found: {path}")
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise TuneError(f"malformed YAML in {path}: {getattr(error, 'problem', None) or error}") from None
    if not isinstance(recipe, dict):
        raise TuneError(f"recipe {path} must hold a mapping of options")
    return recipe, path


def _split(value: Any, what: str, choices: Sequence[str]) -> tuple[Any, dict]:
    """``"tpe"`` / ``{"name": "tpe", ...options}`` / an object -> (name or object, options)."""
    if value is None or (not isinstance(value, (str, Mapping))):
        return value, {}
    if isinstance(value, Mapping):
        options = dict(value)
        value = options.pop("name", None)
    else:
        options = {}
    if value not in choices:
        raise TuneError(f"--{what}: choose from {', '.join(choices)}, got {value!r}")
    return value, options


def _int(value: Any, what: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise TuneError(f"--{what} must be an integer >= {low}, got {value!r}")
    return value


def resolve_settings(config: str | Path | Mapping, **given: Any) -> Settings:
    """Merge the arguments of :func:`tune` (non-None win) with the recipe's ``tune:`` section and defaults.

    Raises:
        TuneError: an invalid value, with the option it came from.
    """
    recipe, path = load_recipe(config)
    section = recipe.get("tune") or {}
    if not isinstance(section, Mapping):
        raise TuneError("the recipe's tune: section must be a mapping")
    unknown = set(section) - set(TUNE_KEYS)
    if unknown:
        raise TuneError(f"tune: unknown key(s) {sorted(unknown)}; allowed: {', '.join(TUNE_KEYS)}")

    def pick(key: str, default: Any = None) -> Any:
        value = given.get(key)
        return value if value is not None else section.get(key, default)

    n_trials = pick("n_trials")
    if n_trials is None:
        raise TuneError("give --n-trials N (or tune: {n_trials: N} in the recipe)")
    n_trials = _int(n_trials, "n-trials")
    objectives = pick("objectives", ["accuracy"])
    if isinstance(objectives, str):
        objectives = [o.strip() for o in objectives.split(",") if o.strip()]
    objectives = list(objectives)
    if not objectives or any(o not in OBJECTIVES for o in objectives) or len(set(objectives)) != len(objectives):
        raise TuneError(f"--objectives: a comma-separated list of {', '.join(OBJECTIVES)}, got {objectives!r}")
    multi = len(objectives) > 1
    metric = pick("metric", DEFAULT_METRIC)
    if not isinstance(metric, str) or not metric:
        raise TuneError(f"--metric: expected a metric name such as val/acc, got {metric!r}")
    lower = metric.lower()
    direction = pick("direction", "minimize" if ("loss" in lower or "error" in lower) else "maximize")
    if direction not in ("maximize", "minimize"):
        raise TuneError(f"--direction: maximize or minimize, got {direction!r}")
    sampler, sampler_options = _split(pick("sampler", "nsga2" if multi else "tpe"), "sampler", SAMPLERS)
    pruner_arg = given.get("pruner")
    if multi and pruner_arg is not None and pruner_arg != "none":
        raise TuneError("pruning needs a single objective (Optuna cannot prune on several values): use --pruner none")
    # with several objectives the recipe's pruner (meant for a single-objective study) does not apply
    pruner, pruner_options = _split("none" if multi else pick("pruner", "median"), "pruner", PRUNERS)
    timeout = pick("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise TuneError(f"--timeout must be a positive number of seconds, got {timeout!r}")
    seed = pick("seed")
    if seed is not None:
        seed = _int(seed, "seed", 0)
    space_spec = given.get("space")
    space = SearchSpace.from_recipe(recipe, space_spec)
    stem = path.stem if path is not None else "lightning_wd"
    study_name = pick("study_name", stem + ("-" + "-".join(objectives) if multi else ""))
    if not isinstance(study_name, str) or not study_name.strip():
        raise TuneError(f"--study-name: expected a non-empty name, got {study_name!r}")
    url = pick("storage", storage_mod.DEFAULT_STORAGE)
    kind = storage_mod.storage_kind(url)
    workers = _int(pick("workers", 1), "workers")
    storage_mod.check_workers(url, workers)
    out = pick("out")
    if out is None:
        base = Path("mlruns")
        if kind == "sqlite" and url.startswith("sqlite:///"):
            db = url[len("sqlite:///"):].split("?", 1)[0]
            base = Path(db).parent if db and db != ":memory:" else base
        elif kind == "journal":
            base = Path(url[len(storage_mod.JOURNAL_PREFIX):]).parent
        out = base / "studies" / study_name
    heartbeat = pick("heartbeat_interval", storage_mod.DEFAULT_HEARTBEAT_INTERVAL)
    grace = pick("grace_period", max(storage_mod.DEFAULT_GRACE_PERIOD, 3 * heartbeat) if heartbeat else None)
    overrides = [str(a) for a in (given.get("overrides") or [])]
    return Settings(
        recipe=recipe, recipe_path=path, n_trials=n_trials, space=space, study_name=study_name.strip(),
        storage=url, out=Path(out), metric=metric, direction=direction, objectives=objectives,
        sampler=sampler, sampler_options=sampler_options, pruner=pruner, pruner_options=pruner_options,
        timeout=timeout, tracking_uri=pick("tracking_uri", recipe.get("tracking_uri")),
        experiment=pick("experiment", recipe.get("experiment") or DEFAULT_EXPERIMENT), seed=seed,
        workers=workers, heartbeat_interval=heartbeat, grace_period=grace, overrides=overrides,
    )


def make_sampler(settings: Settings, worker: int = 0) -> Any:
    """The Optuna sampler of the settings (an object passed to :func:`tune` is used as is).

    Raises:
        TuneError: options the sampler does not take.
    """
    import optuna

    if not isinstance(settings.sampler, str):
        return settings.sampler
    seed = None if settings.seed is None else settings.seed + worker  # equal seeds would sample equal points
    classes = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
               "nsga2": optuna.samplers.NSGAIISampler}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if settings.sampler == "grid":
                return optuna.samplers.GridSampler(settings.space.grid(), seed=seed, **settings.sampler_options)
            return classes[settings.sampler](seed=seed, **settings.sampler_options)
    except TypeError as error:
        raise TuneError(f"sampler {settings.sampler}: {error}") from None


def make_pruner(settings: Settings) -> Any:
    """The Optuna pruner of the settings: median (5 startup trials, 1 warm-up round), hyperband, none."""
    import optuna

    if not isinstance(settings.pruner, str):
        return settings.pruner
    try:
        if settings.pruner == "median":
            return optuna.pruners.MedianPruner(**{"n_startup_trials": 5, "n_warmup_steps": 1,
                                                  **settings.pruner_options})
        if settings.pruner == "hyperband":
            return optuna.pruners.HyperbandPruner(**{"min_resource": 1, "reduction_factor": 3,
                                                     **settings.pruner_options})
        return optuna.pruners.NopPruner()
    except (TypeError, ValueError) as error:
        raise TuneError(f"pruner {settings.pruner}: {error}") from None
