"""Run artifacts: a resolved config stored in the MLflow run; text and files written owner-only, secrets masked.

``LightningCLI``'s own ``SaveConfigCallback`` cannot do this: it needs a log directory, which SQLite and
server loggers do not have (see :mod:`lightning_wd.tracking.save_config`). Every artifact the project writes
goes through :func:`log_private_text` / :func:`log_private_artifacts`: the local copy MLflow makes keeps the
source's mode, so files in a database store's artifact folder are ``0o600`` (MLflow's ``log_text`` would
leave them world-readable); configs are written with their passwords masked
(:mod:`lightning_wd.tracking.redaction`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_wd.tracking.logger import mlflow_logger_of
from lightning_wd.tracking.params import plain_values
from lightning_wd.tracking.redaction import private_file, redact_text, redact_value

__all__ = ["log_config", "log_private_artifacts", "log_private_text"]


def log_private_text(client: Any, run_id: str, text: str, artifact_file: str) -> None:
    """``client.log_text`` with an owner-only (``0o600``) file (the local artifact copy keeps the mode).

    Args:
        client: an ``MlflowClient`` (or a logger's ``experiment``).
        run_id: the run.
        text: the content.
        artifact_file: the run-relative path, e.g. ``audit/grouping.txt``.
    """
    folder, name = os.path.split(Path(artifact_file).as_posix())
    with tempfile.TemporaryDirectory(prefix="lightning_wd_") as tmp:  # the folder itself is 0o700
        path = Path(tmp) / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        client.log_artifact(run_id, str(path), folder or None)


def log_private_artifacts(client: Any, run_id: str, paths: Any, artifact_path: str | None = None) -> None:
    """Log files (a folder's files, or a list of paths) as owner-only (``0o600``) artifacts of ``run_id``.

    The files are made private where they are (they are the project's own outputs: plots, ``best.yaml``)
    and then logged; a missing path is skipped.
    """
    items = sorted(Path(paths).iterdir()) if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    for path in items:
        if path.is_file():
            private_file(path)
            client.log_artifact(run_id, str(path), artifact_path)
        elif path.is_dir():
            log_private_artifacts(client, run_id, path, f"{artifact_path}/{path.name}" if artifact_path
                                  else path.name)




def log_config(logger: Any, config: str | Mapping | Any, name: str = "config.yaml") -> str | None:
    """Store a resolved config as an artifact of the run of ``logger``; do nothing for other loggers.

    Args:
        logger: an ``MLFlowLogger``, a list of loggers, or a ``Trainer`` (its first ``MLFlowLogger``).
        config: the config as text (e.g. ``parser.dump(config)``), a mapping, a ``jsonargparse.Namespace``
            (written as YAML), or a ``pathlib.Path`` of a file to copy. Passwords in URIs and the values of
            password-like keys are masked (``***``); the artifact file is owner-only.
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
        text = redact_text(config.read_text())
    elif isinstance(config, str):
        text = redact_text(config)
    else:
        import yaml

        text = yaml.safe_dump(redact_value(plain_values(config)), sort_keys=False, default_flow_style=False)
    log_private_text(target.experiment, target.run_id, text, Path(name).as_posix())
    return Path(name).as_posix()
