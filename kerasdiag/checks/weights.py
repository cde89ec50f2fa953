"""Per-example weights, as ``fit(x, y, sample_weight=...)`` or ``fit(..., class_weight=...)``
applies them: the one place the checks validate them and turn class weights into them.

A Keras model trained with weights minimises ``sum(w_i * loss_i) / N`` (the default
``sum_over_batch_size`` reduction), so every check that reads the loss must read that loss:
an unweighted expectation of the initial loss is off by the mean weight, an overfit stage that
trains without them memorises another objective, and a gradient check of the unweighted loss
checks a function ``fit`` never differentiates. The checks take the weights as the third item
of an ``(x, y, sample_weight)`` triple (or of the elements of a ``tf.data.Dataset``) and as
``class_weight=`` (a mapping of class index to weight, as ``fit`` takes it).

This module needs only NumPy.

Example:
    >>> import numpy as np
    >>> per_example_weights(np.array([0, 1, 1, 0]), class_weight={0: 1.0, 1: 5.0})
    array([1., 5., 5., 1.])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def validate_sample_weight(sample_weight: Any, count: int) -> np.ndarray:
    """``sample_weight`` as one float per example, or a ValueError naming it: a length other
    than ``count``, a weight that is negative, NaN or infinite."""
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 2 and w.shape[-1] == 1:
        w = w[:, 0]
    if w.ndim != 1 or len(w) != count:
        raise ValueError(
            f"sample_weight: expected one weight per example ({count}), got shape {w.shape}"
        )
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"sample_weight: weights must be finite and >= 0; example {i} has {float(w[i])!r}"
        )
    return w


def validate_class_weight(class_weight: Any, num_classes: int) -> dict[int, float]:
    """``class_weight`` as ``{class index: weight}``, or a ValueError naming it: not a
    mapping, a key that is not a class index below ``num_classes``, a weight that is
    negative, NaN or infinite."""
    if not isinstance(class_weight, Mapping):
        raise ValueError(
            f"class_weight: expected a mapping of class index to weight, got {class_weight!r}"
        )
    checked: dict[int, float] = {}
    for key, value in class_weight.items():
        if isinstance(key, bool) or not _is_index(key) or not 0 <= int(key) < num_classes:
            raise ValueError(
                f"class_weight: unknown class {key!r} (the classes are 0..{num_classes - 1})"
            )
        try:
            weight = float(value)
        except (TypeError, ValueError):
            weight = math.nan
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"class_weight: the weight of class {key!r} must be finite and >= 0, got {value!r}"
            )
        checked[int(key)] = weight
    return checked


def class_weight_setting(setting: Any, labels: Any, num_classes: int) -> dict[int, float] | None:
    """A run's class weights as ``fit(class_weight=...)`` takes them: None for None;
    ``"balanced"``: each class weighs ``n / (C * n_c)`` on the training labels, so every
    class present carries the same total weight (scikit-learn's ``compute_class_weight``; a
    class absent from the labels weighs 1); a mapping: validated by
    :func:`validate_class_weight`, a class it does not name weighing 1 (``fit`` needs a
    weight for every class). A ValueError names what is wrong.

    Example:
        >>> class_weight_setting("balanced", np.array([0, 0, 0, 1]), 2)
        {0: 0.6666666666666666, 1: 2.0}
    """
    if setting is None:
        return None
    if isinstance(setting, str):
        if setting != "balanced":
            raise ValueError(f"class_weight: expected 'balanced' or a mapping, got {setting!r}")
        counts = np.bincount(label_classes(labels), minlength=num_classes)
        total = counts.sum()
        return {
            c: float(total / (num_classes * n)) if n else 1.0 for c, n in enumerate(counts.tolist())
        }
    given = validate_class_weight(setting, num_classes)
    return {c: given.get(c, 1.0) for c in range(num_classes)}


def _is_index(key: Any) -> bool:
    try:
        return float(key) == int(key)
    except (TypeError, ValueError):
        return False


def label_classes(y: Any) -> np.ndarray:
    """The class of each example as Keras reads it for ``class_weight``: the argmax of a
    one-hot (or several-column) row, the rounded value of one column."""
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] != 1:
        return np.argmax(y, axis=-1)
    return np.round(y.reshape(len(y))).astype(np.int64)


def class_count(y: Any, num_classes: int | None = None) -> int:
    """How many classes ``class_weight`` may name: the columns of one-hot rows, 2 for one
    0/1 column, else ``num_classes`` when the data says it, else the largest label + 1."""
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] != 1:
        return int(y.shape[-1])
    if num_classes is not None:
        return max(int(num_classes), 2)
    labels = label_classes(y)
    return max(int(labels.max(initial=0)) + 1, 2)


def per_example_weights(
    y: Any,
    sample_weight: Any = None,
    class_weight: Mapping[Any, float] | None = None,
    num_classes: int | None = None,
) -> np.ndarray | None:
    """One weight per example from ``sample_weight`` or ``class_weight`` (validated), None
    when neither is given. As in ``fit``: a class missing from ``class_weight`` weighs 1,
    both at once is refused, and ``class_weight`` needs a model with one output."""
    if class_weight is None:
        if sample_weight is None:
            return None
        return validate_sample_weight(sample_weight, len(_first(y)))
    if sample_weight is not None:
        raise ValueError(
            "class_weight: cannot be combined with per-example weights (as in Keras' fit); "
            "multiply the class weights into sample_weight instead"
        )
    if isinstance(y, (list, tuple, dict)):
        raise ValueError(
            "class_weight: applies to a model with one output (as in Keras' fit); pass "
            "sample_weight for several outputs"
        )
    weights = validate_class_weight(class_weight, class_count(y, num_classes))
    return np.array([weights.get(int(c), 1.0) for c in label_classes(y)], dtype=np.float64)


def _first(y: Any) -> Any:
    """The first array of labels given as one array, a list or a dict of arrays."""
    if isinstance(y, dict):
        return next(iter(y.values()))
    if isinstance(y, (list, tuple)):
        return y[0]
    return y


def weighted_priors(labels: np.ndarray, weights: np.ndarray | None, classes: int) -> np.ndarray:
    """Each class's share of the total weight (of the examples when unweighted): the class
    priors a weighted loss averages over."""
    counts = np.bincount(labels, weights=weights, minlength=classes).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.full(classes, 1.0 / classes)


def loss_scale(weights: np.ndarray | None, reduction: str | None) -> float:
    """What weights multiply a loss that is the same for every example by: the mean weight
    under Keras' default ``sum_over_batch_size`` (``sum(w_i l_i) / N``), 1 under
    ``mean_with_sample_weight`` (``/ sum(w_i)``) and without weights."""
    if weights is None or reduction == "mean_with_sample_weight":
        return 1.0
    return float(np.mean(weights)) if len(weights) else 1.0
