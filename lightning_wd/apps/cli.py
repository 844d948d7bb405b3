"""The ``lightning-wd`` command: ``fit``, ``validate``, ``test``, ``tune``, ``compare``, ``report``.

``fit``/``validate``/``test`` run the recipe runner (:func:`lightning_wd.apps.runner.build_cli`, the
project's :class:`~lightning.pytorch.cli.LightningCLI`) on a recipe: a YAML path or the name of a shipped
recipe (``--config mnist1d_mlp``), logging to MLflow by default. A bad configuration (missing file,
malformed YAML, unknown key, wrong type, invalid value) exits with code 2 and one line on stderr,
``lightning-wd: error: ...``; set ``LIGHTNING_WD_DEBUG=1`` to get the traceback instead. ``tune``,
``compare`` and ``report`` are dispatched to the ``main`` of ``lightning_wd.apps.tuning``,
``lightning_wd.apps.compare`` and ``lightning_wd.apps.report``. This module only parses and dispatches:
lightning is imported for the three LightningCLI subcommands only, so ``--help`` and ``--version`` stay quick.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from typing import Any

from lightning_wd.apps.errors import ConfigError, debug_enabled, report_error
from lightning_wd.apps.recipes import resolve_recipe
from lightning_wd.apps.runner import NOISE, PROG
from lightning_wd.core.messages import one_line

__all__ = ["PROG", "check_config_files", "main"]

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")
EXTERNAL_SUBCOMMANDS = {"tune": "lightning_wd.apps.tuning", "compare": "lightning_wd.apps.compare",
                        "report": "lightning_wd.apps.report"}

USAGE = f"""usage: {PROG} [--help] [--version] {{fit,validate,test,tune,compare,report}} ...

Weight decay as a first-class, measured part of PyTorch Lightning training.

subcommands:
  fit, validate, test   LightningCLI on a recipe: {PROG} fit --config recipes/mnist1d_mlp.yaml
                        (or a shipped recipe by name: --config mnist1d_mlp; --help after the
                        subcommand lists every option; runs are logged to MLflow,
                        --tracking-uri URI, --experiment NAME, --run-name NAME; resume with --ckpt_path)
  tune                  Optuna study over the decay strength of a recipe
  compare               table of MLflow runs (scheme, strength, accuracy, non-zero fraction)
  report                re-measure the claims of the weight-decay article

A bad configuration exits with code 2 and one line on stderr (LIGHTNING_WD_DEBUG=1: full traceback).
Quiet by default (one line per fit; the libraries' banners filtered): -v or --verbose brings them back.
"""


def _error(message: object) -> int:
    return report_error(PROG, one_line(message, noise=NOISE))


def _is_inline(value: str) -> bool:
    """An inline YAML/JSON config, which jsonargparse accepts in place of a file."""
    return "\n" in value or value.lstrip().startswith("{") or ": " in value


def _check_file(value: str) -> None:
    import yaml

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


def _resolved(value: str) -> str:
    if os.path.exists(value) or _is_inline(value):
        return value
    try:
        return str(resolve_recipe(value))
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None


def check_config_files(argv: list[str]) -> list[str]:
    """Fail early, before lightning is imported, on a missing or malformed ``--config`` file.

    Returns:
        ``argv`` with the name of a shipped recipe after ``--config`` replaced by its path.

    Raises:
        ConfigError: neither a file nor a shipped recipe, not valid YAML, or not a mapping.

    Example:
        >>> check_config_files(["fit", "--config", "mnist1d_mlp"])[2].endswith("recipes/mnist1d_mlp.yaml")
        True
        >>> check_config_files(["fit", "--config", "no/such.yaml"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_wd.apps.errors.ConfigError: config file not found: no/such.yaml (shipped recipes: ...)
    """
    out = list(argv)
    for i, arg in enumerate(out):
        if arg in ("-c", "--config") and i + 1 < len(out):
            index, value, prefix = i + 1, out[i + 1], ""
        elif arg.startswith("--config="):
            index, value, prefix = i, arg.partition("=")[2], "--config="
        else:
            continue
        path = _resolved(value)
        if os.path.exists(path):
            _check_file(path)
        out[index] = prefix + path
    return out


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
    from lightning_wd.apps import quiet

    argv, verbose = quiet.strip_verbose(argv)
    try:
        subcommand, *args = check_config_files(argv)
        from lightning_wd.apps.runner import build_cli

        quiet.install(verbose, once=quiet.ONCE[1:])  # one fit: its audit always; the interval notice once
        started = time.perf_counter()
        cli = build_cli(overrides=args, subcommand=subcommand)
        if getattr(cli, "trainer", None) is not None and cli.trainer.is_global_zero:  # once, not per ddp rank
            print(fit_summary(subcommand, cli.trainer, time.perf_counter() - started))
    except ConfigError as exc:
        return _error(exc)
    except ValueError as exc:
        from lightning_wd.core.resume import ResumeMismatchError

        if isinstance(exc, ResumeMismatchError) and not debug_enabled():
            return _error(exc)  # the run is already marked FAILED with the reason
        raise
    return 0


def fit_summary(subcommand: str, trainer: Any, seconds: float) -> str:
    """One line per fit: the run's name (setting, seed), its last ``val/*`` (or ``test/*``) values, the
    time, and where MLflow keeps it (a ``mlflow ui`` command that works from any folder)."""
    from lightning_wd.tracking.logger import mlflow_logger_of

    stage = "test/" if subcommand == "test" else "val/"
    values = []
    for key, value in sorted(trainer.callback_metrics.items()):
        if key.startswith(stage) and getattr(value, "numel", lambda: 1)() == 1:
            values.append(f"{key} {float(value):.4g}")
    logger = mlflow_logger_of(trainer)
    name, where = subcommand, ""
    if logger is not None:
        run = logger.experiment.get_run(logger.run_id)
        name = f"{subcommand} {run.info.run_name}" if not run.info.run_name.startswith(subcommand) \
            else run.info.run_name
        where = (f"; MLflow run {logger.run_id[:8]}: {sys.executable} -m mlflow ui --backend-store-uri "
                 f"{logger._tracking_uri}")
    return f"{name}: {', '.join(values) or 'no ' + stage + '* metric'} in {seconds:.1f} s{where}"


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
