"""The ``lightning-wd`` command: ``fit``, ``validate``, ``test``, ``tune``, ``compare``, ``report``.

``fit``/``validate``/``test`` are :class:`~lightning.pytorch.cli.LightningCLI` subcommands over a recipe
(model and datamodule chosen by ``class_path``), logging to MLflow by default. A bad configuration
(missing file, malformed YAML, unknown key, wrong type, invalid value) exits with code 2 and one line on
stderr, ``lightning-wd: error: ...``; set ``LIGHTNING_WD_DEBUG=1`` to get the traceback instead.
``tune``, ``compare`` and ``report`` are dispatched to ``lightning_wd.apps.tuning``, ``lightning_wd.apps.compare``
and ``lightning_wd.apps.report``. This module only dispatches: lightning is imported for the three
LightningCLI subcommands only, so ``--help`` and ``--version`` stay quick.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from typing import Any

from lightning_wd.apps.errors import ConfigError, debug_enabled, report_error
from lightning_wd.core.messages import one_line
from lightning_wd.tracking.uris import DEFAULT_EXPERIMENT

__all__ = ["PROG", "check_config_files", "create_cli", "describe", "main"]

PROG = "lightning-wd"
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")
EXTERNAL_SUBCOMMANDS = {"tune": "lightning_wd.apps.tuning", "compare": "lightning_wd.apps.compare",
                        "report": "lightning_wd.apps.report"}
# Spellings with dashes, accepted and given to LightningCLI with underscores (its own convention).
_ALIASES = {"--tracking-uri": "--tracking_uri", "--run-name": "--run_name", "--ckpt-path": "--ckpt_path",
            "--print-config": "--print_config"}
_SPECIAL_CKPT = {"last", "best", "hpc", "registry"}

USAGE = f"""usage: {PROG} [--help] [--version] {{fit,validate,test,tune,compare,report}} ...

Weight decay as a first-class, measured part of PyTorch Lightning training.

subcommands:
  fit, validate, test   LightningCLI on a recipe: {PROG} fit --config recipes/mnist1d_mlp.yaml
                        (--help after the subcommand lists every option; runs are logged to MLflow,
                        --tracking-uri URI, --experiment NAME, --run-name NAME; resume with --ckpt_path)
  tune                  Optuna study over the decay strength of a recipe
  compare               table of MLflow runs (scheme, strength, accuracy, non-zero fraction)
  report                re-measure the claims of the weight-decay article

A bad configuration exits with code 2 and one line on stderr (LIGHTNING_WD_DEBUG=1: full traceback).
"""


# Lines of jsonargparse's union reports that describe the attempt rather than the problem.
_NOISE = ("Subtypes:", "Given value", "Subclass types expect", "- a class path", "- a dict with",
          "- a dict without", "Not a valid subclass", "Errors:")
_KEY = re.compile(r'^\s*Parser key "([^"]+)":?\s*')
_CLASS_PATH = re.compile(r"""class_path['"]?\s*[:=]\s*['"]([\w.]+)['"]""")


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
    detail = one_line(innermost, noise=_NOISE)
    where = ".".join(keys)
    if len(classes) == 1:
        where = f"{where} ({classes[0]})" if where else classes[0]
    return f"{where}: {detail}" if where else detail


def _error(message: object) -> int:
    return report_error(PROG, one_line(message, noise=_NOISE))


def _normalise(argv: list[str]) -> list[str]:
    """Dashed spellings of our options to LightningCLI's underscored ones."""
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        out.append(_ALIASES.get(name, name) + eq + value if name in _ALIASES else arg)
    return out


def _config_values(argv: list[str]) -> list[str]:
    values = []
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith("--config="):
            values.append(arg.partition("=")[2])
    return values


def check_config_files(argv: list[str]) -> None:
    """Fail early, before lightning is imported, on a missing or malformed ``--config`` file.

    Raises:
        ConfigError: the file does not exist, is not valid YAML or is not a mapping.

    Example:
        >>> check_config_files(["fit", "--config", "no/such.yaml"])
        Traceback (most recent call last):
        ...
        lightning_wd.apps.errors.ConfigError: config file not found: no/such.yaml
    """
    import yaml

    for value in _config_values(argv):
        if not os.path.exists(value):
            if "\n" in value or value.lstrip().startswith("{") or ": " in value:
                continue  # an inline YAML/JSON config, which jsonargparse also accepts
            raise ConfigError(f"config file not found: {value}")
        if os.path.isdir(value):
            raise ConfigError(f"config path is a directory, not a file: {value}")
        try:
            with open(value, encoding="utf-8") as handle:
                content = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"malformed YAML in {value}{where}: {problem}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {value}: {exc}") from exc
        if content is not None and not isinstance(content, dict):
            raise ConfigError(f"config file {value} must hold a mapping of options, got {type(content).__name__}")


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


