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
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "train": int(len(self.y_train)),
            "val": int(len(self.y_val)),
            "test": int(len(self.y_test)),
            "train_class_counts": np.bincount(self.y_train, minlength=self.num_classes).tolist(),
        }
