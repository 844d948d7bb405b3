"""Quiet by default: the libraries' banners filtered at their source loggers, ``-v`` brings them back.

Lightning, MLflow and alembic announce things a user of ``lightning-wd`` did not ask about, per fit: "GPU
available", "TPU available", litlogger/litmodels tips, "Seed set to", "Loading `train_dataloader`",
"`Trainer.fit` stopped", MLflow's table creation, and torch's ``_pytree`` deprecation. :func:`install` adds one
:class:`LibraryNoise` filter to each logger that emits them (the records never reach a handler; the
user's own output and logging are untouched) and a ``warnings`` filter for the deprecation; ``verbose``
removes them again. Messages in ``once`` (:data:`ONCE`: the WeightDecay audit table, the same for every
trial of a study, and its notice that statistics run less often, which otherwise repeats two or three times
per fit and per trial and breaks up a study's progress bar) are shown the first time only.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

__all__ = ["BANNERS", "ONCE", "SOURCES", "LibraryNoise", "install", "strip_verbose"]

#: the loggers the banners come from (found by their record names)
SOURCES = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
           "lightning.fabric.utilities.seed", "lightning.pytorch.loggers.mlflow", "mlflow.store.db.utils",
           "alembic.runtime.migration")
#: how the banners begin
BANNERS = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:", "Seed set to",
           "Loading `train_dataloader`", "`Trainer.fit` stopped", "LOCAL_RANK:", "Experiment with name",
           "Creating initial MLflow database tables", "Updating database tables", "Context impl",
           "Will assume", "Running upgrade", "`Trainer(limit_")
#: messages of this library shown the first time only (see the module docstring): ``tune`` and ``report``
#: pass both, ``fit`` (one fit, one audit) the second
ONCE = ("WeightDecay (", "WeightDecay: statistics every")
#: deprecation noise of the installed libraries, as ``warnings`` message patterns
WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",
            r"Unnamed CHECK constraint on reflected table")  # alembic, when MLflow creates a store


class LibraryNoise(logging.Filter):
    """Drop records that begin with one of :data:`BANNERS`; show those beginning with ``once`` once.

    Example:
        >>> noise = LibraryNoise(once=("WeightDecay (",))
        >>> record = lambda text: logging.LogRecord("x", logging.INFO, "", 0, text, None, None)
        >>> [noise.filter(record(t)) for t in ("Seed set to 0", "WeightDecay (l1) ...", "WeightDecay (l1) ...",
        ...                                    "epoch 3")]
        [False, True, False, True]
    """

    def __init__(self, once: Sequence[str] = ()) -> None:
        super().__init__("lightning_wd.quiet")
        self.once = tuple(once)
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg) if not record.args else record.getMessage()
        if message.startswith(BANNERS):
            return False
        for prefix in self.once:
            if message.startswith(prefix):
                if prefix in self.seen:
                    return False
                self.seen.add(prefix)
        return True


_installed: LibraryNoise | None = None


def install(verbose: bool = False, once: Sequence[str] = ()) -> LibraryNoise | None:
    """Filter the banners (``verbose=False``), or remove the filters (``verbose=True``); idempotent.

    Returns:
        The filter installed, or None.
    """
    global _installed
    if _installed is not None:
        for name in SOURCES:
            logging.getLogger(name).removeFilter(_installed)
        warnings.filters[:] = [f for f in warnings.filters if getattr(f[1], "pattern", None) not in WARNINGS]
        _installed = None
    if verbose:
        return None
    _installed = LibraryNoise(once)
    for name in SOURCES:
        logging.getLogger(name).addFilter(_installed)
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    return _installed


def strip_verbose(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``-v``/``--verbose``, and whether one was there.

    Example:
        >>> strip_verbose(["fit", "-v", "--config", "x.yaml"])
        (['fit', '--config', 'x.yaml'], True)
    """
    kept = [a for a in argv if a not in ("-v", "--verbose")]
    return kept, len(kept) != len(argv)
