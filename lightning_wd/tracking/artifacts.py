"""Run artifacts: a resolved config stored in the MLflow run.

``LightningCLI``'s own ``SaveConfigCallback`` cannot do this: it needs a log directory, which SQLite and
server loggers do not have (see :mod:`lightning_wd.tracking.save_config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_wd.tracking.logger import mlflow_logger_of
from lightning_wd.tracking.params import plain_values

__all__ = ["log_config"]


def log_config(logger: Any, config: str | Mapping | Any, name: str = "config.yaml") -> str | None:
    """Store a resolved config as an artifact of the run of ``logger``; do nothing for other loggers.

    Args:
        logger: an ``MLFlowLogger``, a list of loggers, or a ``Trainer`` (its first ``MLFlowLogger``).
        config: the config as text (e.g. ``parser.dump(config)``), a mapping, a ``jsonargparse.Namespace``
            (written as YAML), or a ``pathlib.Path`` of a file to copy.
        name: the artifact path inside the run (relative, e.g. ``config.yaml`` or ``configs/fit.yaml``).

    Returns:
        The artifact path, or ``None`` when there is no MLflow logger (or on ranks other than zero).

    Raises:
        ValueError: ``name`` is empty, absolute, or leaves the run's artifact folder.

    Example:
        >>> log_config(None, {"model": {"lr": 0.1}}) is None  # no MLflow logger: nothing to do
        True
    """
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts:
        raise ValueError(f"`name` must be a relative artifact path, got {name!r}")
    target = mlflow_logger_of(logger)
    if target is None or rank_zero_only.rank != 0:
        return None
    if isinstance(config, Path):
        text = config.read_text()
    elif isinstance(config, str):
        text = config
    else:
        import yaml

        text = yaml.safe_dump(plain_values(config), sort_keys=False, default_flow_style=False)
    target.experiment.log_text(target.run_id, text, Path(name).as_posix())
    return Path(name).as_posix()
