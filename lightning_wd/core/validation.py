"""Argument checks shared by every entry point: each message names the argument and the allowed values."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Real
from typing import Any

__all__ = [
    "check_bool", "check_choice", "check_fraction", "check_int", "check_multipliers", "check_patterns",
    "check_strength",
]


def check_strength(value: Any, argument: str = "weight_decay", error: type[Exception] = TypeError) -> float:
    """``value`` as a float; ``error`` (TypeError by default) if it is not a number, ValueError if it is
    not finite and >= 0.

    Example:
        >>> check_strength(0.1)
        0.1
        >>> check_strength(-1, "strength")
        Traceback (most recent call last):
        ...
        ValueError: `strength` must be a finite number >= 0, got -1
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise error(f"`{argument}` must be a non-negative float, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"`{argument}` must be a finite number >= 0, got {value!r}")
    return float(value)


def check_fraction(value: Any, argument: str) -> float:
    """``value`` as a float in [0, 1], else ValueError.

    Example:
        >>> check_fraction(1.5, "l1_ratio")
        Traceback (most recent call last):
        ...
        ValueError: `l1_ratio` must be a number in [0, 1], got 1.5
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{argument}` must be a number in [0, 1], got {value!r}")
    return float(value)


def check_bool(value: Any, argument: str) -> bool:
    """``value`` if it is True or False, else ValueError.

    Example:
        >>> check_bool("yes", "exclude_bias")
        Traceback (most recent call last):
        ...
        ValueError: `exclude_bias` must be True or False, got 'yes'
    """
    if not isinstance(value, bool):
        raise ValueError(f"`{argument}` must be True or False, got {value!r}")
    return value


def check_int(value: Any, argument: str, minimum: int = 0, allow_none: bool = False) -> int | None:
    """``value`` if it is an integer >= ``minimum`` (or None when ``allow_none``), else ValueError.

    Example:
        >>> check_int(0, "log_every_n_steps", minimum=1, allow_none=True)
        Traceback (most recent call last):
        ...
        ValueError: `log_every_n_steps` must be an integer >= 1 or None, got 0
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{argument}` must be an integer >= {minimum}{' or None' if allow_none else ''}, "
                         f"got {value!r}")
    return value


def check_choice(value: Any, argument: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else ValueError listing them.

    Example:
        >>> check_choice("cosin", "schedule", ["constant", "cosine"])
        Traceback (most recent call last):
        ...
        ValueError: `schedule` must be one of constant, cosine, got 'cosin'
    """
    choices = list(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"`{argument}` must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_patterns(value: str | Iterable[str] | None, argument: str) -> tuple[str, ...]:
    """Glob patterns as a tuple (None: none; one string: one pattern); TypeError for a non-string.

    Example:
        >>> check_patterns("head.*", "exclude")
        ('head.*',)
        >>> check_patterns([""], "include")
        Traceback (most recent call last):
        ...
        TypeError: `include` must hold non-empty glob strings, got ''
    """
    if value is None:
        return ()
    if not isinstance(value, (str, Iterable)) or isinstance(value, Mapping):
        raise TypeError(f"`{argument}` must be a glob string or a list of them, got {value!r}")
    patterns = (value,) if isinstance(value, str) else tuple(value)
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"`{argument}` must hold non-empty glob strings, got {pattern!r}")
    return patterns


def check_multipliers(value: Mapping[str, float] | None, argument: str = "multipliers") -> dict[str, float]:
    """``{glob: factor >= 0}`` as a plain dict; TypeError/ValueError naming the bad key or factor.

    Example:
        >>> check_multipliers({"head.*": 0.5})
        {'head.*': 0.5}
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"`{argument}` must be a dict {{glob: factor >= 0}}, got {value!r}")
    out = {}
    for pattern, factor in value.items():
        check_patterns([pattern], argument)
        out[pattern] = check_strength(factor, f"{argument}[{pattern!r}]")
    return out
