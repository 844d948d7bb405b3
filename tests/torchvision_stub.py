"""A stand-in for ``torchvision`` so that ``timm`` imports beside a torch that torchvision cannot load with.

Why: the test environment pins a CPU build of torch for which no matching torchvision wheel loads, so
timm is installed without its dependencies and torchvision is absent. timm imports torchvision only for
its data pipeline (transforms, ``InterpolationMode``) and for ``FrozenBatchNorm2d``; building a model
from its config (``pretrained=False``) never calls into it. :func:`install` puts a meta-path finder in
front of the import system that answers every ``torchvision`` / ``torchvision.*`` import with a stub
module whose attributes are dummy classes (and whose classes' attributes are dummy classes again), so
``from torchvision.transforms import InterpolationMode`` and ``InterpolationMode.BICUBIC`` both work.

It installs nothing when a real torchvision is importable, and is meant to be called from the test
module that needs timm, never from a conftest (other tests should see the real import system).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

__all__ = ["install", "installed", "uninstall"]


class _Meta(type):
    """Metaclass of the dummy classes: any (non-dunder) attribute is another dummy class."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Meta(name, (), {})


class _Stub(types.ModuleType):
    """A stub module: any (non-dunder) attribute is a dummy class, cached on first access."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = _Meta(name, (), {})
        setattr(self, name, cls)
        return cls


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``torchvision`` and all its submodules, and loads each as an empty :class:`_Stub` package."""

    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Stub(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        pass


def installed() -> bool:
    """Whether the stub finder is on ``sys.meta_path``."""
    return any(isinstance(finder, _Finder) for finder in sys.meta_path)


def _real_torchvision_importable() -> bool:
    if "torchvision" in sys.modules:
        return not isinstance(sys.modules["torchvision"], _Stub)
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:  # present on disk, but it may fail to load beside this torch (operator registration errors)
        import torchvision  # noqa: F401
    except Exception:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


def install() -> bool:
    """Install the stub finder unless a real torchvision imports; return whether the stub is in use."""
    if installed():
        return True
    if _real_torchvision_importable():
        return False
    sys.meta_path.insert(0, _Finder())
    return True


def uninstall() -> None:
    """Remove the stub finder and forget the stub modules (modules that imported them keep their copies)."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _Finder)]
    for name in [n for n, m in sys.modules.items() if isinstance(m, _Stub)]:
        del sys.modules[name]
