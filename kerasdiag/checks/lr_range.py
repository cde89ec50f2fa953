"""The learning-rate range test: the loss against an exponentially growing learning rate.

Settle the learning rate first, the notes say; the range test (Smith 2017, fastai's
``lr_find``, Lightning's ``Tuner.lr_find``) does it in one short pass: a copy of the model
trains for a bounded number of steps while the learning rate grows by the same factor every
step, from far too low (nothing moves) to far too high (the loss explodes). The loss stays
flat, then falls, then turns and diverges; a good learning rate lies on the falling part,
safely before the turn.

Example:

```python
from kerasdiag import find_learning_rate

result = find_learning_rate(model, x_train, y_train, batch_size=64)
print(result.suggestion, result.rule)  # e.g. 0.0031 "minimum of the smoothed loss / 10"
model.optimizer.learning_rate = result.suggestion
```

The user's model, its optimizer and the global random state are left as they were: the copy
has its own optimizer, configured like the model's. A run uses it with ``optimizer.lr=auto``
(:func:`resolve_auto_lr`), and ``sanity.lr_range=true`` adds the curve to the sanity stages.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from omegaconf import OmegaConf

from kerasdiag.checks import weights
from kerasdiag.checks.sanity import _common as common
from kerasdiag.checks.sanity import outputs as outputs_io
from kerasdiag.checks.sanity.result import StageResult
from kerasdiag.checks.traced import like_fit
from kerasdiag.core.errors import KerasdiagError
from kerasdiag.core.io import write_json_atomic
from kerasdiag.core.rundir import RunLayout
from kerasdiag.diagnosis.lr_range import RULES, LRFinderResult, suggest
from kerasdiag.diagnosis.symptoms import LR_TOO_HIGH_FIX, LR_TOO_LOW_FIX
from kerasdiag.modeling.factory import build_model


def find_learning_rate(
    model: Any,
    x: Any = None,
    y: Any = None,
    *,
    dataset: Any = None,
    batch_size: int = 64,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    max_steps: int = 100,
    divergence: float = 4.0,
    smoothing: float = 0.9,
    rule: str = "minimum",
    loss: Any = None,
    optimizer: Any = None,
    seed: int = 0,
    sample_weight: Any = None,
    class_weight: Mapping[Any, float] | None = None,
) -> LRFinderResult:
    """Run the learning-rate range test on a copy of ``model`` and suggest a learning rate.

    The copy trains (``training=True``: dropout and batch normalization as in ``fit``) for at
    most ``max_steps`` steps with the learning rate growing exponentially from ``start_lr``
    to ``end_lr``; it stops early once the smoothed loss exceeds ``divergence`` times its
    minimum or a loss is NaN/Inf. Rules (``rule``):

    - ``"minimum"`` (default): the learning rate at the minimum of the smoothed loss, divided
      by 10: at the minimum the steps are already at the edge of divergence; 10x lower is
      where the loss still falls fast and steadily (fastai's classic advice).
    - ``"steepest"``: where the smoothed loss falls fastest per decade of learning rate.

    Args:
        model: a compiled Keras model (its loss and optimizer type are used); unchanged.
        x, y: training inputs and targets (arrays; batches are drawn by a private seeded
            generator), or a kerasdiag ``Dataset`` or an ``(x, y, sample_weight)`` triple as
            ``x``.
        dataset: instead of ``x, y``: a ``tf.data.Dataset`` of ``(x, y)`` or
            ``(x, y, sample_weight)`` batches (repeated as needed).
        batch_size: examples per step for array data.
        start_lr, end_lr: the range, 0 < start_lr < end_lr.
        max_steps: the most steps the test takes (at least 10).
        divergence: stop when the smoothed loss passes this many times its minimum (> 1).
        smoothing: the moving average's decay (0 <= smoothing < 1; 0 = raw losses).
        rule: ``"minimum"`` or ``"steepest"``.
        loss: the loss to use (default: the model's compiled loss).
        optimizer: a Keras optimizer or its name (default: a fresh one configured like the
            model's, its learning rate set at every step).
        seed: seeds the copy's batches.
        sample_weight, class_weight: as ``fit`` takes them: the copy trains on the weighted
            loss ``fit`` minimises (``sum(w_i * loss_i) / N`` per batch), so the suggested
            rate is one for that loss (class weights of 5 make its steps about 5 times
            larger on those classes).

    Raises:
        ValueError: a bad argument (named), no data, or a model that cannot be copied.
    """
    _check_arguments(start_lr, end_lr, max_steps, divergence, smoothing, rule, batch_size)
    if (x is None) == (dataset is None):
        raise ValueError("pass the training data either as x, y or as dataset=, not both")
    start = time.perf_counter()
    with common.preserved_random_state(), contextlib.ExitStack() as stack:
        loss = common.compiled_loss(model) if loss is None else loss
        # Several outputs: the weighted sum of their losses, as fit trains on.
        hs, names = common.heads(model, loss), outputs_io.output_names(model)
        weighted = common.weighted_loss(hs, names)

        def loss_fn(yb: Any, out: Any, wb: Any = None) -> Any:
            per_output = outputs_io.as_list(yb, names)
            return weighted([per_output[h.index] for h in hs], out, wb)

        opt = _constant_lr_optimizer(model, optimizer, start_lr)
        if dataset is None:
            if y is None and (
                hasattr(x, "x_train") or hasattr(x, "sample") or isinstance(x, tuple)
            ):
                if sample_weight is not None:
                    raise ValueError("sample_weight: pass it in the (x, y, sample_weight) data")
                examples = common.training_examples(x, class_weight)
            elif y is None:
                raise ValueError("y is required with x (or pass dataset=)")
            else:
                examples = common.training_examples(
                    (x, y) if sample_weight is None else (x, y, sample_weight), class_weight
                )
            x, y, w = outputs_io.as_arrays(examples.x), outputs_io.as_arrays(examples.y), examples.w
            example = outputs_io.take(x, slice(0, 1))
            widths = [o.shape[-1] for o in common.predict_outputs(model, example)]
            targets = common.head_targets(hs, y, widths, names)
            per_output: list[Any] = list(outputs_io.as_list(y, names))
            for h, t in zip(hs, targets, strict=True):
                per_output[h.index] = t  # in the form each loss takes
            y = per_output[0] if len(names) == 1 else per_output
            batches = _array_batches(x, y, w, batch_size, seed)
        else:
            if sample_weight is not None:
                raise ValueError("sample_weight: with dataset=, yield (x, y, sample_weight)")
            classes = int(model.outputs[0].shape[-1]) if getattr(model, "outputs", None) else None
            batches = _dataset_batches(dataset, class_weight, classes)
            example = None
        # A copy, or the original with its state put back (a model that cannot be copied)
        clone = stack.enter_context(common.training_copy(model, example))
        variables = list(clone.trainable_variables)
        if not variables:
            raise ValueError(f"model {model.name!r} has no trainable weights: nothing to test")

        opt.build(variables)  # slots made before tracing: the step traces once

        def train_step(xb, yb, wb):
            with tf.GradientTape() as tape:
                outputs = clone(xb, training=True)
                value = loss_fn(yb, outputs, wb)
                if clone.losses:
                    value = value + tf.add_n(clone.losses)
            grads = tape.gradient(value, variables)
            opt.apply_gradients(
                [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
            )
            return value

        train_step = like_fit(train_step, model)

        factor = (end_lr / start_lr) ** (1.0 / (max_steps - 1))
        lrs: list[float] = []
        losses: list[float] = []
        smoothed: list[float] = []
        average, best, stopped = 0.0, math.inf, "max_steps"
        for step in range(max_steps):
            lr = start_lr * factor**step
            opt.learning_rate = lr
            xb, yb, wb = next(batches)
            value = float(train_step(xb, yb, wb))
            lrs.append(lr)
            losses.append(value)
            if not math.isfinite(value):
                smoothed.append(value)
                stopped = "diverged"
                break
            average = smoothing * average + (1 - smoothing) * value
            smooth = average / (1 - smoothing ** (step + 1))
            smoothed.append(smooth)
            best = min(best, smooth)
            if step > 0 and smooth > divergence * best:
                stopped = "diverged"
                break
    result = suggest(lrs, losses, smoothed, rule)
    result.stopped = stopped
    result.seconds = time.perf_counter() - start
    result.settings = {
        "start_lr": start_lr,
        "end_lr": end_lr,
        "max_steps": max_steps,
        "divergence": divergence,
        "smoothing": smoothing,
        "batch_size": batch_size if dataset is None else None,
    }
    return result


def resolve_auto_lr(
    cfg: Any, data: Any, run_dir: str | Path, build_model: Any, class_weight: Any = None
) -> float:
    """The learning rate ``optimizer.lr=auto`` trains with: the range test's suggestion.

    ``build_model(lr)`` returns the run's compiled model built with learning rate ``lr`` (the
    test sets its own rates; only the optimizer's type and settings matter), from the same
    seed as the model that then trains, so the test sees that model's initial weights. The result is
    written to ``lr_finder.json`` in ``run_dir``; a resumed run reads it back, so it trains
    on with the same rate. Raises :class:`~kerasdiag.core.errors.KerasdiagError` when the curve
    gives no suggestion.
    """
    path = Path(run_dir) / RunLayout.LR_FINDER
    if path.is_file():
        result = LRFinderResult.from_dict(json.loads(path.read_text()))
    else:
        result = run_range_test(cfg, build_model(1e-3), data, run_dir, class_weight)
    if result.suggestion is None:
        raise KerasdiagError(
            f"optimizer.lr=auto: the learning-rate range test gave {result.summary()}"
        )
    print(f"optimizer.lr=auto: {result.summary()}")
    return float(result.suggestion)


def with_auto_lr(cfg: Any, data: Any, run_dir: str | Path, class_weight: Any = None) -> Any:
    """``cfg`` with ``optimizer.lr=auto`` replaced by the range test's suggestion (a copy;
    ``cfg`` itself, and so ``config.yaml``, keep ``auto``) and the ``lr_range`` stage on.
    Other configs are returned as is."""
    if cfg.optimizer.lr != "auto":
        return cfg

    def build(lr: float) -> Any:
        return build_model(OmegaConf.merge(cfg, {"optimizer": {"lr": lr}}), data)

    lr = resolve_auto_lr(cfg, data, run_dir, build, class_weight)
    # The lr_range stage then shows the curve (it reads lr_finder.json, costs nothing).
    return OmegaConf.merge(cfg, {"optimizer": {"lr": lr}, "sanity": {"lr_range": True}})


def run_range_test(
    cfg: Any, model: Any, data: Any, run_dir: str | Path, class_weight: Any = None
) -> LRFinderResult:
    """The range test of a run (batch size ``data.batch_size``, settings ``sanity.lr_range_*``,
    the run's ``class_weight``); writes ``lr_finder.json`` and returns the result."""
    sanity = cfg.get("sanity") or {}
    result = find_learning_rate(
        model,
        data,
        batch_size=int(cfg.data.batch_size),
        start_lr=float(sanity.get("lr_range_start", 1e-7)),
        end_lr=float(sanity.get("lr_range_end", 10.0)),
        max_steps=int(sanity.get("lr_range_steps", 100)),
        seed=int(cfg.data.seed),
        class_weight=class_weight,
    )
    write_json_atomic(Path(run_dir) / RunLayout.LR_FINDER, result.to_dict())
    return result


def lr_range_stage(
    cfg: Any, model: Any, data: Any, run_dir: str | Path, class_weight: Any = None
) -> Any:
    """The ``lr_range`` sanity stage: the range test as a StageResult (the curve in
    ``lr_finder.json``; one already written by ``optimizer.lr=auto`` is read, not redone).

    It fails when the loss never falls (a model that does not learn at any rate) and when the
    configured learning rate is more than 10x away from the suggestion, naming the rate to use.
    """
    path = Path(run_dir) / RunLayout.LR_FINDER
    if path.is_file():
        result = LRFinderResult.from_dict(json.loads(path.read_text()))
    else:
        result = run_range_test(cfg, model, data, run_dir, class_weight)
    configured = cfg.optimizer.lr
    configured = None if configured == "auto" else float(configured)
    details = {
        "suggestion": result.suggestion,
        "rule": result.rule,
        "min_lr": result.min_lr,
        "steps": len(result.lrs),
        "stopped": result.stopped,
        "file": RunLayout.LR_FINDER,
    }
    if result.suggestion is None:
        return StageResult("lr_range", False, None, configured, result.summary(), 0.0, details)
    message = result.summary()
    passed = True
    fix = ""
    if configured is not None:
        ratio = configured / result.suggestion
        details["configured_over_suggested"] = ratio
        if ratio > 10 or ratio < 0.1:
            passed = False
            fix = LR_TOO_HIGH_FIX if ratio > 10 else LR_TOO_LOW_FIX
            message += (
                f"; the configured optimizer.lr={configured:.3g} is {max(ratio, 1 / ratio):.0f}x "
                f"{'above' if ratio > 1 else 'below'} it."
            )
            fix = fix.format(lr=f"{result.suggestion:.3g}")
        else:
            message += f"; the configured optimizer.lr={configured:.3g} is within 10x of it"
    return StageResult(
        "lr_range", passed, result.suggestion, configured, message, 0.0, details, fix=fix
    )


def _check_arguments(start_lr, end_lr, max_steps, divergence, smoothing, rule, batch_size) -> None:
    if not (isinstance(start_lr, (int, float)) and start_lr > 0):
        raise ValueError(f"start_lr must be > 0. Received: {start_lr!r}")
    if not (isinstance(end_lr, (int, float)) and end_lr > start_lr):
        raise ValueError(f"end_lr must be above start_lr={start_lr!r}. Received: {end_lr!r}")
    if not isinstance(max_steps, int) or max_steps < 10:
        raise ValueError(f"max_steps must be an integer >= 10. Received: {max_steps!r}")
    if not (isinstance(divergence, (int, float)) and divergence > 1):
        raise ValueError(f"divergence must be > 1. Received: {divergence!r}")
    if not (isinstance(smoothing, (int, float)) and 0 <= smoothing < 1):
        raise ValueError(f"smoothing must be in [0, 1). Received: {smoothing!r}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}. Received: {rule!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer. Received: {batch_size!r}")


def _constant_lr_optimizer(model: Any, optimizer: Any, lr: float) -> Any:
    """A fresh optimizer like the model's (or ``optimizer``) with a plain, settable rate.

    A schedule in the model's optimizer is replaced by a constant; the moving average of the
    weights is off, as it plays no part in the loss of the next batch.
    """
    if optimizer is None:
        base = getattr(model, "optimizer", None)
        if base is None:
            return keras.optimizers.Adam(lr)
        config = base.get_config()
    else:
        base = keras.optimizers.get(optimizer)
        config = base.get_config()
    config["learning_rate"] = lr
    config["use_ema"] = False
    return type(base).from_config(config)


def _array_batches(x: Any, y: Any, w: np.ndarray | None, batch_size: int, seed: int) -> Iterator:
    """``(inputs, targets, weights or None)`` batches drawn by a private seeded generator."""
    n = outputs_io.count(x)
    size = min(batch_size, n)
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n)
        for i in range(0, n - size + 1, size):
            idx = np.sort(order[i : i + size])
            yield (
                keras.tree.map_structure(tf.constant, outputs_io.take(x, idx)),
                keras.tree.map_structure(tf.constant, outputs_io.take(y, idx)),
                None if w is None else tf.constant(w[idx], tf.float32),
            )


def _dataset_batches(
    dataset: Any, class_weight: Mapping[Any, float] | None, classes: int | None
) -> Iterator:
    """``(inputs, targets, weights or None)`` from a dataset's ``(x, y[, sample_weight])``
    batches, ``class_weight`` turned into weights per batch as ``fit`` turns it."""
    for element in dataset.repeat():
        if not isinstance(element, (tuple, list)) or len(element) not in (2, 3):
            raise ValueError("dataset must yield (x, y) or (x, y, sample_weight) batches")
        sw = element[2] if len(element) == 3 else None
        y = element[1]
        if sw is not None or class_weight is not None:
            labels = keras.tree.map_structure(np.asarray, y)
            sw = None if sw is None else np.asarray(sw)
            w = weights.per_example_weights(labels, sw, class_weight, classes)
            sw = tf.constant(w, tf.float32)
        yield element[0], y, sw
