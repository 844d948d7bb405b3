"""One colour per setting, the same in every figure and in the MLflow UI's charts.

:func:`setting_colour` gives a decay setting (a scheme, or a report label such as ``"L1 (proximal)"``)
its colour, as a hex string that matplotlib and the MLflow UI both read: the report's figures, the run
plots and the ``mlflow.runColor`` tag of a run (the tag the MLflow UI keeps a run's chart colour in) use
it. :func:`trial_colour` gives the trials of a study distinct colours instead (their setting differs only
in strength). Imports nothing heavy (no matplotlib).

Example:
    >>> setting_colour("L1 (proximal)") == setting_colour("l1 λ=1e-2 seed 0") == "#ff7f0e"
    True
    >>> trial_colour(0) != trial_colour(1)
    True
"""

from __future__ import annotations

import zlib

__all__ = ["OTHER_COLOURS", "RUN_COLOUR_TAG", "setting_colour", "setting_key", "trial_colour"]

#: the tag the MLflow UI reads a run's colour from (and writes when a user picks one)
RUN_COLOUR_TAG = "mlflow.runColor"
#: the settings of the report and the shipped recipes, each with its colour (matplotlib's tab10, in hex)
_COLOURS = {"none": "#7f7f7f", "decoupled": "#1f77b4", "l1": "#ff7f0e", "l2": "#2ca02c", "batchnorm": "#9467bd"}
#: any other setting: a stable pick from the rest of tab10 (also the figures' colours for the lines of
#: one setting's variants, e.g. strengths)
OTHER_COLOURS = ("#d62728", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
#: the trials' colours: tab10 without grey, then its light shades
_TRIALS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5")


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
    return _COLOURS.get(key) or OTHER_COLOURS[zlib.crc32(key.encode()) % len(OTHER_COLOURS)]


def trial_colour(number: int) -> str:
    """The colour of trial ``number`` of a study (hex): the trials of one study are told apart in the MLflow
    UI's charts (tab20 without its greys, in order: neighbouring trials differ most).

    Example:
        >>> [trial_colour(n) for n in (0, 1, 18)]
        ['#1f77b4', '#ff7f0e', '#1f77b4']
    """
    return _TRIALS[int(number) % len(_TRIALS)]
