"""The package's layering (``scripts/check_layers.py``): it passes on the repository, and it does fail on a
package with an import circle, an upward import, a core module importing MLflow or the facade."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_layers.py"


@pytest.fixture(scope="module")
def check_layers():
    spec = importlib.util.spec_from_file_location("check_layers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "lightning_wd" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


BROKEN = {
    "__init__.py": "",
    "core/__init__.py": "",
    "core/audit.py": "from lightning_wd.core.grouping import plan\n",
    "core/grouping.py": """
        from . import audit  # audit -> grouping -> audit: a circle


        def plan():
            from lightning_wd.tracking.record import log  # lazy, still an upward import
            import mlflow  # core must not import MLflow
            return log, mlflow
        """,
    "tracking/__init__.py": "",
    "tracking/record.py": "import lightning_wd\n\nlog = print\n",  # the facade, from inside the package
}


def test_the_repository_passes():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK, no upward import and no circle" in result.stdout


def test_a_clean_synthetic_package_passes(check_layers, tmp_path):
    root = _write(tmp_path, {"__init__.py": "from lightning_wd.apps import cli\n", "core/__init__.py": "",
                             "core/a.py": "import torch\n", "tracking/__init__.py": "",
                             "tracking/t.py": "import mlflow\nfrom lightning_wd.core import a\n",
                             "apps/__init__.py": "", "apps/cli.py": "from ..tracking import t\nimport optuna\n"})
    assert check_layers.check(root) == []


def test_circle_upward_import_forbidden_library_and_facade_fail(check_layers, tmp_path):
    root = _write(tmp_path, BROKEN)
    problems = check_layers.check(root)
    text = "\n".join(problems)
    assert "import circle: lightning_wd.core.audit -> lightning_wd.core.grouping -> lightning_wd.core.audit" in text
    assert ("upward import: core module lightning_wd.core.grouping imports tracking module "
            "lightning_wd.tracking.record") in text
    assert "core module lightning_wd.core.grouping imports mlflow" in text
    assert "lightning_wd.tracking.record imports the package root" in text
    assert len(problems) == 4, text


def test_the_script_exits_1_on_a_broken_package_and_2_without_one(tmp_path):
    root = _write(tmp_path / "broken", BROKEN)
    result = subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "4 problem(s)" in result.stdout and "import circle" in result.stdout
    missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "empty")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode == 2 and "no lightning_wd/ package" in missing.stderr
