"""What the sanity checks share: data subsets, loss evaluation, model copies, random state."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.common import global_state
from keras.src.losses.loss import squeeze_or_expand_to_same_rank
from keras.src.models.functional import Functional
from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
from tensorflow.python.eager import context

from kerasdiag.checks import weights
from kerasdiag.checks.sanity import outputs as io
from kerasdiag.checks.sanity.expected import LossSpec, describe_loss
from kerasdiag.checks.tasks import Task, task_of
from kerasdiag.checks.tasks import accuracy as task_accuracy
from kerasdiag.checks.tasks import class_indices as class_indices  # one home, re-exported

# A tf.data.Dataset is read up to this many examples: the checks use a few hundred, and a
# dataset that repeats forever must still end.
DATASET_EXAMPLES = 4096


@dataclass
class Examples:
    """Training examples as the checks take them: inputs, labels, one weight per example
    (None: unweighted) and the class count when the data says it."""

    x: Any
    y: Any
    w: np.ndarray | None = None
    num_classes: int | None = None

    def take(self, index: Any) -> Examples:
        """The examples at ``index`` (an index array or a slice)."""
        w = None if self.w is None else self.w[index]
        return Examples(io.take(self.x, index), io.take(self.y, index), w, self.num_classes)

    @property
    def weighted(self) -> bool:
        return self.w is not None


def training_examples(data: Any, class_weight: Mapping[Any, float] | None = None) -> Examples:
    """The training examples of ``data`` with their weights, as ``fit`` would weigh them.

    ``data``: a kerasdiag Dataset (its training split), an ``(x, y)`` pair, an
    ``(x, y, sample_weight)`` triple, or a ``tf.data.Dataset`` of such pairs or triples (read
    up to ``DATASET_EXAMPLES``). ``x`` and ``y`` may be lists or dicts of arrays (several
    inputs or outputs). ``class_weight``: ``{class index: weight}`` as ``fit`` takes it,
    turned into per-example weights (:mod:`kerasdiag.checks.weights`).
    """
    if isinstance(data, tf.data.Dataset):
        data = _dataset_arrays(data)
    if hasattr(data, "sample") and not hasattr(data, "x_train"):
        data = data.sample()  # a streamed data set: its bounded in-memory sample
    if hasattr(data, "x_train"):
        x, y, sw = np.asarray(data.x_train), np.asarray(data.y_train), None
        num_classes: int | None = int(data.num_classes)
    elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
        x, y = io.as_arrays(data[0]), io.as_arrays(data[1])
        sw = data[2] if len(data) == 3 else None
        if io.count(x) != io.count(y):
            raise ValueError(f"data: x has {io.count(x)} examples but y has {io.count(y)}")
        num_classes = None
    else:
        raise ValueError(
            "data must be a kerasdiag Dataset, an (x, y) pair, an (x, y, sample_weight) "
            f"triple or a tf.data.Dataset of them, got {type(data)}"
        )
    w = weights.per_example_weights(y, sw, class_weight, num_classes)
    return Examples(x, y, w, num_classes)


def _dataset_arrays(dataset: tf.data.Dataset) -> tuple[Any, ...]:
    """The first ``DATASET_EXAMPLES`` examples of a dataset of batched ``(x, y)`` or
    ``(x, y, sample_weight)`` elements (batched, as ``fit`` takes a dataset), as arrays."""
    parts: list[tuple[Any, ...]] = []
    seen = 0
    for element in dataset.as_numpy_iterator():
        if not isinstance(element, tuple) or len(element) not in (2, 3):
            raise ValueError(
                "data: a tf.data.Dataset must yield (x, y) or (x, y, sample_weight) tuples"
            )
        parts.append(element)
        seen += io.count(parts[-1][0])
        if seen >= DATASET_EXAMPLES:
            break
    if not parts:
        raise ValueError("data: the tf.data.Dataset yields no examples")
    joined = tuple(
        keras.tree.map_structure(lambda *a: np.concatenate(a), *[p[k] for p in parts])
        for k in range(len(parts[0]))
    )
    return tuple(io.take(j, slice(0, DATASET_EXAMPLES)) for j in joined)


def training_arrays(data: Any) -> tuple[Any, Any, int | None]:
    """``(x, y, num_classes)`` of :func:`training_examples`, for a check that does not read
    the loss (so has no use for weights)."""
    ex = training_examples(data)
    return ex.x, ex.y, ex.num_classes


def subset(x: Any, y: Any, n: int | None, seed: int = 0) -> tuple[Any, Any]:
    """``n`` examples drawn without replacement by a private generator (global RNG untouched)."""
    ex = weighted_subset(Examples(x, y), n, seed)
    return ex.x, ex.y


def weighted_subset(
    ex: Examples, n: int | None, seed: int = 0, weighted_only: bool = False
) -> Examples:
    """``n`` of ``ex`` drawn without replacement by a private generator (global RNG
    untouched); ``weighted_only``: from the examples of weight > 0 only (what a check that
    trains on them can learn: a zero-weight example contributes nothing to the loss)."""
    pool = np.arange(io.count(ex.x))
    if weighted_only and ex.w is not None:
        pool = pool[ex.w > 0]
        if len(pool) == 0:
            raise NoWeight("every example has sample weight 0: there is no loss to check")
    if n is None or n >= len(pool):
        return ex if len(pool) == io.count(ex.x) else ex.take(pool)
    idx = np.sort(np.random.default_rng(seed).choice(pool, size=n, replace=False))
    return ex.take(idx)


class NoWeight(ValueError):
    """Every example a check would use has weight 0: the weighted loss is 0 whatever the
    model does, so the check does not apply."""


@dataclass
class Head:
    """One output with a loss: its name, position, loss, weight and what the loss is
    (``spec`` None for a loss the checks do not know)."""

    name: str
    index: int
    loss: Any
    weight: float
    spec: LossSpec | None


def heads(model: keras.Model, loss: Any = None) -> list[Head]:
    """The outputs that carry a loss (the compiled ones and ``loss_weights`` by default), each
    loss as ``fit`` computes it on that output (:func:`as_fit_computes`)."""
    names = io.output_names(model)
    found = []
    for name, fn, weight in io.loss_terms(model, loss):
        index = names.index(name)
        fn, spec = as_fit_computes(fn, known_loss(fn), io.logits_kept(model, index))
        found.append(Head(name, index, fn, weight, spec))
    return found


# The losses Keras' TensorFlow backend computes from the logits its own softmax or sigmoid
# leaves on the output (``outputs.logits_kept``), by the activation each takes logits
# through. The focal losses apply softmax or sigmoid themselves: with from_logits=True on
# such an output, twice.
LOGITS_RECOVERED = {"crossentropy": "softmax", "binary_crossentropy": "sigmoid"}


def as_fit_computes(loss: Any, spec: LossSpec | None, kept: str | None) -> tuple:
    """``(loss, spec)`` as ``fit`` computes ``loss`` on an output that keeps the logits of
    ``kept`` (:func:`~kerasdiag.checks.sanity.outputs.logits_kept`): from_logits=True on such
    a softmax output under (sparse) categorical cross-entropy, or sigmoid output under binary
    cross-entropy, is computed from those logits (Keras warns "does not represent logits"),
    so the model trains as if from_logits were False, and is judged so. The checks score
    losses on predictions copied to numpy, where that link is gone: they get the loss with
    from_logits=False, the same value (up to Keras' clipping at 1e-7), and the 0.5 threshold
    of probabilities."""
    if (
        spec is None
        or not spec.from_logits
        or kept is None
        or LOGITS_RECOVERED.get(spec.kind) != kept
        or not isinstance(loss, keras.losses.Loss)
    ):
        return loss, spec
    try:
        probabilities = type(loss).from_config({**loss.get_config(), "from_logits": False})
    except (TypeError, ValueError, KeyError):  # a loss class that cannot be rebuilt so
        return loss, spec
    return probabilities, dataclasses.replace(spec, from_logits=False)


def known_loss(loss: Any) -> LossSpec | None:
    """What ``loss`` is, or None for a loss the checks do not know (a user's own): the checks
    that need it then say they do not apply, the others still run."""
    try:
        return describe_loss(loss)
    except ValueError:
        return None


def head_tasks(model: keras.Model, hs: list[Head], y: Any, widths: list[int]) -> list[Task]:
    """The task of each loss-carrying output, from its loss, width, labels and activation."""
    ys = io.as_list(y, io.output_names(model))
    return [
        task_of(
            h.spec, widths[h.index], np.asarray(ys[h.index]), io.output_activation(model, h.index)
        )
        for h in hs
    ]


def predict_outputs(
    model: keras.Model, x: Any, batch_size: int | None = None, training: bool = False
) -> list[np.ndarray]:
    """Every output of ``model`` on ``x``, in output order: in inference mode, or with
    ``training`` in training mode (batch normalization on each batch's statistics).
    ``batch_size``: examples per forward pass (default: ``io.inference_batch_size``)."""
    names = io.output_names(model)
    batch_size = batch_size or io.inference_batch_size(x)
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
    the output names, each head's labels in the form its loss takes, and the examples'
    weights (None: unweighted)."""

    heads: list[Head]
    names: list[str]
    x: Any
    y: Any
    targets: list[Any]
    tasks: list[Task]
    w: np.ndarray | None = None


def loss_subset(
    model: keras.Model,
    data: Any,
    loss: Any,
    n: int | None,
    seed: int,
    class_weight: Mapping[Any, float] | None = None,
    weighted_only: bool = False,
) -> Subset:
    """``n`` training examples (seeded) prepared for a check of ``model`` with ``loss``;
    ``weighted_only``: drawn from the examples of weight > 0 (:func:`weighted_subset`)."""
    hs = heads(model, loss)
    ex = weighted_subset(training_examples(data, class_weight), n, seed, weighted_only)
    x, y = ex.x, ex.y
    names = io.output_names(model)
    widths = [o.shape[-1] for o in predict_outputs(model, io.take(x, slice(0, 1)))]
    tasks = head_tasks(model, hs, y, widths)
    return Subset(hs, names, x, y, head_targets(hs, y, widths, names), tasks, ex.w)


def weighted_loss(hs: list[Head], names: list[str]) -> Callable[..., Any]:
    """``(targets per head, model output, sample_weight=None) -> sum of weight * loss``, as
    ``fit`` minimises (each head's loss weighted per example as ``fit`` weighs it)."""
    per_head = head_losses(hs, names)
    weights_ = [h.weight for h in hs]

    def total(targets: list[Any], out: Any, sample_weight: Any = None) -> Any:
        value = 0.0
        for w, part in zip(weights_, per_head(targets, out, sample_weight), strict=True):
            value = value + w * part
        return value

    return total


def head_losses(hs: list[Head], names: list[str]) -> Callable[..., list[Any]]:
    """``(targets per head, model output, sample_weight=None) -> [loss of each head]``
    (unweighted by ``loss_weights``): each output is judged by its own task's criterion."""
    fns = [(h.index, loss_function(h.loss)) for h in hs]

    def losses(targets: list[Any], out: Any, sample_weight: Any = None) -> list[Any]:
        outs = io.as_list(out, names) if not isinstance(out, list) else out
        return [fn(t, outs[i], sample_weight) for t, (i, fn) in zip(targets, fns, strict=True)]

    return losses


def per_example_loss(
    hs: list[Head], targets: list[Any], outs: list[Any], sample_weight: Any = None
) -> np.ndarray:
    """The weighted loss of each example (one value per example, nothing averaged across
    examples, times its sample weight when given): what a paired comparison of two models
    on the same examples needs."""
    total = 0.0
    for h, t in zip(hs, targets, strict=True):
        y_true = keras.ops.convert_to_tensor(t)
        y_pred = keras.ops.convert_to_tensor(outs[h.index])
        if isinstance(h.loss, keras.losses.Loss):
            # unreduced, after the rank alignment Loss.__call__ does before it reduces
            y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
            each = h.loss.call(y_true, y_pred)
        else:
            fn = keras.losses.get(h.loss) if isinstance(h.loss, str) else h.loss
            each = fn(y_true, y_pred)
        each = keras.ops.convert_to_numpy(each).astype(np.float64)
        total = total + h.weight * each.reshape(len(each), -1).mean(axis=1)
    total = np.asarray(total)
    return total if sample_weight is None else total * np.asarray(sample_weight)


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


def loss_function(loss: Any) -> Callable[..., Any]:
    """A callable ``(y_true, y_pred, sample_weight=None) -> scalar``: the loss averaged over
    the examples as ``fit`` averages it, ``sum(w_i * loss_i) / N`` with weights.

    Keras loss objects reduce themselves (as in training, their ``reduction`` included);
    names and plain functions return one value per example and are averaged here.
    """
    return loss if isinstance(loss, keras.losses.Loss) else io.mean_loss(loss)


def loss_targets(spec: LossSpec | None, y: np.ndarray, num_outputs: int) -> np.ndarray:
    """Labels in the form the loss takes: class indices, one-hot rows, or one column (as
    given for a loss the checks do not know)."""
    if spec is None:
        return y
    if spec.sparse or y.ndim > 1:
        return y
    if num_outputs > 1:
        return np.eye(num_outputs, dtype=np.float32)[y.astype(np.int64)]
    return y.reshape(-1, 1).astype(np.float32)


def predict(
    model: keras.Model, x: Any, batch_size: int | None = None, training: bool = False
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


def accuracy(spec: LossSpec | None, outputs: np.ndarray, y: Any) -> float | None:
    """Share of examples classified right by the task's own measure (top-1, the binary
    threshold, every label of a multi-label row); None for regression. ``y``: the labels as
    given (class indices, one-hot or multi-hot rows, values)."""
    outputs = np.asarray(outputs)
    task = task_of(spec, outputs.shape[-1], np.asarray(y))
    return task_accuracy(task, outputs, y)


def copy_model(
    model: keras.Model, clone_function: Callable[[keras.layers.Layer], Any] | None = None
) -> keras.Model:
    """A new model of the same architecture holding a copy of ``model``'s current weights.

    ``Lambda`` layers are rebuilt around the same Python function (no serialisation, which
    Keras refuses for a Python lambda in safe mode). Raises :class:`CannotCopy` when the
    model cannot be rebuilt from its config (subclassed models, custom layers without
    ``get_config``), so the caller never trains the original by mistake: use
    :func:`training_copy` to train the original and put its state back instead.
    """
    try:
        # Keras takes a clone_function for Sequential and functional models only; a
        # subclassed model is rebuilt whole from its get_config.
        graph = isinstance(model, (keras.Sequential, Functional))
        rebuild = clone_function or (_rebuild if graph else None)
        clone = keras.models.clone_model(model, clone_function=rebuild)
        clone.set_weights(model.get_weights())
    except Exception as exc:  # Keras raises several types for unclonable models
        raise CannotCopy(
            f"cannot copy model {model.name!r} ({type(exc).__name__}: {exc}); the model must "
            "be functional or Sequential and its layers must implement get_config"
        ) from exc
    return clone


class CannotCopy(ValueError):
    """``copy_model`` could not rebuild the model from its configuration."""


def _rebuild(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Keras' default clone of one layer, except a ``Lambda``: a new one around the same
    function object, as a user's own code would build it."""
    if isinstance(layer, keras.layers.Lambda):
        return keras.layers.Lambda(
            layer.function,
            output_shape=layer._output_shape,
            mask=layer.mask,
            arguments=dict(layer.arguments),
            name=layer.name,
            dtype=layer.dtype_policy,
        )
    return layer.__class__.from_config(layer.get_config())


@contextlib.contextmanager
def training_copy(model: keras.Model, example: Any = None) -> Iterator[keras.Model]:
    """A model a check may train, leaving ``model`` as it was when the block ends.

    A copy (:func:`copy_model`) when the model can be rebuilt; otherwise (a subclassed
    model, a custom layer without ``get_config``) ``model`` itself, with every variable
    (weights, BatchNormalization statistics, random-seed states) put back on exit. The
    checks train with optimizers of their own, so ``model.optimizer`` is never touched.
    ``example``: a few inputs that build a model not yet called, so that every variable
    exists before it is saved.
    """
    try:
        clone = copy_model(model)
    except CannotCopy:
        clone = None
    if clone is not None:
        yield clone
        return
    if not model.built and example is not None:
        model(example, training=False)
    saved = [(v, keras.ops.convert_to_numpy(v)) for v in model.variables]
    try:
        yield model
    finally:
        for variable, value in saved:
            variable.assign(value)


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
