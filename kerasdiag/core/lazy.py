"""Lazy package exports: a public name imports its module (and TensorFlow) on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A module-level ``__getattr__`` for ``package`` and its ``__all__``.

    ``names`` maps each public name to the module that defines it. Packages whose config
    validation must run before TensorFlow starts export this way::

        __getattr__, __all__ = lazy_exports(__name__, {"run_search": "kerasdiag.search.run"})
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(names)
