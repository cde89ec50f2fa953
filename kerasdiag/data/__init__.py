"""Data: loaders (digits, CIFAR-10 with a safe unpickler), splits, tf.data pipelines.

``load_dataset`` and ``make_tf_dataset`` load lazily so that importing this package for its
config-free parts (the Dataset class) does not start TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

from kerasdiag.data.dataset import Dataset

_LAZY = {
    "load_dataset": "kerasdiag.data.loaders",
    "prepare_splits": "kerasdiag.data.loaders",
    "make_tf_dataset": "kerasdiag.data.pipeline",
}

__all__ = ["Dataset", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kerasdiag.data' has no attribute {name!r}")
