"""Run the benchmarks and write ``benchmarks/RESULTS.md``: ``python -m benchmarks.run [--only NAME ...]``.

Every figure is a ratio of timings taken in one process, the compared variants interleaved, medians of
several repetitions. Nothing here is a test: targets are printed next to the figures, not asserted.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SECTIONS = {
    "step_overhead": ("1. Callback vs native decay inside a Lightning training step (AdamW)",
                      "callback_ratio <= 1.01 (limit 1.00)"),
    "scheme_passes": ("2. Self-applied schemes: pass vs bare _foreach_mul_, whole step vs native AdamW step",
                      "pass_vs_bare <= 1.5, step_vs_native <= 1.05"),
    "stats_cost": ("3. Statistics: one pass vs bare count_nonzero, share of training time at the interval",
                   "share_at_interval <= 1 %"),
    "scaling": ("4. Scaling with parameters and tensors (callback's per-step work vs the bare optimizer step)",
                "overhead per tensor flat as tensors grow"),
    "tuning_efficiency": ("5. Tuning: TPE + median pruning vs a 16-point strength grid (MNIST-1D MLP)",
                          "<= 30 % of the grid's epochs"),
    "import_time": ("6. import time beyond `import lightning`", "<= 0.3 s"),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), default=None)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from the last results")
    args = parser.parse_args(argv)
    names = [] if args.render_only else args.only or list(SECTIONS)
    results_path = HERE / "out" / "results.json"
    results_path.parent.mkdir(exist_ok=True)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name in names:
        print(f"== {SECTIONS[name][0]}", flush=True)
        rows = importlib.import_module(f"benchmarks.{name}").run()
        results[name] = {"rows": rows, "date": datetime.date.today().isoformat(), "machine": _machine(),
                         "command": "python -m benchmarks.run " + " ".join(sys.argv[1:])}
        print(_table(rows), flush=True)
        results_path.write_text(json.dumps(results, indent=1))
    lines = ["# Benchmark results", "",
             "Produced by `make bench` (`python -m benchmarks.run`); each section records the machine, date and "
             "command of its last run. Ratios compare variants timed in one process, interleaved, medians of "
             "repetitions.", ""]
    for name, (title, target) in SECTIONS.items():
        if name not in results:
            continue
        r = results[name]
        lines += [f"## {title}", "", f"Target: {target}. Measured {r['date']} on {r['machine']}; "
                  f"command `{r['command'].strip()}`.", "", _table(r["rows"]), ""]
    notes = HERE / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text()]
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
