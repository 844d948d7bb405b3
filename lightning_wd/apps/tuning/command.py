"""The ``lightning-wd tune`` command line: options of the study, then LightningCLI overrides for every trial."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning_wd.apps.errors import OneLineParser, TuneError, UsageError, debug_enabled, report_error
from lightning_wd.apps.tuning.ddp_ranks import following_a_trial
from lightning_wd.apps.tuning.storage import DEFAULT_STORAGE
from lightning_wd.core.messages import one_line
from lightning_wd.tracking.uris import DEFAULT_TRACKING_URI

__all__ = ["build_parser", "main", "split_overrides"]

PROG = "lightning-wd tune"
EPILOG = """Any other --key value (e.g. --trainer.max_epochs 3, --model.init_args.lr 0.01) is given to every trial's
LightningCLI after the recipe. n_trials is the study's target of finished trials: re-running the same command
resumes the study and runs only the missing ones. Exit codes: 0 done, 1 failed, 2 bad arguments, 130 interrupted."""
# LightningCLI top-level keys without a dot that a trial may override
# (experiment and tracking_uri are options of tune itself; a trial's run name is the study's to give)
_TOP_LEVEL = ("seed_everything", "optimizer", "lr_scheduler")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lightning-wd tune`` (LightningCLI overrides are left over)."""
    p = OneLineParser(prog=PROG, description="Optuna study over the weight decay of a recipe; each trial is a fit.",
                epilog=EPILOG, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", required=True, metavar="RECIPE",
                   help="the recipe: a YAML file (with a tune: section or not) or the name of a shipped recipe")
    p.add_argument("--n-trials", type=_positive_int, metavar="N", help="target of finished trials of the study")
    p.add_argument("--timeout", type=_seconds, metavar="S", help="start no trial after S seconds")
    p.add_argument("--study-name", metavar="NAME", help="default: the recipe's file name")
    p.add_argument("--storage", metavar="URL",
                   help=f"Optuna storage (default {DEFAULT_STORAGE}; postgresql+psycopg2://... to share)")
    p.add_argument("--tracking-uri", metavar="URI", help=f"MLflow tracking URI (default {DEFAULT_TRACKING_URI})")
    p.add_argument("--experiment", metavar="NAME", help="MLflow experiment")
    p.add_argument("--sampler", choices=("tpe", "random", "grid", "nsga2"))
    p.add_argument("--pruner", choices=("median", "hyperband", "none"))
    p.add_argument("--objectives", metavar="LIST", help="accuracy (default) or accuracy,sparsity (NSGA-II)")
    p.add_argument("--metric", metavar="KEY", help="monitored metric (default val/acc)")
    p.add_argument("--direction", choices=("maximize", "minimize"))
    p.add_argument("--seed", type=_seed, metavar="K", help="sampler seed (and seed_everything if the recipe has none)")
    p.add_argument("--out", metavar="DIR", help="folder of best.yaml, plots, tables")
    p.add_argument("--workers", type=_positive_int, metavar="N", help="processes running trials on this machine")
    p.add_argument("--heartbeat-interval", type=_positive_int, metavar="S", help="seconds (default 60)")
    p.add_argument("--grace-period", type=_positive_int, metavar="S",
                   help="seconds without heartbeat before a trial is failed and retried once (default 180)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="the libraries' banners and every trial's grouping table (quiet by default)")
    return p


def split_overrides(extra: Sequence[str]) -> list[str]:
    """Check that left-over arguments are LightningCLI overrides (``--trainer.x v``, ``--model.y=v``).

    Raises:
        TuneError: an argument that is neither an option of ``tune`` nor a LightningCLI key.

    Example:
        >>> split_overrides(["--trainer.max_epochs", "3", "--seed_everything=1"])
        ['--trainer.max_epochs', '3', '--seed_everything=1']
        >>> split_overrides(["--n-trails", "3"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_wd.apps.errors.TuneError: unrecognized argument --n-trails (not an option of tune ...)
    """
    out = list(extra)
    expect_key = True
    for arg in out:
        if arg.startswith("-") and not _is_number(arg):
            key = arg.split("=", 1)[0]
            name = key[2:]
            if not key.startswith("--") or not (("." in name and "-" not in name.split(".")[0])
                                                or name.split("+", 1)[0] in _TOP_LEVEL):
                raise TuneError(f"unrecognized argument {key} (not an option of tune nor a LightningCLI key "
                                "such as --trainer.max_epochs)")
            expect_key = "=" in arg
        elif expect_key:
            raise TuneError(f"unexpected argument {arg!r}")
        else:
            expect_key = True
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lightning-wd tune``; returns the exit code (0 done, 1 failed, 2 bad arguments, 130 interrupted).

    Args:
        argv: the arguments after ``tune`` (default ``sys.argv[1:]``; a leading ``tune`` is skipped).

    Example:
        >>> main(["--n-trials", "3"])
        2
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["tune"]:
        argv = argv[1:]
    parser = build_parser()
    debug = debug_enabled()
    if following_a_trial():  # a rank that strategy ddp re-ran for a trial: its fit, then done
        from lightning_wd.apps.tuning.objective import follow_trial

        follow_trial()
        return 0
    try:
        args, extra = parser.parse_known_args(argv)
        options = vars(args)
        config = options.pop("config")
        options["progress"] = not options.pop("no_progress")
        from lightning_wd.apps import quiet

        quiet.install(options.pop("verbose"), once=("WeightDecay (",))
        options["overrides"] = split_overrides(extra)
        from lightning_wd.apps.tuning.settings import Settings
        from lightning_wd.apps.tuning.study import tune

        tune(Settings.resolve(config, **options))
    except (UsageError, TuneError) as error:
        if debug:
            raise
        return report_error(PROG, error)
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished trials are kept in the study (re-run the command to resume)",
              file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        return report_error(PROG, f"{type(error).__name__}: {one_line(error)} (LIGHTNING_WD_DEBUG=1 for the traceback)",
                            code=1)
    return 0
