"""The in-memory data set every stage of a run shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Dataset:
    """Train / validation / test splits, already normalised with training statistics.

    ``x_*`` are float32 arrays (N, ...) ready for the model; ``y_*`` are int64 class indices.
    ``mean`` and ``std`` are the per-feature statistics of the training split that were used.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def summary(self) -> dict:
        """Sizes and class counts, for the console and the report."""
        return split_summary(self)


def split_summary(data) -> dict:
    """A data set's shape, classes, split sizes and training class counts (``data.json``):
    of an in-memory :class:`Dataset` or a streamed one (which has the same fields)."""
    return {
        "name": data.name,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "train": int(len(data.y_train)),
        "val": int(len(data.y_val)),
        "test": int(len(data.y_test)),
        "train_class_counts": np.bincount(data.y_train, minlength=data.num_classes).tolist(),
    }
