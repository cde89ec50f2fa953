"""What task each output of a compiled model solves: the one place every check reads it from.

A check that applies another task's rule gives a wrong verdict (a regression model judged by a
0/1-label formula, multi-label outputs scored as top-1 against the first label that is on).
The task of an output follows from its loss (kind and configuration, read by
:func:`~kerasdiag.checks.sanity.expected.describe_loss`), its width and its labels:

* ``multiclass``: softmax cross-entropy, focal, hinge over C >= 2 outputs; labels ``sparse``
  (class indices) or ``one_hot`` rows; accuracy is top-1.
* ``binary``: one output under a per-output loss (binary cross-entropy, binary focal,
  hinge); accuracy thresholds the output (0 for logits and scores, 0.5 for probabilities).
* ``multilabel``: several independent per-output (sigmoid) decisions, any number on per
  example; accuracy is the exact match of every label, per-label accuracy is reported too.
* ``regression``: MSE, MAE, Huber or log-cosh on real-valued targets; no accuracy, the loss
  is judged against the targets' spread. MSE on class indices or one-hot rows over several
  outputs is still a classifier (``multiclass``).
* ``unknown``: a loss the checks do not recognise; the checks that need the task say so.

Label smoothing is part of the task: it sets the lowest loss a memorised model can reach
(:func:`~kerasdiag.checks.sanity.expected.smoothed_target_entropy`).

This module needs only NumPy: it reads a loss description, a width, labels and outputs.

Example:
    >>> import numpy as np
    >>> from kerasdiag.checks.sanity.expected import describe_loss
    >>> spec = describe_loss("binary_crossentropy")
    >>> task_of(spec, 5, np.array([[1, 0, 1, 0, 0], [0, 1, 1, 0, 1]])).kind
    'multilabel'
    >>> task_of(describe_loss("mse"), 1, np.array([0.3, -1.2])).kind
    'regression'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasdiag.checks.sanity.expected import PER_OUTPUT, LossSpec, smoothed_target_entropy

KINDS = ("multiclass", "binary", "multilabel", "regression", "unknown")


@dataclass(frozen=True)
class Task:
    """The task of one output: ``kind`` (one of ``KINDS``), the form of its ``labels``
    (sparse, one_hot, binary, multi_hot, values), the output ``width`` and its loss."""

    kind: str
    labels: str
    width: int
    spec: LossSpec | None

    @property
    def classifies(self) -> bool:
        """Whether the output makes decisions an accuracy can score."""
        return self.kind in {"multiclass", "binary", "multilabel"}

    @property
    def loss_floor(self) -> float:
        """The lowest loss a model that gets every example right reaches: the smoothed
        target's entropy under label smoothing, else 0."""
        return 0.0 if self.spec is None else smoothed_target_entropy(self.spec, self.width)

    def describe(self) -> str:
        """One phrase for messages, e.g. ``multi-label (5 independent outputs)``."""
        loss = "" if self.spec is None else f", {self.spec.name}"
        smoothing = self.spec.label_smoothing if self.spec is not None else 0.0
        extra = f", label smoothing {smoothing:g}" if smoothing else ""
        what = {
            "multiclass": f"multi-class ({self.width} classes, {self.labels} labels",
            "binary": "binary (one output",
            "multilabel": f"multi-label ({self.width} independent outputs",
            "regression": f"regression ({self.width} value(s)",
            "unknown": "unknown task (a loss the checks do not know",
        }[self.kind]
        return f"{what}{loss}{extra})"


def task_of(
    spec: LossSpec | None, width: int, y: Any = None, activation: str | None = None
) -> Task:
    """The task of an output of ``width`` units trained with the loss ``spec`` on labels ``y``.

    ``y`` (optional) separates MSE on class labels from regression; ``activation`` (the output
    layer's, when known) is read only to tell a softmax output from independent sigmoids
    under a per-output loss, which is a multi-label model either way.
    """
    width = int(width)
    if spec is None:
        return Task("unknown", "values", width, None)
    labels = None if y is None else np.asarray(y)
    if spec.regression:
        if width > 1 and labels is not None and _class_labels(labels, width):
            form = "sparse" if labels.ndim == 1 or labels.shape[-1] == 1 else "one_hot"
            return Task("multiclass", form, width, spec)
        return Task("regression", "values", width, spec)
    if spec.kind in PER_OUTPUT:
        if width == 1:
            return Task("binary", "binary", 1, spec)
        return Task("multilabel", "multi_hot", width, spec)
    return Task("multiclass", "sparse" if spec.sparse else "one_hot", width, spec)


def _class_labels(y: np.ndarray, width: int) -> bool:
    """Class indices below ``width`` in one column, or one-hot rows of ``width``."""
    if y.size == 0:
        return False
    if y.ndim == 1 or (y.ndim == 2 and y.shape[-1] == 1):
        flat = y.reshape(-1)
        return bool(np.all(flat == np.round(flat)) and flat.min() >= 0 and flat.max() < width)
    if y.shape[-1] != width:
        return False
    return bool(np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=-1) == 1))


def decision_threshold(task: Task) -> float:
    """Where a per-output decision flips: 0.5 for probabilities, 0 for logits and scores."""
    return 0.5 if task.spec is not None and task.spec.from_logits is False else 0.0


def positives(y: Any) -> np.ndarray:
    """Which per-output labels are on: above 0.5 for 0/1 labels (smoothed or not), above 0
    for -1/1 labels (hinge)."""
    y = np.asarray(y, dtype=np.float64)
    return y > (0.0 if y.size and y.min() < 0 else 0.5)


def class_indices(y: Any, form: str | None = None) -> np.ndarray:
    """Integer labels from class indices, one-hot rows or one 0/1 (or -1/1) column.

    ``form="sparse"`` (a :class:`Task`'s ``labels``) reads ``y`` as class indices whatever its
    shape: a sequence tagger's labels of shape (N, T) are one class per position, not
    one-hot rows.
    """
    y = np.asarray(y)
    if form == "sparse":
        squeezed = y[..., 0] if y.ndim > 1 and y.shape[-1] == 1 else y
        return squeezed.astype(np.int64)
    if y.ndim > 1 and y.shape[-1] > 1:
        return np.argmax(y, axis=-1)
    y = y.reshape(-1)
    return (y > 0).astype(np.int64) if y.size and y.min() < 0 else y.astype(np.int64)


def accuracy(task: Task, outputs: Any, y: Any) -> float | None:
    """The share of examples the output gets right, by the task's own measure: top-1 for
    multi-class, the threshold for binary, every label right (exact match) for multi-label;
    None for regression and unknown tasks."""
    outputs = np.asarray(outputs)
    if task.kind == "multiclass":
        return float(np.mean(np.argmax(outputs, axis=-1) == class_indices(y, task.labels)))
    if task.kind in {"binary", "multilabel"}:
        right = _per_label_right(task, outputs, y)
        return float(np.mean(np.all(right, axis=-1)))
    return None


def label_accuracy(task: Task, outputs: Any, y: Any) -> float | None:
    """Multi-label: the share of (example, label) decisions that are right; else None."""
    if task.kind != "multilabel":
        return None
    return float(np.mean(_per_label_right(task, np.asarray(outputs), y)))


def _per_label_right(task: Task, outputs: np.ndarray, y: Any) -> np.ndarray:
    predicted = outputs.reshape(len(outputs), -1) > decision_threshold(task)
    truth = positives(np.asarray(y).reshape(len(outputs), -1))
    return predicted == truth
