"""Sanity stage: the model uses its input (an input-independent baseline).

Train the model briefly twice from the same initial weights: once on the real inputs, once
on inputs set to zero (the training mean, after normalisation). With zeros a model can learn
only the class priors; with the real inputs it must do clearly better. When it does not, the
inputs never reach the output in a useful way: a bug, not a tuning problem.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.checks.sanity import _common as common
from kerasdiag.checks.sanity import outputs as outputs_io
from kerasdiag.checks.sanity.outputs import uses_batch_statistics
from kerasdiag.checks.sanity.result import StageResult
from kerasdiag.checks.tasks import accuracy as task_accuracy
from kerasdiag.checks.traced import like_fit
from kerasdiag.diagnosis.symptoms import INPUT_UNUSED_FIX


def check_input_dependence(
    model: keras.Model,
    data: Any,
    *,
    steps: int = 60,
    batch_size: int = 32,
    margin: float = 0.1,
    loss: Any = None,
    optimizer: Any = None,
    seed: int = 0,
    class_weight: Mapping[Any, float] | None = None,
    more_steps: int = 5,
) -> StageResult:
    """Does the model do clearly better with its inputs than with zeros?

    Two copies of ``model`` train ``steps`` steps on the same batches of training examples
    (inference mode: dropout and augmentation off; training mode for a BatchNormalization
    model, which trains and is scored on batch statistics), one on the real inputs and one
    on zeros.
    The real copy is scored on the validation split (the training examples when there is
    none), the zero copy on zeros; the check passes when the real loss is at most
    ``1 - margin`` times the zero-input loss, or, for a classifier, when its accuracy is
    above the zero-input one by more than ``ACCURACY_Z`` standard errors (a two-proportion
    z-test on the examples scored), or when its loss is lower example by example by more
    than ``ACCURACY_Z`` standard errors of the paired differences (what a regression model
    shows: no accuracy, and a loss that falls less than 10% in 60 steps). Each shows the
    input reaching the output: a hard data set (CIFAR-10) can double its accuracy in 60
    steps while its loss falls less than 10%. Several outputs train and are scored on the
    weighted sum of their losses, as ``fit`` trains them.

    Args:
        model: a compiled model (its loss and optimizer settings are used); unchanged.
        data: a kerasdiag ``Dataset``, an ``(x, y)`` pair, an ``(x, y, sample_weight)``
            triple or a ``tf.data.Dataset`` of them.
        steps, batch_size: the brief training of each copy.
        margin: how much lower the real-input loss must be (0 < margin < 1).
        loss, optimizer: override the model's compiled loss / a fresh copy of its optimizer
            (a learning-rate schedule replaced by its peak rate, ``fresh_optimizer``).
        seed: seeds the batches.
        class_weight: ``{class index: weight}`` as ``fit`` takes it.
        more_steps: before a failure, the copies train again ``more_steps`` times as many
            steps (1: never). A deep net from scratch on a few hundred examples gains nothing
            on held-out examples in 60 steps, exactly as with labels that do not belong to
            their inputs (keras.applications' MobileNetV2 on 307 CIFAR images: 7.8% against
            13.7% with zeros); at 300 steps it gains, or the data cannot decide, while random
            labels still gain nothing. Only a failing model pays for the longer run.

    The copies are also scored after a third and two thirds of ``steps``: a gain already
    ``INTERIM_Z`` (4) standard errors clear passes there, and ``details["steps"]`` says how
    many steps were trained. Only a pass ends early.

    With weights, both copies train on the weighted loss ``fit`` minimises. Without a
    validation split they are scored on the training examples of weight > 0 with their
    weights (the losses and the paired differences weighted, the accuracy over those
    examples); a validation split is scored unweighted, as ``fit`` scores it. When every
    example has weight 0 the check does not apply.
    """
    if more_steps < 1:
        raise ValueError(f"more_steps must be >= 1. Received: {more_steps!r}")
    kwargs = dict(batch_size=batch_size, margin=margin, loss=loss, optimizer=optimizer,
                  seed=seed, class_weight=class_weight)  # fmt: skip
    result = _input_dependence(model, data, steps=steps, **kwargs)
    if result.status != "fail" or more_steps == 1:
        return result
    longer = _input_dependence(model, data, steps=steps * more_steps, **kwargs)
    longer.seconds += result.seconds
    longer.details["first_try"] = {"steps": steps, "message": result.message}
    if longer.status != "fail":
        longer.message += f" (after {steps} steps it had shown no gain: {steps * more_steps} tried)"
    return longer


def _input_dependence(
    model: keras.Model,
    data: Any,
    *,
    steps: int,
    batch_size: int,
    margin: float,
    loss: Any,
    optimizer: Any,
    seed: int,
    class_weight: Mapping[Any, float] | None,
) -> StageResult:
    """One comparison of :func:`check_input_dependence`, with ``steps`` steps of training."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1. Received: {steps!r}, {batch_size!r}")
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1). Received: {margin!r}")
    start = time.perf_counter()
    with common.preserved_random_state():
        names = outputs_io.output_names(model)
        hs = common.heads(model, loss)
        examples = common.training_examples(data, class_weight)
        x, y, w = examples.x, examples.y, examples.w
        if w is not None and not np.any(w > 0):
            return StageResult(
                "input_baseline",
                None,
                message="does not apply: every example has sample weight 0, so the weighted "
                "loss is 0 whatever the inputs",
                seconds=time.perf_counter() - start,
            )
        if getattr(data, "x_val", None) is not None and len(data.x_val):
            scored_on = common.Examples(np.asarray(data.x_val), np.asarray(data.y_val))
        else:
            scored_on = examples
        picked = common.weighted_subset(scored_on, 512, seed, weighted_only=True)
        x_eval, y_eval, w_eval = picked.x, picked.y, picked.w
        widths = [
            o.shape[-1] for o in common.predict_outputs(model, outputs_io.take(x, slice(0, 1)))
        ]
        tasks = common.head_tasks(model, hs, y, widths)
        y_fit = common.head_targets(hs, y, widths, names)
        t_eval = common.head_targets(hs, y_eval, widths, names)
        loss_fn = common.weighted_loss(hs, names)
        rng, n = np.random.default_rng(seed), outputs_io.count(x)
        batches = [rng.choice(n, size=min(batch_size, n), replace=False) for _ in range(steps)]
        names_ = ("real", "zero")
        # One template (a schedule's peak is found once), one stateless copy per model copy.
        template = (
            common.fresh_optimizer(model) if optimizer is None else keras.optimizers.get(optimizer)
        )
        optimizers = {name: type(template).from_config(template.get_config()) for name in names_}
        # A BatchNormalization model trains on batch statistics, as fit trains it, and is
        # scored on them too: after 60 steps its moving statistics (momentum 0.99) are still
        # mostly their initial 0 and 1, and a deep BN net scored on them predicts one class
        # (keras.applications' MobileNetV2: 10.4% against 12.9% with zeros, a false alarm;
        # 20.5% on batch statistics).
        training = uses_batch_statistics(model)

        def fit_batch(b: np.ndarray) -> tuple:
            # Taken as each step comes, not all up front: a pass at an interim look never
            # reads the rest, and the longer run's 300 batches are never held at once.
            return outputs_io.take(x, b), [t[b] for t in y_fit], None if w is None else w[b]

        inputs = {"real": x_eval, "zero": keras.tree.map_structure(np.zeros_like, x_eval)}
        # The accuracy of a model with one classifying output, by its task's measure.
        scored = hs[0] if len(hs) == 1 and tasks[0].classifies else None
        y_scored = None if scored is None else outputs_io.as_list(y_eval, names)[scored.index]

        def score(trained: keras.Model, name: str) -> tuple[float, float | None, np.ndarray]:
            outs = common.predict_outputs(trained, inputs[name], training=training)
            value = float(loss_fn(t_eval, outs, w_eval))
            acc = None
            if scored is not None:
                acc = task_accuracy(tasks[0], outs[scored.index], y_scored)
                right[name] = per_example_right(tasks[0], outs[scored.index], y_scored)
            return value, acc, common.per_example_loss(hs, t_eval, outs, w_eval)

        right: dict[str, np.ndarray] = {}

        try:
            copies = {name: common.copy_model(model) for name in names_}
        except common.CannotCopy:
            copies = None
        if copies is not None:  # both copies train in one traced step
            step, done = _stepper(copies, optimizers, loss_fn, training, model), 0
            # Looked at after a third and two thirds of the steps too: a model whose gain is
            # already beyond doubt (INTERIM_Z) stops there. Only a pass ends early; a model
            # that shows nothing trains every step before it is judged.
            for look in sorted({max(1, steps // 3), max(1, 2 * steps // 3), steps}):
                for b in batches[done:look]:
                    step(fit_batch(b))
                done = look
                scores = {name: score(copies[name], name) for name in names_}
                if look < steps and _clear_gain(scores, len(y_eval)):
                    break
            steps = done
        else:  # the original trains twice, its state put back after each
            scores = {}
            for name in names_:
                with common.training_copy(model, outputs_io.take(x, slice(0, 1))) as trained:
                    _train({name: trained}, {name: optimizers[name]}, loss_fn,
                           map(fit_batch, batches), training, model)  # fmt: skip
                    scores[name] = score(trained, name)
    (real, real_acc, real_each), (zero, zero_acc, zero_each) = scores["real"], scores["zero"]
    loss_z = paired_z(zero_each - real_each)
    z = accuracy_z(real_acc, zero_acc, len(y_eval))
    details = {
        "steps": steps,
        "batch_size": batch_size,
        "evaluated_on": "validation" if scored_on is not examples else "training",
        "real_loss": real,
        "zero_loss": zero,
        "real_accuracy": real_acc,
        "zero_accuracy": zero_acc,
        "margin": margin,
        "accuracy_z": z,
        "loss_z": loss_z,
    }
    summary = f"after {steps} steps: loss {real:.4g} with the inputs, {zero:.4g} with zeros"
    if real_acc is not None and zero_acc is not None:
        summary += f" (accuracy {real_acc:.1%} vs {zero_acc:.1%})"
    seconds = time.perf_counter() - start
    by_loss = math.isfinite(real) and math.isfinite(zero) and real <= (1 - margin) * zero
    by_accuracy = z is not None and z > ACCURACY_Z
    by_pairs = loss_z is not None and loss_z > ACCURACY_Z
    if by_loss or by_accuracy or by_pairs:
        if not by_loss and not by_accuracy:
            summary += (
                f": the loss is less than {margin:.0%} lower, but lower on the same examples "
                f"by {loss_z:.1f} standard errors of the paired differences "
                f"({len(real_each)} examples)"
            )
        elif not by_loss:
            summary += (
                f": the loss is less than {margin:.0%} lower, but the accuracy is {z:.1f} "
                f"standard errors above the zero-input one on {len(y_eval)} examples"
            )
        return StageResult(
            "input_baseline",
            True,
            real,
            zero,
            f"the model uses its input: {summary}",
            seconds,
            details,
        )
    # Not shown to use its input: a failure only where the data bounds every gain below
    # what a model using its input shows (24 validation images cannot tell 37.5% from 12.5%).
    undecided = undecided_gains(
        zero_each - real_each, zero, right.get("real"), right.get("zero"), margin
    )
    if undecided:
        needed = examples_to_decide(undecided, margin, len(real_each))
        details["undecided"] = undecided
        details["examples_to_decide"] = needed
        size = (
            f"about {needed} {details['evaluated_on']} examples would decide"
            if needed is not None
            else "more examples or more steps would decide"
        )
        return StageResult(
            "input_baseline",
            None,
            real,
            zero,
            f"inconclusive: {summary}; on {len(real_each)} examples the "
            f"{' and '.join(undecided)} {'gains are' if len(undecided) > 1 else 'gain is'} "
            f"neither {ACCURACY_Z:g} standard errors above 0 nor bounded below {margin:.0%}: "
            f"{size}.",
            seconds,
            details,
            inconclusive=True,
        )
    return StageResult(
        "input_baseline",
        False,
        real,
        zero,
        f"the model does not use its input: {summary}, neither the loss {margin:.0%} lower "
        f"nor the accuracy clearly higher (both bounded below {margin:.0%} at "
        f"{ACCURACY_Z:g} standard errors on {len(real_each)} examples).",
        seconds,
        details,
        fix=INPUT_UNUSED_FIX,
    )


# How many standard errors the real-input accuracy must lie above the zero-input accuracy.
ACCURACY_Z = 3.0
# The same at an interim look (after a third or two thirds of the steps), stricter: three
# looks at 3 standard errors would pass a model that ignores its input more often than one.
INTERIM_Z = 4.0


def _clear_gain(scores: dict, examples: int) -> bool:
    """At an interim look: the real-input copy's accuracy, or its loss example by example,
    lies ``INTERIM_Z`` standard errors beyond the zero-input copy's."""
    (_, real_acc, real_each), (_, zero_acc, zero_each) = scores["real"], scores["zero"]
    z = accuracy_z(real_acc, zero_acc, examples)
    loss_z = paired_z(zero_each - real_each)
    return (z is not None and z > INTERIM_Z) or (loss_z is not None and loss_z > INTERIM_Z)


def accuracy_z(real: float | None, zero: float | None, n: int) -> float | None:
    """How many standard errors ``real`` lies above ``zero``, two accuracies each measured on
    ``n`` examples (a two-proportion z statistic with the pooled proportion); None when
    either is unknown. Equal accuracies of 0 or 1 give 0."""
    if real is None or zero is None or n < 1:
        return None
    pooled = (real + zero) / 2
    error = math.sqrt(pooled * (1 - pooled) * 2 / n)
    return 0.0 if error == 0 else (real - zero) / error


def paired_z(differences: np.ndarray) -> float | None:
    """How many standard errors the mean of paired per-example differences lies above 0
    (the zero-input copy's loss minus the real one's, example by example); None for fewer
    than 2 examples, 0 when every difference is 0."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return None
    error = float(np.std(d, ddof=1)) / math.sqrt(d.size)
    return 0.0 if error == 0 else float(np.mean(d)) / error


def per_example_right(task: Any, outputs: np.ndarray, y: Any) -> np.ndarray:
    """1.0 where an example is right by the task's accuracy, else 0.0: one value per example,
    what a paired comparison of the two copies' accuracies needs."""
    y = np.asarray(y)
    return np.array(
        [task_accuracy(task, outputs[i : i + 1], y[i : i + 1]) for i in range(len(y))],
        dtype=np.float64,
    )


def paired_gain(differences: np.ndarray) -> tuple[float, float] | None:
    """The mean of paired per-example differences and its standard error, the variance
    smoothed by one discordant pair each way (as Agresti-Coull smooths a proportion): an
    all-zero difference on a few examples is not taken as exactly zero. None below 2."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return None
    spread = max(float(np.abs(d).max()), 1.0)
    var = (float(np.sum((d - d.mean()) ** 2)) + 2 * spread * spread) / (d.size + 1)
    return float(d.mean()), math.sqrt(var / d.size)


def undecided_gains(
    loss_gain: np.ndarray,
    zero_loss: float,
    real_right: np.ndarray | None,
    zero_right: np.ndarray | None,
    margin: float,
) -> dict[str, dict[str, float]]:
    """The gains (``loss``: the zero copy's loss minus the real one's, relative to the zero
    loss; ``accuracy``: the real copy's accuracy minus the zero one's) that the examples do
    not bound below ``margin`` at ``ACCURACY_Z`` standard errors: each with its mean, its
    standard error and the examples it was measured on. Empty: the data shows the model
    does not use its input."""
    gains = {}
    if math.isfinite(zero_loss) and zero_loss > 0:
        gains["loss"] = paired_gain(np.asarray(loss_gain) / zero_loss)
    if real_right is not None and zero_right is not None:
        gains["accuracy"] = paired_gain(real_right - zero_right)
    undecided = {}
    for name, gain in gains.items():
        if gain is None:
            undecided[name] = {"gain": math.nan, "se": math.nan, "examples": 0}
        elif gain[0] + ACCURACY_Z * gain[1] >= margin:
            undecided[name] = {"gain": gain[0], "se": gain[1], "examples": len(loss_gain)}
    return undecided if gains else {"loss": {"gain": math.nan, "se": math.nan, "examples": 0}}


def examples_to_decide(
    undecided: dict[str, dict[str, float]], margin: float, examples: int
) -> int | None:
    """About how many examples would decide, the standard errors shrinking as one over the
    square root of the count: the fewest that make one gain ``ACCURACY_Z`` standard errors
    above 0 (a pass) or, if fewer, that bound every undecided gain below ``margin`` (a
    failure). None when no gain was measured."""
    to_pass, to_fail = [], []
    for gain in undecided.values():
        mean, se = gain["gain"], gain["se"]
        if not (math.isfinite(mean) and math.isfinite(se)) or se <= 0:
            return None
        if mean > 0:
            to_pass.append(examples * (ACCURACY_Z * se / mean) ** 2)
        # a failure needs every gain bounded: one at or above the margin rules it out
        to_fail.append(
            examples * (ACCURACY_Z * se / (margin - mean)) ** 2 if mean < margin else math.inf
        )
    options = [min(to_pass, default=math.inf), max(to_fail, default=math.inf)]
    best = min(options)
    return math.ceil(best) if math.isfinite(best) else None


def _train(
    copies: dict,
    optimizers: dict,
    loss_fn: Any,
    batches: Iterable,
    training: bool,
    compiled: keras.Model,
) -> None:
    """Train ``copies`` on ``batches`` (see :func:`_stepper`)."""
    step = _stepper(copies, optimizers, loss_fn, training, compiled)
    for batch in batches:
        step(batch)


def _stepper(
    copies: dict, optimizers: dict, loss_fn: Any, training: bool, compiled: keras.Model
) -> Callable:
    """One training step of both copies on the same batch, the ``"zero"`` one on zeros: one
    traced step, called batch by batch (``step((inputs, targets, weights))``).

    ``training``: run the models in training mode. A BatchNormalization model trains on
    batch statistics, as fit trains it: in inference mode its fresh moving statistics (0 and
    1) leave a deep BN net barely able to learn in 60 steps (a keras.io-style ResNet scored
    17% against 13% with zeros, a false alarm). ``loss_fn(targets per head, outputs,
    sample_weight)``; ``batches``: ``(inputs, targets per head, weights or None)``. The step
    runs as ``fit`` runs those of ``compiled``, the user's model (:func:`like_fit`)."""
    variables = {name: list(m.trainable_variables) for name, m in copies.items()}
    if not any(variables.values()):
        return lambda batch: None
    for name, opt in optimizers.items():
        opt.build(variables[name])  # slots made here: the step traces once

    def step(xb, yb, wb):
        for name, model in copies.items():
            inputs = xb if name == "real" else tf.nest.map_structure(tf.zeros_like, xb)
            with tf.GradientTape() as tape:
                value = loss_fn(yb, model(inputs, training=training), wb)
            grads = tape.gradient(value, variables[name])
            optimizers[name].apply_gradients(
                [(g, v) for g, v in zip(grads, variables[name], strict=True) if g is not None]
            )

    step = like_fit(step, compiled)

    def one(batch: tuple) -> None:
        xb, yb, wb = batch
        step(
            tf.nest.map_structure(tf.constant, xb),
            [tf.constant(t) for t in yb],
            None if wb is None else tf.constant(wb),
        )

    return one
