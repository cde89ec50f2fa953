"""The losses and metrics of each task, and the losses the recipes need beyond Keras' own
(Weston-Watkins hinge, sparse focal loss, smoothed sparse cross-entropy).

The custom ones take sparse integer labels and raw scores (logits), carry a ``get_config`` so
a model compiled with them can be saved, loaded in safe mode and cloned to float64 for
gradient checks. Regression (mse, mae, huber) and multi-label (independent sigmoids) use
Keras' losses; their metrics are :func:`task_metrics`'.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from kerasdiag.config.schema import LOSSES, loss_task
from kerasdiag.core.errors import ConfigError


@keras.saving.register_keras_serializable(package="kerasdiag")
class MulticlassHinge(keras.losses.Loss):
    """Weston-Watkins multiclass SVM loss: ``sum_{j != y} max(0, s_j - s_y + margin)``.

    At small random init all scores are ~0, so every wrong class contributes ``margin``:
    the expected initial loss is ``(C - 1) * margin`` (9 for CIFAR-10 at margin 1).
    Keras' ``CategoricalHinge`` is the Crammer-Singer variant (max over j), hence this class.

    Example:
        >>> import numpy as np
        >>> loss = MulticlassHinge(margin=1.0)
        >>> float(loss(np.array([0]), np.zeros((1, 10), "float32")))
        9.0
    """

    def __init__(self, margin: float = 1.0, name: str = "multiclass_hinge", **kwargs: Any):
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        super().__init__(name=name, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        num_classes = ops.shape(y_pred)[-1]
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        one_hot = ops.one_hot(y_true, num_classes, dtype=y_pred.dtype)
        correct = ops.sum(y_pred * one_hot, axis=-1, keepdims=True)
        margins = ops.relu(y_pred - correct + self.margin) * (1.0 - one_hot)
        return ops.sum(margins, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="kerasdiag")
class SparseCategoricalFocalLoss(keras.losses.Loss):
    """Focal loss ``-alpha * (1 - p_y)^gamma * log p_y`` with sparse labels (Lin et al. 2017).

    Down-weights easy, well-classified examples so rare classes count for more; built on
    ``keras.losses.categorical_focal_crossentropy``. ``alpha=None`` means no class weight.
    At uniform outputs the expected initial loss is ``alpha * (1 - 1/C)^gamma * ln C``.

    Example:
        >>> import numpy as np
        >>> loss = SparseCategoricalFocalLoss(gamma=2.0)
        >>> round(float(loss(np.array([3]), np.zeros((1, 10), "float32"))), 4)
        1.8651
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = None,
        from_logits: bool = True,
        name: str = "sparse_categorical_focal_loss",
        **kwargs: Any,
    ):
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1] or None, got {alpha}")
        super().__init__(name=name, **kwargs)
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        num_classes = ops.shape(y_pred)[-1]
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        one_hot = ops.one_hot(y_true, num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_focal_crossentropy(
            one_hot,
            y_pred,
            alpha=1.0 if self.alpha is None else self.alpha,
            gamma=self.gamma,
            from_logits=self.from_logits,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "gamma": self.gamma,
            "alpha": self.alpha,
            "from_logits": self.from_logits,
        }


@keras.saving.register_keras_serializable(package="kerasdiag")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Softmax cross-entropy on class indices with label smoothing: the target puts
    ``1 - label_smoothing + label_smoothing / C`` on the true class and the rest evenly.

    Keras' sparse cross-entropy has no ``label_smoothing``; the categorical one has. At uniform
    outputs the loss is still ln C (the sanity check's expectation holds).

    Example:
        >>> import numpy as np
        >>> loss = SparseSmoothedCrossentropy(label_smoothing=0.1)
        >>> round(float(loss(np.array([3]), np.zeros((1, 10), "float32"))), 4)
        2.3026
    """

    def __init__(
        self,
        label_smoothing: float = 0.1,
        from_logits: bool = True,
        name: str = "sparse_categorical_crossentropy",
        **kwargs: Any,
    ):
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        one_hot = ops.one_hot(y_true, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
        }


def output_units(loss_cfg: Any, num_classes: int) -> int:
    """Outputs of the model: one logit per class, one for ``loss=binary`` (two classes); for
    regression and multi-label ``num_classes`` is the width of the targets (one output per
    target column, one logit per label)."""
    if loss_cfg.name != "binary":
        return num_classes
    if num_classes != 2:
        raise ConfigError("loss.name", "binary", f"needs 2 classes, the data has {num_classes}")
    return 1


@keras.saving.register_keras_serializable(package="kerasdiag")
class ExactMatch(keras.metrics.MeanMetricWrapper):
    """Multi-label accuracy: the share of examples whose every label is decided right (a
    logit above ``threshold`` means on). Keras' ``BinaryAccuracy`` averages the single
    decisions instead: reported beside it as ``label_accuracy``."""

    def __init__(self, threshold: float = 0.0, name: str = "accuracy", dtype: Any = None):
        super().__init__(exact_match, name=name, dtype=dtype, threshold=threshold)
        self.threshold = float(threshold)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "threshold": self.threshold}


def exact_match(y_true: Any, y_pred: Any, threshold: float = 0.0) -> Any:
    """1 for an example whose every label is decided right, else 0."""
    decided = ops.cast(ops.greater(y_pred, threshold), "float32")
    truth = ops.cast(ops.greater(ops.cast(y_true, "float32"), 0.5), "float32")
    return ops.cast(ops.all(ops.equal(decided, truth), axis=-1), "float32")


class _InTargetUnits:
    """A regression metric of a model trained on standardised targets, in the targets' own
    units: each column's prediction and target times its ``scale`` (the training targets'
    std, ``data.scale_target``) before the metric's own update."""

    def __init__(self, scale: Any = 1.0, name: str = "", dtype: Any = None):
        super().__init__(name=name, dtype=dtype)
        self.scale = np.asarray(scale, np.float32).reshape(-1).tolist()

    def update_state(self, y_true, y_pred, sample_weight=None):
        scale = ops.convert_to_tensor(self.scale, "float32")
        y_true = ops.cast(y_true, "float32") * scale
        return super().update_state(y_true, ops.cast(y_pred, "float32") * scale, sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="kerasdiag")
class ScaledMeanAbsoluteError(_InTargetUnits, keras.metrics.MeanAbsoluteError):
    """MAE in the targets' units (``mae``)."""


@keras.saving.register_keras_serializable(package="kerasdiag")
class ScaledRootMeanSquaredError(_InTargetUnits, keras.metrics.RootMeanSquaredError):
    """RMSE in the targets' units (``rmse``)."""


def task_metrics(loss_cfg: Any, target_std: Any = None) -> list[Any]:
    """What a run reports beside its loss, as the task reads the outputs: ``accuracy``
    (argmax, or one logit above 0 for binary); multi-label: ``accuracy`` as the exact match
    of every label and ``label_accuracy``; regression: ``mae`` and ``rmse``, no accuracy, in
    the targets' units (``target_std``: the std the targets were divided by, if they were)."""
    task = loss_task(loss_cfg.name)
    threshold = 0.0 if loss_cfg.from_logits else 0.5
    if task == "regression":
        scale = 1.0 if target_std is None else target_std
        return [
            ScaledMeanAbsoluteError(scale, name="mae"),
            ScaledRootMeanSquaredError(scale, name="rmse"),
        ]
    if task == "multilabel":
        return [
            ExactMatch(threshold=threshold),
            keras.metrics.BinaryAccuracy(name="label_accuracy", threshold=threshold),
        ]
    return [accuracy_metric(loss_cfg)]


def accuracy_metric(loss_cfg: Any) -> Any:
    """``accuracy`` as the loss reads the outputs: argmax, or one logit above 0 (p > 0.5)."""
    if loss_cfg.name == "binary":
        threshold = 0.0 if loss_cfg.from_logits else 0.5
        return keras.metrics.BinaryAccuracy(name="accuracy", threshold=threshold)
    return "accuracy"


def predicted_classes(outputs: Any, loss_cfg: Any) -> Any:
    """Class indices from the model's outputs (one column: the binary threshold)."""
    outputs = np.asarray(outputs)
    if outputs.shape[-1] == 1:
        threshold = 0.0 if loss_cfg.from_logits else 0.5
        return (outputs[..., 0] > threshold).astype(np.int64)
    return np.argmax(outputs, axis=-1)


def build_loss(loss_cfg: Any) -> keras.losses.Loss:
    """The loss a recipe's ``loss`` section names (``schema.LOSSES``)."""
    if loss_cfg.name in ("binary", "multilabel"):
        # a sigmoid + binary cross-entropy per logit (ln 2 each at init), averaged over labels
        smoothing = float(loss_cfg.get("label_smoothing") or 0.0)
        return keras.losses.BinaryCrossentropy(
            from_logits=bool(loss_cfg.from_logits), label_smoothing=smoothing
        )
    if loss_cfg.name == "mse":
        return keras.losses.MeanSquaredError()
    if loss_cfg.name == "mae":
        return keras.losses.MeanAbsoluteError()
    if loss_cfg.name == "huber":
        return keras.losses.Huber(delta=float(loss_cfg.get("delta", 1.0)))
    if loss_cfg.name == "softmax":
        smoothing = float(loss_cfg.get("label_smoothing") or 0.0)
        if smoothing:
            if not 0 < smoothing < 1:
                raise ConfigError("loss.label_smoothing", smoothing, "must be in [0, 1)")
            return SparseSmoothedCrossentropy(smoothing, from_logits=bool(loss_cfg.from_logits))
        return keras.losses.SparseCategoricalCrossentropy(from_logits=bool(loss_cfg.from_logits))
    if loss_cfg.name == "multiclass_hinge":
        return MulticlassHinge(margin=float(loss_cfg.margin))
    if loss_cfg.name == "focal":
        return SparseCategoricalFocalLoss(
            gamma=float(loss_cfg.gamma),
            alpha=loss_cfg.alpha,
            from_logits=bool(loss_cfg.from_logits),
        )
    raise ConfigError("loss.name", loss_cfg.name, f"must be one of {', '.join(LOSSES)}")
