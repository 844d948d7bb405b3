"""The ``lightning-wd`` command: ``fit``, ``validate``, ``test``, ``tune``, ``compare``, ``report``."""

from __future__ import annotations

import sys

USAGE = """usage: lightning-wd [--help] [--version] {fit,validate,test,tune,compare,report} ...

Weight decay as a first-class, measured part of PyTorch Lightning training.

subcommands:
  fit, validate, test   LightningCLI on a recipe: lightning-wd fit --config recipes/mnist1d_mlp.yaml
  tune                  Optuna study over the decay strength of a recipe
  compare               table of MLflow runs (scheme, strength, accuracy, non-zero fraction)
  report                re-measure the claims of the weight-decay article
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from lightning_wd import __version__

        print(f"lightning-wd {__version__}")
        return 0
    print(f"lightning-wd: error: unknown subcommand {argv[0]!r}; choose from fit, validate, test, tune, "
          "compare, report", file=sys.stderr)
    return 2
