"""The settings of a study: one frozen object built once (arguments, else the recipe's ``tune:`` section,
else the defaults), validated once, given to :func:`~lightning_wd.apps.tuning.tune` and to every worker.

The ``tune:`` section takes the keys of :data:`TUNE_KEYS`; ``sampler`` and ``pruner`` may be a name or a
mapping with ``name`` and the sampler's/pruner's keyword arguments, e.g.
``pruner: {name: median, n_startup_trials: 3}``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_wd.apps.errors import TuneError
from lightning_wd.apps.tuning import storage as storage_mod
from lightning_wd.apps.tuning.space import SPARSITY_KEY, SearchSpace
from lightning_wd.tracking.uris import DEFAULT_EXPERIMENT, redact, sqlite_path

__all__ = ["OBJECTIVES", "OPTIONS", "PRUNERS", "SAMPLERS", "TUNE_KEYS", "Settings", "load_recipe", "make_pruner",
           "make_sampler"]

SAMPLERS = ("tpe", "random", "grid", "nsga2")
PRUNERS = ("median", "hyperband", "none")
OBJECTIVES = ("accuracy", "sparsity")
DIRECTIONS = ("maximize", "minimize")
DEFAULT_METRIC = "val/acc"
#: the keys of a recipe's ``tune:`` section
TUNE_KEYS = ("n_trials", "timeout", "study_name", "storage", "tracking_uri", "experiment", "sampler", "pruner",
             "objectives", "metric", "direction", "seed", "space", "out", "workers", "heartbeat_interval",
             "grace_period")
#: the options :meth:`Settings.resolve` (and so ``tune()``) takes besides the recipe
OPTIONS = (*TUNE_KEYS, "overrides", "progress")


@dataclass(frozen=True)
class Settings:
    """A study's settings, resolved and validated (build it with :meth:`resolve`).

    Attributes:
        recipe: the recipe (a dict, ``tune:`` section included).
        recipe_path: its file (None for a dict).
        n_trials: the study's target number of finished (COMPLETE + PRUNED) trials; a resumed study runs
            only the missing ones.
        space: what to sample (default: the recipe's ``tune.space``, else strength over the scheme's range).
        study_name: default: the recipe's file name (plus the objectives when several).
        storage: Optuna storage URL (default ``sqlite:///mlruns/optuna.db``; ``postgresql+psycopg2://...``
            for several workers; ``journal:PATH``).
        out: folder of ``best.yaml``, plots and tables (default ``<storage folder>/studies/<study>``).
        metric: the monitored metric (default ``val/acc``).
        direction: ``maximize`` or ``minimize`` (default: minimize for a metric named like a loss or error).
        objectives: ``accuracy`` (the metric, default) and/or ``sparsity`` (minimise ``wd/nonzero_fraction``).
        sampler: ``tpe`` (default), ``random``, ``grid``, ``nsga2`` (default with two objectives), or a sampler.
        sampler_options: keyword arguments of the sampler.
        pruner: ``median`` (default), ``hyperband``, ``none`` (default with two objectives), or a pruner.
        pruner_options: keyword arguments of the pruner.
        timeout: no trial starts after this many seconds.
        tracking_uri: MLflow tracking URI (default: the recipe's ``tracking_uri``, ``MLFLOW_TRACKING_URI``,
            ``sqlite:///mlruns/mlflow.db``).
        experiment: MLflow experiment (default: the recipe's ``experiment``, else ``lightning_wd``).
        seed: sampler seed (worker ``i`` uses ``seed + i``), and ``seed_everything`` of recipes without one.
        workers: with N > 1, N worker processes on this machine run trials together (this process only
            supervises them and writes the results); needs a non-SQLite storage.
        heartbeat_interval: seconds between heartbeats of a running trial (RDB storages; default 60).
        grace_period: seconds without heartbeat after which a trial is failed and retried once (default 180).
        overrides: LightningCLI arguments given to every trial after the recipe (``--trainer.max_epochs 3``).
        progress: show the study's progress bar.

    Raises:
        TuneError: a value out of range, naming the option and the allowed values.
    """

    recipe: dict
    recipe_path: Path | None
    n_trials: int
    space: SearchSpace
    study_name: str
    storage: str
    out: Path
    metric: str = DEFAULT_METRIC
    direction: str = "maximize"
    objectives: tuple[str, ...] = ("accuracy",)
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
    overrides: tuple[str, ...] = ()
    progress: bool = True

    def __post_init__(self) -> None:
        _int(self.n_trials, "n-trials")
        if not self.objectives or any(o not in OBJECTIVES for o in self.objectives) \
                or len(set(self.objectives)) != len(self.objectives):
            raise TuneError(f"--objectives: a comma-separated list of {', '.join(OBJECTIVES)}, "
                            f"got {list(self.objectives)!r}")
        if not isinstance(self.metric, str) or not self.metric:
            raise TuneError(f"--metric: expected a metric name such as val/acc, got {self.metric!r}")
        if self.direction not in DIRECTIONS:
            raise TuneError(f"--direction: maximize or minimize, got {self.direction!r}")
        for what, value, choices in (("sampler", self.sampler, SAMPLERS), ("pruner", self.pruner, PRUNERS)):
            if isinstance(value, str) and value not in choices or value is None:
                raise TuneError(f"--{what}: choose from {', '.join(choices)}, got {value!r}")
        if len(self.objectives) > 1 and self.pruner != "none":
            raise TuneError("pruning needs a single objective (Optuna cannot prune on several values): "
                            "use --pruner none")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float))
                                         or self.timeout <= 0):
            raise TuneError(f"--timeout must be a positive number of seconds, got {self.timeout!r}")
        if self.seed is not None:
            _int(self.seed, "seed", 0)
        if not isinstance(self.study_name, str) or not self.study_name.strip():
            raise TuneError(f"--study-name: expected a non-empty name, got {self.study_name!r}")
        storage_mod.storage_kind(self.storage)  # a URL of a known kind
        storage_mod.check_workers(self.storage, self.workers)
        for name in ("heartbeat_interval", "grace_period"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise TuneError(f"--{name.replace('_', '-')} must be an integer >= 1 (seconds), got {value!r}")
        if self.heartbeat_interval and self.grace_period and self.grace_period <= self.heartbeat_interval:
            raise TuneError(f"--grace-period ({self.grace_period}) must exceed --heartbeat-interval "
                            f"({self.heartbeat_interval})")
        self._check_sparsity_can_vary()

    def _check_sparsity_can_vary(self) -> None:
        """Refuse a ``sparsity`` objective when no scheme of the trials ever sets a weight to exactly 0.

        Its ``wd/nonzero_fraction`` would then be 1 in every trial: a one-point "front" and a flat plot.
        """
        if "sparsity" not in self.objectives:
            return
        from lightning_wd.apps.tuning.recipe import scheme_class

        overridden = [v for k, v in _override_pairs(self.overrides) if k.endswith("init_args.scheme")]
        schemes = overridden[-1:] or list(self.space.schemes)
        if not any(getattr(scheme_class(s), "makes_exact_zeros", False) for s in schemes):
            from lightning_wd.core.schemes import SCHEMES

            sparse = ", ".join(n for n, c in SCHEMES.items() if getattr(c, "makes_exact_zeros", False))
            raise TuneError(f"--objectives sparsity: scheme {' or '.join(map(str, schemes))} never sets weights "
                            f"to exactly 0, so {SPARSITY_KEY} would be 1 in every trial; tune a scheme that "
                            f"does ({sparse}), e.g. --trainer.callbacks.init_args.scheme l1")

    def identity(self) -> dict[str, str]:
        """What makes trials of one study comparable, flat: the trials' recipe (with the overrides applied
        over it), the space, the metric and the objectives. A study remembers it and refuses to resume with
        another (n_trials, timeout, sampler, workers, storage and where results go may change)."""
        recipe = {k: v for k, v in self.recipe.items() if k not in _NOT_IDENTITY}
        flat = {f"recipe.{k}": v for k, v in _flatten(recipe).items()}
        for key, value in _override_pairs(self.overrides):
            if key.split(".")[0] not in _NOT_IDENTITY:
                flat[f"recipe.{key}"] = value
        flat.update({f"space.{k}": str(v) for k, v in self.space.describe().items()})
        flat.update(metric=self.metric, direction=self.direction, objectives=",".join(self.objectives))
        return {k: str(v) for k, v in flat.items()}

    @classmethod
    def resolve(cls, config: str | os.PathLike | Mapping, **given: Any) -> Settings:
        """Merge ``given`` options (non-None win) with the recipe's ``tune:`` section and the defaults.

        Args:
            config: the recipe: a YAML path, the name of a shipped recipe, or a dict.
            given: any of :data:`OPTIONS` (the attributes of :class:`Settings`).

        Raises:
            TypeError: an option that does not exist.
            TuneError: an invalid value, with the option it came from.

        Example:
            >>> s = Settings.resolve("tune_mnist1d_mlp", n_trials=3, seed=1)
            >>> s.n_trials, s.study_name, s.names, s.space.names
            (3, 'tune_mnist1d_mlp', ['val/acc'], ['strength'])
        """
        unknown = sorted(set(given) - set(OPTIONS))
        if unknown:
            raise TypeError(f"unknown tuning option(s) {unknown}; allowed: {', '.join(OPTIONS)}")
        recipe, path = load_recipe(config)
        section = recipe.get("tune") or {}
        if not isinstance(section, Mapping):
            raise TuneError("the recipe's tune: section must be a mapping")
        unknown = sorted(set(section) - set(TUNE_KEYS))
        if unknown:
            raise TuneError(f"tune: unknown key(s) {unknown}; allowed: {', '.join(TUNE_KEYS)}")

        def pick(key: str, default: Any = None) -> Any:
            value = given.get(key)
            return value if value is not None else section.get(key, default)

        n_trials = pick("n_trials")
        if n_trials is None:
            raise TuneError("give --n-trials N (or tune: {n_trials: N} in the recipe)")
        objectives = pick("objectives", ["accuracy"])
        if isinstance(objectives, str):
            objectives = [o.strip() for o in objectives.split(",") if o.strip()]
        objectives = tuple(objectives)
        multi = len(objectives) > 1
        metric = pick("metric", DEFAULT_METRIC)
        lower = metric.lower() if isinstance(metric, str) else ""
        sampler, sampler_options = _split(pick("sampler", "nsga2" if multi else "tpe"), "sampler", SAMPLERS)
        # with several objectives the recipe's pruner (meant for a single-objective study) does not apply
        pruner = given.get("pruner") if multi else pick("pruner", "median")
        pruner, pruner_options = _split("none" if pruner is None else pruner, "pruner", PRUNERS)
        study_name = pick("study_name", (path.stem if path is not None else "lightning_wd")
                          + ("-" + "-".join(objectives) if multi else ""))
        url = pick("storage", storage_mod.DEFAULT_STORAGE)
        heartbeat = pick("heartbeat_interval", storage_mod.DEFAULT_HEARTBEAT_INTERVAL)
        grace = pick("grace_period", max(storage_mod.DEFAULT_GRACE_PERIOD, 3 * heartbeat)
                     if isinstance(heartbeat, int) and heartbeat else None)
        return cls(
            recipe=recipe, recipe_path=path, n_trials=n_trials,
            space=SearchSpace.from_recipe(recipe, given.get("space")),
            study_name=study_name.strip() if isinstance(study_name, str) else study_name, storage=url,
            out=Path(pick("out") or _default_out(url, study_name)), metric=metric,
            direction=pick("direction", "minimize" if ("loss" in lower or "error" in lower) else "maximize"),
            objectives=objectives, sampler=sampler, sampler_options=sampler_options, pruner=pruner,
            pruner_options=pruner_options, timeout=pick("timeout"),
            tracking_uri=pick("tracking_uri", recipe.get("tracking_uri")),
            experiment=pick("experiment", recipe.get("experiment") or DEFAULT_EXPERIMENT), seed=pick("seed"),
            workers=pick("workers", 1), heartbeat_interval=heartbeat, grace_period=grace,
            overrides=tuple(str(a) for a in (given.get("overrides") or ())),
            progress=bool(given.get("progress", True)),
        )

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (validated again), e.g. the settings of a worker process."""
        return dataclasses.replace(self, **changes)

    @property
    def names(self) -> list[str]:
        """Objective (metric) names, as shown and stored: e.g. ``["val/acc", "wd/nonzero_fraction"]``."""
        return [self.metric if o == "accuracy" else SPARSITY_KEY for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        """Optuna directions of the objectives (``sparsity`` is minimised)."""
        return [self.direction if o == "accuracy" else "minimize" for o in self.objectives]

    def describe(self) -> dict[str, Any]:
        """The settings as MLflow params of the parent run (no password)."""
        params = {
            "recipe": str(self.recipe_path) if self.recipe_path else "(dict)", "study_name": self.study_name,
            "storage": redact(self.storage), "n_trials": self.n_trials, "timeout": self.timeout,
            "metric": self.metric, "direction": self.direction, "objectives": ",".join(self.objectives),
            "sampler": _name(self.sampler, self.sampler_options), "pruner": _name(self.pruner, self.pruner_options),
            "seed": self.seed, "workers": self.workers, "overrides": " ".join(self.overrides) or None,
            "heartbeat_interval": self.heartbeat_interval, "grace_period": self.grace_period,
        }
        params.update({f"space.{k}": v for k, v in self.space.describe().items()})
        return params


#: recipe keys that do not change what a trial measures
_NOT_IDENTITY = ("tune", "experiment", "tracking_uri", "run_name", "num_threads")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"max_epochs": 2}}`` -> ``{"trainer.max_epochs": 2}`` (lists by index)."""
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list) and value:
        items = enumerate(value)
    else:
        return {prefix.rstrip("."): _normal(value)} if prefix else {}
    out: dict[str, Any] = {}
    for key, item in items:
        out.update(_flatten(item, f"{prefix}{key}."))
    return out


def _normal(value: Any) -> str:
    """A value as text that does not depend on how it was written (``2``, ``'2'`` and ``2`` in YAML)."""
    import yaml

    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _override_pairs(overrides: Sequence[str]) -> list[tuple[str, str]]:
    """``["--trainer.max_epochs", "3", "--x=1"]`` -> ``[("trainer.max_epochs", "3"), ("x", "1")]``.

    LightningCLI's list spelling ``trainer.callbacks.init_args.x`` names the last callback: it is kept as
    written. Flags without a value are left out.
    """
    pairs, items, i = [], list(overrides), 0
    while i < len(items):
        arg = items[i]
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if not eq and i + 1 < len(items) and not items[i + 1].startswith("--"):
                value, i = items[i + 1], i + 1
                eq = "="
            if eq:
                pairs.append((key, _normal(value)))
        i += 1
    return pairs


def _default_out(url: Any, study_name: Any) -> Path:
    """``<folder of the storage file>/studies/<study>`` (``mlruns/studies/<study>`` for servers)."""
    base = Path("mlruns")
    if isinstance(url, str) and url.startswith(storage_mod.JOURNAL_PREFIX):
        base = Path(url[len(storage_mod.JOURNAL_PREFIX):]).parent
    elif isinstance(url, str) and (db := sqlite_path(url)) is not None:
        base = db.parent
    return base / "studies" / str(study_name).strip()


def _name(obj: Any, options: Mapping) -> str:
    if isinstance(obj, str):
        return obj + (f" {dict(options)}" if options else "")
    return type(obj).__name__


def load_recipe(config: str | os.PathLike | Mapping) -> tuple[dict, Path | None]:
    """The recipe as a dict, and its path (None for a dict); a name finds a shipped recipe.

    Raises:
        TuneError: no such file or shipped recipe, bad YAML, or not a mapping.

    Example:
        >>> recipe, path = load_recipe("tune_mnist1d_mlp")
        >>> path.name, "tune" in recipe
        ('tune_mnist1d_mlp.yaml', True)
    """
    if isinstance(config, Mapping):
        return dict(config), None
    import yaml

    from lightning_wd.apps.recipes import resolve_recipe

    try:
        path = resolve_recipe(config)
    except FileNotFoundError:
        raise TuneError(f"recipe not found: {os.fspath(config)} (give a YAML file or the name of a shipped "
                        "recipe)") from None
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise TuneError(f"malformed YAML in {path}: {getattr(error, 'problem', None) or error}") from None
    if not isinstance(recipe, dict):
        raise TuneError(f"recipe {path} must hold a mapping of options")
    return recipe, path


def _split(value: Any, what: str, choices: Sequence[str]) -> tuple[Any, dict]:
    """``"tpe"`` / ``{"name": "tpe", ...options}`` / an object -> (name or object, options)."""
    if not isinstance(value, Mapping):
        return value, {}
    options = dict(value)
    name = options.pop("name", None)
    if name not in choices:
        raise TuneError(f"--{what}: choose from {', '.join(choices)}, got {name!r}")
    return name, options


def _int(value: Any, what: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise TuneError(f"--{what} must be an integer >= {low}, got {value!r}")
    return value


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
