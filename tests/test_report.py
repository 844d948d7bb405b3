"""The article report: the pure-decay sequence, verdict logic, argument errors, and one real recorded fit."""

from __future__ import annotations

import pytest

from lightning_wd.apps.report import geometric_sequence, main, where_it_acts
from lightning_wd.apps.report import tables as t
from lightning_wd.apps.report.runs import Run, Setting, mean_sd, run_setting


def _runs(key: str, finals: list[tuple[float, float]], seconds: float = 1.0) -> list[Run]:
    return [Run(Setting(key, key), seed, [{"epoch": 1, "train/acc": tr, "val/acc": va, "nonzero": 1.0}], seconds)
            for seed, (tr, va) in enumerate(finals)]


def test_pure_decay_is_the_articles_table_4():
    values = geometric_sequence()
    assert values == pytest.approx([0.7, 0.56, 0.448, 0.3584], rel=1e-12)
    assert "confirmed" in t.table4(values, 0.2, 0.875).verdict


def test_table1_verdict_follows_the_measurement():
    none = _runs("none", [(0.99, 0.80), (0.98, 0.81), (0.99, 0.80)])
    better = {"none": none, "decoupled": _runs("decoupled", [(0.95, 0.86), (0.95, 0.87), (0.96, 0.86)])}
    same = {"none": none, "decoupled": _runs("decoupled", [(0.99, 0.80), (0.98, 0.81), (0.99, 0.81)])}
    assert t.table1(better, "decoupled", 3).verdict.startswith("confirmed")
    assert t.table1(same, "decoupled", 3).verdict.startswith("not confirmed")
    assert "one seed" in t.table1({k: v[:1] for k, v in better.items()}, "decoupled", 1).verdict


def test_table2_never_calls_equal_times_faster():
    runs = {"none": _runs("none", [(1, 1)] * 3, seconds=10.0), "decoupled": _runs("d", [(1, 1)] * 3, seconds=10.2)}
    assert t.table2(runs, "decoupled", 3).verdict.startswith("not confirmed")


def test_mean_sd_ignores_nan():
    assert mean_sd([1.0, float("nan"), 3.0]) == (2.0, pytest.approx(2 ** 0.5))


def test_where_it_acts_names_every_step():
    rows = where_it_acts()
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert "l1" in rows[4][2] and "l2" in rows[3][2]


@pytest.mark.parametrize("argv, fragment", [(["--seeds", "0"], "--seeds"), (["--epochs", "2"], "--epochs"),
                                            (["--bogus"], "unrecognized")])
def test_bad_arguments_exit_2_with_one_line(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


@pytest.mark.slow
def test_one_setting_is_a_recorded_fit_logged_to_mlflow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = run_setting(Setting("l1", "L1", "l1", 1e-2), 0, 2, experiment="report_test", tracking_uri=uri)
    assert [e["epoch"] for e in run.epochs] == [1, 2]
    for key in ("train/loss", "train/acc", "val/acc", "val/loss", "nonzero"):
        assert all(0 <= e[key] < 10 for e in run.epochs), key
    assert run.final("nonzero") <= 1.0 and run.fit_seconds > 0
    from mlflow.tracking import MlflowClient

    recorded = MlflowClient(uri).get_run(run.run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.params["wd.scheme"] == "l1"
    assert "val/acc" in recorded.data.metrics


def test_figures_one_colour_per_setting_and_bars_from_zero(tmp_path, monkeypatch):
    import matplotlib.colors as mcolors

    from lightning_wd.apps.report import figures

    seen = {}

    def keep(plt, fig, path):
        seen[path.name] = fig
        return path

    monkeypatch.setattr(figures, "_save", keep)

    class Fake:  # a Run's series and final value
        def __init__(self, acc):
            self.epochs = [0, 1, 2]
            self.acc = acc

        def series(self, metric):
            return [self.acc - 0.1, self.acc - 0.05, self.acc]

        def final(self, metric):
            return self.acc

    groups = {"no decay": [Fake(0.6), Fake(0.62)], "L1 (proximal)": [Fake(0.7), Fake(0.71)]}
    figures.curves(tmp_path / "c.png", groups, [("val/acc", "validation accuracy")], "t")
    figures.bars(tmp_path / "b.png", {"none": [Fake(0.6)], "L1": [Fake(0.7)]}, "val/acc", "accuracy")
    lines = {line.get_label(): line.get_color() for line in seen["c.png"].axes[0].get_lines()}
    bars = seen["b.png"].axes[0].patches

    assert mcolors.to_hex(lines["no decay"]) == mcolors.to_hex(bars[0].get_facecolor())  # none = no decay
    assert mcolors.to_hex(lines["L1 (proximal)"]) == mcolors.to_hex(bars[1].get_facecolor())
    assert seen["b.png"].axes[0].get_ylim()[0] == 0.0
    ticks = seen["c.png"].axes[0].xaxis.get_major_locator().tick_values(1, 3)
    assert all(float(t).is_integer() for t in ticks)


def test_report_progress_one_line_per_fit_and_a_bar_with_time_left(monkeypatch, capfd):
    """Issue 15 item 1: report shows k of n fits, the elapsed time and the time left; one line per fit."""
    import re
    from types import SimpleNamespace

    import lightning_wd.apps.report.runs as runs_module
    from lightning_wd.apps.report import run_all

    def fake_run(setting, seed, epochs, **kwargs):
        return SimpleNamespace(final=lambda metric: 0.5, fit_seconds=1.25)

    monkeypatch.setattr(runs_module, "run_setting", fake_run)
    settings = [Setting("none", "no decay", "none", 0.0), Setting("l1", "L1", "l1", 1e-2)]
    runs = run_all(settings, 2, 1, experiment="x", tracking_uri=None)
    assert [len(v) for v in runs.values()] == [2, 2]
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert len(lines) == 4
    assert lines[0] == "report: no decay               seed 0: val acc 50.0 %, train acc 50.0 %, 1.2 s"
    assert re.search(r"report: 100%.*\| 4/4 \[\d\d:\d\d<\d\d:\d\d", err), err  # done/total [elapsed<left]
