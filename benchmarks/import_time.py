"""6. ``import lightning_wd`` time beyond ``import lightning`` (separate interpreters, medians)."""

from __future__ import annotations

import statistics
import subprocess
import sys

_CODE = "import time; import lightning; t = time.perf_counter(); {stmt}; print(time.perf_counter() - t)"


def _time(stmt: str) -> float:
    out = subprocess.run([sys.executable, "-c", _CODE.format(stmt=stmt)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


QUICK = {"repeats": 1}  # the smoke test's sizes (tests/test_benchmarks.py, --quick)


def run(repeats: int = 5) -> list[dict]:
    rows = []
    leaked = subprocess.run([sys.executable, "-c", "import sys, lightning_wd; "
                             "print(sorted(m for m in ('mlflow', 'optuna') if m in sys.modules))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    for label, stmt in (("import lightning_wd", "import lightning_wd"),
                        ("import lightning_wd + WeightDecay", "import lightning_wd; lightning_wd.WeightDecay")):
        values = [_time(stmt) for _ in range(repeats)]
        rows.append({"what": label, "seconds_after_lightning": statistics.median(values), "heavy_imports": leaked})
    return rows
