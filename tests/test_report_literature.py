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


def test_equilibrium_section_runs_and_draws(tmp_path):
    from lightning_wd.apps.report.equilibrium import equilibrium_section

    torch.set_num_threads(1)
    section = equilibrium_section(tmp_path, seeds=1, strengths=(0.2,), steps=40)
    assert section.figure == "equilibrium.png" and (tmp_path / "equilibrium.png").stat().st_size > 5000
    assert section.verdict.startswith(("reproduced", "not reproduced")) and "seeds 0..0" in section.measured
    assert section.measured.count("| 0.2 |") == 2  # one row per scale-invariant tensor


def test_equilibrium_trace_is_the_callbacks_diagnostics_in_the_steady_state_formula():
    from lightning_wd.apps.report.equilibrium import INVARIANT, equilibrium_trace

    trace = equilibrium_trace(0.2, seed=0, steps=20, lr=0.1, every=10)
    assert trace["step"] == [10, 20]
    for name in INVARIANT:  # wd/equilibrium_ratio = (‖g‖/‖w‖) / sqrt(2 lambda / lr) under the lr coupling
        for ratio, eq in zip(trace[f"grad_weight_ratio/{name}"], trace[f"equilibrium_ratio/{name}"]):
            assert eq == pytest.approx(ratio / (2 * 0.2 / 0.1) ** 0.5, rel=1e-6)


def test_target_norm_section_k_zero_is_adamw_and_the_norm_follows_k(tmp_path):
    from lightning_wd.apps.report import targets

    torch.set_num_threads(1)
    section = targets.target_norm_section(tmp_path, seeds=1, scales=(0.0, 2.0), steps=30)
    assert section.figure == "target_norm.png" and (tmp_path / "target_norm.png").stat().st_size > 5000
    assert "| decoupled (AdamW, k = 0) | 0 |" in section.measured and "| target_norm | 2 |" in section.measured
    far, zero = targets.norm_trace(2.0, 1.0, seed=0, steps=30), targets.norm_trace(0.0, 1.0, seed=0, steps=30)
    assert all(f[-1] > z[-1] for f, z in zip(far.values(), zero.values()))


def test_spd_section_runs_and_draws(tmp_path, monkeypatch):
    from lightning_wd.apps.report import targets

    torch.set_num_threads(1)
    section = targets.spd_section(tmp_path, seeds=1, epochs=1)
    assert section.figure == "spd.png" and (tmp_path / "spd.png").stat().st_size > 5000
    assert section.verdict.startswith(("reproduced", "not reproduced")) and section.measured.count("\n| ") == 5


def test_timescale_transfer_rule_and_verdict(tmp_path):
    from lightning_wd.apps.report import timescale

    taus = (0.25, 1.0, 4.0, 16.0, 64.0)
    small = {0.25: [0.3, 0.3], 1.0: [0.4, 0.4], 4.0: [0.6, 0.6], 16.0: [0.5, 0.5], 64.0: [0.3, 0.3]}
    large = {0.25: [0.3, 0.3], 1.0: [0.5, 0.5], 4.0: [0.79, 0.81], 16.0: [0.80, 0.82], 64.0: [0.3, 0.3]}
    result = timescale.Transfer(taus, (0.25, 1.0), {0.25: 10, 1.0: 40}, 0.01, {0.25: small, 1.0: large})
    assert result.best(0.25) == 4.0 and result.best(1.0) == 16.0 and result.flat() == 2
    ok, verdict = result.verdict()  # 0.80 vs 0.81 ± 0.014: within one sd, 2 of 5 timescales there
    assert ok and verdict.startswith("reproduced: tau tuned on 25 % of the data (4 epochs) scores 80.0 ± 1.4 %")
    assert result.naive() == (1.0, (0.5, 0.0))  # lambda kept: tau 4 * 10 / 40 = 1
    assert result.rows()[0]["lambda_25%"] == pytest.approx(1 / (0.01 * 0.25 * 10))
    result.acc[1.0][4.0] = [0.70, 0.72]  # 11 points below the best: beyond one sd
    assert result.verdict()[1].startswith("not reproduced: ")
    result.acc[1.0] = {t: [0.8, 0.82] for t in taus}  # every timescale alike: nothing to transfer
    ok, verdict = result.verdict()
    assert not ok and verdict.startswith("inconclusive (5 of 5 timescales are within one seed sd")
    assert "a gap of 0.0 points, within one seed sd (1.4)" in verdict
    section = timescale.timescale_section(tmp_path, seeds=1, taus=(4.0, 16.0), epochs=1, num_train=400)
    assert section.figure == "timescale_transfer.png" and (tmp_path / "timescale_transfer.png").stat().st_size > 5000
    assert "| 16 |" in section.measured and "seeds 0..0" in section.measured
