"""Data: loaders (digits, CIFAR-10 with a safe unpickler), splits, tf.data pipelines.

``load_dataset`` and ``make_tf_dataset`` load lazily so that importing this package for its
config-free parts (the Dataset class) does not start TensorFlow.
"""

from __future__ import annotations

from kerasdiag.core.lazy import lazy_exports
from kerasdiag.data.dataset import Dataset

_LAZY = {
    "load_dataset": "kerasdiag.data.loaders",
    "prepare_splits": "kerasdiag.data.loaders",
    "make_tf_dataset": "kerasdiag.data.pipeline",
}

__getattr__, _names = lazy_exports(__name__, _LAZY)
__all__ = ["Dataset", *_names]
