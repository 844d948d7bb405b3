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
