"""PNG plots of the weight-decay measurements (matplotlib, drawn off-screen, imported on first use).

The plots read a history in the shape ``WeightDecay.history`` keeps: a list of
``{"step": int, "metrics": {name: float}}`` with names such as ``wd/nonzero_fraction``,
``wd/nonzero_fraction/<param>``, ``wd/weight_norm``, ``wd/weight_norm/<param>``, ``wd/strength``,
``wd/penalty`` and ``wd/dead_units``. Each function writes one PNG and returns its path, or returns
``None`` when the history holds nothing for it. Given the run's ``label`` (``l1 λ=1e-2 seed 0``, see
:func:`~lightning_wd.tracking.params.setting_label`), the titles name it and the lines take its setting's
colour (:func:`~lightning_wd.tracking.colours.setting_colour`, the colour of the report's figures and of the
run in the MLflow UI). Step axes have whole-number ticks.

Example:
    >>> import tempfile
    >>> history = [{"step": s, "metrics": {"wd/nonzero_fraction": 1 - s / 10}} for s in range(5)]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     [p.name for p in plot_history(history, folder)]
    ['nonzero_fraction.png']
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_wd.tracking.colours import setting_colour

__all__ = [
    "GLOBAL_METRICS",
    "is_png",
    "layer_series",
    "plot_global_metrics",
    "plot_history",
    "plot_layer_metric",
    "plot_nonzero_fraction",
    "plot_weight_histogram",
    "series",
]

NONZERO = "wd/nonzero_fraction"
NORM = "wd/weight_norm"
GLOBAL_METRICS = ("wd/weight_norm", "wd/strength", "wd/penalty", "wd/dead_units")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_LINES = 12  # more layers than this: a heat map instead of one line each


def series(history: Iterable[Mapping], name: str) -> tuple[list[int], list[float]]:
    """Steps and values of metric ``name`` in ``history`` (steps where it is missing are skipped).

    Example:
        >>> series([{"step": 0, "metrics": {"a": 1.0}}, {"step": 1, "metrics": {}}], "a")
        ([0], [1.0])
    """
    steps, values = [], []
    for record in history:
        value = record.get("metrics", {}).get(name)
        if value is not None:
            steps.append(int(record["step"]))
            values.append(float(value))
    return steps, values


def layer_series(history: Sequence[Mapping], prefix: str) -> dict[str, tuple[list[int], list[float]]]:
    """Per-layer series of the metrics named ``<prefix>/<layer>``, keyed by layer, in first-seen order.

    Example:
        >>> h = [{"step": 3, "metrics": {"wd/weight_norm": 2.0, "wd/weight_norm/0.weight": 1.5}}]
        >>> layer_series(h, "wd/weight_norm")
        {'0.weight': ([3], [1.5])}
    """
    start = prefix.rstrip("/") + "/"
    layers: dict[str, None] = {}
    for record in history:
        for name in record.get("metrics", {}):
            if name.startswith(start):
                layers.setdefault(name[len(start) :])
    return {layer: series(history, start + layer) for layer in layers}


def _figure(width: float = 7.0, height: float = 4.0):
    # Figure without pyplot: no global state, no GUI backend; savefig renders with Agg
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _title(title: str, label: str | None) -> str:
    return f"{title} · {label}" if label else title


def _colour(label: str | None) -> str | None:
    return setting_colour(label) if label else None


def _whole_steps(axes) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers


def _finite(values: Sequence[float]) -> bool:
    return any(math.isfinite(v) for v in values)


def plot_nonzero_fraction(history: Sequence[Mapping], path: str | os.PathLike,
                          label: str | None = None) -> Path | None:
    """Plot the fraction of non-zero decayed weights over training steps.

    Args:
        history: records ``{"step", "metrics"}`` holding ``wd/nonzero_fraction``.
        path: the PNG file to write.
        label: the run's setting (``l1 λ=1e-2 seed 0``): in the title, and its colour.

    Returns:
        ``path``, or ``None`` when the metric is absent.
    """
    steps, values = series(history, NONZERO)
    if not steps or not _finite(values):
        return None
    figure = _figure()
    axes = figure.add_subplot()
    axes.plot(steps, values, marker="." if len(steps) < 50 else None, color=_colour(label))
    axes.set(xlabel="step", ylabel="non-zero fraction", title=_title("Non-zero fraction of decayed weights", label))
    _whole_steps(axes)
    axes.set_ylim(bottom=0, top=max(1.0, max(v for v in values if math.isfinite(v))) * 1.02)
    axes.grid(alpha=0.3)
    return _save(figure, path)


def plot_global_metrics(history: Sequence[Mapping], path: str | os.PathLike,
                        names: Sequence[str] = GLOBAL_METRICS, label: str | None = None) -> Path | None:
    """One panel per global metric (weight norm, strength, penalty, dead units) over steps.

    Args:
        history: records ``{"step", "metrics"}``.
        path: the PNG file to write.
        names: the metrics to draw; those absent from ``history`` are left out.
        label: the run's setting: in the title, and its colour.

    Returns:
        ``path``, or ``None`` when none of ``names`` is present.
    """
    present = [(name, *series(history, name)) for name in names]
    present = [(name, s, v) for name, s, v in present if s and _finite(v)]
    if not present:
        return None
    figure = _figure(7.0, 2.2 * len(present) + 0.6)
    axes = figure.subplots(len(present), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, steps, values) in zip(axes, present):
        ax.plot(steps, values, color=_colour(label))
        ax.set_ylabel(name.removeprefix("wd/"))
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    _whole_steps(axes[-1])
    figure.suptitle(_title("Weight decay over training", label))
    return _save(figure, path)


def plot_layer_metric(history: Sequence[Mapping], prefix: str, path: str | os.PathLike,
                      title: str | None = None, label: str | None = None) -> Path | None:
    """Per-layer ``<prefix>/<layer>`` metrics over steps: one line per layer, or a heat map when many.

    Args:
        history: records ``{"step", "metrics"}``.
        prefix: e.g. ``wd/weight_norm`` or ``wd/nonzero_fraction``.
        path: the PNG file to write.
        title: the figure title (default: from ``prefix``).
        label: the run's setting, added to the title.

    Returns:
        ``path``, or ``None`` when there are no per-layer metrics for ``prefix``.
    """
    import numpy as np

    layers = {k: v for k, v in layer_series(history, prefix).items() if v[0]}
    if not layers:
        return None
    name = prefix.rstrip("/").removeprefix("wd/").replace("_", " ")
    title = _title(title or f"Per-layer {name}", label)
    if len(layers) <= MAX_LINES:
        figure = _figure()
        axes = figure.add_subplot()
        for layer, (steps, values) in layers.items():
            axes.plot(steps, values, label=layer)
        axes.set(xlabel="step", ylabel=name, title=title)
        _whole_steps(axes)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small", loc="best")
        return _save(figure, path)
    steps = sorted({step for layer_steps, _ in layers.values() for step in layer_steps})
    column = {s: i for i, s in enumerate(steps)}
    grid = np.full((len(layers), len(steps)), np.nan)
    for row, (layer_steps, values) in enumerate(layers.values()):
        for step, value in zip(layer_steps, values):
            grid[row, column[step]] = value
    figure = _figure(8.0, min(2.0 + 0.18 * len(layers), 30.0))
    axes = figure.add_subplot()
    image = axes.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis",
                        extent=(steps[0] - 0.5, steps[-1] + 0.5, len(layers) - 0.5, -0.5))
    axes.set_yticks(range(len(layers)))
    axes.set_yticklabels(list(layers), fontsize=max(3, min(8, 400 // len(layers))))
    axes.set(xlabel="step", title=title)
    _whole_steps(axes)
    figure.colorbar(image, ax=axes, label=name)
    return _save(figure, path)


def _values(values: Any):
    import numpy as np

    if values is None:
        return np.zeros(0)
    if hasattr(values, "detach"):  # a tensor
        array = values.detach().reshape(-1).float().cpu().numpy()
    elif isinstance(values, (list, tuple)) and values and hasattr(values[0], "detach"):
        array = np.concatenate([_values(v) for v in values])
    else:
        array = np.asarray(values, dtype=float).reshape(-1)
    return array[np.isfinite(array)]


def plot_weight_histogram(decayed: Any, excluded: Any, path: str | os.PathLike, bins: int = 100,
                          label: str | None = None) -> Path | None:
    """Histogram (log counts) of the values of decayed vs excluded weights, on shared bins.

    Args:
        decayed: values of decayed weights (array, tensor, or list of tensors).
        excluded: values of weights that do not decay.
        path: the PNG file to write.
        bins: number of bins.
        label: the run's setting: in the title, and the decayed weights' colour.

    Returns:
        ``path``, or ``None`` when both are empty.

    Example:
        >>> import tempfile, numpy as np
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     out = plot_weight_histogram(np.random.randn(1000), np.ones(10), f"{folder}/h.png")
        ...     is_png(out)
        True
    """
    import numpy as np

    decayed, excluded = _values(decayed), _values(excluded)
    if decayed.size == 0 and excluded.size == 0:
        return None
    both = np.concatenate([decayed, excluded])
    low, high = float(both.min()), float(both.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    figure = _figure()
    axes = figure.add_subplot()
    for values, kind, colour in ((decayed, "decayed", _colour(label)), (excluded, "excluded", "#7f7f7f")):
        if values.size:
            counts, _ = np.histogram(values, bins=edges)
            axes.stairs(counts, edges, fill=True, alpha=0.6, label=f"{kind} ({values.size:,} values)", color=colour)
    axes.set_yscale("log")
    axes.set(xlabel="weight value", ylabel="count", title=_title("Weights: decayed vs excluded", label))
    axes.legend(fontsize="small")
    return _save(figure, path)


def plot_history(history: Sequence[Mapping], folder: str | os.PathLike, label: str | None = None) -> list[Path]:
    """Write every plot the history allows into ``folder``; return the files written.

    Files: ``nonzero_fraction.png``, ``decay_overview.png``, ``layer_weight_norms.png``,
    ``layer_nonzero_fraction.png`` (each only when its metrics are present). ``label``: the run's setting
    (``l1 λ=1e-2 seed 0``), in every title and as the colour of its lines.
    """
    folder = Path(folder)
    written = [
        plot_nonzero_fraction(history, folder / "nonzero_fraction.png", label),
        plot_global_metrics(history, folder / "decay_overview.png", label=label),
        plot_layer_metric(history, NORM, folder / "layer_weight_norms.png", "Per-layer weight norm", label),
        plot_layer_metric(history, NONZERO, folder / "layer_nonzero_fraction.png",
                          "Per-layer non-zero fraction", label),
    ]
    return [path for path in written if path is not None]


def is_png(path: str | os.PathLike, min_bytes: int = 1000) -> bool:
    """Whether ``path`` is a PNG file (magic bytes) of at least ``min_bytes``.

    Example:
        >>> is_png(__file__)
        False
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size < min_bytes:
        return False
    with path.open("rb") as handle:
        return handle.read(len(PNG_MAGIC)) == PNG_MAGIC
