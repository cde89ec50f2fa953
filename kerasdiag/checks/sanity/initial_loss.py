"""Sanity stage: the untrained model's loss is the value its loss function predicts."""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np

from kerasdiag.checks.sanity import _common as common
from kerasdiag.checks.sanity import outputs as outputs_io
from kerasdiag.checks.sanity.expected import LossSpec, expected_initial_loss_with_reason
from kerasdiag.checks.sanity.result import StageResult
from kerasdiag.core.activations import PROBABILITY

_CATEGORICAL = {"crossentropy", "focal"}


def check_initial_loss(
    model: keras.Model,
    data: Any,
    *,
    loss: Any = None,
    rtol: float = 0.25,
    max_examples: int | None = 512,
    class_priors: Any = None,
    seed: int = 0,
) -> StageResult:
    """Compare the loss of a freshly initialised model with :func:`expected_initial_loss`.

    The loss is the data loss alone (regularization terms left out) in inference mode
    (dropout and augmentation off) on up to ``max_examples`` training examples. It passes
    when it lies within ``rtol`` (relative) of the expected value and the model's outputs
    have the form the loss expects (logits for ``from_logits=True``, probabilities
    otherwise): a softmax applied twice gives a loss near ln C at initialisation, so only
    the outputs give it away. The model is not changed.

    Args:
        model: a compiled Keras model, as initialised (before any training).
        data: a kerasdiag ``Dataset`` (its training split is used) or an ``(x, y)`` pair.
        loss: the loss to check; defaults to the one the model was compiled with.
        rtol: accepted relative distance from the expected value.
        max_examples: how many training examples to evaluate (None: all).
        class_priors: class shares for class-weighted losses; default: the data's.
        seed: picks the examples.

    Example:

    ```python
    result = check_initial_loss(model, dataset)
    print(result.status, result.value, result.expected, result.message)
    ```
    """
    if not rtol > 0:
        raise ValueError(f"rtol must be positive, got {rtol!r}")
    start = time.perf_counter()
    hs = common.heads(model, loss)
    x_all, y_all, num_classes = common.training_arrays(data)
    x, y = common.subset(x_all, y_all, max_examples, seed)
    names = outputs_io.output_names(model)
    predictions = common.predict_outputs(model, x)
    verdicts = []
    for h in hs:
        y_head = np.asarray(outputs_io.as_list(y, names)[h.index])
        y_head_all = np.asarray(outputs_io.as_list(y_all, names)[h.index])
        verdicts.append(
            _judge(h.spec, h.loss, predictions[h.index], y_head, y_head_all, num_classes, rtol,
                   class_priors, outputs_io.output_activation(model, h.index))
        )  # fmt: skip
    details = {"examples": outputs_io.count(x), "loss": ", ".join(h.spec.name for h in hs)}
    seconds = time.perf_counter() - start
    if len(hs) == 1:
        passed, value, expected, message, extra = verdicts[0]
        details.update(extra)
        return StageResult("initial_loss", passed, value, expected, message, seconds, details)
    # Several outputs: each is judged on its own; the totals carry the loss weights.
    passed = all(v[0] for v in verdicts)
    values, expectations = [v[1] for v in verdicts], [v[2] for v in verdicts]
    value = expected = None
    if all(v is not None for v in values + expectations):
        value = sum(h.weight * v for h, v in zip(hs, values, strict=True))
        expected = sum(h.weight * e for h, e in zip(hs, expectations, strict=True))
    details["outputs"] = {h.name: v[4] | {"value": v[1], "expected": v[2]}
                          for h, v in zip(hs, verdicts, strict=True)}  # fmt: skip
    shown = [v for v in verdicts if not v[0]] or verdicts
    message = "; ".join(
        f"output {h.name!r} (weight {h.weight:g}): {v[3]}"
        for h, v in zip(hs, verdicts, strict=True)
        if v in shown
    )
    return StageResult("initial_loss", passed, value, expected, message, seconds, details)


