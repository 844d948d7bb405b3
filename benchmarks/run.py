"""Run the benchmarks and write ``benchmarks/RESULTS.md``: ``python -m benchmarks.run [--only NAME ...] [--quick]``.

Every figure is a ratio of timings taken in one process, the compared variants interleaved, medians of
several repetitions. Nothing here is a test: targets are printed next to the figures, not asserted.
Each section prints ``[k/n]`` and its expected duration (the last measured one, else an estimate for a
2-core CPU) before it starts, and its time when done. ``--quick`` runs every module at the tiny sizes of
its ``QUICK`` (what ``tests/test_benchmarks.py`` checks) and writes nothing: such figures are no results.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
# name: (title, target, seconds of a full run on 2 CPU cores, used until a run records its own; measured
# 2026-12-03 on a busy machine, tuning_efficiency estimated): about 30 min in all
SECTIONS = {
    "step_overhead": ("1. Callback vs native decay inside a Lightning training step (AdamW)",
                      "callback_ratio <= 1.01 (limit 1.00)", 300),
    "scheme_passes": ("2. Self-applied schemes: pass vs bare _foreach_mul_, whole step vs fused native AdamW step",
                      "pass_vs_bare <= 1.5, step_vs_native <= 1.10 (limit 1.00)", 300),
    "stats_cost": ("3. Statistics: one pass vs bare count_nonzero, share of training time at the interval",
                   "stats_vs_count_nonzero <= 3, share_at_interval <= 1 %", 25),
    "scaling": ("4. Scaling with parameters and tensors (callback's per-step work vs the bare optimizer step)",
                "overhead per tensor flat as tensors grow", 60),
    "tuning_efficiency": ("5. Tuning on a peaked landscape: TPE + median pruning vs a strength grid (digits MLP, "
                          "Adam + coupled L2, 89 training examples)",
                          "within one seed sd of the grid's best in <= 30 % of the grid's epochs on every study "
                          "seed", 1500),
    "import_time": ("6. import time beyond `import lightning`", "<= 0.3 s", 60),
    "drop_in": ("7. Drop-in: one AdamW step, callback's default path (groups kept) and opt-in split vs hand-built "
                "groups", "no target stated; README quotes these ratios", 30),
    "logging_cost": ("8. The evidence end to end: wd/* statistics computed and logged through the real logger, per "
                     "recipe (no logger, MLflow SQLite, MLflow server on loopback)",
                     "share <= 1 % at the default interval; points_logged == points_computed", 600),
    "gpu_fused": ("9. GPU (CUDA, fused AdamW, float32 and bfloat16): self-applied schemes vs fused native decay",
                  "step_vs_native <= 1.10; not measured where no GPU is lent (the row says so)", 5),
    "diagnostics_cost": ("10. Equilibrium diagnostics (ratios, angle, equilibrium, stable rank): share of training "
                         "time at the default interval", "share_at_interval <= 1 %", 40),
    "timescale_transfer": ("11. Timescale transfer: tau (epochs) tuned on 25 % of MNIST-1D's training data, trained "
                           "on 100 %, vs the best tau there (Wang & Aitchison 2025)",
                           "within one seed sd of the 100 % grid's best (>= 3 seeds)", 420),
}


def _table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _machine() -> str:
    return (f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)")


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``."""
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def expected_seconds(name: str, results: dict) -> float:
    """The section's last measured full-run time, else its estimate."""
    return results.get(name, {}).get("seconds") or SECTIONS[name][2]


def _recorded_sections(path: Path) -> dict[str, str]:
    """The ``## title`` sections of an existing RESULTS.md, kept for the sections no run recorded here
    (``benchmarks/out/`` is not committed: on a fresh clone ``--only`` must not drop the other sections)."""
    if not path.exists():
        return {}
    parts = re.split(r"^## ", path.read_text(), flags=re.MULTILINE)[1:]
    return {part.splitlines()[0]: "## " + part.rstrip("\n") + "\n" for part in parts}


def _render(results: dict, out: Path) -> None:
    old = _recorded_sections(out)
    lines = ["# Benchmark results", "",
             "Produced by `make bench` (`python -m benchmarks.run`); each section records the machine, date and "
             "command of its last run. Ratios compare variants timed in one process, interleaved, medians of "
             "repetitions.", ""]
    for name, (title, target, _) in SECTIONS.items():
        if name in results:
            r = results[name]
            lines += [f"## {title}", "", f"Target: {target}. Measured {r['date']} on {r['machine']}; "
                      f"command `{r['command'].strip()}`.", "", _table(r["rows"]), ""]
        elif title in old:
            lines += [old[title]]
    notes = HERE / "NOTES.md"
    note_text = notes.read_text() if notes.exists() else ""
    titles = {title for title, _, _ in SECTIONS.values()}
    noted = {line[3:] for line in note_text.splitlines() if line.startswith("## ")}
    # Sections written by hand (not a benchmark's, not from NOTES.md) stay as they are.
    lines += [text for title, text in old.items() if title not in titles and title not in noted]
    if note_text:
        lines += [note_text]
    out.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), default=None)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from the last results")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check that every module runs; "
                        "writes nothing")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    names = [] if args.render_only else args.only or list(SECTIONS)
    results_path = HERE / "out" / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if names:
        if args.quick:
            print(f"benchmarks: {len(names)} section(s) at tiny sizes (--quick), writing nothing", flush=True)
        else:
            total = _duration(sum(expected_seconds(n, results) for n in names))
            print(f"benchmarks: {len(names)} section(s), expected about {total} (each section's expected time: its "
                  "last full run, else an estimate for 2 CPU cores)", flush=True)
    for k, name in enumerate(names, 1):
        module = importlib.import_module(f"benchmarks.{name}")
        expected = "" if args.quick else f", expected {_duration(expected_seconds(name, results))}"
        print(f"== [{k}/{len(names)}] {name}: {SECTIONS[name][0]}{expected}", flush=True)
        start = time.perf_counter()
        rows = module.run(**module.QUICK) if args.quick else module.run()
        seconds = time.perf_counter() - start
        print(_table(rows), flush=True)
        print(f"== [{k}/{len(names)}] {name} done in {_duration(seconds)}", flush=True)
        if args.quick:
            continue
        results[name] = {"rows": rows, "date": datetime.date.today().isoformat(), "machine": _machine(),
                         "command": "python -m benchmarks.run " + " ".join(argv), "seconds": seconds}
        results_path.parent.mkdir(exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1))
    if not args.quick:
        _render(results, Path(args.out))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
