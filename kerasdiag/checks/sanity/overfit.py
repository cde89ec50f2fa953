"""Sanity stage: the model can memorise a handful of examples."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.checks.sanity import _common as common
from kerasdiag.checks.sanity import outputs
from kerasdiag.checks.sanity.expected import regression_initial_range
from kerasdiag.checks.sanity.result import StageResult
from kerasdiag.checks.tasks import Task, label_accuracy
from kerasdiag.checks.tasks import accuracy as task_accuracy
from kerasdiag.checks.traced import like_fit


def overfit_small_subset(
    model: keras.Model,
    data: Any,
    *,
    num_examples: int = 20,
    max_steps: int = 300,
    loss: Any = None,
    optimizer: Any = None,
    loss_fraction: float = 0.05,
    seed: int = 0,
    class_weight: Mapping[Any, float] | None = None,
) -> StageResult:
    """Train a copy of ``model`` on ``num_examples`` training examples until it memorises them.

    Memorised means training accuracy 100% (every classification output) and a loss at most
    ``loss_fraction`` times the loss the copy started from, reached within ``max_steps``
    full-batch steps (e.g. 2.30 -> below 0.115 for 10-class cross-entropy); the result
    reports the steps it took. A model that cannot do this has a bug worth fixing before
    any real training: frozen layers, a learning rate far too low, a loss that cannot reach
    0 (softmax applied twice), labels that do not belong to their inputs, or too little
    capacity.

    The copy trains on the data loss alone (regularization off; several outputs: their
    losses weighted by ``loss_weights``), in the mode ``fit`` trains in where it matters:
    a model with BatchNormalization trains in training mode (batch statistics; dropout is
    then on too), any other in inference mode (dropout, noise and augmentation off). The
    optimizer is a fresh one configured like the model's, a schedule at its peak rate (or
    ``optimizer``). ``model``, its optimizer and the global random state are left as they were.

    With weights (an ``(x, y, sample_weight)`` triple or ``class_weight=``, as ``fit`` takes
    them), the copy trains on the weighted loss ``fit`` minimises and the loss target is of
    that loss; the examples are drawn from those of weight > 0, since an example of weight 0
    adds nothing to the loss and no optimizer is asked to memorise it. When every example has
    weight 0 the check does not apply.

    Example:

    ```python
    result = overfit_small_subset(model, dataset, num_examples=20, max_steps=300)
    print(result.message)  # e.g. "memorised 20 examples in 74 steps: ..."
    ```
    """
    if num_examples < 1:
        raise ValueError(f"num_examples must be at least 1, got {num_examples!r}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps!r}")
    if not 0 < loss_fraction < 1:
        raise ValueError(f"loss_fraction must be in (0, 1), got {loss_fraction!r}")
    start = time.perf_counter()
    with common.preserved_random_state(), contextlib.ExitStack() as stack:
        try:
            sub = common.loss_subset(
                model, data, loss, num_examples, seed, class_weight, weighted_only=True
            )
        except common.NoWeight as exc:
            return StageResult(
                "overfit", None, None, None, f"does not apply: {exc}", time.perf_counter() - start
            )
        hs, names, x, y, targets, tasks = sub.heads, sub.names, sub.x, sub.y, sub.targets, sub.tasks
        ys = [np.asarray(outputs.as_list(y, names)[h.index]) for h in hs]
        # A copy, or the original with its state put back (a model that cannot be copied)
        clone = stack.enter_context(common.training_copy(model, outputs.take(x, slice(0, 1))))
        trainable = list(clone.trainable_variables)
        training = outputs.uses_batch_statistics(model)
        details: dict[str, Any] = {
            "examples": outputs.count(x), "max_steps": max_steps, "training_mode": training,
            "tasks": [t.describe() for t in tasks],
        }  # fmt: skip
        if not trainable:
            return StageResult(
                "overfit",
                False,
                None,
                None,
                "the model has no trainable weights (every layer is frozen): training cannot "
                "change it. Set layer.trainable = True for the layers that should learn.",
                time.perf_counter() - start,
                details,
            )
        if optimizer is None:
            optimizer = common.fresh_optimizer(model)
        weights = [h.weight for h in hs]
        history = _fit(
            clone,
            keras.optimizers.get(optimizer),
            common.head_losses(hs, names),
            weights,
            x,
            targets,
            max_steps,
            training,
            sub.w,
            compiled=model,
        )
        steps = diverged = first = goals = still_learning = None
        converging: list[bool] = []
        trace: list[list[float]] = []
        parts: list[float] = []
        accs: list[float | None] = []
        for step, (parts, outs) in enumerate(history):
            value = float(sum(w * p for w, p in zip(weights, parts, strict=True)))
            accs = [
                task_accuracy(t, outs[h.index], yh) for h, t, yh in zip(hs, tasks, ys, strict=True)
            ]
            if goals is None:
                first = parts
                goals = [
                    _goal(t, tg, p, loss_fraction, sub.w)
                    for t, tg, p in zip(tasks, targets, parts, strict=True)
                ]
            if not math.isfinite(value):
                diverged = step
                break
            done = [
                p <= goal and (a is None or a == 1.0)
                for p, (goal, _), a in zip(parts, goals, accs, strict=True)
            ]
            trace.append(parts)
            if all(done):
                steps = step
                break
        else:
            # The budget ran out: an output classifying every example right whose loss is
            # still falling fast has memorised them and only converges slowly (Adam at 1e-3
            # on two classes: -32% over the last 50 steps); a loss that cannot reach its
            # floor (softmax applied twice) has stalled (-4%).
            converging = [
                d or _still_falling(t, [row[k] for row in trace], a)
                for k, (t, d, a) in enumerate(zip(tasks, done, accs, strict=True))
            ]
            if all(converging):
                steps = len(trace) - 1
            else:
                # Not there yet but still learning fast (an LSTM at Adam's 1e-3 needs ~1300
                # steps): the budget, not the model, ran out, so the data cannot decide.
                more = [
                    0 if d else _steps_to_goal(t, [row[k] for row in trace], goal)
                    for k, (t, d, (goal, _)) in enumerate(zip(tasks, done, goals, strict=True))
                ]
                if all(m is not None for m in more):
                    still_learning = max(m for m in more if m is not None)
        first_loss = float(sum(w * p for w, p in zip(weights, first, strict=True)))
        target = float(sum(w * g for w, (g, _) in zip(weights, goals, strict=True)))
        known = [a for a in accs if a is not None]
        acc = min(known) if known else None
        details.update(steps=steps, initial_loss=first_loss, accuracy=acc, target=target)
        details["still_falling"] = bool(converging and all(converging))
        details["outputs"] = {
            h.name: {"task": t.describe(), "initial_loss": f, "loss": p, "target": g,
                     "accuracy": a, "label_accuracy": label_accuracy(t, outs[h.index], yh)}
            for h, t, yh, f, p, (g, _), a
            in zip(hs, tasks, ys, first, parts, goals, accs, strict=True)
        }  # fmt: skip
        n = outputs.count(x)

    seconds = time.perf_counter() - start
    summary = "; ".join(
        (f"output {h.name!r}: " if len(hs) > 1 else "")
        + f"loss {f:.4g} -> {p:.4g} (target <= {g:.3g}: {why})"
        + (f", training {_accuracy_name(t)} {a:.0%}" if a is not None else "")
        for h, t, f, p, (g, why), a in zip(hs, tasks, first, parts, goals, accs, strict=True)
    )
    if steps is not None:
        return StageResult(
            "overfit",
            True,
            value,
            target,
            f"memorised {n} examples in {steps} steps: {summary}"
            + (
                f"; every example is classified right and the loss still falls by more than "
                f"{1 - FALLING_RATIO:.0%} every {FALLING_WINDOW} steps: not stuck at a floor"
                if details["still_falling"]
                else ""
            ),
            seconds,
            details,
        )
    if diverged is not None:
        return StageResult(
            "overfit",
            False,
            value,
            target,
            f"the loss became {value} after {diverged} steps on {n} examples: training "
            "diverges, usually a learning rate far too high.",
            seconds,
            details,
        )
    # Still learning, but with a measured cause (regression targets far from unit scale, the
    # output learning to reach them at the rate's pace): a failure with its fix, below.
    if still_learning is not None and not _target_scale_hint(tasks, targets):
        return StageResult(
            "overfit",
            None,
            value,
            target,
            f"inconclusive: {n} examples not memorised in {max_steps} steps, but the loss still "
            f"falls by more than {1 - LEARNING_RATIO:.0%} every {FALLING_WINDOW} steps: {summary}; "
            f"at this rate about {max_steps + still_learning} steps would decide (max_steps; sanity.overfit_max_steps in a run).",
            seconds,
            details,
            inconclusive=True,
        )
    return StageResult(
        "overfit",
        False,
        value,
        target,
        f"could not memorise {n} examples in {max_steps} steps: {summary}. A model must "
        "fit a handful of examples before the full set is worth training. Usual causes: "
        "frozen layers, a learning rate far too low, a loss that cannot reach 0 (e.g. softmax "
        "applied twice), labels that do not belong to their inputs, or too little capacity."
        + _target_scale_hint(tasks, targets),
        seconds,
        details,
    )


# An output at 100% accuracy whose loss above its floor still falls to at most FALLING_RATIO
# of its value FALLING_WINDOW steps before is converging, not stalled (healthy: 0.54-0.69 over
# 50 steps; softmax or sigmoid applied twice: 0.95-0.99).
FALLING_WINDOW = 50
FALLING_RATIO = 0.8


# An output not yet memorised whose loss above its floor still falls to at most LEARNING_RATIO
# of its value FALLING_WINDOW steps before, on a pace that reaches the goal within
# LEARNING_HORIZON times the budget, is still learning: the budget ran out, not the model
# (an LSTM tagger at Adam's 1e-3: 0.84 per 50 steps, memorised at step 1271). Stalled models
# fall slower: softmax applied twice 0.95-0.97, 2 hidden units 0.95, Adam at 1e-4 0.96, at 1e-5
# 0.995, SGD at 1e-3 0.98 (digits MLP, 20 examples, 300 steps).
LEARNING_RATIO = 0.9
LEARNING_HORIZON = 10


def _still_falling(task: Task, losses: list[float], accuracy: float | None) -> bool:
    """Whether a classifying output gets every example right and its loss is still falling
    fast towards its floor at the end of the budget."""
    if not task.classifies or accuracy != 1.0:
        return False
    window = _last_window(task, losses)
    return window is not None and window[0] > 0 and window[1] <= FALLING_RATIO * window[0]


def _last_window(task: Task, losses: list[float]) -> tuple[float, float] | None:
    """The loss above its floor ``FALLING_WINDOW`` steps before the end and at the end
    (None for a budget shorter than the window)."""
    if len(losses) <= FALLING_WINDOW:
        return None
    floor = task.loss_floor
    return losses[-1 - FALLING_WINDOW] - floor, losses[-1] - floor


def _steps_to_goal(task: Task, losses: list[float], goal: float) -> int | None:
    """The steps a loss still falling fast towards its floor needs to reach ``goal`` at its
    rate over the last window (None when it is not falling that fast: stalled)."""
    window = _last_window(task, losses)
    if window is None or not all(map(math.isfinite, losses[-FALLING_WINDOW:])):
        return None
    (before, now), aim = window, goal - task.loss_floor
    if before <= 0 or now <= 0 or aim <= 0 or now > LEARNING_RATIO * before:
        return None
    if aim >= now:
        return 0
    more = math.ceil(FALLING_WINDOW * math.log(aim / now) / math.log(now / before))
    return more if more <= LEARNING_HORIZON * len(losses) else None


def _goal(
    task: Task, targets: Any, start: float, fraction: float, w: np.ndarray | None = None
) -> tuple[float, str]:
    """The loss an output must reach to count as memorised, and why, by its task:

    * regression: ``fraction`` of the loss of the best constant prediction (var(y) for
      MSE), i.e. it explains all but ``fraction`` of the targets' spread;
    * classification: ``fraction`` of the way from the floor to the start, the floor being
      the smoothed target's entropy under label smoothing (0.50 for 10 classes at 0.1),
      which no model goes below at 100% accuracy;
    * a loss the checks do not know: ``fraction`` of the start.

    ``w``: the examples' weights, as the loss weighs them (the best constant's loss too).
    """
    if task.kind == "regression" and task.spec is not None:
        reference = regression_initial_range(task.spec, targets, w)[1]
        if reference > 0:
            return fraction * reference, (
                f"{fraction:.0%} of the best constant prediction's {reference:.4g}"
            )
    floor = task.loss_floor
    if floor and start > floor:
        return floor + fraction * (start - floor), (
            f"{fraction:.0%} of the way from the start to {floor:.3g}, the lowest loss "
            f"label smoothing {task.spec.label_smoothing:g} allows"
        )
    return fraction * start, f"{fraction:.0%} of the start"


# Regression targets whose spread exceeds this many output units take an optimizer that
# moves each weight by about the learning rate per step (Adam) thousands of steps to reach.
TARGET_SCALE = 10.0


def _target_scale_hint(tasks: list[Task], targets: list[Any]) -> str:
    """For a regression output with targets far from unit scale: say so (it is the cause)."""
    for task, t in zip(tasks, targets, strict=True):
        scale = float(np.sqrt(np.mean(np.square(np.asarray(t, dtype=np.float64)))))
        if task.kind == "regression" and scale > TARGET_SCALE:
            return (
                f" Here the regression targets have a scale (root mean square) of {scale:.4g} "
                "while an initialised output is of unit order: standardise the targets "
                "(subtract their mean, divide by their std) and undo it on the predictions."
            )
    return ""


def _accuracy_name(task: Task) -> str:
    return "exact match (every label right)" if task.kind == "multilabel" else "accuracy"


def _fit(
    model: keras.Model,
    optimizer: Any,
    head_losses: Any,
    weights: list[float],
    x: Any,
    y: list[Any],
    steps: int,
    training: bool,
    sample_weight: np.ndarray | None = None,
    *,
    compiled: keras.Model,
):
    """Yield ``(loss of each head, outputs per output)`` before each of ``steps`` full-batch
    updates of the weighted sum, then once after (in the mode the updates run in); with
    ``sample_weight``, each head's loss weighs the examples as ``fit`` does. The steps run
    as ``fit`` runs those of ``compiled`` (the user's model; :func:`like_fit`)."""
    names = outputs.output_names(model)
    variables = list(model.trainable_variables)
    x_t = keras.tree.map_structure(tf.constant, x)
    y_t = [tf.constant(t) for t in y]
    w_t = None if sample_weight is None else tf.constant(sample_weight, tf.float32)

    def evaluate():
        out = outputs.as_list(model(x_t, training=training), names)
        return head_losses(y_t, out, w_t), out

    def step():
        with tf.GradientTape() as tape:
            parts, out = evaluate()
            value = tf.add_n([w * p for w, p in zip(weights, parts, strict=True)])
        grads = tape.gradient(value, variables)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        )
        return parts, out

    forward, step = like_fit(evaluate, compiled), like_fit(step, compiled)
    for _ in range(steps):
        parts, out = step()
        yield [float(p) for p in parts], [o.numpy() for o in out]
    parts, out = forward()
    yield [float(p) for p in parts], [o.numpy() for o in out]
