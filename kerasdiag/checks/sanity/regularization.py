"""Sanity stage: raising the regularization strength raises the loss."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np

from kerasdiag.checks.sanity import _common as common
from kerasdiag.checks.sanity import outputs
from kerasdiag.checks.sanity.result import StageResult


def check_regularization_raises_loss(
    model: keras.Model,
    data: Any,
    *,
    unregularized: keras.Model | None = None,
    stronger: keras.Model | None = None,
    factor: float = 10.0,
    loss: Any = None,
    max_examples: int | None = 256,
    seed: int = 0,
    class_weight: Mapping[Any, float] | None = None,
) -> StageResult:
    """Check that the total loss (data loss + ``model.losses``) grows with regularization.

    Three models with the same weights are compared in inference mode on the same examples:
    one without regularization, ``model`` as configured, and one with stronger regularization.
    The check passes when the loss rises from each to the next. When it does not, the
    regularizer never reaches the loss (not attached to the layers, or a training loss that
    ignores ``model.losses``).

    By default the other two are copies of ``model`` with every layer regularizer (kernel,
    bias, activity, ...) scaled by 0 and by ``factor``. A caller that builds models from a
    config passes its own ``unregularized`` and ``stronger`` builds instead, which also tests
    that the config reaches the layers; they receive ``model``'s weights when the shapes
    match. If ``model`` itself has no regularization, the check compares ``stronger`` (when
    given) with ``unregularized`` only, and is skipped otherwise. ``model`` is not changed.

    ``data``: a kerasdiag ``Dataset``, an ``(x, y)`` pair or an ``(x, y, sample_weight)``
    triple (or a ``tf.data.Dataset`` of them); with weights (or ``class_weight=``) the data
    loss is the weighted one ``fit`` minimises. It is the same in the three models, so the
    verdict reads the penalty: examples of weight 0 cannot change it.

    Example:

    ```python
    result = check_regularization_raises_loss(model, dataset)
    assert result.passed, result.message
    ```
    """
    if not factor > 1:
        raise ValueError(f"factor must be greater than 1, got {factor!r}")
    start = time.perf_counter()
    with common.preserved_random_state():
        sub = common.loss_subset(model, data, loss, max_examples, seed, class_weight)
        hs, names, x, targets = sub.heads, sub.names, sub.x, sub.targets
        loss_fn = common.weighted_loss(hs, names)
        probe = stronger is not None

        def total(m: keras.Model) -> tuple[float, float]:
            out = m(x, training=False)
            data_loss = float(keras.ops.convert_to_numpy(loss_fn(targets, out, sub.w)))
            penalty = sum(float(keras.ops.convert_to_numpy(t)) for t in m.losses)
            return data_loss + penalty, penalty

        def total_of(given: keras.Model | None, scale: float) -> tuple[float, float]:
            if given is not None:
                _share_weights(model, given)
                return total(given)
            with _scaled(model, scale) as scaled:
                return total(scaled)

        none, none_penalty = total_of(unregularized, 0.0)
        configured, configured_penalty = total(model)
        strong, strong_penalty = total_of(stronger, factor)

    details = {
        "loss_none": none,
        "loss_configured": configured,
        "loss_stronger": strong,
        "penalty_none": none_penalty,
        "penalty_configured": configured_penalty,
        "penalty_stronger": strong_penalty,
        "factor": factor,
        "examples": outputs.count(x),
    }
    seconds = time.perf_counter() - start
    summary = (
        f"{none:.5g} (none), {configured:.5g} (configured), {strong:.5g} (stronger); "
        f"penalties {none_penalty:.4g}, {configured_penalty:.4g}, {strong_penalty:.4g}"
    )
    regularized = configured_penalty > 0.0
    if not regularized and not probe:
        return StageResult(
            "regularization",
            None,
            configured,
            none,
            "the model has no regularization (no layer has a regularizer): nothing to check",
            seconds,
            details,
        )
    # Judged on the penalties: the data loss is the same in the three models (same weights,
    # same examples), and next to a large one (MSE on raw targets: 2.9e4) a penalty of 0.01
    # is lost in its float32 rounding.
    rises = strong_penalty > (configured_penalty if regularized else none_penalty) and (
        configured_penalty > none_penalty or not regularized
    )
    if rises:
        what = "the loss rises with regularization"
        if not regularized:
            what = "no regularization configured; a stronger probe raises the loss"
        return StageResult(
            "regularization", True, configured, none, f"{what}: {summary}", seconds, details
        )
    return StageResult(
        "regularization",
        False,
        configured,
        none,
        f"the loss does not rise with the regularization strength: {summary}. The "
        "regularization never reaches the loss: check that the model builder attaches the "
        "regularizer to its layers (kernel_regularizer) and that the loss includes "
        "model.losses.",
        seconds,
        details,
    )


def _share_weights(source: keras.Model, target: keras.Model) -> None:
    weights = source.get_weights()
    if [w.shape for w in weights] == [np.shape(w) for w in target.get_weights()]:
        target.set_weights(weights)


class _Scaled(keras.regularizers.Regularizer):
    """``scale`` times another regularizer."""

    def __init__(self, inner: keras.regularizers.Regularizer, scale: float):
        self.inner = inner
        self.scale = scale

    def __call__(self, x: Any) -> Any:
        return self.scale * self.inner(x)

    def get_config(self) -> dict:
        return {"inner": keras.regularizers.serialize(self.inner), "scale": self.scale}


@contextlib.contextmanager
def _scaled(model: keras.Model, scale: float) -> Iterator[keras.Model]:
    """``model`` or a copy of it with every weight and activity regularizer times ``scale``
    (0: none), for the ``with`` block.

    Keras keeps a weight's regularizer on the variable (``variable.regularizer``) and the
    activity regularizer on the layer, so both are replaced: on a copy when the model can be
    copied, else on ``model`` itself (a subclassed model, a custom layer without
    ``get_config``), whose regularizers are put back when the block ends.
    """
    try:
        target = common.copy_model(model)
    except common.CannotCopy:
        target = model
    saved: list[tuple[Any, str, Any]] = [
        (variable, "regularizer", variable.regularizer)
        for variable in target.weights
        if getattr(variable, "regularizer", None) is not None
    ]
    saved += [
        (layer, "activity_regularizer", layer.activity_regularizer)
        for layer in target._flatten_layers()
        if getattr(layer, "activity_regularizer", None) is not None
    ]
    try:
        for owner, attribute, reg in saved:
            setattr(owner, attribute, _Scaled(reg, scale) if scale else None)
        yield target
    finally:
        for owner, attribute, reg in saved:
            setattr(owner, attribute, reg)
