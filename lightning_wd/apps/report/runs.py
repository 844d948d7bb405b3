"""The report's training runs: one recipe fit per (setting, seed), recorded epoch by epoch."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from lightning_wd.apps.recipes import shipped_recipe

RECIPE = shipped_recipe("report_mnist1d_mlp")


@dataclass(frozen=True)
class Setting:
    """One configuration of the report's recipe: a decay (or none) and model switches."""

    key: str
    label: str
    scheme: str = "decoupled"
    strength: float = 0.0
    batchnorm: bool = False

    def overrides(self) -> list[str]:
        """LightningCLI overrides that turn the report recipe into this setting."""
        return [
            "--trainer.callbacks.init_args.scheme", self.scheme,
            "--trainer.callbacks.init_args.strength", repr(float(self.strength)),
            "--model.init_args.batchnorm", str(self.batchnorm).lower(),
        ]


@dataclass
class Run:
    """What one fit measured: per-epoch curves, final metrics, wall time."""

    setting: Setting
    seed: int
    epochs: list[dict] = field(default_factory=list)
    fit_seconds: float = 0.0
    run_id: str | None = None

    def final(self, key: str) -> float:
        """The last epoch's value of ``key`` (``train/acc``, ``val/acc``, ``train/loss``, ``nonzero``...)."""
        values = [e[key] for e in self.epochs if key in e]
        return values[-1] if values else float("nan")

    def series(self, key: str) -> list[float]:
        """``key`` per epoch."""
        return [e.get(key, float("nan")) for e in self.epochs]


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (sd 0 for a single value).

    Example:
        >>> mean_sd([1.0, 3.0])
        (2.0, 1.4142135623730951)
    """
    values = [v for v in values if v == v]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _recorder():
    from lightning.pytorch import Callback

    class EpochRecorder(Callback):
        """Per epoch: mean train loss, train/val accuracy and loss, non-zero fraction, wall seconds."""

        def __init__(self) -> None:
            self.epochs: list[dict] = []
            self._losses: list = []
            self._start = 0.0
            self._pending: dict[str, float] = {}  # this epoch's validation metrics

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._losses, self._start = [], time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self._losses.append(loss.detach())

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if trainer.sanity_checking:
                return
            metrics = trainer.callback_metrics
            self._pending = {k: float(metrics[k]) for k in ("val/acc", "val/loss") if k in metrics}

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            import torch

            from lightning_wd.tracking import find_decay_callback

            entry = {"epoch": trainer.current_epoch + 1, "seconds": time.perf_counter() - self._start}
            if self._losses:
                entry["train/loss"] = float(torch.stack(self._losses).mean())
            if "train/acc" in trainer.callback_metrics:
                entry["train/acc"] = float(trainer.callback_metrics["train/acc"])
            entry.update(self._pending)
            self._pending = {}
            decay = find_decay_callback(trainer)
            if decay is not None:
                entry["nonzero"] = decay.compute_stats(pl_module).get("wd/nonzero_fraction", float("nan"))
            self.epochs.append(entry)

    return EpochRecorder()


def run_setting(setting: Setting, seed: int, epochs: int, *, experiment: str, tracking_uri: str | None,
                recipe: Path = RECIPE) -> Run:
    """Fit the report recipe once with ``setting`` and ``seed`` through the recipe runner (as ``fit`` does)."""
    import warnings

    from lightning_wd.apps.runner import build_cli

    overrides = [*setting.overrides(), "--seed_everything", str(seed), "--trainer.max_epochs", str(epochs),
                 "--experiment", experiment, "--run_name", f"report/{setting.key}/seed{seed}",
                 "--trainer.enable_progress_bar", "false"]
    if tracking_uri:
        overrides += ["--tracking_uri", tracking_uri]
    recorder = _recorder()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*args parameter is intended to run from within Python.*")
        cli = build_cli(recipe, overrides, callbacks=[recorder])
    # The validation of epoch e runs inside train epoch e; the recorder reads it at train epoch end.
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    logger = cli.trainer.logger
    return Run(setting, seed, recorder.epochs, seconds, getattr(logger, "run_id", None))
