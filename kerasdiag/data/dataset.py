"""The in-memory data set every stage of a run shares."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Dataset:
    """Train / validation / test splits, already normalised with training statistics.

    ``x_*`` are float32 arrays (N, ...) ready for the model; ``y_*`` are int64 class indices,
    or, by ``task``, float32 rows of 0/1 labels (``multilabel``: ``num_classes`` labels, named
    by ``class_names``) or of numbers to predict (``regression``: ``num_classes`` target
    columns, named by ``class_names``; their training mean and std in ``target_mean`` and
    ``target_std``). ``mean`` and ``std`` are the per-feature statistics of the training
    split that were used.
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
    task: str = "classification"  # one of kerasdiag.config.schema.TASKS
    # regression with data.scale_target: the y arrays are standardised; these undo it
    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def summary(self) -> dict:
        """Sizes and class counts, for the console and the report."""
        return split_summary(self)


def split_summary(data) -> dict:
    """A data set's shape, classes, split sizes and training class counts (``data.json``):
    of an in-memory :class:`Dataset` or a streamed one (which has the same fields).
    Multi-label: ``labels`` and ``train_label_counts`` (examples with each label on);
    regression: ``targets`` and their training ``target_mean`` and ``target_std``."""
    task = getattr(data, "task", "classification")
    summary = {
        "name": data.name,
        "task": task,
        "input_shape": list(data.input_shape),
        "train": int(len(data.y_train)),
        "val": int(len(data.y_val)),
        "test": int(len(data.y_test)),
    }
    y = np.asarray(data.y_train)
    if task == "regression":  # in the targets' units; scaled: the scale (data.scale_target)
        y = y.reshape(len(y), -1).astype(np.float64)
        scaled = getattr(data, "target_std", None) is not None
        if scaled:
            y = y * data.target_std + data.target_mean
        return {**summary, "targets": list(data.class_names), "targets_scaled": scaled,
                "target_mean": y.mean(0).tolist(), "target_std": y.std(0).tolist()}  # fmt: skip
    if task == "multilabel":
        counts = (y.reshape(len(y), -1) > 0.5).sum(0)
        return {**summary, "labels": list(data.class_names),
                "train_label_counts": counts.astype(int).tolist()}  # fmt: skip
    return {
        **summary,
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "train_class_counts": np.bincount(y, minlength=data.num_classes).tolist(),
    }
