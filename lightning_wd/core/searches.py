"""Searches that train before ``on_fit_start``: Lightning's learning-rate and batch-size finders.

``LearningRateFinder`` and ``BatchSizeFinder`` (also what ``Tuner.lr_find``/``scale_batch_size`` add) run
their search inside their own ``on_fit_start``, which Lightning calls before every other callback's, and
with every other callback removed for its length. The optimizer is the user's, though. So that the search
trains what the fit will train (the decayed model, as on ``param_groups``), :func:`decay_searches_too` makes
each such callback set the decay up on that optimizer first; the decay's optimizer hooks then act during
the search, whose end restores the weights, the optimizer state and the callback's own state (step counts).

Example:
    >>> from lightning.pytorch.callbacks import LearningRateFinder
    >>> calls = []
    >>> class Finder(LearningRateFinder):
    ...     def on_fit_start(self, trainer, pl_module):
    ...         calls.append("search")
    >>> class FakeTrainer:
    ...     callbacks = [Finder()]
    >>> trainer = FakeTrainer()
    >>> decay_searches_too(trainer, lambda trainer, module: calls.append("decay set up"))
    1
    >>> trainer.callbacks[0].on_fit_start(trainer, None); calls
    ['decay set up', 'search']
    >>> restore_searches(trainer); trainer.callbacks[0].on_fit_start(trainer, None); calls[-1]
    'search'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["WRAPPED", "decay_searches_too", "restore_searches"]

#: the attribute a wrapped search callback keeps its own ``on_fit_start`` under
WRAPPED = "_lightning_wd_original_on_fit_start"


def _search_callbacks(trainer: Any) -> list:
    from lightning.pytorch.callbacks import BatchSizeFinder, LearningRateFinder

    return [c for c in getattr(trainer, "callbacks", ()) if isinstance(c, (LearningRateFinder, BatchSizeFinder))]


def decay_searches_too(trainer: Any, set_up: Callable[[Any, Any], None]) -> int:
    """Make every search callback of ``trainer`` call ``set_up(trainer, module)`` before its search.

    Returns:
        How many search callbacks were found.
    """
    searches = _search_callbacks(trainer)
    for search in searches:
        if WRAPPED in search.__dict__:
            continue
        original = search.on_fit_start

        def on_fit_start(trainer: Any, pl_module: Any, _original: Callable = original) -> None:
            set_up(trainer, pl_module)
            _original(trainer, pl_module)

        search.__dict__[WRAPPED] = original
        search.on_fit_start = on_fit_start
    return len(searches)


def restore_searches(trainer: Any) -> None:
    """Give every wrapped search callback its own ``on_fit_start`` back."""
    for search in getattr(trainer, "callbacks", ()):
        if WRAPPED in getattr(search, "__dict__", {}):
            search.__dict__.pop(WRAPPED)
            search.__dict__.pop("on_fit_start", None)
