"""Issue 16, item 5: the literature sections of the report (small sizes: the code path, the figure, the table)."""

from __future__ import annotations

import pytest
import torch

from lightning_wd.apps.report import literature


def test_rise_is_end_mean_over_middle_mean():
    trace = [1.0] * 40 + [2.0] * 20 + [1.0] * 30 + [3.0] * 10  # middle (40-60 %) = 2, last 10 % = 3
    assert literature._rise(trace) == pytest.approx(1.5)


def test_sections_run_and_draw(tmp_path):
    torch.set_num_threads(1)
    adamc = literature.adamc_section(tmp_path, seeds=1, steps=40)
    low = literature.low_rank_section(tmp_path, seeds=1, strengths=(0.0, 0.1), steps=50)
    for section, figure in ((adamc, "adamc_grad_norm.png"), (low, "low_rank.png")):
        assert section.figure == figure and (tmp_path / figure).stat().st_size > 5000
        assert section.verdict.startswith(("reproduced", "not reproduced"))
        assert "seeds 0..0" in section.measured
    assert adamc.measured.count("\n| ") == 4  # header + three couplings
    assert "| 0.1 |" in low.measured


def test_stable_rank_of_the_product_is_the_closed_form_at_zero_steps():
    value = literature.product_stable_rank(0.0, seed=0, steps=0, dim=6, rank=2)
    torch.manual_seed(0)
    a, b = torch.nn.Linear(6, 6, bias=False), torch.nn.Linear(6, 6, bias=False)
    s = torch.linalg.svdvals((b.weight @ a.weight).detach().double())
    assert value == pytest.approx(float(s.square().sum() / s[0] ** 2), rel=1e-4)
