"""How the commands fail: the error types, the debug switch, and the one line a user sees (exit code 2).

Every subcommand reports a bad argument or configuration as ``<prog>: error: <one line>`` on stderr
and exit code 2; ``LIGHTNING_WD_DEBUG=1`` lets the exception through with its traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from lightning_wd.core.messages import one_line

__all__ = ["ConfigError", "OneLineParser", "TuneError", "UsageError", "debug_enabled", "report_error"]

DEBUG_VARIABLE = "LIGHTNING_WD_DEBUG"


class ConfigError(Exception):
    """A configuration problem, reported as one line and exit code 2."""


class UsageError(ValueError):
    """A bad command-line argument of a subcommand, reported as one line and exit code 2."""


class TuneError(ValueError):
    """A study that cannot run as asked: bad arguments, recipe or search space (``tune`` exits 2)."""


class OneLineParser(argparse.ArgumentParser):
    """``argparse`` whose errors raise :class:`UsageError` instead of printing usage and exiting.

    Every ``--long-option`` is also accepted in LightningCLI's spelling, ``--long_option`` (and the other
    way round), so ``fit``, ``tune``, ``compare`` and ``report`` take the same spellings; help shows the
    underscored one, as LightningCLI does.

    Example:
        >>> parser = OneLineParser(prog="x")
        >>> _ = parser.add_argument("--n-trials", type=int)
        >>> parser.parse_args(["--n_trials", "3"]).n_trials, parser.parse_args(["--n-trials=4"]).n_trials
        (3, 4)
        >>> parser = OneLineParser(prog="x")
        >>> _ = parser.add_argument("--n", type=int)
        >>> try:
        ...     parser.parse_args(["--n", "a"])
        ... except UsageError as error:
        ...     print(error)
        argument --n: invalid int value: 'a'
    """

    def add_argument(self, *names: str, **kwargs):  # noqa: D102
        spelled: list[str] = []
        for name in names:
            if name.startswith("--"):
                for alias in (name.replace("-", "_").replace("__", "--", 1), "--" + name[2:].replace("_", "-")):
                    if alias not in spelled:
                        spelled.append(alias)
            else:
                spelled.append(name)
        return super().add_argument(*spelled, **kwargs)

    def error(self, message: str):
        raise UsageError(message)


def debug_enabled() -> bool:
    """Whether ``LIGHTNING_WD_DEBUG`` asks for tracebacks instead of one-line errors.

    Example:
        >>> import os
        >>> os.environ["LIGHTNING_WD_DEBUG"] = "0"; debug_enabled()
        False
    """
    return os.environ.get(DEBUG_VARIABLE, "").lower() not in ("", "0", "false", "no")


def report_error(prog: str, message: object, code: int = 2) -> int:
    """Print ``<prog>: error: <message as one line>`` on stderr and return ``code``.

    Example:
        >>> import sys; sys.stderr = sys.stdout
        >>> report_error("lightning-wd", "bad\\n  value")
        lightning-wd: error: bad: value
        2
        >>> sys.stderr = sys.__stderr__
    """
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr)
    return code
