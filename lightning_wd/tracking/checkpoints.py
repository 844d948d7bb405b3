"""The MLflow run of a Lightning checkpoint, so that a resumed fit continues the same run::

    run_id = run_id_from_checkpoint("last.ckpt")  # None for a checkpoint without MLflow state
    trainer = Trainer(logger=mlflow_logger(run_id=run_id), callbacks=[WeightDecay(...), MLflowRecord()])
    trainer.fit(model, ckpt_path="last.ckpt")

:class:`~lightning_wd.tracking.record.MLflowRecord` saves its state under :data:`STATE_RUN_ID` in
``checkpoint["callbacks"]``; this module reads it back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["STATE_RUN_ID", "run_id_from_checkpoint"]

STATE_RUN_ID = "mlflow_run_id"  # marks the record callback's entry in checkpoint["callbacks"]


def run_id_from_checkpoint(path: str | os.PathLike, weights_only: bool | None = None) -> str | None:
    """The MLflow run a Lightning checkpoint was logged to (saved there by ``MLflowRecord``).

    Args:
        path: a checkpoint file (local path or fsspec URL).
        weights_only: passed to ``torch.load`` (``None``: torch's default); checkpoints holding pickled
            objects in their hyper-parameters need ``False`` (only for files you trust).

    Returns:
        The run id, or ``None`` when the checkpoint has no ``MLflowRecord`` state.

    Raises:
        FileNotFoundError: there is no such checkpoint.

    Example:
        >>> run_id_from_checkpoint("no/such.ckpt")
        Traceback (most recent call last):
        FileNotFoundError: no checkpoint at no/such.ckpt
    """
    from lightning.fabric.utilities.cloud_io import _load, get_filesystem

    if not get_filesystem(path).exists(str(path)):
        raise FileNotFoundError(f"no checkpoint at {os.fspath(path)}")
    checkpoint = _load(path, map_location="cpu", weights_only=weights_only)
    states = checkpoint.get("callbacks", {}) if isinstance(checkpoint, Mapping) else {}
    for state in states.values():
        if isinstance(state, Mapping) and state.get(STATE_RUN_ID):
            return str(state[STATE_RUN_ID])
    return None
