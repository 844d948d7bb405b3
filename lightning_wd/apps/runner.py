"""The recipe runner: the project's LightningCLI on a recipe plus overrides, shared by fit, tune and report.

``lightning-wd fit`` builds and runs it; a tuning trial builds it with its sampled recipe (a dict), its
MLflow child-run logger and its pruning callback passed in; the report builds one per (setting, seed) with
its epoch recorder. Defaults everywhere: any LightningModule/LightningDataModule by ``class_path``, seed 0,
checkpoints under ``checkpoints/``, an MLflow logger unless ``trainer.logger`` is set (or a logger is passed
in), the decay and the resolved config recorded in the MLflow run, and every configuration error raised as
:class:`~lightning_wd.apps.errors.ConfigError` with a one-line message (``LIGHTNING_WD_DEBUG=1``: the
original error). Lightning is imported when a CLI is built, not when this module is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from lightning_wd.apps.errors import ConfigError, debug_enabled
from lightning_wd.core.messages import one_line
from lightning_wd.tracking.uris import DEFAULT_EXPERIMENT, DEFAULT_TRACKING_URI

__all__ = ["DEFAULT_LOGGER", "NOISE", "PROG", "build_cli", "check_checkpoint", "describe", "run_name"]

PROG = "lightning-wd"
#: ``logger=DEFAULT_LOGGER``: MLflow unless the recipe sets ``trainer.logger`` (or ``fast_dev_run``)
DEFAULT_LOGGER = "default"
_SPECIAL_CKPT = {"last", "best", "hpc", "registry"}
#: Lines of jsonargparse's union reports that describe the attempt rather than the problem.
NOISE = ("Subtypes:", "Given value", "Subclass types expect", "- a class path", "- a dict with",
         "- a dict without", "Not a valid subclass", "Errors:")
_KEY = re.compile(r'^\s*Parser key "([^"]+)":?\s*')
_CLASS_PATH = re.compile(r"""class_path['"]?\s*[:=]\s*['"]([\w.]+)['"]""")
_QUIET = ("lightning.pytorch", "lightning.fabric", "lightning_wd")


def describe(message: str, cause: BaseException | None = None) -> str:
    r"""One line for a jsonargparse error: the keys it went through, the class, and the innermost reason.

    jsonargparse chains its errors (``__cause__``) from the outer key (``trainer.callbacks``) down to the
    rejected value (``Option 'weight_decy' is not accepted``, or a ``ValueError`` of the class itself).

    Args:
        message: the outermost message.
        cause: the exception behind it, if any.

    Example:
        >>> describe('Parser key "model":\n  Option "hiden" is not accepted')
        'model: Option "hiden" is not accepted'
    """
    messages = [str(message)]
    seen_ids = set()
    while cause is not None and id(cause) not in seen_ids:
        seen_ids.add(id(cause))
        messages.append(str(cause))
        cause = cause.__cause__
    keys: list[str] = []
    classes: list[str] = []
    for text in messages:
        match = _KEY.match(text)
        if match and match.group(1) not in keys:
            keys.append(match.group(1))
        for name in _CLASS_PATH.findall(text):
            if name not in classes:
                classes.append(name)
    innermost = messages[-1]
    while (match := _KEY.match(innermost)) is not None:
        innermost = innermost[match.end():]
    detail = one_line(innermost, noise=NOISE)
    where = ".".join(keys)
    if len(classes) == 1:
        where = f"{where} ({classes[0]})" if where else classes[0]
    return f"{where}: {detail}" if where else detail


class _HeldLogs(logging.Filter):
    """Hold back log records (Lightning's "Seed set to 0") until the configuration is known to be good.

    A bad configuration then prints exactly one line; a good one prints the held records afterwards.
    """

    def __init__(self, names: tuple[str, ...] = ("lightning.fabric.utilities.seed",)) -> None:
        super().__init__()
        self.loggers = [logging.getLogger(name) for name in names]
        self.records: list[logging.LogRecord] = []
        for logger in self.loggers:
            logger.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False

    def release(self, emit: bool = True) -> None:
        """Stop holding; emit the held records (``emit=True``) or drop them."""
        for logger in self.loggers:
            logger.removeFilter(self)
        records, self.records = self.records, []
        if emit:
            for record in records:
                logging.getLogger(record.name).handle(record)


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Lightning's and this package's info lines off while building (warnings and errors still show)."""
    loggers = [logging.getLogger(name) for name in _QUIET] if enabled else []
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _cli_classes():
    """Define the LightningCLI subclasses (imports lightning, so only when a CLI is built)."""
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
    from lightning.pytorch.loggers import MLFlowLogger
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    # jsonargparse finds a class by its short name (`class_path: WeightDecay`, `--trainer.callbacks.help
    # WeightDecay`) among the subclasses already imported: import the project's callbacks first
    import lightning_wd.core.callback  # noqa: F401

    class OneLineErrorParser(LightningArgumentParser):
        """A parser whose errors raise :class:`ConfigError` instead of printing usage and exiting."""

        def error(self, message: str, ex: Exception | None = None):  # noqa: D401
            if debug_enabled():
                return super().error(message, ex)
            raise ConfigError(describe(message, ex)) from ex

        def dump(self, *args: Any, **kwargs: Any) -> str:
            """The config as YAML; for ``--print_config`` (printed on the user's terminal, often pasted into
            issues) with the passwords of URIs and the values of password-like keys masked."""
            text = super().dump(*args, **kwargs)
            from jsonargparse._actions import _ActionPrintConfig

            if _ActionPrintConfig.is_print_config_requested(self):
                from lightning_wd.tracking.redaction import redact_text

                text = redact_text(text)
            return text

    class WeightDecayCLI(LightningCLI):
        """LightningCLI with MLflow logging by default and configuration errors as :class:`ConfigError`.

        Args:
            logger: ``DEFAULT_LOGGER``, or the logger every trainer gets instead of the recipe's
                (``False``: none).
            held_logs: log records held back until the configuration is known to be good.
        """

        def __init__(self, *args: Any, logger: Any = DEFAULT_LOGGER, held_logs: _HeldLogs | None = None,
                     launch_argv: Sequence[str] | None = None, **kwargs: Any) -> None:
            self._given_logger = logger
            self._held_logs = held_logs
            self._launch_argv = None if launch_argv is None else list(launch_argv)
            super().__init__(*args, **kwargs)

        def _parse_ckpt_path(self) -> None:
            """Refuse a bad ``--ckpt_path`` in one line before Lightning loads it for its hyperparameters."""
            subcommand = self.config.get("subcommand")
            if subcommand:
                check_checkpoint(self.config[subcommand].get("ckpt_path"))
            super()._parse_ckpt_path()

        def _run_subcommand(self, subcommand: str) -> None:
            """Run it with the process's real ``sys.argv``: strategy ``ddp`` starts the other ranks by
            re-running ``sys.argv``, which must be the same command (only the parsing ran without it)."""
            if self._launch_argv is None:
                return super()._run_subcommand(subcommand)
            parsing_argv, sys.argv = sys.argv, self._launch_argv
            try:
                super()._run_subcommand(subcommand)
            finally:
                sys.argv = parsing_argv

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument("--tracking_uri", type=str | None, default=None,
                                help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                     f"{DEFAULT_TRACKING_URI}); used unless trainer.logger is set")
            parser.add_argument("--experiment", type=str, default=DEFAULT_EXPERIMENT,
                                help="MLflow experiment name")
            parser.add_argument("--run_name", type=str | None, default=None, help="MLflow run name")
            parser.add_argument("--num_threads", type=int | None, default=None,
                                help="torch intra-op CPU threads (torch.set_num_threads); tiny models on CPU "
                                     "train fastest with 1, and much faster than with contended threads")
            parser.add_argument("--tune", type=dict[str, Any] | None, default=None,
                                help="settings read by `lightning-wd tune`; ignored by fit, validate, test")

        def before_instantiate_classes(self) -> None:
            threads = self._get(self.config, "num_threads")
            if threads is not None:
                if threads < 1:
                    raise ConfigError(f"num_threads: must be >= 1, got {threads}")
                import torch

                torch.set_num_threads(threads)
            if not self.config.get("subcommand"):  # with a subcommand, _parse_ckpt_path checked it already
                check_checkpoint(self._get(self.config, "ckpt_path"))

        def instantiate_classes(self) -> None:
            if debug_enabled():
                return super().instantiate_classes()
            try:
                super().instantiate_classes()
            except ConfigError:
                raise
            except (ValueError, TypeError, KeyError, FileNotFoundError, ImportError,
                    MisconfigurationException) as exc:
                raise ConfigError(f"invalid configuration: {describe(str(exc), exc.__cause__)}") from exc

        def instantiate_trainer(self, **kwargs: Any):
            if self._given_logger is not DEFAULT_LOGGER:
                kwargs["logger"] = self._given_logger
            else:
                trainer_config = self._get(self.config, "trainer") or {}
                if "logger" not in kwargs and trainer_config.get("logger") is None \
                        and not trainer_config.get("fast_dev_run"):
                    kwargs["logger"] = self._mlflow_logger()
            try:
                return super().instantiate_trainer(**kwargs)
            except RuntimeError as exc:  # Lightning refuses two callbacks with one state key (two WeightDecay)
                if "more than one stateful callback" not in str(exc):
                    raise
                kind = str(exc).split("`")[1] if str(exc).count("`") >= 2 else "callback"
                raise ConfigError(
                    f"--trainer.callbacks: more than one {kind} callback; the recipe has one already: set its "
                    f"arguments instead of adding another (e.g. --trainer.callbacks.init_args.strength 0.1)"
                ) from exc

        def _mlflow_logger(self):
            from lightning_wd import tracking

            ckpt = self._get(self.config, "ckpt_path")
            try:
                run_id = tracking.run_id_from_checkpoint(ckpt) if ckpt and os.path.isfile(ckpt) else None
                name = self._get(self.config, "run_name") or run_name(self._get(self.config, "trainer"),
                                                                      self._get(self.config, "model"))
                parent, tags = None, None
                if self.subcommand in ("validate", "test"):  # its own run, a child of the training run
                    parent, run_id, tags = run_id, None, {"lightning_wd.kind": self.subcommand}
                    name = f"{self.subcommand} · {name}"
                return tracking.mlflow_logger(experiment_name=self._get(self.config, "experiment"),
                                              tracking_uri=self._get(self.config, "tracking_uri"),
                                              run_name=name, run_id=run_id, parent_run_id=parent, tags=tags)
            except tracking.TrackingUnavailable as exc:
                raise ConfigError(f"--tracking-uri: {one_line(exc)}") from exc
            except ValueError as exc:
                raise ConfigError(one_line(exc)) from exc

        def after_instantiate_classes(self) -> None:
            """Record the decay and the resolved config in the MLflow run (instead of SaveConfigCallback).

            LightningCLI's SaveConfigCallback asserts on a log directory that SQLite and server MLflow
            loggers do not have (Lightning issue #19441), so the config goes to the run as an artifact.
            """
            if self._held_logs is not None:
                self._held_logs.release()
            if any(not isinstance(lg, MLFlowLogger) for lg in self.trainer.loggers):
                from lightning_wd.tracking.hparams import DecayHparams

                if not any(isinstance(cb, DecayHparams) for cb in self.trainer.callbacks):
                    self.trainer.callbacks.append(DecayHparams())  # the decay in CSV/TensorBoard hparams.yaml
            if not any(isinstance(lg, MLFlowLogger) for lg in self.trainer.loggers):
                self._save_config_to_log_dir()
                return
            from lightning_wd import tracking

            if not any(isinstance(cb, tracking.MLflowRecord) for cb in self.trainer.callbacks):
                self.trainer.callbacks.append(tracking.MLflowRecord())
            config = self.config.get(str(self.subcommand), self.config)
            text = self._parser(self.subcommand).dump(config, skip_none=False, skip_link_targets=False)
            tracking.log_config(self.trainer, text)

        def _save_config_to_log_dir(self) -> None:
            """``config.yaml`` in the log dir of a logger that has one (CSV, TensorBoard), as SaveConfigCallback
            would; an existing one (a resumed fit) is kept."""
            if self.subcommand != "fit" or not self.trainer.loggers or not self.trainer.is_global_zero:
                return
            log_dir = self.trainer.log_dir
            if log_dir is None:
                return
            path = os.path.join(log_dir, "config.yaml")
            if os.path.exists(path):
                return
            config = self.config.get(str(self.subcommand), self.config)
            os.makedirs(log_dir, exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(self._parser(self.subcommand).dump(config, skip_none=False, skip_link_targets=False))

    return WeightDecayCLI, OneLineErrorParser


def check_checkpoint(path: Any) -> None:
    """Refuse a ``--ckpt_path`` that is missing or is not a Lightning checkpoint, with one line.

    ``last``/``best``/``hpc``/``registry`` and remote (``scheme://``) paths are left to Lightning. The file is
    loaded as Lightning will load it (``torch.load(weights_only=True)``, memory-mapped when it can be), so
    an empty, truncated or corrupt file, a non-checkpoint, or a pickle payload (refused by ``weights_only``)
    fails here, before anything is created, rather than in the middle of the fit with a traceback.

    Raises:
        ConfigError: naming ``--ckpt_path``, the file and the problem.

    Example:
        >>> check_checkpoint("last")  # Lightning's own names pass
        >>> check_checkpoint("no/such.ckpt")
        Traceback (most recent call last):
        ...
        lightning_wd.apps.errors.ConfigError: --ckpt_path: checkpoint not found: no/such.ckpt
    """
    if not isinstance(path, (str, os.PathLike)) or str(path) in _SPECIAL_CKPT or "://" in str(path):
        return
    path = str(path)
    if not os.path.isfile(path):
        raise ConfigError(f"--ckpt_path: checkpoint not found: {path}")
    if os.path.getsize(path) == 0:
        raise ConfigError(f"--ckpt_path {path}: the file is empty, not a checkpoint")
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # random bytes read as a pickle "protocol 141": the error below says it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                ckpt = torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise ConfigError(f"--ckpt_path {path}: refused: it would run pickled code ({found.group(1)}), which "
                              "the safe load (torch.load weights_only=True) does not; load only checkpoints you "
                              "trust") from None
        raise ConfigError(f"--ckpt_path {path}: not a checkpoint written by torch.save (corrupt?)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        # IndexError: the weights-only unpickler on random bytes (its stack or memo runs empty)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = f" ({one_line(text.split('. ')[0], 120)})" if len(text) > 8 else ""
        raise ConfigError(f"--ckpt_path {path}: not a readable checkpoint, truncated or corrupt{reason}") from None
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        found = f"keys {sorted(map(str, ckpt))[:6]}" if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ConfigError(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict; found {found})")


def _plain(value: Any) -> Any:
    return value.as_dict() if hasattr(value, "as_dict") else value


def run_name(trainer_config: Any, model_config: Any = None, seed: Any = None) -> str:
    """The MLflow run name of a fit from what it is: ``l1 λ=1e-2 seed 0``.

    The scheme and strength are the WeightDecay callback's in ``trainer.callbacks`` (its defaults when
    unset: ``decoupled``, strength ``native`` = the optimizer's own), else the model's ``weight_decay``
    argument (scheme ``native``); the seed is ``seed_everything``'s (Lightning's ``PL_GLOBAL_SEED``, set
    before the logger is built). MLflow's own names are drawn from a seeded generator, so every fit of a
    recipe would get the same one.

    Example:
        >>> run_name({"callbacks": [{"class_path": "lightning_wd.WeightDecay",
        ...                          "init_args": {"scheme": "l1", "strength": 0.01}}]}, seed=0)
        'l1 λ=1e-2 seed 0'
        >>> run_name({"callbacks": None}, {"init_args": {"weight_decay": 0.1}}, seed=3)
        'native λ=0.1 seed 3'
    """
    from lightning_wd.tracking.params import setting_label

    if seed is None:
        seed = os.environ.get("PL_GLOBAL_SEED")
    callbacks = _plain((_plain(trainer_config) or {}).get("callbacks")) or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        callback = _plain(callback)
        if isinstance(callback, Mapping) and str(callback.get("class_path", "")).split(".")[-1] == "WeightDecay":
            args = _plain(callback.get("init_args")) or {}
            scheme = _plain(args.get("scheme")) or "decoupled"
            if isinstance(scheme, Mapping):  # {class_path: mypkg.MyScheme}
                scheme = scheme.get("class_path", "custom")
            return setting_label(str(scheme).rsplit(".", 1)[-1], args.get("strength"), seed)
    model_args = _plain((_plain(model_config) or {}).get("init_args")) if isinstance(_plain(model_config), Mapping) \
        else None
    strength = (model_args or {}).get("weight_decay", 0.0)
    return setting_label("native" if strength else "none", strength, seed)


def _config_argument(config: Any) -> str:
    """``--config``'s value for a recipe: a path, a shipped recipe's name, or a mapping (as inline YAML)."""
    if isinstance(config, Mapping):
        import yaml

        return yaml.safe_dump(dict(config), sort_keys=False)
    from lightning_wd.apps.recipes import resolve_recipe

    try:
        return str(resolve_recipe(config))
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None


def _with_dashes_normalised(args: Sequence[str]) -> list[str]:
    """Dashed spellings of option names (``--tracking-uri``, ``--trainer.max-epochs``) to LightningCLI's
    underscored ones; values are left as they are.

    Example:
        >>> _with_dashes_normalised(["--tracking-uri", "x-y", "--trainer.max-epochs=3", "-1"])
        ['--tracking_uri', 'x-y', '--trainer.max_epochs=3', '-1']
    """
    out = []
    for arg in args:
        name, eq, value = str(arg).partition("=")
        if name.startswith("--") and "\n" not in name:
            name = "--" + name[2:].replace("-", "_")
        out.append(name + eq + value)
    return out


def build_cli(config: str | os.PathLike | Mapping | None = None, overrides: Sequence[str] = (), *,
              subcommand: str | None = None, logger: Any = DEFAULT_LOGGER, callbacks: Sequence[Any] = (),
              quiet: bool = False, **options: Any):
    """Build the project's LightningCLI on a recipe and command-line style overrides; run it with ``subcommand``.

    Args:
        config: the recipe: a YAML path, the name of a shipped recipe (``mnist1d_mlp``), a mapping (a
            recipe already loaded, e.g. a trial's sampled one), or None (everything in ``overrides``).
        overrides: LightningCLI arguments after the recipe, e.g. ``["--trainer.max_epochs", "3"]``.
        subcommand: ``fit``, ``validate`` or ``test`` to run it; None only builds (``run=False``).
        logger: the logger of the trainer instead of the recipe's (``False``: none); by default MLflow
            unless the recipe sets ``trainer.logger``.
        callbacks: callbacks added to the recipe's (a trial's pruning monitor, the report's recorder).
        quiet: keep Lightning's info lines out while building (a configuration check).
        options: overrides of the :class:`~lightning.pytorch.cli.LightningCLI` arguments.

    Returns:
        The CLI object (``.trainer``, ``.model``, ``.datamodule``, ``.config``).

    Raises:
        ConfigError: the recipe is missing or the configuration is invalid (one-line message).

    Example:
        >>> build_cli("no_such_recipe")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_wd.apps.errors.ConfigError: config file not found: no_such_recipe (shipped recipes: ...)
    """
    args = [] if config is None else ["--config", _config_argument(config)]
    args = _with_dashes_normalised([*args, *overrides])
    if subcommand is not None:
        args = [subcommand, *args]
    cli_class, parser_class = _cli_classes()
    defaults = dict(options.pop("trainer_defaults", None) or {})
    defaults.setdefault("default_root_dir", "checkpoints")  # with a SQLite/server MLflow logger (no save_dir)
    extra = defaults.get("callbacks") or []
    defaults["callbacks"] = [*(extra if isinstance(extra, list) else [extra]), *callbacks]
    kwargs: dict[str, Any] = {
        "model_class": None, "datamodule_class": None, "subclass_mode_model": True, "subclass_mode_data": True,
        "save_config_callback": None, "seed_everything_default": 0, "trainer_defaults": defaults,
        "parser_class": parser_class, "parser_kwargs": {"prog": PROG}, "run": subcommand is not None,
        **options,
    }
    saved = sys.argv
    # the arguments come in `args`: LightningCLI warns when sys.argv has them too; the fit itself runs with
    # the real sys.argv, which strategy ``ddp`` re-runs to start the other ranks
    sys.argv = saved[:1]
    held = _HeldLogs()
    try:
        with _quiet(quiet):
            cli = cli_class(args=args, logger=logger, held_logs=held, launch_argv=saved, **kwargs)
    except BaseException:
        held.release(emit=False)
        raise
    finally:
        sys.argv = saved
    held.release()  # already done after instantiation; this covers a subclass that skips that hook
    return cli
