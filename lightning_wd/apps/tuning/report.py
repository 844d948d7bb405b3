"""What a study leaves behind: summary lines, ``best.yaml``, the Pareto table and the plots."""

from __future__ import annotations

import csv
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_params", "pareto_rows", "plot_study", "summary_line", "write_best", "write_pareto"]

MIN_TRIALS_FOR_IMPORTANCE = 5


def format_params(params: Mapping[str, Any]) -> str:
    """``strength=0.0012 scheme=l1``: parameters in a short form.

    Example:
        >>> format_params({"strength": 0.00123456, "scheme": "l1"})
        'strength=0.00123 scheme=l1'
    """
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _value(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def summary_line(trial: Any, names: Sequence[str]) -> str:
    """One line per finished trial: number, params, value(s), state, duration (and the failure reason).

    Args:
        trial: an ``optuna.trial.FrozenTrial``.
        names: the objective (metric) names.
    """
    values = trial.values or [None] * len(names)
    if trial.state.name == "PRUNED" and trial.intermediate_values:
        last = max(trial.intermediate_values)
        values = [trial.intermediate_values[last]]
    shown = " ".join(f"{n}={_value(v)}" for n, v in zip(names, values))
    seconds = trial.duration.total_seconds() if trial.duration is not None else float("nan")
    params = format_params(trial.params)
    line = f"trial {trial.number:>3}  {params:<40} {shown:<28} {trial.state.name:<8} {seconds:6.1f}s"
    reason = trial.user_attrs.get("fail_reason")
    if reason and trial.state.name == "FAIL":
        line += f"  ({reason})"
    retried = trial.system_attrs.get("failed_trial")
    if retried is not None:
        line += f"  (retry of trial {retried})"
    return line


def write_best(path: Path, recipe: Mapping, header: Sequence[str]) -> Path:
    """Write a ready-to-fit recipe with a comment header, passwords masked, owner-only; returns ``path``."""
    import yaml

    from lightning_wd.tracking.redaction import private_file, redact_text

    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(dict(recipe), sort_keys=False)
    path.touch(mode=0o600)
    private_file(path)
    path.write_text(redact_text(text))
    return path


def transfer_rule(tau: float, lr: float | None = None, steps_per_epoch: int | None = None) -> list[str]:
    """The comment lines of ``best.yaml`` that say how a tuned timescale transfers (Wang & Aitchison 2025).

    The EMA timescale ``tau = 1 / (eta * lambda)`` in epochs, not ``lambda``, is what carries over to another
    data set size or batch size: ``lambda = 1 / (eta * tau * S)`` with ``S`` the optimizer steps per epoch.

    Example:
        >>> lines = transfer_rule(20.0, lr=0.01, steps_per_epoch=50)
        >>> lines[1].split(";")[0]
        'in this study: eta = 0.01, S = 50 -> lambda = 0.1'
    """
    lines = [f"timescale transfer: tau = {tau:g} epochs is the setting that carries over; WeightDecay("
             "timescale_epochs=tau) derives lambda = 1 / (eta * tau * S) at fit start (eta: initial lr, "
             "S: optimizer steps per epoch)"]
    if lr and steps_per_epoch:
        lam = 1.0 / (lr * tau * steps_per_epoch)
        lines.append(f"in this study: eta = {lr:g}, S = {steps_per_epoch} -> lambda = {lam:.6g}; with S' steps per "
                     "epoch (another data set or batch size: S' = ceil(N' / (B' * accumulation))) keep tau, or set "
                     f"strength = {lam:.6g} * {steps_per_epoch} / S'")
    return lines


def pareto_rows(study: Any, names: Sequence[str]) -> list[dict]:
    """The Pareto-optimal trials as rows (trial, params, objective values), best first objective first."""
    rows = []
    for trial in study.best_trials:
        row: dict[str, Any] = {"trial": trial.number}
        row.update(trial.params)
        row.update(dict(zip(names, trial.values)))
        rows.append(row)
    sign = -1 if study.directions[0].name == "MAXIMIZE" else 1
    return sorted(rows, key=lambda r: sign * r[names[0]])


def write_pareto(rows: Sequence[Mapping], path: Path) -> str:
    """Write the Pareto table as CSV at ``path`` and return it as aligned text."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    cells = [[k for k in keys]] + [
        [f"{r.get(k):.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys] for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(keys))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _figure(axes: Any) -> Any:
    import numpy as np

    return np.atleast_1d(np.asarray(axes, dtype=object)).ravel()[0].figure


def _use_agg() -> None:
    if "matplotlib.pyplot" not in sys.modules:
        import matplotlib

        matplotlib.use("Agg")


def plot_study(study: Any, out: Path, names: Sequence[str], tuned: Sequence[str]) -> list[Path]:
    """PNG plots of ``optuna.visualization.matplotlib``; returns the files written.

    Optimisation history, the objective against the main parameter (slice), parameter importances when at
    least two parameters are tuned and enough trials completed, and the Pareto front for two objectives.
    A plot that fails is skipped with a warning.
    """
    import numpy as np
    import optuna

    _use_agg()
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return []
    multi = len(names) > 1
    target = {"target": (lambda t: t.values[0]), "target_name": names[0]} if multi else {"target_name": names[0]}
    # Optuna's importance evaluator ranks low target values best: a maximised first objective is negated
    sign = -1.0 if study.directions[0].name == "MAXIMIZE" else 1.0
    importance = {"target": (lambda t: sign * t.values[0]), "target_name": names[0]} if multi else target
    main = "timescale_epochs" if "timescale_epochs" in tuned else ("strength" if "strength" in tuned else tuned[0])
    jobs = [("optimization_history.png", lambda: vis.plot_optimization_history(study, **target)),
            (f"slice_{main}.png", lambda: vis.plot_slice(study, params=[main], **target))]
    if len(tuned) >= 2 and len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
        jobs.append(("param_importances.png", lambda: vis.plot_param_importances(study, **importance)))
    if multi:
        jobs.append(("pareto.png", lambda: vis.plot_pareto_front(study, target_names=list(names))))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in jobs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.filterwarnings("ignore", message="PedAnovaImportanceEvaluator computes")  # negated above
                axes = make()
            figure = _figure(axes)
            if name == "optimization_history.png":  # trial numbers are whole; the title names the study
                from matplotlib.ticker import MaxNLocator

                first = np.atleast_1d(np.asarray(axes, dtype=object)).ravel()[0]
                first.xaxis.set_major_locator(MaxNLocator(integer=True))
                first.set_title(f"Optimization history · study {study.study_name}")
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(out / name, dpi=100)
            plt.close(figure)
            written.append(out / name)
        except Exception as error:  # a plot is a convenience: the study's results stand without it
            warnings.warn(f"lightning_wd tune: could not plot {name}: {error}", UserWarning, stacklevel=2)
    return written
