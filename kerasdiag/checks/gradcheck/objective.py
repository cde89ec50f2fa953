"""The objective a model-level gradient check differentiates: data loss and regularization.

``ModelObjective`` holds a float64 copy of the model (``clone_float64``), a few examples and a
float64 loss, and evaluates, without side effects (``stateless_call``):

- the data loss alone and the regularization term (``model.losses``) alone, so that a
  regularizer cannot swamp the data loss;
- the kink fingerprint of every evaluation (``KinkRecorder``);
- the analytic gradients of both parts at the base point.

Every evaluation passes the same non-trainable state, which includes the seed state of
Dropout and random augmentation layers: with ``training=True`` the masks of ``f(x+h)``,
``f(x-h)`` and the analytic gradient are identical. With ``training=False`` (default)
they are off. Batch-norm statistics are never updated.

Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> obj = ModelObjective.build(model, np.ones((2, 3), "float32"), np.array([0, 1]),
    ...                            "sparse_categorical_crossentropy")
    >>> grads = obj.gradients()
    >>> [g.shape for g in grads["data"]]
    [(3, 2), (2,)]
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.checks.gradcheck.clone import FLOAT64, clone_float64, float64_loss
from kerasdiag.checks.gradcheck.kinks import KinkRecorder
from kerasdiag.checks.gradcheck.perturb import batched
from kerasdiag.checks.gradcheck.warmup import warm_up
from kerasdiag.checks.sanity.outputs import (
    as_arrays,
    as_list,
    loss_terms,
    mean_loss,
    output_names,
    take,
    uses_batch_statistics,
)
from kerasdiag.checks.weights import per_example_weights

PARTS = ("data", "regularization")


def _float64_inputs(x: Any) -> Any:
    def convert(a: Any) -> tf.Tensor:
        a = np.asarray(a)
        return tf.constant(a.astype(np.float64) if a.dtype.kind == "f" else a)

    return keras.tree.map_structure(convert, x)


def training_kwargs(layer: keras.layers.Layer, training: bool) -> dict[str, bool]:
    """``{"training": training}`` if ``layer.call`` takes it (``stateless_call`` does not
    filter keyword arguments the way ``__call__`` does)."""
    params = inspect.signature(layer.call).parameters
    takes = "training" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
    return {"training": training} if takes else {}


def resolve_loss(model: keras.Model, loss: Any) -> Any:
    """The float64 loss callable ``(y_true, y_pred, sample_weight=None) -> scalar``; ``None`` =
    the compiled loss.

    A model with several outputs gets the weighted sum of its per-output losses, with the
    compiled ``loss_weights``: the objective ``fit`` minimises.
    """
    terms = loss_terms(model, loss)
    if len(terms) == 1 and len(output_names(model)) == 1:
        return _float64_mean(terms[0][1])
    names = output_names(model)
    fns = [(names.index(n), _float64_mean(fn), w) for n, fn, w in terms]

    def weighted_loss(y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        ys, outs = as_list(y_true, names), as_list(y_pred, names)
        total = [w * fn(ys[i], outs[i], sample_weight) for i, fn, w in fns]
        return tf.add_n(total)

    return weighted_loss


def _float64_mean(loss: Any) -> Any:
    loss = float64_loss(loss)
    return loss if isinstance(loss, keras.losses.Loss) else mean_loss(loss)


def checked_weights(
    model: keras.Model, y: Any, sample_weight: Any, class_weight: Mapping[Any, float] | None
) -> np.ndarray | None:
    """The per-example weights of a gradient check, as ``fit(x, y, sample_weight=...,
    class_weight=...)`` would weigh ``y`` (validated in one place,
    :mod:`kerasdiag.checks.weights`); None when neither is given."""
    outputs = getattr(model, "outputs", None)
    width = int(outputs[0].shape[-1]) if outputs and len(outputs) == 1 else None
    classes = width if width is not None and width > 1 else None
    return per_example_weights(as_arrays(y), sample_weight, class_weight, classes)


def custom_train_step_note(model: keras.Model) -> str | None:
    """The one line a check prints for a model whose ``train_step`` is its own: what ``fit``
    minimises there is not what the check differentiates (the compiled loss)."""
    if type(model).train_step is keras.Model.train_step:
        return None
    return (
        f"{type(model).__name__} overrides train_step: the check differentiates the compiled "
        "loss through the model's layers, not what train_step computes"
    )


class ModelObjective:
    """Data loss and regularization of a float64 model copy on fixed examples."""

    def __init__(
        self,
        clone: keras.Model,
        loss_fn: Any,
        x: Any,
        y: Any,
        *,
        training: bool = False,
        loss_scale: float = 1.0,
        sample_weight: Any = None,
    ) -> None:
        self.model = clone
        self.loss_fn = loss_fn
        self.x = _float64_inputs(x)
        self.y = _float64_inputs(y)
        self.w = None if sample_weight is None else tf.constant(sample_weight, tf.float64)
        self.training = bool(training)
        self.scale = float(loss_scale)
        self.values = [tf.identity(v.value) for v in clone.trainable_variables]
        self.non_trainable = [tf.identity(v.value) for v in clone.non_trainable_variables]
        self.kink_types: list[str] = []
        self.has_regularization = False
        self._evaluate = batched(self.forward, self.values, (tf.float64, tf.float64, tf.int64))
        self._gradients = tf.function(self._gradients_graph, autograph=False)

    @classmethod
    def build(
        cls,
        model: keras.Model,
        x: Any,
        y: Any,
        loss: Any = None,
        *,
        samples: int | None = None,
        training: bool | None = False,
        loss_scale: float = 1.0,
        warmup_steps: int = 0,
        seed: int = 0,
        sample_weight: Any = None,
    ) -> ModelObjective:
        """Clone ``model`` to float64 (optionally warm it up) and fix the checked examples.

        The check uses the first ``samples`` examples of ``x``; a warm-up trains the copy on
        all of ``x``. Python's and NumPy's global random state are restored, so running
        a check does not change what a later training run draws. ``training=None`` checks
        the mode ``fit`` trains in where it matters: training mode (batch statistics) for a
        model with BatchNormalization, inference mode otherwise.

        ``sample_weight`` (one per example, validated): the objective is the weighted loss
        ``fit`` minimises, and the checked examples are the first ``samples`` of weight > 0
        (an example of weight 0 adds nothing to the loss, nor to its gradient).
        """
        if training is None:
            training = uses_batch_statistics(model)
        loss_fn = resolve_loss(model, loss)
        x, y = as_arrays(x), as_arrays(y)
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64)
            order = np.concatenate([np.flatnonzero(w > 0), np.flatnonzero(w <= 0)])
            x, y, w = take(x, order), take(y, order), w[order]
        first = take(x, slice(None, samples))
        with _seeded(seed):
            clone = clone_float64(model, build_input=_float64_inputs(first))
            if warmup_steps:
                warm_up(model, clone, loss_fn, _float64_inputs(x), _float64_inputs(y), warmup_steps)
        y_first = take(y, slice(None, samples))
        w_first = None if w is None else w[:samples]
        return cls(
            clone, loss_fn, first, y_first, training=training, loss_scale=loss_scale,
            sample_weight=w_first,
        )  # fmt: skip

    def forward(
        self, values: list[tf.Tensor], fingerprint: bool = True
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
        """``(data loss, regularization, kink fingerprint)`` at ``values`` (graph mode).

        ``fingerprint=False`` leaves the kink patterns out of the graph (``None``).
        """
        with KinkRecorder() as rec:
            out, _, losses = self.model.stateless_call(
                values, self.non_trainable, self.x, return_losses=True,
                **training_kwargs(self.model, self.training),
            )  # fmt: skip
            _require_float64(out, "model outputs")
            data = _require_float64(self.loss_fn(self.y, out, self.w), "loss") * self.scale
            reg = tf.zeros([], FLOAT64)
            for term in losses:
                reg += tf.reduce_sum(_require_float64(term, "regularization term")) * self.scale
        self.kink_types = rec.kink_types
        self.has_regularization = bool(losses)
        return data, reg, rec.fingerprint() if fingerprint else None

    def _gradients_graph(self):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(self.values)
            data, reg, _ = self.forward(self.values, fingerprint=False)
        zero = tf.UnconnectedGradients.ZERO
        # An Embedding's gradient is IndexedSlices (rows of the looked-up ids): densify it.
        return (
            data,
            reg,
            [
                tf.convert_to_tensor(g)
                for g in tape.gradient(data, self.values, unconnected_gradients=zero)
            ],
            [
                tf.convert_to_tensor(g)
                for g in tape.gradient(reg, self.values, unconnected_gradients=zero)
            ],
        )

    def gradients(self) -> dict[str, Any]:
        """Loss values and analytic gradients of both parts at the base point (numpy)."""
        data, reg, g_data, g_reg = self._gradients()
        return {
            "loss": {"data": float(data), "regularization": float(reg)},
            "data": [g.numpy() for g in g_data],
            "regularization": [g.numpy() for g in g_reg],
        }

    def at_elements(
        self, var_idx: np.ndarray, flat_idx: np.ndarray, delta: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Both parts and fingerprints with single entries moved (one per row)."""
        data, reg, sig = self._evaluate(
            "element",
            tf.constant(var_idx, tf.int32),
            tf.constant(flat_idx, tf.int64),
            tf.constant(delta, tf.float64),
        )
        return {"data": data.numpy(), "regularization": reg.numpy(), "fingerprint": sig.numpy()}

    def along(
        self,
        directions: list[tf.Tensor],
        dir_idx: np.ndarray,
        coef: np.ndarray,
        mask: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Both parts and fingerprints at ``w + coef * mask * direction`` (one per row)."""
        data, reg, sig = self._evaluate(
            "direction",
            directions,
            tf.constant(dir_idx, tf.int32),
            tf.constant(coef, tf.float64),
            tf.constant(mask, tf.float64),
        )
        return {"data": data.numpy(), "regularization": reg.numpy(), "fingerprint": sig.numpy()}

    @property
    def depth(self) -> int:
        """Number of layers that own trainable weights (the tolerance grows with it)."""
        return len({v.path.rsplit("/", 1)[0] for v in self.model.trainable_variables})


def _require_float64(value: Any, what: str) -> Any:
    # A silent cast would hide float32 arithmetic (relative errors ~1e-2): refuse it.
    for t in keras.tree.flatten(value):
        if t.dtype != tf.float64:
            raise ValueError(
                f"the float64 check got {t.dtype.name} {what}: something casts to a fixed "
                "dtype, so the check cannot run in float64"
            )
    return value


class _seeded:
    """Seed Python's and NumPy's generators (Dropout copies draw their seeds there), so a
    check is reproducible, and restore the user's random state on exit."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self._state = random.getstate(), np.random.get_state()
        random.seed(self.seed)
        np.random.seed(self.seed)

    def __exit__(self, *exc) -> None:
        random.setstate(self._state[0])
        np.random.set_state(self._state[1])
