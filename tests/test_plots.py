"""Plots of the weight-decay history: valid PNG files, or nothing when there is nothing to draw."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_wd.tracking import plots
from lightning_wd.tracking.plots import PNG_MAGIC, is_png


def history(layers: int, steps: int = 30) -> list[dict]:
    records = []
    for step in range(steps):
        metrics = {"wd/nonzero_fraction": 1 - step / (2 * steps), "wd/weight_norm": 10 / (1 + step),
                   "wd/strength": 0.1 * math.cos(step / steps), "wd/penalty": 0.5, "wd/dead_units": step // 10}
        for i in range(layers):
            metrics[f"wd/nonzero_fraction/layer{i}.weight"] = 1 - step * i / (steps * layers)
            metrics[f"wd/weight_norm/layer{i}.weight"] = 5 / (1 + step * i)
        records.append({"step": 10 * step, "metrics": metrics})
    return records


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000, (path, len(data))
    assert is_png(path)


def test_plot_history_writes_every_plot(tmp_path):
    written = plots.plot_history(history(layers=3), tmp_path)
    assert [p.name for p in written] == ["nonzero_fraction.png", "decay_overview.png", "layer_weight_norms.png",
                                         "layer_nonzero_fraction.png"]
    for path in written:
        assert_png(path)


def test_many_layers_become_a_heat_map(tmp_path):
    path = plots.plot_layer_metric(history(layers=40, steps=8), "wd/weight_norm", tmp_path / "deep" / "n.png")
    assert path == tmp_path / "deep" / "n.png"
    assert_png(path)


def test_partial_and_empty_histories(tmp_path):
    assert plots.plot_history([], tmp_path) == []
    only = [{"step": s, "metrics": {"wd/strength": 0.1}} for s in range(3)]
    assert [p.name for p in plots.plot_history(only, tmp_path)] == ["decay_overview.png"]
    assert plots.plot_nonzero_fraction([{"step": 0, "metrics": {"wd/nonzero_fraction": float("nan")}}],
                                       tmp_path / "nan.png") is None
    assert list(tmp_path.iterdir()) == [tmp_path / "decay_overview.png"]


def test_series_helpers():
    records = history(layers=2, steps=3)
    assert plots.series(records, "wd/dead_units") == ([0, 10, 20], [0.0, 0.0, 0.0])
    assert list(plots.layer_series(records, "wd/weight_norm/")) == ["layer0.weight", "layer1.weight"]


@pytest.mark.parametrize("kind", ["tensors", "arrays"])
def test_weight_histogram(tmp_path, kind):
    generator = torch.Generator().manual_seed(0)
    decayed = [torch.randn(64, 32, generator=generator), torch.randn(10, 10, generator=generator) * 0.1]
    excluded = [torch.ones(32), torch.zeros(10)]
    if kind == "arrays":
        decayed = np.concatenate([t.numpy().ravel() for t in decayed])
        excluded = np.array([1.0, np.nan, np.inf, 0.0])  # non-finite values are dropped
    assert_png(plots.plot_weight_histogram(decayed, excluded, tmp_path / "h.png"))


def test_weight_histogram_edge_cases(tmp_path):
    assert plots.plot_weight_histogram([], None, tmp_path / "none.png") is None
    assert_png(plots.plot_weight_histogram(np.zeros(5), [], tmp_path / "flat.png"))  # one value only
    assert not is_png(tmp_path / "missing.png")


def test_run_plots_name_the_setting_use_its_colour_and_whole_step_ticks(tmp_path, monkeypatch):
    """Titles carry scheme and strength, lines the setting's colour (the report's and the MLflow UI's),
    and a short run's step axis has no fractional ticks (2.5 steps)."""
    import matplotlib.colors as mcolors

    from lightning_wd.tracking.colours import setting_colour

    seen = {}
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda figure, path: seen.setdefault(path.name, figure) and save(figure, path))
    short = [{"step": s, "metrics": {"wd/nonzero_fraction": 1 - s / 10, "wd/weight_norm": 2.0 - s / 10,
                                     "wd/weight_norm/a.weight": 1.0, "wd/nonzero_fraction/a.weight": 0.9}}
             for s in range(4)]
    label = "l1 λ=1e-2 seed 0"
    plots.plot_history(short, tmp_path, label)
    plots.plot_weight_histogram(np.random.randn(100), np.ones(5), tmp_path / "weight_histogram.png", label=label)
    assert sorted(seen) == ["decay_overview.png", "layer_nonzero_fraction.png", "layer_weight_norms.png",
                            "nonzero_fraction.png", "weight_histogram.png"]
    for name, figure in seen.items():
        figure.canvas.draw()
        titles = [figure.get_suptitle(), *(ax.get_title() for ax in figure.axes)]
        assert any(t.endswith("· l1 λ=1e-2 seed 0") for t in titles), (name, titles)
        for ax in figure.axes:
            if ax.get_xlabel() == "step":
                ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
                assert ticks and all(float(t).is_integer() for t in ticks), (name, ticks)
    orange = setting_colour("l1")
    assert mcolors.to_hex(seen["nonzero_fraction.png"].axes[0].get_lines()[0].get_color()) == orange
    assert mcolors.to_hex(seen["decay_overview.png"].axes[0].get_lines()[0].get_color()) == orange
    decayed = seen["weight_histogram.png"].axes[0].patches[0]
    assert mcolors.to_hex(decayed.get_facecolor()) == orange
    assert plots.plot_nonzero_fraction(short, tmp_path / "plain.png") is not None  # no label: the old title
    assert seen["plain.png"].axes[0].get_title() == "Non-zero fraction of decayed weights"
