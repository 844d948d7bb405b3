"""Shared pytest set-up: the tiny model, loader and quiet trainer; global state restored after every test;
the opt-in ``heavy`` marker. Server fixtures live in their own modules, loaded as plugins.

Fixtures (the code is in ``lit_net.py``):

- ``tiny_net``: a fresh ``lit_net.Net()`` (Linear -> LayerNorm -> Tanh -> Linear, SGD at lr 0.05);
- ``tiny_loader``: 48 samples in batches of 8, in the default dtype at the time it is requested;
- ``quiet_trainer``: ``lit_net.make_trainer``, called as ``quiet_trainer([callbacks], max_epochs=3, ...)``;
- ``float64``: the test runs with float64 as the default dtype (``pytestmark = usefixtures("float64")``).

Markers (registered in ``pyproject.toml``): ``slow``, ``server``, ``distributed``, ``bench`` run in
``make test`` and are deselected by ``make test-fast``; ``heavy`` tests are too slow for CI and skipped
unless ``--run-heavy`` is given (``scripts/test.sh --run-heavy -m heavy`` runs only them).
"""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
# The models under test are tiny: one intra-op thread avoids oversubscribing the 2-core machines.
torch.set_num_threads(1)

from lit_net import Net, float64, make_loader, make_trainer  # noqa: E402, F401  (float64: fixture)

pytest_plugins = ["fixtures_mlflow", "fixtures_postgres"]


def pytest_addoption(parser):
    parser.addoption("--run-heavy", action="store_true", default=False,
                     help="also run the tests marked heavy (minutes each; not run in CI)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-heavy"):
        return
    skip = pytest.mark.skip(reason="heavy: too slow for CI; --run-heavy runs it (scripts/test.sh --run-heavy -m heavy)")
    for item in items:
        if item.get_closest_marker("heavy"):
            item.add_marker(skip)


@pytest.fixture
def tiny_net() -> Net:
    return Net()


@pytest.fixture
def tiny_loader():
    return make_loader()


@pytest.fixture
def quiet_trainer():
    return make_trainer


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """Undo what a test or a Trainer changes process-wide: ``deterministic=True`` switches torch's
    deterministic algorithms on for good, some code sets the thread count or the default dtype."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@pytest.fixture(autouse=True)
def _fixed_statistics_interval(monkeypatch):
    """The default statistics interval grows with the measured cost of a statistics call (timing-dependent):
    tests see the Trainer's interval, unless they set ``STATS_BUDGET`` themselves."""
    from lightning_wd.core import callback

    monkeypatch.setattr(callback, "STATS_BUDGET", float("inf"))


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
