"""Enough examples for BatchNormalization's batch statistics in a training-mode check.

In training mode a BatchNormalization layer normalises each channel by the mean and
variance of the values the batch gives it: examples times spatial positions. Averaged over
a handful of values (2 examples on the 1x1 maps at the end of keras.applications' MobileNetV2
at 32x32 pixels), the statistics swing with every entry the check moves, the loss jumps under
a 1e-5 step and a healthy model fails: 143 of 213 variables of an EfficientNetB0, relative
error 1.0 on MobileNetV2's BN ``beta``. With 8 examples both pass. :func:`stable_samples`
raises the checked examples until every such layer averages ``MIN_BATCH_VALUES`` values, or
says the check cannot be judged with the examples at hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras

# Batch statistics averaged over fewer values than this make the objective unstable.
MIN_BATCH_VALUES = 8
# The check raises its examples to at most this many (each forward pass grows with them).
MAX_SAMPLES = 32


@dataclass
class SampleChoice:
    """The examples a check uses: ``samples``; ``note`` says why they were raised;
    ``unstable`` (non-empty) says why no number of examples at hand makes the objective
    stable, and the check is inconclusive."""

    samples: int
    note: str = ""
    unstable: str = ""


def values_per_example(layer: keras.layers.Layer) -> int:
    """How many values of one example a BatchNormalization layer averages per channel: the
    product of its input's dimensions other than the batch and the normalised axis (1 when
    the input's shape is unknown)."""
    try:
        shape = tuple(layer.input.shape)
    except (AttributeError, ValueError):
        shape = tuple((getattr(layer, "_build_shapes_dict", None) or {}).get("input_shape") or ())
    if len(shape) < 2:
        return 1
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    kept = {a % len(shape) for a in axes} | {0}
    return max(1, math.prod(int(d or 1) for i, d in enumerate(shape) if i not in kept))


def batch_norm_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's BatchNormalization layers, nested ones included."""
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else []
    return [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]


def stable_samples(
    model: keras.Model, samples: int, available: int, training: bool
) -> SampleChoice:
    """The examples a check of ``model`` needs so that, in training mode, every
    BatchNormalization layer's statistics average at least ``MIN_BATCH_VALUES`` values.

    ``samples``: what the caller asked for; ``available``: the examples it passed. Inference
    mode, or no BatchNormalization: ``samples`` unchanged.
    """
    layers = batch_norm_layers(model) if training else []
    if not layers:
        return SampleChoice(samples)
    smallest = min(layers, key=values_per_example)
    per_example = values_per_example(smallest)
    needed = math.ceil(MIN_BATCH_VALUES / per_example)
    if samples >= needed:
        return SampleChoice(samples)
    what = (
        f"BatchNormalization layer {smallest.name} averages its batch statistics over "
        f"{per_example} value(s) per example per channel"
    )
    if needed > min(available, MAX_SAMPLES):
        return SampleChoice(
            samples,
            unstable=(
                f"{what}: on {samples} example(s) the loss jumps under the step; a stable "
                f"objective needs {needed} examples (at least {MIN_BATCH_VALUES} values), "
                f"{available} were given"
                + (f", at most {MAX_SAMPLES} are used" if needed > MAX_SAMPLES else "")
            ),
        )
    return SampleChoice(
        needed,
        note=(
            f"{what}: checked on {needed} examples, not {samples}, so that the statistics "
            f"average at least {MIN_BATCH_VALUES} values (fewer make the loss jump under the "
            "step)"
        ),
    )