def _cli_classes():
    """Define the LightningCLI subclasses (imports lightning, so only when a subcommand needs them)."""
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
    from lightning.pytorch.loggers import MLFlowLogger
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    class OneLineErrorParser(LightningArgumentParser):
        """A parser whose errors raise :class:`ConfigError` instead of printing usage and exiting."""

        def error(self, message: str, ex: Exception | None = None):  # noqa: D401
            if debug_enabled():
                return super().error(message, ex)
            raise ConfigError(describe(message, ex)) from ex

    class WeightDecayCLI(LightningCLI):
        """LightningCLI with MLflow logging by default and configuration errors as :class:`ConfigError`."""

        def __init__(self, *args: Any, held_logs: _HeldLogs | None = None, **kwargs: Any) -> None:
            self._held_logs = held_logs
            super().__init__(*args, **kwargs)

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_argument("--tracking_uri", type=str | None, default=None,
                                help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                     "sqlite:///mlruns/mlflow.db); used unless trainer.logger is set")
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
            ckpt = self._get(self.config, "ckpt_path")
            if isinstance(ckpt, str) and ckpt not in _SPECIAL_CKPT and "://" not in ckpt \
                    and not os.path.isfile(ckpt):
                raise ConfigError(f"checkpoint not found: {ckpt}")

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
            trainer_config = self._get(self.config, "trainer") or {}
            if "logger" not in kwargs and trainer_config.get("logger") is None \
                    and not trainer_config.get("fast_dev_run"):
                kwargs["logger"] = self._mlflow_logger()
            return super().instantiate_trainer(**kwargs)

        def _mlflow_logger(self):
            from lightning_wd import tracking

            ckpt = self._get(self.config, "ckpt_path")
            try:
                run_id = tracking.run_id_from_checkpoint(ckpt) if ckpt and os.path.isfile(ckpt) else None
                return tracking.mlflow_logger(experiment_name=self._get(self.config, "experiment"),
                                              tracking_uri=self._get(self.config, "tracking_uri"),
                                              run_name=self._get(self.config, "run_name"), run_id=run_id)
            except (tracking.TrackingUnavailable, ValueError) as exc:
                raise ConfigError(one_line(exc)) from exc

        def after_instantiate_classes(self) -> None:
            """Record the decay and the resolved config in the MLflow run (instead of SaveConfigCallback).

            LightningCLI's SaveConfigCallback asserts on a log directory that SQLite and server MLflow
            loggers do not have (Lightning issue #19441), so the config goes to the run as an artifact.
            """
            if self._held_logs is not None:
                self._held_logs.release()
            if not any(isinstance(lg, MLFlowLogger) for lg in self.trainer.loggers):
                return
            from lightning_wd import tracking

            if not any(isinstance(cb, tracking.MLflowRecord) for cb in self.trainer.callbacks):
                self.trainer.callbacks.append(tracking.MLflowRecord())
            config = self.config.get(str(self.subcommand), self.config)
            text = self._parser(self.subcommand).dump(config, skip_none=False, skip_link_targets=False)
            tracking.log_config(self.trainer, text)

    return WeightDecayCLI, OneLineErrorParser


def create_cli(args: list[str] | dict | None = None, **kwargs: Any):
    """Build (and by default run) the project's LightningCLI on command-line style ``args``.

    Defaults: any LightningModule/LightningDataModule by ``class_path``, seed 0, no SaveConfigCallback
    (the config goes to MLflow), MLflow logger unless ``trainer.logger`` is set. Other tools
    (``lightning-wd tune``) use this to run trials with extra ``trainer_defaults``.

    Args:
        args: e.g. ``["fit", "--config", "recipes/mnist1d_mlp.yaml"]``; None reads ``sys.argv``.
        kwargs: overrides of the :class:`~lightning.pytorch.cli.LightningCLI` arguments.

    Returns:
        The CLI object (``.trainer``, ``.model``, ``.datamodule``, ``.config``).

    Raises:
        ConfigError: the configuration is invalid (one-line message).
    """
    cli_class, parser_class = _cli_classes()
    options: dict[str, Any] = {
        "model_class": None,
        "datamodule_class": None,
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "save_config_callback": None,
        "seed_everything_default": 0,
        # With a SQLite/server MLflow logger (no save_dir) checkpoints go to <root>/<experiment>/<run>/.
        "trainer_defaults": {"default_root_dir": "checkpoints"},
        "parser_class": parser_class,
        "parser_kwargs": {"prog": PROG},
    }
    options.update(kwargs)
    if args is None:
        args = sys.argv[1:]
    if isinstance(args, list):
        args = _normalise(args)
    saved = sys.argv
    sys.argv = saved[:1]  # the arguments come in `args`: LightningCLI warns when sys.argv has them too
    held = _HeldLogs()
    try:
        cli = cli_class(args=args, held_logs=held, **options)
    except BaseException:
        held.release(emit=False)
        raise
    finally:
        sys.argv = saved
    held.release()  # already done after instantiation; this covers a subclass that skips that hook
    return cli


def _dispatch(subcommand: str, argv: list[str]) -> int:
    module_name = EXTERNAL_SUBCOMMANDS[subcommand]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return _error(f"the `{subcommand}` subcommand is not available in this installation "
                      f"(no module {module_name})")
    entry = getattr(module, "main", None)
    if not callable(entry):
        return _error(f"the `{subcommand}` subcommand is not available in this installation "
                      f"({module_name} has no main())")
    return int(entry(argv) or 0)


def _run_lightning(argv: list[str]) -> int:
    try:
        check_config_files(argv)
        create_cli(argv)
    except ConfigError as exc:
        return _error(exc)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lightning-wd`` and ``python -m lightning_wd``; returns the exit code.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``).

    Example:
        >>> main(["--version"])
        lightning-wd 0.1.0
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from lightning_wd.core.version import __version__

        print(f"{PROG} {__version__}")
        return 0
    subcommand = argv[0]
    try:
        if subcommand in EXTERNAL_SUBCOMMANDS:
            return _dispatch(subcommand, argv[1:])
        if subcommand in LIGHTNING_SUBCOMMANDS:
            return _run_lightning(argv)
    except SystemExit as exc:  # --help, --print_config and argparse errors of the dispatched tools
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else _error(exc.code))
    return _error(f"unknown subcommand {subcommand!r}; choose from "
                  f"{', '.join((*LIGHTNING_SUBCOMMANDS, *EXTERNAL_SUBCOMMANDS))}")
