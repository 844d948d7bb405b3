"""Decay schemes: one small module per update rule, looked up by name with :func:`get_scheme`."""

from __future__ import annotations

from lightning_wd.core.schemes.base import Scheme
from lightning_wd.core.schemes.cautious import Cautious
from lightning_wd.core.schemes.decoupled import Decoupled
from lightning_wd.core.schemes.elastic_net import ElasticNet
from lightning_wd.core.schemes.group_lasso import GroupLasso
from lightning_wd.core.schemes.l1 import L1
from lightning_wd.core.schemes.l2 import L2
from lightning_wd.core.schemes.l2_sp import L2SP

SCHEMES: dict[str, type[Scheme]] = {
    cls.name: cls for cls in (Decoupled, L2, L1, ElasticNet, GroupLasso, L2SP, Cautious)
}

__all__ = ["SCHEMES", "Cautious", "Decoupled", "ElasticNet", "GroupLasso", "L1", "L2", "L2SP", "Scheme",
           "get_scheme", "scheme_for_native"]


def _import_scheme(path: str) -> type[Scheme]:
    """The ``Scheme`` subclass at the import path ``path`` (``package.module.Class``)."""
    import importlib

    module, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError as error:
        raise ValueError(f"`scheme` {path!r}: cannot import {module!r} ({error})") from None
    if not (isinstance(found, type) and issubclass(found, Scheme)):
        raise ValueError(f"`scheme` {path!r} is not a Scheme subclass")
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
    if isinstance(scheme, type) and issubclass(scheme, Scheme):
        return scheme()
    if isinstance(scheme, str) and scheme not in SCHEMES and "." in scheme:
        return get_scheme(_import_scheme(scheme), l1_ratio)
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"`scheme` must be one of {', '.join(SCHEMES)}, an import path of a Scheme subclass, or a "
                         f"Scheme, got {scheme!r}")
    return ElasticNet(l1_ratio) if scheme == "elastic_net" else SCHEMES[scheme]()


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
