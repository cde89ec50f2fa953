"""What the sanity checks share: data subsets, loss evaluation, model copies, random state."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras.src.backend.common import global_state
from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
from tensorflow.python.eager import context

from kerasdiag.checks.sanity import outputs as io
from kerasdiag.checks.sanity.expected import LossSpec, describe_loss


def training_arrays(data: Any) -> tuple[Any, Any, int | None]:
    """``(x, y, num_classes)`` from a kerasdiag Dataset or an ``(x, y)`` pair.

    ``x`` and ``y`` may be lists or dicts of arrays (several inputs or outputs).
    """
    if hasattr(data, "sample") and not hasattr(data, "x_train"):
        data = data.sample()  # a streamed data set: its bounded in-memory sample
    if hasattr(data, "x_train"):
        return np.asarray(data.x_train), np.asarray(data.y_train), int(data.num_classes)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = io.as_arrays(data[0]), io.as_arrays(data[1])
        if io.count(x) != io.count(y):
            raise ValueError(f"data: x has {io.count(x)} examples but y has {io.count(y)}")
        return x, y, None
    raise ValueError(f"data must be a kerasdiag Dataset or an (x, y) pair, got {type(data)}")


def subset(x: Any, y: Any, n: int | None, seed: int = 0) -> tuple[Any, Any]:
    """``n`` examples drawn without replacement by a private generator (global RNG untouched)."""
    total = io.count(x)
    if n is None or n >= total:
        return x, y
    idx = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    return io.take(x, idx), io.take(y, idx)


@dataclass
class Head:
    """One output with a loss: its name, position, loss, weight and what the loss is."""

    name: str
    index: int
    loss: Any
    weight: float
    spec: LossSpec


def heads(model: keras.Model, loss: Any = None) -> list[Head]:
    """The outputs that carry a loss (the compiled ones and ``loss_weights`` by default)."""
    names = io.output_names(model)
    return [
        Head(name, names.index(name), fn, weight, describe_loss(fn))
        for name, fn, weight in io.loss_terms(model, loss)
    ]


def predict_outputs(
    model: keras.Model, x: Any, batch_size: int = 256, training: bool = False
) -> list[np.ndarray]:
    """Every output of ``model`` on ``x``, in output order: in inference mode, or with
    ``training`` in training mode (batch normalization on each batch's statistics)."""
    names = io.output_names(model)
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for i in range(0, io.count(x), batch_size):
        out = model(io.take(x, slice(i, i + batch_size)), training=training)
        for k, o in enumerate(io.as_list(out, names)):
            parts[k].append(keras.ops.convert_to_numpy(o))
    return [np.concatenate(p) for p in parts]


def head_targets(hs: list[Head], y: Any, widths: list[int], names: list[str]) -> list[Any]:
    """Each head's labels in the form its loss takes."""
    ys = io.as_list(y, names)
    return [loss_targets(h.spec, np.asarray(ys[h.index]), widths[h.index]) for h in hs]


@dataclass
class Subset:
    """A few training examples and what a check on them needs: the loss-carrying heads,
    the output names, and each head's labels in the form its loss takes."""

    heads: list[Head]
    names: list[str]
    x: Any
    y: Any
    targets: list[Any]


def loss_subset(model: keras.Model, data: Any, loss: Any, n: int | None, seed: int) -> Subset:
    """``n`` training examples (seeded) prepared for a check of ``model`` with ``loss``."""
    hs = heads(model, loss)
    x_all, y_all, _ = training_arrays(data)
    x, y = subset(x_all, y_all, n, seed)
    names = io.output_names(model)
    widths = [o.shape[-1] for o in predict_outputs(model, io.take(x, slice(0, 1)))]
    return Subset(hs, names, x, y, head_targets(hs, y, widths, names))


def weighted_loss(hs: list[Head], names: list[str]) -> Callable[[list[Any], Any], Any]:
    """``(targets per head, model output) -> sum of weight * loss``, as ``fit`` minimises."""
    fns = [(h.index, loss_function(h.loss), h.weight) for h in hs]

    def total(targets: list[Any], out: Any) -> Any:
        outs = io.as_list(out, names) if not isinstance(out, list) else out
        value = 0.0
        for t, (i, fn, w) in zip(targets, fns, strict=True):
            value = value + w * fn(t, outs[i])
        return value

    return total


def loss_and_subset(
    model: keras.Model, data: Any, loss: Any, num_examples: int, seed: int
) -> tuple[Any, LossSpec, np.ndarray, np.ndarray, int]:
    """What a check on a few training examples starts from: the loss (the compiled one when
    ``loss`` is None), its description, ``num_examples`` inputs and labels, the output width."""
    loss = compiled_loss(model) if loss is None else loss
    x_all, y_all, _ = training_arrays(data)
    x, y = subset(x_all, y_all, num_examples, seed)
    return loss, describe_loss(loss), x, y, output_width(model, x)


def compiled_loss(model: keras.Model) -> Any:
    loss = getattr(model, "loss", None)
    if loss is None:
        raise ValueError("model must be compiled with a loss (or pass loss=...)")
    return loss


def loss_function(loss: Any) -> Callable[[Any, Any], Any]:
    """A callable ``(y_true, y_pred) -> scalar`` averaging the loss over the examples.

    Keras loss objects reduce themselves (as in training); names and plain functions return
    one value per example and are averaged here.
    """
    if isinstance(loss, keras.losses.Loss):
        return loss
    fn = keras.losses.get(loss) if isinstance(loss, str) else loss

    def mean_loss(y_true: Any, y_pred: Any) -> Any:
        return keras.ops.mean(fn(y_true, y_pred))

    return mean_loss


def loss_targets(spec: LossSpec, y: np.ndarray, num_outputs: int) -> np.ndarray:
    """Labels in the form the loss takes: class indices, one-hot rows, or one column."""
    if spec.sparse or y.ndim > 1:
        return y
    if num_outputs > 1:
        return np.eye(num_outputs, dtype=np.float32)[y.astype(np.int64)]
    return y.reshape(-1, 1).astype(np.float32)


def predict(
    model: keras.Model, x: Any, batch_size: int = 256, training: bool = False
) -> np.ndarray:
    """The (first) output in inference mode (dropout, noise and augmentation off), or in
    training mode with ``training``."""
    return predict_outputs(model, x, batch_size, training)[0]


def output_width(model: keras.Model, x: Any = None) -> int:
    """The width of the (first) output; a subclassed model is run on one example of ``x``."""
    if getattr(model, "outputs", None):
        return int(model.outputs[0].shape[-1])
    if x is None:
        raise ValueError(f"cannot tell the output width of {model.name!r} without an example")
    return int(predict_outputs(model, io.take(x, slice(0, 1)))[0].shape[-1])


def class_indices(y: np.ndarray) -> np.ndarray:
    """Integer labels from class indices, one-hot rows or one 0/1 (or -1/1) column."""
    if y.ndim > 1 and y.shape[-1] > 1:
        return np.argmax(y, axis=-1)
    y = y.reshape(-1)
    return (y > 0).astype(np.int64) if y.size and y.min() < 0 else y.astype(np.int64)


def classes_for(spec: LossSpec, width: int) -> int:
    """The class count the expected loss is computed for, from the model's output width.

    One output is a binary classifier (two classes), except under MSE, where it is one target.
    """
    if width > 1:
        return width
    return 1 if spec.kind == "mse" else 2


def accuracy(spec: LossSpec, outputs: np.ndarray, labels: np.ndarray) -> float | None:
    """Share of examples classified right; None for a single-output regression loss."""
    if outputs.shape[-1] > 1:
        return float(np.mean(np.argmax(outputs, axis=-1) == labels))
    if spec.kind == "mse":
        return None
    threshold = 0.5 if spec.from_logits is False else 0.0
    predicted = (outputs.reshape(-1) > threshold).astype(np.int64)
    return float(np.mean(predicted == (labels > 0)))


def copy_model(
    model: keras.Model, clone_function: Callable[[keras.layers.Layer], Any] | None = None
) -> keras.Model:
    """A new model of the same architecture holding a copy of ``model``'s current weights.

    Raises ValueError when the model cannot be rebuilt from its config (subclassed models
    without ``get_config``), so the caller never trains the original by mistake.
    """
    try:
        clone = keras.models.clone_model(model, clone_function=clone_function)
    except Exception as exc:  # Keras raises several types for unclonable models
        raise ValueError(
            f"cannot copy model {model.name!r} ({type(exc).__name__}: {exc}); sanity checks "
            "that train work on a copy, so the model must be functional or Sequential, "
            "or its layers must implement get_config"
        ) from exc
    clone.set_weights(model.get_weights())
    return clone


def fresh_optimizer(model: keras.Model) -> keras.optimizers.Optimizer:
    """An optimizer configured like the model's, with no state (no slots, iteration 0), and
    a learning-rate schedule replaced by its largest rate.

    The sanity stages train a few dozen to a few hundred steps: they must not spend them in
    the first steps of a warm-up (a small fraction of the rate training will use) nor after
    the end of a short run's decay, where the rate is near 0.
    """
    opt = getattr(model, "optimizer", None)
    if opt is None:
        return keras.optimizers.Adam(1e-3)
    config = opt.get_config()
    schedule = getattr(opt, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        config["learning_rate"] = peak_learning_rate(schedule)
    return type(opt).from_config(config)


def peak_learning_rate(schedule: Any, horizon: int = 10**6) -> float:
    """The largest rate ``schedule`` gives over its first ``horizon`` steps, sampled every 10
    steps of the first thousand (warm-ups end there) and at 100 log-spaced steps beyond."""
    steps = np.unique(np.concatenate([np.arange(0, 1000, 10), np.geomspace(1000, horizon, 100)]))
    return max(float(keras.ops.convert_to_numpy(schedule(int(step)))) for step in steps)


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Restore Python's, NumPy's, Keras' and TensorFlow's global random state on exit.

    Copying or building a model draws initializer seeds from Python's ``random`` (and a
    model factory may reseed everything); restoring the state means the training that
    follows draws the same dropout masks and shuffles as it would without the check.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    keras_globals = {
        key: global_state.get_global_attribute(key)
        for key in (GLOBAL_SEED_GENERATOR, GLOBAL_RANDOM_SEED)
    }
    generator = keras_globals[GLOBAL_SEED_GENERATOR]
    generator_state = None if generator is None else keras.ops.convert_to_numpy(generator.state)
    # TensorFlow's global seed and the generator of op-level seeds it derives (tf.data
    # shuffles); private attributes, so restore only what this TF version has.
    ctx = context.context()
    tf_globals = {name: getattr(ctx, name) for name in ("_seed", "_rng") if hasattr(ctx, name)}
    tf_rng = tf_globals.get("_rng")
    tf_rng_state = tf_rng.getstate() if isinstance(tf_rng, random.Random) else None
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        for key, value in keras_globals.items():
            global_state.set_global_attribute(key, value)
        if generator is not None:
            generator.state.assign(generator_state)
        for name, value in tf_globals.items():
            setattr(ctx, name, value)
        if tf_rng_state is not None:
            tf_rng.setstate(tf_rng_state)
