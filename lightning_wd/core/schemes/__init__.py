"""Decay schemes: one small module per update rule, looked up by name with :func:`get_scheme`."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from lightning_wd.core.schemes.base import Scheme
from lightning_wd.core.schemes.cautious import Cautious
from lightning_wd.core.schemes.decoupled import Decoupled
from lightning_wd.core.schemes.elastic_net import ElasticNet
from lightning_wd.core.schemes.group_lasso import GroupLasso
from lightning_wd.core.schemes.l1 import L1
from lightning_wd.core.schemes.l2 import L2
from lightning_wd.core.schemes.l2_sp import L2SP
from lightning_wd.core.schemes.selective_projection import SelectiveProjection
from lightning_wd.core.schemes.target_norm import TargetNorm

SCHEMES: dict[str, type[Scheme]] = {
    cls.name: cls for cls in (Decoupled, L2, L1, ElasticNet, GroupLasso, L2SP, Cautious, TargetNorm,
                              SelectiveProjection)
}

__all__ = ["SCHEMES", "Cautious", "Decoupled", "ElasticNet", "GroupLasso", "L1", "L2", "L2SP", "Scheme",
           "SelectiveProjection", "TargetNorm", "get_scheme", "scheme_class", "scheme_for_native"]


def scheme_class(spec: str | Scheme | type[Scheme] | Mapping) -> type[Scheme]:
    """The :class:`Scheme` class of ``spec``: a built-in name, an import path (``mypkg.MyScheme``), a mapping
    with ``class_path`` (as jsonargparse writes it), or a ``Scheme`` subclass or instance.

    Raises:
        ValueError: an unknown name, a path that does not import, or a class that is not a Scheme.

    Example:
        >>> scheme_class("l2").name, scheme_class({"class_path": "lightning_wd.core.schemes.L1"}).name
        ('l2', 'l1')
    """
    if isinstance(spec, Scheme):
        return type(spec)
    if isinstance(spec, type) and issubclass(spec, Scheme):
        return spec
    path = spec.get("class_path") if isinstance(spec, Mapping) else spec
    if isinstance(path, str) and path in SCHEMES:
        return SCHEMES[path]
    if not isinstance(path, str) or "." not in path.strip("."):
        raise ValueError(f"`scheme` must be one of {', '.join(SCHEMES)}, an import path of a Scheme subclass, or a "
                         f"Scheme, got {spec!r}")
    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"`scheme`: cannot import {path} ({error})") from None
    if not (isinstance(found, type) and issubclass(found, Scheme)):
        raise ValueError(f"`scheme`: {path} is not a subclass of lightning_wd.core.schemes.Scheme")
    return found


def get_scheme(scheme: str | Scheme | type[Scheme], l1_ratio: float = 0.5) -> Scheme:
    """The scheme called ``scheme``, or ``scheme`` itself when it is a :class:`Scheme` (instance or class).

    Raises:
        ValueError: unknown name (the message lists the valid ones), or invalid ``l1_ratio``.

    Example:
        >>> get_scheme("l1").name
        'l1'
        >>> class Halve(Scheme):
        ...     name = "halve"
        >>> get_scheme(Halve).name
        'halve'
        >>> get_scheme("lightning_wd.core.schemes.L1").name  # an import path, as a recipe names its own scheme
        'l1'
    """
    if isinstance(scheme, Scheme):
        return scheme
    cls = scheme_class(scheme)
    return cls(l1_ratio) if cls is ElasticNet else cls()


def scheme_for_native(kind: str) -> Scheme | None:
    """The plain scheme that equals an optimizer's own decay of ``kind`` (``decoupled`` or ``coupled``).

    Example:
        >>> scheme_for_native("coupled").name, scheme_for_native("decoupled").name
        ('l2', 'decoupled')
    """
    for cls in SCHEMES.values():
        if cls.native == kind and cls.after_update is Scheme.after_update and not cls.persistent_state:
            return cls()
    return None