def _judge(
    spec: LossSpec,
    loss: Any,
    outputs: np.ndarray,
    y: np.ndarray,
    y_all: np.ndarray,
    num_classes: int | None,
    rtol: float,
    class_priors: Any,
    activation: str | None = None,
) -> tuple[bool, float | None, float | None, str, dict[str, Any]]:
    """(passed, value, expected, message, details) of one output and its loss;
    ``activation``: what the output layer applies last, when known (``output_activation``)."""
    width = outputs.shape[-1]
    details = {
        "outputs_mean": float(np.mean(outputs)),
        "outputs_std": float(np.std(outputs)),
    }

    def result(passed: bool, value: float | None, expected: float | None, message: str):
        return passed, value, expected, message, details

    if width > 1 and num_classes is not None and width != num_classes:
        return result(
            False,
            None,
            None,
            f"the model has {width} outputs but the data has {num_classes} classes",
        )
    classes = common.classes_for(spec, width)
    labels = common.class_indices(y_all)
    if labels.max(initial=0) >= max(classes, 2):
        return result(
            False,
            None,
            None,
            f"the labels go up to {labels.max()} but the model has {width} output(s)",
        )
    if class_priors is None:
        class_priors = np.bincount(labels, minlength=max(classes, 2))
    expected, reason = expected_initial_loss_with_reason(spec, classes, class_priors)
    targets = common.loss_targets(spec, y, width)
    value = float(keras.ops.convert_to_numpy(common.loss_function(loss)(targets, outputs)))

    problem = _output_form_problem(spec, outputs, activation)
    if problem is not None:
        return result(False, value, expected, problem)
    if not np.isfinite(value):
        return result(
            False,
            value,
            expected,
            f"initial loss is {value} (expected {expected:.4g}, {reason}): the outputs "
            "overflow at initialisation. This usually means weights initialised far too "
            "large or inputs not normalised (e.g. raw 0-255 pixels).",
        )
    distance = abs(value - expected) / expected
    if distance <= rtol:
        return result(
            True,
            value,
            expected,
            f"initial loss {value:.4g} matches the expected {expected:.4g} ({reason}) "
            f"within {rtol:.0%}",
        )
    if value > expected:
        return result(
            False,
            value,
            expected,
            f"initial loss {value:.4g} is {value / expected:.2g}x the expected {expected:.4g} "
            f"({reason}): the outputs (std {np.std(outputs):.3g}) are far from uniform at "
            "initialisation. This usually means weights initialised too large (initialise "
            "the output layer small, e.g. VarianceScaling(0.01)), inputs not normalised (zero "
            "mean, unit variance; e.g. raw 0-255 pixels), from_logits set wrongly, or a loss "
            "that does not fit the task.",
        )
    return result(
        False,
        value,
        expected,
        f"initial loss {value:.4g} is {distance:.0%} below the expected {expected:.4g} "
        f"({reason}): the model is confident before any training. This usually means the "
        "labels leak into the inputs, a loss that does not fit the task (e.g. the wrong "
        "number of classes), or an output bias already set from the class priors.",
    )


def _output_form_problem(
    spec: LossSpec, outputs: np.ndarray, activation: str | None = None
) -> str | None:
    """Why the outputs cannot be what the loss takes (logits vs probabilities), or None.

    With ``from_logits=True``, the output layer's own activation decides when it is known: a
    sigmoid or softmax output gives probabilities, any other gives logits, whatever range the
    first outputs fall in (a small-initialised logit layer's outputs can all lie in (0, 1):
    once read as "sigmoid applied twice", a false alarm). Only a model whose last layer says
    nothing is judged by the numbers."""
    if spec.from_logits is None or outputs.size == 0:
        return None
    low, high = float(np.min(outputs)), float(np.max(outputs))
    categorical = spec.kind in _CATEGORICAL and outputs.shape[-1] > 1
    row_sums = np.sum(outputs, axis=-1)
    normalised = bool(np.all(np.abs(row_sums - 1.0) < 1e-3))
    if spec.from_logits:
        if activation is not None:
            probabilities = activation in PROBABILITY
        else:
            probabilities = (
                low >= 0.0 and high <= 1.0 and normalised
                if categorical
                else low > 0.0 and high < 1.0
            )
        if probabilities:
            form = (
                f"the output layer applies {activation}"
                if activation is not None
                else "each row in [0, 1] summing to 1"
                if categorical
                else "all within (0, 1)"
            )
            return (
                f"the model's outputs are already probabilities ({form}) but {spec.name} has "
                "from_logits=True: softmax/sigmoid is applied twice, which keeps the initial "
                "loss near its expected value but stops it from ever approaching 0. Remove "
                "the output activation or set from_logits=False."
            )
        return None
    if low < -1e-6 or high > 1.0 + 1e-6 or (categorical and not normalised):
        return (
            f"{spec.name} has from_logits=False, so it expects probabilities, but the model's "
            f"outputs are not (range [{low:.3g}, {high:.3g}], row sums "
            f"{float(np.min(row_sums)):.3g}..{float(np.max(row_sums)):.3g}). Set "
            "from_logits=True or end the model with a softmax/sigmoid."
        )
    return None
