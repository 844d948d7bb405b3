"""Shared pytest set-up: server fixtures live in their own modules, loaded as plugins."""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
# The models under test are tiny: one intra-op thread avoids oversubscribing the 2-core machines.
torch.set_num_threads(1)

pytest_plugins = ["fixtures_mlflow", "fixtures_postgres"]


@pytest.fixture(autouse=True)
def _isolate_mlflow_tracking_uri():
    """Lightning's MLFlowLogger calls ``mlflow.set_tracking_uri``, which also sets ``MLFLOW_TRACKING_URI`` for
    the whole process: restore both after each test so one test's store never becomes the next one's default."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if utils is not None:
        utils._tracking_uri = None
