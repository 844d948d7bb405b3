"""The WeightDecay entry of a recipe, and the schemes it names, read from their own declarations.

A recipe is a LightningCLI config (a dict loaded from YAML) whose ``trainer.callbacks`` holds one
:class:`~lightning_wd.WeightDecay` entry. Its ``scheme`` is a built-in name (``l1``) or a
:class:`~lightning_wd.core.schemes.Scheme` subclass of the user's own, by class path (``mypkg.MyScheme``
or ``{class_path: mypkg.MyScheme}``); what tuning needs of a scheme (its default ``search_range``, whether
WeightDecay's ``l1_ratio`` applies) it reads off the scheme class; the only scheme named here is WeightDecay's
default, for a recipe that names none.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from lightning_wd.apps.errors import TuneError

__all__ = ["DEFAULT_SCHEME", "l1_ratio_schemes", "scheme_class", "scheme_label", "trial_recipe", "wd_init_args",
           "wd_scheme_value"]

_WD_NAME = "WeightDecay"
_WD_CLASS_PATH = "lightning_wd.core.callback.WeightDecay"
DEFAULT_SCHEME = "decoupled"  # WeightDecay's scheme when it names none and has a strength


def scheme_class(spec: Any) -> type:
    """The :class:`~lightning_wd.core.schemes.Scheme` class of a scheme as a recipe gives it.

    Args:
        spec: a built-in name (``l1``), a class path (``mypkg.MyScheme``), a mapping with ``class_path``
            (and ``init_args``), or a ``Scheme`` subclass or instance.

    Raises:
        TuneError: an unknown name, a class path that does not import, or a class that is not a Scheme.

    Example:
        >>> scheme_class("l2").search_range, scheme_class({"class_path": "lightning_wd.core.schemes.L1"}).name
        ((1e-06, 0.01), 'l1')
    """
    from lightning_wd.core.schemes import scheme_class as core_scheme_class

    try:
        return core_scheme_class(spec)
    except ValueError as error:
        raise TuneError(f"space.scheme: {error}") from None


def scheme_label(spec: Any) -> str:
    """How a scheme is named in the space, in Optuna and in MLflow: its name, else its class path."""
    from lightning_wd.core.schemes import SCHEMES

    cls = scheme_class(spec)
    if SCHEMES.get(getattr(cls, "name", None)) is cls:
        return cls.name
    if isinstance(spec, Mapping):
        return str(spec["class_path"])
    return spec if isinstance(spec, str) else f"{cls.__module__}.{cls.__qualname__}"


def l1_ratio_schemes() -> list[str]:
    """The built-in schemes whose strength is split by WeightDecay's ``l1_ratio``."""
    import inspect

    from lightning_wd.core.schemes import SCHEMES

    return [n for n, cls in SCHEMES.items() if "l1_ratio" in inspect.signature(cls).parameters]


def wd_scheme_value(label: str) -> Any:
    """A label as WeightDecay's ``scheme`` in a recipe: the name, or ``{class_path: ...}`` for a class."""
    from lightning_wd.core.schemes import SCHEMES

    return label if label in SCHEMES else {"class_path": label}


def _wd_entries(recipe: Mapping) -> list[dict]:
    callbacks = (recipe.get("trainer") or {}).get("callbacks") or []
    if isinstance(callbacks, Mapping):
        callbacks = [callbacks]
    return [
        c for c in callbacks
        if isinstance(c, Mapping) and str(c.get("class_path", "")).rsplit(".", 1)[-1] == _WD_NAME
    ]


def wd_init_args(recipe: Mapping) -> dict:
    """The ``init_args`` of the recipe's WeightDecay callback (``{}`` if it has none).

    Raises:
        TuneError: the recipe lists several WeightDecay callbacks.

    Example:
        >>> wd_init_args({"trainer": {"callbacks": [{"class_path": "lightning_wd.WeightDecay",
        ...                                            "init_args": {"scheme": "l1"}}]}})
        {'scheme': 'l1'}
    """
    entries = _wd_entries(recipe)
    if len(entries) > 1:
        raise TuneError("the recipe lists several WeightDecay callbacks; tuning needs exactly one")
    return dict(entries[0].get("init_args") or {}) if entries else {}


def trial_recipe(recipe: Mapping, wd_args: Mapping[str, Any]) -> dict:
    """A copy of ``recipe`` without its ``tune:`` section and with ``wd_args`` set on its WeightDecay callback.

    The callback is appended to ``trainer.callbacks`` if the recipe has none.

    Example:
        >>> r = trial_recipe({"tune": {"n_trials": 3}, "trainer": {"max_epochs": 1}}, {"strength": 0.1})
        >>> sorted(r), r["trainer"]["callbacks"][0]["init_args"]
        (['trainer'], {'strength': 0.1})
    """
    out = copy.deepcopy(dict(recipe))
    out.pop("tune", None)
    trainer = out.setdefault("trainer", {}) or {}
    out["trainer"] = trainer
    callbacks = trainer.get("callbacks") or []
    if isinstance(callbacks, Mapping):
        callbacks = [callbacks]
    trainer["callbacks"] = callbacks
    entries = _wd_entries(out)
    if not entries:
        entry = {"class_path": _WD_CLASS_PATH, "init_args": {}}
        callbacks.append(entry)
    else:
        entry = entries[0]
    entry["init_args"] = {**(entry.get("init_args") or {}), **dict(wd_args)}
    return out


