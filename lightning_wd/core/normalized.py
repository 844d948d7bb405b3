"""Which tensors feed a normalisation layer: AdamC's "normalised layers" (Defazio 2025), found from the model.

A layer is *normalised* when its output goes straight into a normalisation layer (``Linear -> LayerNorm``,
``Conv2d -> BatchNorm2d``, possibly through parameter-free, positively homogeneous modules: ``ReLU``,
``Dropout``, ``Identity``): the norm layer makes the loss invariant to the scale of the layer's weights, which is
the case AdamC's corrected decay ``λ·lr²/lr_max`` is derived for. The detection reads the model's leaf modules
in registration order (the order of ``nn.Sequential`` and of the usual ``conv, bn, relu`` blocks) and requires the
norm layer's feature count to equal the layer's output size; models whose forward does not follow their
registration order name the layers with globs instead (``normalized_layers=[...]``).

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3))
    >>> normalized_tensors(model)
    {'0.weight': 'feeds LayerNorm 1', '0.bias': 'feeds LayerNorm 1'}
    >>> normalized_tensors(model, ["3.*"])
    {'3.weight': 'normalized_layers glob 3.*', '3.bias': 'normalized_layers glob 3.*'}
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from lightning_wd.core.grouping import is_norm_module

__all__ = ["normalized_tensors"]

#: Parameter-free modules that keep a layer's scale invariance when they sit between it and the norm layer.
PASS_THROUGH = (nn.ReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity)


def _features(norm: nn.Module) -> int | None:
    for attribute in ("num_features", "num_channels"):
        if isinstance(getattr(norm, attribute, None), int):
            return getattr(norm, attribute)
    shape = getattr(norm, "normalized_shape", None)
    return int(shape[-1]) if shape else None


def _outputs(layer: nn.Module) -> int | None:
    for attribute in ("out_features", "out_channels", "embedding_dim"):
        if isinstance(getattr(layer, attribute, None), int):
            return getattr(layer, attribute)
    weight = getattr(layer, "weight", None)
    return int(weight.shape[0]) if weight is not None and weight.ndim >= 2 else None


def normalized_tensors(model: nn.Module, globs: list[str] | None = None) -> dict[str, str]:
    """``{parameter name: reason}`` of the tensors whose layer output feeds a normalisation layer.

    Args:
        model: the model.
        globs: instead of the detection, exactly the parameters whose names match one of these globs.
    """
    names = [n for n, _ in model.named_parameters()]
    if globs is not None:
        found = {}
        for name in names:
            pattern = next((g for g in globs if fnmatchcase(name, g)), None)
            if pattern is not None:
                found[name] = f"normalized_layers glob {pattern}"
        return found
    found: dict[str, str] = {}
    previous: tuple[str, nn.Module] | None = None
    for module_name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue  # containers: their leaves come next in registration order
        if is_norm_module(module):
            if previous is not None and _features(module) is not None and _features(module) == _outputs(previous[1]):
                prefix = f"{previous[0]}." if previous[0] else ""
                for param_name, _ in previous[1].named_parameters(recurse=False):
                    found[prefix + param_name] = f"feeds {type(module).__name__} {module_name}"
            previous = None
        elif any(True for _ in module.parameters(recurse=False)):
            previous = (module_name, module) if _outputs(module) is not None else None
        elif not isinstance(module, PASS_THROUGH):
            previous = None
    return found
