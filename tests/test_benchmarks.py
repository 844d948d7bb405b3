"""Every module ``make bench`` runs still runs: each at the tiny sizes of its ``QUICK``, so a broken benchmark
(a stand-in trainer missing an attribute the callback reads, a renamed import) fails the suite, not the
next 15-minute ``make bench``. The figures at these sizes mean nothing and are not checked."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HELPERS = {"__init__", "common", "run"}
MODULES = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem not in HELPERS)

pytestmark = [pytest.mark.bench, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _importable(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(tmp_path)  # whatever a benchmark writes by accident lands here


def test_every_module_is_a_section_of_make_bench():
    run = importlib.import_module("benchmarks.run")
    assert sorted(run.SECTIONS) == MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_runs_at_tiny_sizes(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert isinstance(module.QUICK, dict), f"benchmarks/{name}.py needs QUICK, the keyword arguments of a tiny run"
    rows = module.run(**module.QUICK)
    assert rows and all(isinstance(row, dict) and row for row in rows)


def _stamp(path: Path):
    return path.stat().st_mtime_ns if path.exists() else None


def test_quick_run_shows_progress_and_writes_nothing(capsys):
    run = importlib.import_module("benchmarks.run")
    written = [ROOT / "benchmarks" / "RESULTS.md", ROOT / "benchmarks" / "out" / "results.json"]
    before = [_stamp(path) for path in written]
    assert run.main(["--quick", "--only", "stats_cost", "scheme_passes"]) == 0
    out = capsys.readouterr().out
    assert "benchmarks: 2 section(s) at tiny sizes (--quick), writing nothing" in out
    assert "== [1/2] stats_cost: 3. Statistics" in out and "== [2/2] scheme_passes done in" in out
    assert "| tensors | scheme | pass_us |" in out
    assert [_stamp(path) for path in written] == before


def test_full_run_states_its_expected_duration_and_keeps_other_sections(monkeypatch, capsys, tmp_path):
    run = importlib.import_module("benchmarks.run")
    monkeypatch.setattr(run, "HERE", tmp_path)  # results.json (none yet: a fresh clone) and NOTES.md
    stats_cost = importlib.import_module("benchmarks.stats_cost")
    monkeypatch.setattr(stats_cost, "run", lambda: [{"shape": "tiny", "share_at_interval": 0.001}])
    scaling = run.SECTIONS["scaling"][0]
    out_file = tmp_path / "RESULTS.md"
    out_file.write_text(f"# Benchmark results\n\n## {scaling}\n\nTarget: measured before.\n\n| a |\n|---|\n| 1 |\n")
    assert run.main(["--only", "stats_cost", "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "benchmarks: 1 section(s), expected about 25 s" in out
    assert "== [1/1] stats_cost: 3. Statistics" in out and ", expected 25 s" in out
    text = out_file.read_text()
    assert "| tiny | 0.001 |" in text
    assert f"## {scaling}\n\nTarget: measured before.\n\n| a |\n|---|\n| 1 |\n" in text  # not dropped
    assert text.index("## 3. Statistics") < text.index(f"## {scaling}")  # in section order
    assert run.expected_seconds("stats_cost", {"stats_cost": {"seconds": 75.0}}) == 75.0  # measured wins
    assert run._duration(75.0) == "1 min 15 s"


def test_gpu_script_imports_and_skips_cleanly_without_cuda(monkeypatch):
    """benchmarks/gpu_fused.py runs where a GPU is lent; elsewhere it imports, measures nothing and says so."""
    gpu = importlib.import_module("benchmarks.gpu_fused")
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    rows = gpu.run()
    assert rows == [{"status": "skipped: no CUDA device here, GPU figures not measured", "device": "-"}]


def test_render_keeps_sections_written_by_hand(tmp_path):
    from benchmarks import run

    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmark results\n\n## Multi-process: written by hand\n\n| a |\n|---|\n| 1 |\n")
    run._render({}, out)
    text = out.read_text()
    assert "## Multi-process: written by hand\n\n| a |" in text
    run._render({}, out)  # rendering again keeps it once
    assert out.read_text().count("## Multi-process: written by hand") == 1


def test_tuning_landscape_flags_flat_and_edge_peaks_and_counts_epochs_to_target():
    """The tuning benchmark's verdicts can fail: a flat grid, or a best at an edge, is not called peaked; the
    epochs to the target stop at the first complete trial that reaches it, pruned trials counted whole."""
    from types import SimpleNamespace

    tuning = importlib.import_module("benchmarks.tuning_efficiency")
    peaked = tuning.landscape({1e-4: [0.83, 0.84], 1e-2: [0.86, 0.87], 1e-1: [0.82, 0.83]})
    assert peaked["interior"] and peaked["best_at"] == 1e-2
    assert peaked["spread_sd"] == pytest.approx((0.865 - 0.825) / (0.5 ** 0.5 * 0.01))
    assert peaked["spread_sd"] >= 5
    edge = tuning.landscape({1e-4: [0.90, 0.91], 1e-2: [0.86, 0.87], 1e-1: [0.82, 0.83]})
    assert not edge["interior"]
    flat = tuning.landscape({1e-4: [0.30, 0.31], 1e-2: [0.31, 0.30], 1e-1: [0.30, 0.32]})
    assert flat["spread_sd"] < 5

    def trial(number, state, value, rounds):
        return SimpleNamespace(number=number, state=SimpleNamespace(name=state), value=value,
                               intermediate_values=dict.fromkeys(range(rounds), 0.0))

    study = SimpleNamespace(trials=[trial(2, "COMPLETE", 0.9, 40), trial(0, "COMPLETE", 0.8, 40),
                                    trial(1, "PRUNED", None, 11), trial(3, "FAIL", None, 3)])
    assert tuning.spent_to(study, 0.85) == 91
    assert tuning.spent_to(study, 0.95) is None
