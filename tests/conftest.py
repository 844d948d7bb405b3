"""Shared pytest set-up: server fixtures live in their own modules, loaded as plugins."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
# The models under test are tiny: one intra-op thread avoids oversubscribing the 2-core machines.
torch.set_num_threads(1)

pytest_plugins = ["fixtures_mlflow", "fixtures_postgres"]
