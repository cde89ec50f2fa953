"""The ensemble as one Keras model: a shared input, every member, the mean of their softmaxes
(the mean of their sigmoids for multi-label members, of their outputs for regression).

Members output logits (kerasdiag's builders do), so each member's output goes through a
softmax and the ensemble outputs the average probability vector: one forward pass, one graph
(on a GPU, one launch for all members). A member whose last layer already applies a softmax
is averaged as it is.

Multiclass-hinge (SVM) members output scores, not log-probabilities. They go through the
same softmax: it keeps each member's ranking of the classes (its prediction) and turns the
margins into weights, so the average is a soft vote in which a member counts more where its
margins are large. The scale of SVM scores is arbitrary, so the ensemble's cross-entropy is
only comparable between SVM members trained alike; its accuracy is the meaningful score.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kerasdiag.modeling.safe_load import load_model_safely

# How members' outputs become what is averaged, by the task they were trained for: class
# probabilities (softmax), per-label probabilities (sigmoid) or the predicted numbers as they are.
COMBINE = {"classification": "softmax", "multilabel": "sigmoid", "regression": None}


def build_ensemble(
    members: Sequence[keras.Model],
    names: Sequence[str] | None = None,
    name: str = "ensemble",
    task: str = "classification",
) -> keras.Model:
    """A functional model averaging the members' class probabilities (``task``:
    ``multilabel`` averages each label's sigmoid, ``regression`` the outputs themselves).

    Each member is wrapped under its own name (``names``, default ``member0, member1, ...``),
    so members built by the same recipe, whose layers share names, sit side by side. The
    result is left uncompiled (it is for inference: no optimizer state to save); to use
    ``evaluate``, compile it with ``keras.losses.SparseCategoricalCrossentropy()`` (it outputs
    probabilities) and ``metrics=["accuracy"]``. Its loss then also holds the members' weight
    penalties, as any Keras model's does.

    Example:
        >>> members = [keras.models.load_model(p, safe_mode=True) for p in paths]  # doctest: +SKIP
        >>> ensemble = build_ensemble(members, ["seed0", "seed1", "seed2"])  # doctest: +SKIP
        >>> ensemble.predict(x_test)  # mean of the three softmaxes  # doctest: +SKIP
    """
    if len(members) < 2:
        raise ValueError(f"members: an ensemble needs at least 2 models, got {len(members)}")
    names = [f"member{i}" for i in range(len(members))] if names is None else list(names)
    if len(names) != len(members):
        raise ValueError(f"names: {len(names)} names for {len(members)} members")
    layer_names = [_layer_name(n) for n in names]
    if len(set(layer_names)) != len(layer_names):
        raise ValueError(f"names must be unique, got {names}")
    input_shape, num_classes = member_signature(members[0], names[0])
    for member, member_name in zip(members, names, strict=True):
        if member_signature(member, member_name) != (input_shape, num_classes):
            raise ValueError(
                f"member {member_name!r} maps {member_signature(member, member_name)} but "
                f"{names[0]!r} maps {(input_shape, num_classes)}: members must share the input "
                f"shape and the number of classes"
            )
    inputs = keras.Input(shape=input_shape, name="inputs")
    combine = COMBINE[task]
    probabilities = []
    for member, layer_name in zip(members, layer_names, strict=True):
        renamed = keras.Model(member.input, member.output, name=layer_name)
        out = renamed(inputs)
        if combine is not None and not outputs_probabilities(member, combine):
            out = keras.layers.Activation(combine, name=f"{layer_name}_{combine}")(out)
        probabilities.append(out)
    mean = "mean_probability" if combine is not None else "mean_output"
    outputs = keras.layers.Average(name=mean)(probabilities)
    return keras.Model(inputs, outputs, name=name)


def outputs_probabilities(model: keras.Model, combine: str = "softmax") -> bool:
    """Whether the model's last layer already applies ``combine`` (softmax or sigmoid)."""
    last = model.layers[-1]
    if combine == "softmax" and isinstance(last, keras.layers.Softmax):
        return True
    return getattr(getattr(last, "activation", None), "__name__", None) == combine


def load_member(path: str | os.PathLike) -> keras.Model:
    """A member model from a ``.keras`` file, loaded in safe mode, without its optimizer."""
    return load_model_safely(path, compile=False)


def predict_probabilities(
    model: keras.Model, x: Any, batch_size: int = 256, task: str = "classification"
) -> np.ndarray:
    """Class probabilities: the model's softmax, or its output when it ends in one (per-label
    sigmoids for ``multilabel``, the outputs as they are for ``regression``). ``x``: an
    array, or batches (a tf.data dataset, which brings its own batch size)."""
    batched = not isinstance(x, np.ndarray)
    out = model.predict(x, batch_size=None if batched else batch_size, verbose=0)
    combine = COMBINE[task]
    if combine is None or outputs_probabilities(model, combine):
        return out
    activation = keras.ops.softmax if combine == "softmax" else keras.ops.sigmoid
    return keras.ops.convert_to_numpy(activation(out))


def member_signature(model: keras.Model, name: str) -> tuple[tuple, int]:
    """A member's input shape (without the batch axis) and number of classes."""
    try:
        return tuple(model.input.shape[1:]), int(model.output.shape[-1])
    except (AttributeError, ValueError):
        raise ValueError(
            f"member {name!r} has no single symbolic input and output: members must be "
            f"functional or Sequential Keras models with one input and one output"
        ) from None


def _layer_name(name: str) -> str:
    # Keras layer names may not hold "/" (it separates variable paths).
    return re.sub(r"[^\w.-]", "_", name)
