"""The ranks of a trial on strategy ``ddp``: rank 0 (the study's process) hands them the trial.

Lightning's ``ddp`` launcher starts ranks 1.. by re-running the command line. For the length of a trial's
fit rank 0 puts the trial (sampled recipe, overrides, MLflow run; JSON) in :data:`TRIAL_ENV`; a re-run rank
finds it there and follows that trial (:func:`lightning_wd.apps.tuning.objective.follow_trial`) instead of
running a study. This module is light (no Lightning, Optuna or MLflow import), so the command line can
check for a trial before importing anything heavy.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["TRIAL_ENV", "following_a_trial", "ranks_follow"]

#: the trial a re-launched ``ddp`` rank follows (JSON), set by rank 0 for the length of the trial's fit
TRIAL_ENV = "LIGHTNING_WD_TRIAL"
#: what Lightning's ``ddp`` launcher sets in rank 0's environment; restored after each trial
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", TRIAL_ENV)


def following_a_trial() -> bool:
    """Whether this process is a rank that Lightning's ``ddp`` launcher re-ran for a trial.

    Example:
        >>> os.environ.pop(TRIAL_ENV, None) and None
        >>> following_a_trial()
        False
    """
    return bool(os.environ.get(TRIAL_ENV)) and os.environ.get("LOCAL_RANK", "0") not in ("", "0")


@contextlib.contextmanager
def ranks_follow(trainer: Any, spec: Mapping[str, Any]):
    """Around a trial's fit on strategy ``ddp``: the re-launched ranks find the trial in ``TRIAL_ENV``;
    afterwards they are waited for, the process group is ended and the launcher's variables are restored
    (``LOCAL_RANK`` left set would make the next trial believe its ranks were started externally)."""
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    launcher = trainer.strategy.launcher
    if not isinstance(launcher, _SubprocessScriptLauncher):
        yield
        return
    saved = {name: os.environ.get(name) for name in _LAUNCH_ENV}
    os.environ[TRIAL_ENV] = json.dumps(spec, default=str)
    try:
        yield
    finally:
        for process in getattr(launcher, "procs", ()):
            try:
                process.wait(timeout=120)
            except Exception:  # a rank that does not end: do not leave it behind
                process.kill()
                process.wait(timeout=10)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
