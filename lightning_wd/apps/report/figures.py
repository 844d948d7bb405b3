"""The report's PNG figures (matplotlib, Agg backend).

One colour per setting in every figure (:func:`setting_colour`: "no decay" and "none" are one setting, as
are "L1" and "L1 (proximal)"; shared with the run plots and the MLflow UI through
:mod:`lightning_wd.tracking.colours`), bars from zero, whole-number epoch ticks.
"""

from __future__ import annotations

from pathlib import Path

from lightning_wd.apps.report.runs import Run, mean_sd
from lightning_wd.tracking.colours import setting_colour, setting_key

__all__ = ["bars", "curves", "geometric", "setting_colour", "setting_key", "strengths"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _band(ax, runs: list[Run], metric: str, label: str) -> None:
    length = min(len(r.epochs) for r in runs)
    stats = [mean_sd([r.series(metric)[e] for r in runs]) for e in range(length)]
    epochs = list(range(1, length + 1))
    mean = [m for m, _ in stats]
    colour = setting_colour(label)
    ax.plot(epochs, mean, label=label, color=colour)
    ax.fill_between(epochs, [m - s for m, s in stats], [m + s for m, s in stats], alpha=0.2, color=colour)


def curves(path: Path, groups: dict[str, list[Run]], metrics: list[tuple[str, str]], title: str) -> Path:
    """One panel per metric, one line (mean ± sd band over seeds) per group of runs."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, (metric, ylabel) in zip(axes[0], metrics):
        for label, runs in groups.items():
            _band(ax, runs, metric, label)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(plt, fig, path)


def strengths(path: Path, points: list[tuple[float, list[Run]]]) -> Path:
    """Final train and validation accuracy against decay strength (log axis)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for metric, label in (("train/acc", "train"), ("val/acc", "validation")):
        stats = [mean_sd([r.final(metric) for r in runs]) for _, runs in points]
        ax.errorbar([s for s, _ in points], [m for m, _ in stats], yerr=[s for _, s in stats], marker="o",
                    capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("decoupled decay strength λ")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)


def bars(path: Path, values: dict[str, list[Run]], metric: str, ylabel: str) -> Path:
    """One bar (mean ± sd) per setting."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    stats = [mean_sd([r.final(metric) for r in runs]) for runs in values.values()]
    bars_ = ax.bar(list(values), [m for m, _ in stats], yerr=[s for _, s in stats], capsize=4,
                   color=[setting_colour(label) for label in values])
    ax.bar_label(bars_, labels=[f"{m:.3f}" for m, _ in stats], label_type="center", color="white", fontsize=8)
    ax.set_ylim(0.0, max(1.0, max(m + s for m, s in stats)))  # from zero: bar heights compare honestly
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return _save(plt, fig, path)


def geometric(path: Path, values: list[float], claim: list[float]) -> Path:
    """The measured pure-decay sequence against the article's."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    steps = list(range(1, len(values) + 1))
    ax.plot(steps, values, marker="o", label="measured (WeightDecay)")
    ax.plot(steps[: len(claim)], claim, marker="x", linestyle="--", label="article")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("weight value")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(plt, fig, path)
