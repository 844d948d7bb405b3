"""The built wheel: it carries the recipes, and ``lightning-wd`` installed from it runs in an empty folder.

The wheel is built from a copy of the sources (so no ``build/`` folder of an earlier build leaks stale
modules into it), installed with ``pip install --target``, and run from there with that folder first on
``PYTHONPATH``; each run prints ``lightning_wd.__file__`` so the test can tell the installed copy from the
editable checkout (whose import finder sits behind ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.name for p in (REPO / "lightning_wd" / "recipes").glob("*.yaml"))
# Runs the installed console script in-process after saying where the package and the report's recipe are.
DRIVER = r"""
import json, runpy, sys
import lightning_wd
from lightning_wd.apps.report import runs
print("WHERE " + json.dumps({"package": lightning_wd.__file__, "recipe": str(runs.RECIPE)}), flush=True)
script = sys.argv[1]
sys.argv = [script, *sys.argv[2:]]
runpy.run_path(script, run_name="__main__")
"""


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the folder it is installed in)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "lightning_wd", source / "lightning_wd",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(source), cwd=base)
    (wheel,) = (base / "dist").glob("lightning_wd-*.whl")
    target = base / "target"
    _pip("install", "--no-deps", "--target", str(target), str(wheel), cwd=base)
    return wheel, target


def _run(target: Path, cwd: Path, *args: str, timeout: int = 600) -> tuple[subprocess.CompletedProcess, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)
    done = subprocess.run([sys.executable, "-c", DRIVER, str(target / "bin" / "lightning-wd"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)
    where = next((json.loads(line[6:]) for line in done.stdout.splitlines() if line.startswith("WHERE ")), {})
    return done, where


def test_the_wheel_carries_the_recipes_and_the_command(installed):
    wheel, target = installed
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("lightning_wd/recipes/")) == SHIPPED
    assert "lightning-wd = lightning_wd.apps.cli:main" in entry_points
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "recipes/"))]
    assert (target / "bin" / "lightning-wd").is_file()
    assert sorted(p.name for p in (target / "lightning_wd" / "recipes").glob("*.yaml")) == SHIPPED


def test_installed_command_finds_its_recipes_in_an_empty_folder(installed, tmp_path):
    _, target = installed
    done, where = _run(target, tmp_path, "report", "--help")
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(where["package"]).is_relative_to(target), where  # the installed copy, not the checkout
    assert Path(where["recipe"]) == target / "lightning_wd" / "recipes" / "report_mnist1d_mlp.yaml"
    assert "--quick" in done.stdout
    done, where = _run(target, tmp_path, "fit", "--config", "report_mnist1d_mlp", "--print_config")
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(where["package"]).is_relative_to(target)
    assert "lightning_wd.examples.MNIST1DDataModule" in done.stdout
    assert list(tmp_path.iterdir()) == []  # nothing written by a --print_config


@pytest.mark.slow
def test_installed_report_runs_in_an_empty_folder(installed, tmp_path):
    _, target = installed
    done, where = _run(target, tmp_path, "report", "--seeds", "1", "--epochs", "4", "--out", "out")
    assert done.returncode == 0, done.stderr[-3000:]
    assert Path(where["package"]).is_relative_to(target)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Table 10" in report and (tmp_path / "out" / "strengths.png").is_file()
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
