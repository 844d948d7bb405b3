"""Small offline datasets for the examples: MNIST-1D (generated) and scikit-learn's digits.

Both datamodules need no network. MNIST-1D is generated with the ``mnist1d`` package, deterministically
in the seed; the arrays are cached in memory for the process and, by default, on disk (``.npz``) under
:func:`default_cache_dir`, so that only the first run pays the few seconds that generation takes.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "DigitsDataModule",
    "MNIST1DDataModule",
    "default_cache_dir",
    "load_digits_split",
    "load_mnist1d",
    "quantize",
]

MNIST1D_LENGTH = 40
NUM_CLASSES = 10

_MEMORY: dict[tuple, dict[str, np.ndarray]] = {}
_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """Where generated datasets are cached: ``$LIGHTNING_WD_CACHE``, else ``$XDG_CACHE_HOME/lightning_wd``.

    Falls back to ``~/.cache/lightning_wd``.

    Example:
        >>> isinstance(default_cache_dir(), Path)
        True
    """
    explicit = os.environ.get("LIGHTNING_WD_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lightning_wd"


def _generate_mnist1d(num_train: int, num_test: int, seed: int) -> dict[str, np.ndarray]:
    """Run the ``mnist1d`` generator without disturbing the global ``random``/``numpy`` state."""
    from mnist1d.data import get_dataset_args, make_dataset  # imports matplotlib: only on a cache miss

    args = get_dataset_args()
    args.num_samples = num_train + num_test
    args.train_split = num_train / (num_train + num_test)
    args.seed = seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": np.ascontiguousarray(raw["x"], dtype=np.float32),
        "y": np.ascontiguousarray(raw["y"], dtype=np.int64),
        "x_test": np.ascontiguousarray(raw["x_test"], dtype=np.float32),
        "y_test": np.ascontiguousarray(raw["y_test"], dtype=np.int64),
    }


def load_mnist1d(
    num_train: int = 4000, num_test: int = 1000, seed: int = 0, cache_dir: str | Path | None = None,
    disk_cache: bool = True,
) -> dict[str, np.ndarray]:
    """The MNIST-1D arrays ``x`` (N, 40) float32, ``y`` (N,) int64, ``x_test`` and ``y_test``.

    Generated offline and deterministically from ``seed``; cached in memory and (``disk_cache=True``)
    as an ``.npz`` file under ``cache_dir`` (default :func:`default_cache_dir`).

    Args:
        num_train: training samples; ``num_train + num_test`` must be a multiple of 10 (one tenth per class).
        num_test: held-out samples (the data modules split them into validation and test).
        seed: generator seed; the same seed gives the same arrays.
        cache_dir: folder of the on-disk cache.
        disk_cache: read and write the on-disk cache.

    Raises:
        ValueError: a size is not positive or the total is not a multiple of 10.

    Example:
        >>> data = load_mnist1d(num_train=90, num_test=10, disk_cache=False)
        >>> data["x"].shape, data["x_test"].shape, int(data["y"].max()) < 10
        ((90, 40), (10, 40), True)
    """
    if num_train <= 0 or num_test <= 0:
        raise ValueError(f"`num_train` and `num_test` must be positive, got {num_train} and {num_test}")
    if (num_train + num_test) % NUM_CLASSES:
        raise ValueError(f"`num_train + num_test` must be a multiple of {NUM_CLASSES}, got {num_train + num_test}")
    key = (num_train, num_test, seed)
    with _LOCK:
        if key in _MEMORY:
            return _MEMORY[key]
        path = None
        if disk_cache:
            digest = hashlib.sha1(repr(("mnist1d-v1", *key)).encode()).hexdigest()[:12]
            path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            path = path / f"mnist1d_{num_train}_{num_test}_{seed}_{digest}.npz"
        data = None
        if path is not None and path.is_file():
            try:
                with np.load(path) as archive:
                    data = {k: archive[k] for k in ("x", "y", "x_test", "y_test")}
            except (OSError, KeyError, ValueError):
                data = None  # a corrupt cache file: regenerate
        if data is None:
            data = _generate_mnist1d(num_train, num_test, seed)
            if path is not None:
                _save_atomically(path, data)
        _MEMORY[key] = data
        return data


def _save_atomically(path: Path, data: dict[str, np.ndarray]) -> None:
    """Write ``data`` to ``path`` through a temporary file, ignoring a read-only cache folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **data)
        os.replace(tmp, path)
    except OSError:
        pass


