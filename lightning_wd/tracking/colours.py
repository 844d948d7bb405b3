"""One colour per setting, the same in every figure and in the MLflow UI's charts.

:func:`setting_colour` gives a decay setting (a scheme, or a report label such as ``"L1 (proximal)"``)
its colour, as a hex string that matplotlib and the MLflow UI both read: the report's figures, the run
plots and the ``mlflow.runColor`` tag of a run (the tag the MLflow UI keeps a run's chart colour in) use
it. :func:`strength_colour` colours a study's trials by their strength on one fixed log scale, so
neighbouring strengths look alike and a strength has the same colour in every study. Imports nothing
heavy (no matplotlib).

Example:
    >>> setting_colour("L1 (proximal)") == setting_colour("l1 λ=1e-2 seed 0") == "#ff7f0e"
    True
    >>> strength_colour(1e-6), strength_colour(1.0), strength_colour(0)
    ('#440154', '#fde725', '#7f7f7f')
"""

from __future__ import annotations

import math
import zlib
from typing import Any

__all__ = ["RUN_COLOUR_TAG", "setting_colour", "setting_key", "strength_colour"]

#: the tag the MLflow UI reads a run's colour from (and writes when a user picks one)
RUN_COLOUR_TAG = "mlflow.runColor"
#: the settings of the report and the shipped recipes, each with its colour (matplotlib's tab10, in hex)
_COLOURS = {"none": "#7f7f7f", "decoupled": "#1f77b4", "l1": "#ff7f0e", "l2": "#2ca02c", "batchnorm": "#9467bd"}
#: any other setting: a stable pick from the rest of tab10
_OTHERS = ("#d62728", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
#: viridis at 9 evenly spaced points, for :func:`strength_colour`
_VIRIDIS = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")
#: the log10 strengths that map to the two ends of the scale
STRENGTH_RANGE = (-6.0, 0.0)


def setting_key(label: str) -> str:
    """The setting a label names: ``"no decay"``/``"none"`` -> ``none``, ``"L1 (proximal)"``/``"l1 λ=1e-2"`` -> ``l1``.

    Example:
        >>> [setting_key(x) for x in ("no decay", "none", "L1 (proximal)", "L1", "decoupled decay", "BatchNorm")]
        ['none', 'none', 'l1', 'l1', 'decoupled', 'batchnorm']
        >>> setting_key("elastic_net λ=1e-3 seed 0"), setting_key("l2_sp")
        ('elastic_net', 'l2_sp')
    """
    text = label.lower().strip()
    word = text.replace("(", " ").split(" ")[0]
    if text.startswith("no decay") or word == "none":
        return "none"
    if word.startswith("batch"):
        return "batchnorm"
    return word


def setting_colour(label: str) -> str:
    """The colour of a setting (hex), the same in every figure; a stable pick for settings not listed.

    Example:
        >>> setting_colour("no decay") == setting_colour("none λ=0 seed 3")
        True
    """
    key = setting_key(label)
    return _COLOURS.get(key) or _OTHERS[zlib.crc32(key.encode()) % len(_OTHERS)]


def strength_colour(strength: Any) -> str:
    """The colour of a decay strength (hex) on viridis over log10 λ in :data:`STRENGTH_RANGE` (clipped);
    grey for 0 or a strength that is not a positive number.

    Example:
        >>> strength_colour(1e-3)  # the middle of the scale
        '#21918c'
    """
    try:
        value = float(strength)
    except (TypeError, ValueError):
        return _COLOURS["none"]
    if not math.isfinite(value) or value <= 0:
        return _COLOURS["none"]
    low, high = STRENGTH_RANGE
    position = min(max((math.log10(value) - low) / (high - low), 0.0), 1.0)
    return _VIRIDIS[round(position * (len(_VIRIDIS) - 1))]
