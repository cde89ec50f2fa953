"""The one gate every saved model passes through: :func:`load_model_safely`."""

from __future__ import annotations

import contextlib
import importlib
import os
import zipfile
from pathlib import Path
from typing import Any

import keras

from kerasdiag.core.errors import DataError
from kerasdiag.modeling import losses  # noqa: F401 - registers kerasdiag's losses with Keras


def load_model_safely(path: str | os.PathLike, compile: bool = True) -> Any:
    """Load a ``.keras`` model file without letting the file run code; problems -> DataError.

    Only the zip-based ``.keras`` format is accepted, and it is loaded with
    ``safe_mode=True``: a ``Lambda`` layer carrying Python bytecode is refused, and Keras
    resolves classes only among its own and those registered as serialisable (kerasdiag's
    losses, the recipes' layers). Legacy HDF5 (``.h5``) and SavedModel folders are refused:
    they have no safe mode. Every code path in kerasdiag that loads a model goes through here.

    Example:
        >>> model = load_model_safely("outputs/run/checkpoints/best-epoch003-val_accuracy0.9.keras")
        ... # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise DataError(f"refused to load model {path}: only .keras files are loaded (safe mode)")
    if not path.is_file():
        raise DataError(f"cannot load model {path}: no such file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"cannot load model {path}: not a .keras archive (corrupt or truncated)")
    _register_custom_objects()
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=True)
    except Exception as exc:  # corrupt archives and refused configs raise many types
        reason = " ".join(str(exc).split())[:300]
        raise DataError(f"cannot load model {path}: {type(exc).__name__}: {reason}") from None


def _register_custom_objects() -> None:
    # Importing the recipes' module runs its @register_keras_serializable decorators (the
    # losses' ran when this module imported them); it is optional: a user's installation
    # may leave recipes/ out.
    for module in ("recipes.models",):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
