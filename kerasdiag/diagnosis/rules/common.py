"""What the rule families share: the learning rate a fix names, and small number checks.

No rule lives here; each family module imports these helpers directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# The learning rate a fix names, or a function that reads it: the doctor's rules run at every
# step, and reading a scheduled rate costs a tensor evaluation, so it is read only when a
# finding is made.
LearningRate = float | None | Callable[[], float | None]


def read_lr(lr: LearningRate) -> float | None:
    """The learning rate ``lr`` names, read now: called only when a finding is made, so a
    scheduled rate costs its tensor evaluation only then."""
    return lr() if callable(lr) else lr


def pick(mapping: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """The entries of ``mapping`` under ``keys`` that it has (a finding's evidence)."""
    return {k: mapping[k] for k in keys if k in mapping}


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (None, strings and NaN are not)."""
    return isinstance(value, (int, float, np.number)) and math.isfinite(value)


def float_or_none(value: Any) -> float | None:
    """``value`` as a float, or None where it is not a number (a CSV cell may be anything)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
