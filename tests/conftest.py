"""Shared pytest set-up: server fixtures live in their own modules, loaded as plugins."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["fixtures_mlflow", "fixtures_postgres"]
