"""Example datamodules and models for the recipes: MNIST-1D and digits, MLP, CNN and a tiny Transformer.

Recipes refer to them by import path, e.g. ``class_path: lightning_wd.examples.MLP``.
"""

from lightning_wd.examples.data import (
    DigitsDataModule,
    MNIST1DDataModule,
    default_cache_dir,
    load_digits_split,
    load_mnist1d,
    quantize,
)
from lightning_wd.examples.models import CNN1D, MLP, ClassifierModule, TinyTransformer

__all__ = [
    "CNN1D",
    "MLP",
    "ClassifierModule",
    "DigitsDataModule",
    "MNIST1DDataModule",
    "TinyTransformer",
    "default_cache_dir",
    "load_digits_split",
    "load_mnist1d",
    "quantize",
]
