"""Models with several inputs and outputs: their losses, weights and data, output by output.

``compile(loss=[...] | {...}, loss_weights=[...] | {...})`` gives each output its own loss;
the checks evaluate the same weighted sum Keras trains on. Data for such models are lists or
dicts of arrays (``x = {"left": a, "right": b}``), sliced together.

Example:
    >>> import keras
    >>> a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    >>> h = keras.layers.Concatenate()([a, b])
    >>> model = keras.Model([a, b], [keras.layers.Dense(2, name="p")(h),
    ...                              keras.layers.Dense(1, name="q")(h)])
    >>> model.compile(loss=["mse", "mse"], loss_weights=[1.0, 0.5])
    >>> [(name, weight) for name, _, weight in loss_terms(model)]
    [('p', 1.0), ('q', 0.5)]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np


def output_layers(model: keras.Model) -> list[Any]:
    """The layers that produce the model's outputs, in output order; for a model without
    symbolic outputs (subclassed), its last layer (none when it has no layers)."""
    found = [_producer(t) for t in getattr(model, "outputs", None) or []]
    found = [layer for layer in found if layer is not None]
    if not found and getattr(model, "layers", None):
        found = [model.layers[-1]]
    return found


def output_activation(model: keras.Model, index: int = 0) -> str | None:
    """The activation the layer producing output ``index`` applies last: ``"linear"`` for a
    plain Dense or Conv layer, ``"softmax"`` for a Softmax layer, the function's name for an
    ``activation=`` argument or an Activation layer. None when nothing can be said: a model
    without symbolic outputs (subclassed) or a last layer of another kind (a nested model, a
    Lambda, a custom layer)."""
    tensors = getattr(model, "outputs", None) or []
    layer = _producer(tensors[index]) if index < len(tensors) else None
    # A linear Activation layer passes its input through (mixed precision's float32 output
    # cast, Activation("linear", dtype="float32")): what comes before it decides.
    while isinstance(layer, keras.layers.Activation) and _name(layer.activation) == "linear":
        inbound = getattr(layer, "_inbound_nodes", None) or []
        layer = _producer(inbound[0].input_tensors[0]) if len(inbound) == 1 else None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    fn = getattr(layer, "activation", None)
    return _name(fn) if callable(fn) else None


def logits_kept(model: keras.Model, index: int = 0) -> str | None:
    """The activation ("softmax" or "sigmoid") whose logits Keras' TensorFlow backend takes
    back for the loss from output ``index``, or None.

    Keras' own softmax and sigmoid leave their logits on the tensor they return, and its
    cross-entropies compute from those (``keras.src.backend.tensorflow.nn._get_logits``),
    whatever ``from_logits`` says. Only while that very tensor reaches the loss: the layer
    producing the output applies the activation itself and computes in float32. Behind a
    cast (mixed precision's float16 layer, or its ``Activation("linear", dtype="float32")``
    after it) the loss gets a new tensor, and from_logits=True applies the activation twice.
    None too where the model does not say (a subclassed model, another last layer)."""
    tensors = getattr(model, "outputs", None) or []
    layer = _producer(tensors[index]) if index < len(tensors) else None
    if layer is None or getattr(layer, "compute_dtype", None) != "float32":
        return None
    fn = getattr(layer, "activation", None)
    name = _name(fn) if callable(fn) else None
    return name if name in ("softmax", "sigmoid") else None


def _name(fn: Any) -> str | None:
    return getattr(fn, "__name__", None)


def _producer(tensor: Any) -> Any:
    """The layer (operation) a symbolic tensor is the output of, or None."""
    return getattr(getattr(tensor, "_keras_history", None), "operation", None)


def output_names(model: keras.Model) -> list[str]:
    """The names of ``model``'s outputs (one name, the model's, for a single output)."""
    names = list(getattr(model, "output_names", None) or [])
    return names or [model.name]


def is_structure(data: Any) -> bool:
    """True for a list/tuple/dict of arrays (several inputs or outputs), not one array."""
    if isinstance(data, dict):
        return True
    if isinstance(data, (list, tuple)) and data:
        return all(hasattr(a, "shape") and np.ndim(a) >= 1 for a in data)
    return False


def as_arrays(data: Any) -> Any:
    """``data`` with every leaf as a NumPy array (one array stays one array)."""
    if is_structure(data):
        return keras.tree.map_structure(np.asarray, data)
    return np.asarray(data)


def count(data: Any) -> int:
    """The number of examples in ``data`` (the batch axis of its first array)."""
    return len(keras.tree.flatten(data)[0]) if is_structure(data) else len(data)


# Inputs per inference batch, in bytes (as float32): a forward pass holds each layer's
# activations for the whole batch, about ten times the input for a convnet's first layers (32
# filters over 3 channels), so 256 images of 64x64 held ~130 MB a layer and raised a run's
# peak memory with the size of its validation sample. 4 MB keeps CIFAR's 32x32 at 256 a batch.
INFERENCE_BATCH_BYTES = 4 * 2**20
INFERENCE_BATCH_MAX = 256


def inference_batch_size(data: Any, most: int = INFERENCE_BATCH_MAX) -> int:
    """Examples per batch for a forward pass over ``data`` (an array, list or dict of them):
    ``most``, or fewer so that one batch of inputs stays within ``INFERENCE_BATCH_BYTES``."""
    per_example = sum(
        int(np.prod(np.shape(a)[1:], dtype=np.int64)) * 4 for a in keras.tree.flatten(data)
    )
    return int(max(1, min(most, INFERENCE_BATCH_BYTES // max(per_example, 1))))


def take(data: Any, index: Any) -> Any:
    """``data[index]`` for an array or every array of a list/dict."""
    if is_structure(data):
        return keras.tree.map_structure(lambda a: np.asarray(a)[index], data)
    return np.asarray(data)[index]


def as_list(data: Any, names: list[str]) -> list[Any]:
    """The per-output values of ``data`` (a dict by output name, a list, or one value)."""
    if isinstance(data, dict):
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"y: no targets for outputs {missing} (keys: {sorted(data)})")
        return [data[n] for n in names]
    if isinstance(data, (list, tuple)) and len(names) > 1:
        if len(data) != len(names):
            raise ValueError(f"y: {len(data)} targets for {len(names)} outputs {names}")
        return list(data)
    return [data]


def loss_terms(model: keras.Model, loss: Any = None) -> list[tuple[str, Any, float]]:
    """``(output name, loss, weight)`` per output that has a loss.

    ``loss=None`` takes the compiled loss and ``loss_weights``; a loss given here weighs 1
    per output. One loss for a multi-output model applies to every output, as in Keras.
    """
    weights: Any = None
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError("loss: the model is not compiled with a loss; pass loss=...")
        weights = getattr(getattr(model, "_compile_loss", None), "_user_loss_weights", None)
    names = output_names(model)
    if isinstance(loss, dict):
        unknown = sorted(set(loss) - set(names))
        if unknown:
            raise ValueError(f"loss: no outputs named {unknown}; the outputs are {names}")
        picked = [n for n in names if loss.get(n) is not None]
        losses = [loss[n] for n in picked]
    elif isinstance(loss, (list, tuple)):
        if len(loss) != len(names):
            raise ValueError(f"loss: {len(loss)} losses for {len(names)} outputs {names}")
        picked = [n for n, fn in zip(names, loss, strict=True) if fn is not None]
        losses = [fn for fn in loss if fn is not None]
    else:
        picked, losses = names, [loss] * len(names)
    return [(n, fn, _weight(weights, names, n)) for n, fn in zip(picked, losses, strict=True)]


def uses_batch_statistics(model: keras.Model) -> bool:
    """Whether ``model`` has BatchNormalization, which trains on batch statistics: checks
    of how it trains run it in training mode, as ``fit`` does."""
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else []
    return any(isinstance(layer, keras.layers.BatchNormalization) for layer in layers)


def input_kind(model: keras.Model) -> str | None:
    """What ``model`` reads, for advice that must fit it: ``"tokens"`` (an Embedding layer or
    integer inputs), ``"images"`` (inputs of rank 4 or 5: height, width, channels), else
    ``"tables"`` (vectors, or sequences of feature vectors); None when the model has no
    known inputs (a subclassed model not called through ``Input``)."""
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else []
    if any(isinstance(layer, keras.layers.Embedding) for layer in layers):
        return "tokens"
    try:
        inputs = keras.tree.flatten(getattr(model, "inputs", None) or [])
    except (AttributeError, ValueError):  # a subclassed model: no symbolic inputs
        inputs = []
    if not inputs:
        return None
    if any("int" in str(t.dtype) for t in inputs):
        return "tokens"
    if any(len(t.shape) in (4, 5) for t in inputs):
        return "images"
    return "tables"


def _weight(weights: Any, names: list[str], name: str) -> float:
    if weights is None:
        return 1.0
    if isinstance(weights, dict):
        return float(weights.get(name, 1.0))
    if isinstance(weights, (list, tuple)):
        return float(weights[names.index(name)])
    return float(weights)


def mean_loss(loss: Any) -> Callable[..., Any]:
    """A loss name or plain function (one value per example) applied as ``compile`` applies
    it: labels brought to the output's rank (class-0/1 labels of shape (N,) against an (N, 1)
    output) and the values averaged over the examples, ``sum(w_i * loss_i) / N`` with
    ``sample_weight`` (Keras' default reduction)."""
    fn = keras.losses.get(loss) if isinstance(loss, str) else loss

    def mean_of(y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        each = fn(*same_rank(y_true, y_pred))
        if sample_weight is not None:
            each = each * keras.ops.cast(sample_weight, each.dtype)
        return keras.ops.mean(each)

    return mean_of


def same_rank(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    """``y_true`` with a trailing axis of 1 added or removed to match ``y_pred``'s rank, as
    Keras' loss wrappers do before a loss function runs."""
    t, p = len(keras.ops.shape(y_true)), len(keras.ops.shape(y_pred))
    if t == p - 1 and keras.ops.shape(y_pred)[-1] == 1:
        return keras.ops.expand_dims(y_true, -1), y_pred
    if t == p + 1 and keras.ops.shape(y_true)[-1] == 1:
        return keras.ops.squeeze(y_true, -1), y_pred
    return y_true, y_pred