def quantize(x: np.ndarray, reference: np.ndarray, vocab_size: int) -> np.ndarray:
    """Map real values to ``vocab_size`` tokens by equal-frequency bins of ``reference``.

    Args:
        x: values to quantize, any shape.
        reference: values whose quantiles define the bin edges (the training set).
        vocab_size: number of tokens (at least 2).

    Example:
        >>> quantize(np.array([-5.0, 0.1, 5.0]), np.linspace(-1, 1, 101), 4).tolist()
        [0, 2, 3]
    """
    if vocab_size < 2:
        raise ValueError(f"`vocab_size` must be at least 2, got {vocab_size}")
    edges = np.quantile(reference.reshape(-1), np.linspace(0.0, 1.0, vocab_size + 1)[1:-1])
    return np.searchsorted(edges, x, side="right").astype(np.int64)


class _ArrayDataModule(LightningDataModule):
    """Shared loaders over in-memory tensors: train, validation and test splits that share no sample.

    The held-out samples are split by a seeded permutation: ``val_fraction`` of them validate (what
    ``val/acc`` and so tuning select on), the rest test (what ``lightning-wd test`` measures).
    """

    num_features: int
    num_classes: int = NUM_CLASSES

    def __init__(self, batch_size: int, num_workers: int, val_fraction: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"`batch_size` must be positive, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"`num_workers` must be non-negative, got {num_workers}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in (0, 1) (the rest of the held-out samples is the test "
                             f"split), got {val_fraction}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.seed = seed
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Build the train, validation and test tensor datasets (idempotent)."""
        if self.train_set is not None:
            return
        x, y, x_held, y_held = self._arrays()
        order = np.random.default_rng(self.seed).permutation(len(y_held))
        cut = min(max(1, round(self.val_fraction * len(order))), len(order) - 1)
        val, test = np.sort(order[:cut]), np.sort(order[cut:])
        self.train_set = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
        self.val_set = TensorDataset(torch.from_numpy(x_held[val]), torch.from_numpy(y_held[val]))
        self.test_set = TensorDataset(torch.from_numpy(x_held[test]), torch.from_numpy(y_held[test]))

    def _loader(self, split: str) -> DataLoader:
        self.setup()
        dataset = {"train": self.train_set, "val": self.val_set, "test": self.test_set}[split]
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=split == "train",
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches ``(x, y)``."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches (``val_fraction`` of the held-out samples), in a fixed order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches (the other held-out samples, never validated on), in a fixed order."""
        return self._loader("test")


class MNIST1DDataModule(_ArrayDataModule):
    """MNIST-1D (Greydanus, 2020): 40-sample 1-D signals of ten digit templates, generated offline.

    With ``as_sequence=True`` each of the 40 values becomes a token in ``range(vocab_size)`` (equal-frequency
    bins over the training values), a sequence task for :class:`~lightning_wd.examples.TinyTransformer`.

    Args:
        batch_size: samples per batch.
        num_train: training samples.
        num_test: held-out samples, split into validation and test.
        val_fraction: share of the held-out samples that validate; the rest is the test split.
        seed: generator seed (the data and the validation/test split, not the training run).
        as_sequence: yield int64 tokens of shape (N, 40) instead of float32 values.
        vocab_size: number of tokens when ``as_sequence`` is set.
        num_workers: DataLoader workers.
        cache_dir: folder of the on-disk cache of generated arrays (default :func:`default_cache_dir`).
        disk_cache: keep generated arrays on disk between runs.

    Example:
        >>> dm = MNIST1DDataModule(batch_size=10, num_train=90, num_test=10, disk_cache=False)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape), x.dtype, tuple(y.shape)
        ((10, 40), torch.float32, (10,))
    """

    num_features = MNIST1D_LENGTH

    def __init__(
        self,
        batch_size: int = 100,
        num_train: int = 4000,
        num_test: int = 1000,
        val_fraction: float = 0.5,
        seed: int = 0,
        as_sequence: bool = False,
        vocab_size: int = 32,
        num_workers: int = 0,
        cache_dir: str | None = None,
        disk_cache: bool = True,
    ) -> None:
        super().__init__(batch_size, num_workers, val_fraction, seed)
        if num_train <= 0 or num_test <= 0 or (num_train + num_test) % NUM_CLASSES:
            raise ValueError(
                f"`num_train` and `num_test` must be positive with a sum that is a multiple of {NUM_CLASSES}, "
                f"got {num_train} and {num_test}"
            )
        if vocab_size < 2:
            raise ValueError(f"`vocab_size` must be at least 2, got {vocab_size}")
        self.num_train = num_train
        self.num_test = num_test
        self.as_sequence = as_sequence
        self.vocab_size = vocab_size
        self.cache_dir = cache_dir
        self.disk_cache = disk_cache

    def prepare_data(self) -> None:
        """Generate (or find in the cache) the arrays once."""
        self._load()

    def _load(self) -> dict[str, np.ndarray]:
        return load_mnist1d(self.num_train, self.num_test, self.seed, self.cache_dir, self.disk_cache)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        data = self._load()
        x, x_test = data["x"], data["x_test"]
        if self.as_sequence:
            x, x_test = quantize(x, data["x"], self.vocab_size), quantize(x_test, data["x"], self.vocab_size)
        return x, data["y"], x_test, data["y_test"]


def load_digits_split(test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, ...]:
    """scikit-learn's 8x8 digits, split stratified and standardized on the training statistics.

    Args:
        test_fraction: share of the 1797 samples held out.
        seed: seed of the split.

    Returns:
        ``x, y, x_test, y_test``: float32 (N, 64) inputs and int64 labels.

    Example:
        >>> x, y, x_test, y_test = load_digits_split()
        >>> x.shape, x_test.shape
        ((1437, 64), (360, 64))
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x, x_test, y, y_test = train_test_split(
        data.data, data.target, test_size=test_fraction, random_state=seed, stratify=data.target
    )
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0  # constant border pixels
    x, x_test = (x - mean) / std, (x_test - mean) / std
    return (x.astype(np.float32), y.astype(np.int64), x_test.astype(np.float32), y_test.astype(np.int64))


class DigitsDataModule(_ArrayDataModule):
    """scikit-learn's 8x8 handwritten digits (1797 samples, 64 inputs, 10 classes), standardized.

    The split is stratified and fixed by ``seed``; the held-out part is split into validation and test.

    Args:
        batch_size: samples per batch.
        test_fraction: share of samples held out.
        seed: seed of the splits.
        num_workers: DataLoader workers.
        val_fraction: share of the held-out samples that validate; the rest is the test split.

    Example:
        >>> dm = DigitsDataModule(batch_size=32)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.val_dataloader()))
        >>> tuple(x.shape), tuple(y.shape)
        ((32, 64), (32,))
    """

    num_features = 64

    def __init__(self, batch_size: int = 64, test_fraction: float = 0.2, seed: int = 0,
                 num_workers: int = 0, val_fraction: float = 0.5) -> None:
        super().__init__(batch_size, num_workers, val_fraction, seed)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}")
        self.test_fraction = test_fraction

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return load_digits_split(self.test_fraction, self.seed)
