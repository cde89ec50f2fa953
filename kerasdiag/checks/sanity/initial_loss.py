"""Sanity stage: the untrained model's loss is the value its loss function predicts."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from kerasdiag.checks import weights
from kerasdiag.checks.sanity import _common as common
from kerasdiag.checks.sanity import outputs as outputs_io
from kerasdiag.checks.sanity.expected import (
    LossSpec,
    expected_initial_loss_with_reason,
    regression_initial_range,
)
from kerasdiag.checks.sanity.result import StageResult
from kerasdiag.checks.tasks import Task, class_indices, positives
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
    class_weight: Mapping[Any, float] | None = None,
) -> StageResult:
    """Compare the loss of a freshly initialised model with :func:`expected_initial_loss`.

    The loss is the data loss alone (regularization terms left out) in inference mode
    (dropout and augmentation off) on up to ``max_examples`` training examples. The
    expectation follows the task of each output (:mod:`kerasdiag.checks.tasks`):

    * multi-class: ln C for cross-entropy (label smoothing or not), the hinge and focal
      values of :func:`expected_initial_loss`;
    * binary and multi-label (independent sigmoids): ln 2 per label for binary
      cross-entropy, whatever the label priors;
    * regression (MSE, MAE, Huber, log-cosh): the loss of zero outputs, accepted between
      the best constant prediction's loss and that of outputs of unit order
      (:func:`~kerasdiag.checks.sanity.expected.regression_initial_range`);
    * several outputs (a list or dict of losses): each output on its own, the totals
      weighted by ``loss_weights``; an output whose loss the checks do not know is skipped
      with the reason.

    With weights (an ``(x, y, sample_weight)`` triple or ``class_weight``), the loss is the
    weighted one ``fit`` and ``evaluate`` report, ``sum(w_i * loss_i) / N`` under Keras'
    default reduction, and so is the expectation: each example's expected loss times its
    weight, averaged (for a loss equal on every example, ln C times the mean weight; class
    priors are each class's share of the weight). Examples of weight 0 count in ``N`` only,
    as in Keras; when every weight is 0 the check does not apply.

    It passes when the value lies within ``rtol`` (relative) of the expected value (the
    regression range widened by ``rtol``) and the model's outputs have the form the loss
    expects (logits for ``from_logits=True``, probabilities otherwise): a softmax applied
    twice gives a loss near ln C at initialisation, so only the outputs give it away. The
    message shows the value, the expectation and the accepted range. The model is not
    changed.

    Args:
        model: a compiled Keras model, as initialised (before any training).
        data: a kerasdiag ``Dataset`` (its training split is used), an ``(x, y)`` pair, an
            ``(x, y, sample_weight)`` triple or a ``tf.data.Dataset`` of them.
        loss: the loss to check; defaults to the one the model was compiled with.
        rtol: accepted relative distance from the expected value.
        max_examples: how many training examples to evaluate (None: all).
        class_priors: class shares for class-weighted losses; default: the data's.
        seed: picks the examples.
        class_weight: ``{class index: weight}`` as ``fit`` takes it (a single output).

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
    examples = common.training_examples(data, class_weight)
    y_all, num_classes = examples.y, examples.num_classes
    picked = common.weighted_subset(examples, max_examples, seed)
    x, y, w = picked.x, picked.y, picked.w
    names = outputs_io.output_names(model)
    predictions = common.predict_outputs(model, x)
    tasks = common.head_tasks(model, hs, y_all, [p.shape[-1] for p in predictions])
    verdicts = []
    for h, task in zip(hs, tasks, strict=True):
        y_head = np.asarray(outputs_io.as_list(y, names)[h.index])
        y_head_all = np.asarray(outputs_io.as_list(y_all, names)[h.index])
        verdicts.append(
            _judge(task, h.loss, predictions[h.index], y_head, y_head_all, num_classes, rtol,
                   class_priors, outputs_io.output_activation(model, h.index), w)
        )  # fmt: skip
    details = {
        "examples": outputs_io.count(x),
        "loss": ", ".join(h.spec.name if h.spec else str(h.loss) for h in hs),
        "rtol": rtol,
    }
    if w is not None:
        details["mean_sample_weight"] = float(np.mean(w))
    seconds = time.perf_counter() - start
    if len(hs) == 1:
        passed, value, expected, message, extra = verdicts[0]
        details.update(extra, task=tasks[0].describe())
        return StageResult("initial_loss", passed, value, expected, message, seconds, details)
    # Several outputs: each is judged on its own (or says why it cannot be); the totals carry
    # the loss weights when every output has an expectation.
    judged = [v[0] for v in verdicts if v[0] is not None]
    passed = None if not judged else all(judged)
    values, expectations = [v[1] for v in verdicts], [v[2] for v in verdicts]
    value = expected = None
    if all(v is not None for v in values + expectations):
        value = sum(h.weight * v for h, v in zip(hs, values, strict=True))
        expected = sum(h.weight * e for h, e in zip(hs, expectations, strict=True))
    details["outputs"] = {
        h.name: v[4] | {"value": v[1], "expected": v[2], "status": _status(v[0]),
                        "task": t.describe()}
        for h, v, t in zip(hs, verdicts, tasks, strict=True)
    }  # fmt: skip
    shown = [v for v in verdicts if v[0] is False] or verdicts
    message = "; ".join(
        f"output {h.name!r} (weight {h.weight:g}): {v[3]}"
        for h, v in zip(hs, verdicts, strict=True)
        if v in shown
    )
    return StageResult("initial_loss", passed, value, expected, message, seconds, details)


def _status(passed: bool | None) -> str:
    return "skip" if passed is None else ("pass" if passed else "fail")


def _judge(
    task: Task,
    loss: Any,
    outputs: np.ndarray,
    y: np.ndarray,
    y_all: np.ndarray,
    num_classes: int | None,
    rtol: float,
    class_priors: Any,
    activation: str | None = None,
    w: np.ndarray | None = None,
) -> tuple[bool | None, float | None, float | None, str, dict[str, Any]]:
    """(passed, value, expected, message, details) of one output and its loss; ``passed`` is
    None when no expectation applies (a loss the checks do not know). ``activation``: what
    the output layer applies last, when known (``output_activation``); ``w``: the examples'
    weights (None: unweighted)."""
    spec, width = task.spec, outputs.shape[-1]
    details: dict[str, Any] = {
        "outputs_mean": float(np.mean(outputs)),
        "outputs_std": float(np.std(outputs)),
    }

    def result(passed: bool | None, value: float | None, expected: float | None, message: str):
        return passed, value, expected, message, details

    if spec is None:
        return result(
            None,
            None,
            None,
            f"does not apply: no expected initial value is known for the loss {loss!r} "
            "(known: cross-entropy, focal, hinge, MSE, MAE, Huber, log-cosh)",
        )
    problem = _label_problem(task, width, y_all, num_classes)
    if problem is not None:
        return result(False, None, None, problem)
    if w is not None and not np.any(w > 0):
        return result(
            None,
            None,
            None,
            f"does not apply: every one of the {len(w)} examples checked has sample weight 0, "
            "so the weighted loss is 0 whatever the model outputs",
        )
    targets = common.loss_targets(spec, y, width)
    value = float(keras.ops.convert_to_numpy(common.loss_function(loss)(targets, outputs, w)))
    # What weights multiply an expected loss that is the same for every example by: the mean
    # weight under Keras' default reduction (sum(w_i l_i) / N).
    scale = weights.loss_scale(w, getattr(loss, "reduction", None))
    if spec.regression:
        w_eff = None if w is None else w * (scale / float(np.mean(w)))
        expected, low, high, reason = regression_initial_range(spec, targets, w_eff)
        accepted = (low * (1 - rtol), high * (1 + rtol))
    else:
        if w is None:
            classes, priors = _classes_and_priors(task, y_all, class_priors)
        else:
            classes, priors = _classes_and_priors(task, y, class_priors, w)
        expected, reason = expected_initial_loss_with_reason(spec, classes, priors)
        if w is not None:
            expected *= scale
            reason += (
                f", times {scale:.4g}, the mean sample weight (the loss is sum(w * loss) / N)"
                if scale != 1.0
                else ", weighted"
            )
        accepted = (expected * (1 - rtol), expected * (1 + rtol))
    details["accepted"] = [accepted[0], accepted[1]]
    shown = _numbers(value, expected, accepted)

    problem = _output_form_problem(spec, outputs, activation)
    if problem is not None:
        return result(False, value, expected, f"{shown}, but {problem}")
    if not np.isfinite(value):
        return result(
            False,
            value,
            expected,
            f"initial loss is {value} (expected {expected:.4g}, {reason}): the outputs "
            "overflow at initialisation. This usually means weights initialised far too "
            "large or inputs not normalised (e.g. raw 0-255 pixels).",
        )
    if accepted[0] <= value <= accepted[1]:
        return result(True, value, expected, f"{shown} ({reason})")
    if value > accepted[1]:
        scale = "far larger than an untrained model's" if spec.regression else "far from uniform"
        return result(
            False,
            value,
            expected,
            f"{shown} ({reason}): {value / expected:.2g}x the expected value; the outputs "
            f"(mean {np.mean(outputs):.3g}, std {np.std(outputs):.3g}) are {scale} at "
            "initialisation. This usually means weights initialised too large (initialise "
            "the output layer small, e.g. VarianceScaling(0.01)), inputs not normalised (zero "
            "mean, unit variance; e.g. raw 0-255 pixels), from_logits set wrongly, or a loss "
            "that does not fit the task.",
        )
    return result(
        False,
        value,
        expected,
        f"{shown} ({reason}): {1 - value / expected:.0%} below the expected value, the model "
        "is confident before any training. This usually means the labels leak into the "
        "inputs, a loss that does not fit the task (e.g. the wrong number of classes), or an "
        "output bias already set from the class priors.",
    )


def _label_problem(
    task: Task, width: int, y_all: np.ndarray, num_classes: int | None
) -> str | None:
    """Why the labels cannot belong to a classifier of ``width`` outputs, or None."""
    if task.kind == "multiclass":
        if width > 1 and num_classes is not None and width != num_classes:
            return f"the model has {width} outputs but the data has {num_classes} classes"
        labels = class_indices(y_all, task.labels)
        if labels.max(initial=0) >= max(width, 2):
            return f"the labels go up to {labels.max()} but the model has {width} output(s)"
    elif task.kind in {"binary", "multilabel"}:
        columns = int(np.prod(y_all.shape[1:])) if y_all.ndim > 1 else 1
        if columns != width:
            return f"the labels have {columns} column(s) but the model has {width} output(s)"
    return None


def _classes_and_priors(
    task: Task, y_all: np.ndarray, class_priors: Any, w: np.ndarray | None = None
) -> tuple[int, Any]:
    """The class count and class shares the expected value is computed from: the data's
    classes for multi-class; for binary and multi-label outputs, the share of labels on
    (over every label: a class-balanced binary focal loss is linear in it). With ``w``
    (weights of the examples ``y_all``), each class's share of the weight: every expected
    loss is linear in the priors, so the weighted mean of the examples' expected losses is
    the expected loss at the weighted priors."""
    if task.kind == "multiclass":
        if class_priors is None:
            # one class per position for a tagger's (N, T) labels, each weighing its example's w
            labels = class_indices(y_all, task.labels).reshape(len(y_all), -1)
            each = None if w is None else np.repeat(np.asarray(w), labels.shape[1])
            class_priors = weights.weighted_priors(labels.ravel(), each, task.width)
        return task.width, class_priors
    if class_priors is None:
        per_example = positives(y_all).reshape(len(y_all), -1).mean(axis=1)
        on = float(np.average(per_example, weights=w))
        class_priors = [1.0 - on, on]
    return 2, class_priors


def _numbers(value: float, expected: float, accepted: tuple[float, float]) -> str:
    """``initial loss V (expected E, accepted L..H)`` with enough digits that V and E differ
    on the page whenever they differ (never "2.303 expected 2.303" for a failure)."""
    v, e = _distinct(value, expected)
    return f"initial loss {v} (expected {e}, accepted {accepted[0]:.4g}..{accepted[1]:.4g})"


def _distinct(a: float, b: float) -> tuple[str, str]:
    for digits in range(4, 10):
        fa, fb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if fa != fb or a == b:
            return fa, fb
    return fa, fb


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
