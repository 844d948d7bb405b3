"""The recipes that ship inside the package, found by name or by path.

The YAML files live in ``lightning_wd/recipes/`` (the repository's top-level ``recipes/`` points there,
so an editable checkout and an installed wheel read the same files). Every command that takes
``--config`` accepts a path or the name of a shipped recipe (``mnist1d_mlp`` or ``mnist1d_mlp.yaml``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["recipe_names", "resolve_recipe", "shipped_recipe"]


def _folder() -> Path:
    return Path(str(resources.files("lightning_wd") / "recipes"))


def recipe_names() -> list[str]:
    """The names of the shipped recipes.

    Example:
        >>> "mnist1d_mlp" in recipe_names()
        True
    """
    return sorted(p.stem for p in _folder().glob("*.yaml"))


def shipped_recipe(name: str) -> Path:
    """The file of the shipped recipe ``name`` (with or without ``.yaml``).

    Raises:
        FileNotFoundError: no shipped recipe has that name (the message lists them).

    Example:
        >>> shipped_recipe("mnist1d_mlp").name
        'mnist1d_mlp.yaml'
    """
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    path = _folder() / f"{stem}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no recipe {name!r}: give a file path or one of {', '.join(recipe_names())}")
    return path


def resolve_recipe(value: str | os.PathLike) -> Path:
    """``value`` as a path when such a file exists, else the shipped recipe of that name.

    Raises:
        FileNotFoundError: neither a file nor a shipped recipe.

    Example:
        >>> resolve_recipe("tune_mnist1d_mlp").name
        'tune_mnist1d_mlp.yaml'
    """
    path = Path(value)
    if path.is_file():
        return path
    if path.parent == Path(".") or str(path.parent) in ("recipes", os.path.join(".", "recipes")):
        try:
            return shipped_recipe(path.name)
        except FileNotFoundError:
            pass
    raise FileNotFoundError(f"config file not found: {os.fspath(value)} (shipped recipes: {', '.join(recipe_names())})")
