"""What the TrainingDoctor judges from the weights and the loss alone (no probe batch).

Without probe inputs the doctor cannot see activations or gradients, but the weights and the
loss still show the commonest faults:

- :func:`init_scale_findings`: at initialisation, a kernel whose standard deviation is far
  from what its fan-in and activation call for (He, variance 2/n_in, for ReLU-like units;
  Glorot/LeCun, variance 1/n_in, for tanh, sigmoid and linear ones). Too large: each layer
  multiplies the activations, and the gradients, by the excess (ReLU: exploding gradients;
  tanh/sigmoid: saturated units); too small: the signal shrinks layer by layer (vanishing
  gradients). Named in the doctor's vocabulary, with the layer.
- :func:`flat_loss_finding` (a rule of the pure engine,
  :mod:`kerasdiag.diagnosis.doctor`, named here too): the loss has not moved after the
  first ``FLAT_STEPS`` steps (slow convergence, named long before the epoch-based
  judgement).
- :func:`unjudged_note`: the one line the doctor prints at the start, saying which symptoms
  it cannot judge without probe data and how to pass some.
- :class:`WeightGuard`: the NaN/Inf check of the weights, and the weights of the last
  finite epoch to put back.

Stagnant weights (update/weight ratios) are judged without a probe from the update ratios.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.callbacks import stats
from kerasdiag.checks.sanity.outputs import output_layers
from kerasdiag.core.activations import init_gain
from kerasdiag.diagnosis.doctor import FLAT_DROP, FLAT_STEPS, FLAT_WINDOW, flat_loss_finding
from kerasdiag.diagnosis.symptoms import (
    INIT_TOO_LARGE_FIX,
    INIT_TOO_SMALL_FIX,
    NO_PROBE_HINT,
    Finding,
    make_finding,
)

__all__ = [
    "FLAT_DROP",
    "FLAT_STEPS",
    "FLAT_WINDOW",
    "WeightGuard",
    "expected_std",
    "flat_loss_finding",
    "init_scale_findings",
    "kernel_layers",
    "output_layer_names",
    "unjudged_note",
]

# A kernel whose std is this many times the expected one is too large (standard
# initialisers stay within ~1.5x: Glorot on a layer with fan_out < fan_in gives at most
# sqrt(2) of LeCun's std) ...
INIT_TOO_LARGE = 5.0
# ... or this share of it too small (Glorot on a first conv layer with few input channels
# and many filters gives ~0.1-0.2 of He's std, and does no harm).
INIT_TOO_SMALL = 0.05


def expected_std(fan_in: int, activation: str) -> float:
    """The kernel std that init by activation calls for: sqrt(2 / fan_in) for ReLU-like units, else sqrt(1 / fan_in)."""
    return math.sqrt(init_gain(activation) / max(fan_in, 1))


def kernel_layers(model: Any) -> list[tuple[Any, Any, str, bool]]:
    """``(layer, kernel, activation, is_output)`` for the Dense/Conv-like layers of ``model``
    whose init scale can be judged: a kernel of rank >= 2, not followed by a normalization
    layer (which rescales whatever comes in)."""
    layers = list(model.layers)
    outputs = output_layer_names(model)
    found = []
    for i, layer in enumerate(layers):
        kernel = getattr(layer, "kernel", None)
        if kernel is None or len(kernel.shape) < 2 or isinstance(layer, keras.layers.Embedding):
            continue
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        norms = (keras.layers.BatchNormalization, keras.layers.LayerNormalization)
        if isinstance(nxt, norms):
            continue
        activation = _activation_name(getattr(layer, "activation", None))
        if activation == "linear" and nxt is not None:
            follow = _activation_layer_name(nxt)
            activation = follow or activation
        found.append((layer, kernel, activation, layer.name in outputs))
    return found


def init_scale_findings(model: Any) -> list[Finding]:
    """Findings for kernels whose initial std is far from ``expected_std`` (call at step 0).

    Too large names ``exploding_gradients`` (ReLU-like and linear units) or
    ``saturated_activations`` (tanh/sigmoid); too small names ``vanishing_gradients`` (the
    output layer is not judged for this: a small last layer is a deliberate choice).
    """
    findings = []
    for layer, kernel, activation, is_output in kernel_layers(model):
        w = np.asarray(kernel.numpy() if hasattr(kernel, "numpy") else kernel, dtype=np.float64)
        fan_in = int(np.prod(w.shape[:-1]))
        expected = expected_std(fan_in, activation)
        std = float(w.std())
        ratio = std / expected
        evidence = {
            "kernel_std": std,
            "expected_std": expected,
            "ratio": ratio,
            "fan_in": fan_in,
            "activation": activation,
            "rule": "He sqrt(2/fan_in)" if init_gain(activation) == 2 else "sqrt(1/fan_in)",
            "judged_from": "weights (no probe batch)",
        }
        what = (
            f"the kernel of layer {layer.name!r} ({activation}, fan-in {fan_in}) starts with "
            f"std {std:.3g}, {_times(ratio)} the {expected:.3g} that "
            f"{evidence['rule']} calls for"
        )
        if ratio > INIT_TOO_LARGE:
            saturating = activation in ("tanh", "sigmoid", "hard_sigmoid", "softsign")
            symptom = "saturated_activations" if saturating else "exploding_gradients"
            consequence = (
                "its units start saturated"
                if saturating
                else f"activations and gradients grow ~{ratio:.0f}x through it"
            )
            findings.append(
                make_finding(
                    symptom,
                    f"{what}: {consequence}",
                    evidence,
                    INIT_TOO_LARGE_FIX,
                    step=0,
                    epoch=1,
                    layer=layer.name,
                )
            )
        elif ratio < INIT_TOO_SMALL and not is_output:
            findings.append(
                make_finding(
                    "vanishing_gradients",
                    f"{what}: the signal shrinks ~{1 / max(ratio, 1e-12):.0f}x through it",
                    evidence,
                    INIT_TOO_SMALL_FIX,
                    step=0,
                    epoch=1,
                    layer=layer.name,
                )
            )
    return findings


def unjudged_note(activations: bool, gradients: bool) -> str | None:
    """The start-of-training line naming what cannot be judged without probe data, or None.

    ``activations`` / ``gradients``: whether the doctor has activation / gradient
    measurements (its own probes or monitors it was given).
    """
    missing = []
    if not activations:
        missing += ["dying_relu", "saturated_activations"]
    if not gradients:
        missing += ["exploding_gradients", "vanishing_gradients"]
    if not missing:
        return None
    partly = [s for s in missing if s != "dying_relu"]
    return (
        f"TrainingDoctor: no probe data, so it cannot judge {', '.join(missing)} during "
        f"training (it judges {', '.join(partly)} at initialisation from the weights' "
        f"scale, and the loss, NaNs and stagnant weights throughout); to judge them, "
        f"{NO_PROBE_HINT}."
    )


def _activation_name(fn: Any) -> str:
    if fn is None:
        return "linear"
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return str(name).lower()


def _activation_layer_name(layer: Any) -> str | None:
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer.activation)
    if isinstance(layer, keras.layers.ReLU):
        return "relu"
    if isinstance(layer, (keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU)):
        return "leaky_relu"
    return None


def output_layer_names(model: Any) -> set[str]:
    """Names of the layers that produce the model's outputs."""
    return {layer.name for layer in output_layers(model)}


def _times(ratio: float) -> str:
    if ratio >= 1:
        return f"{ratio:.1f}x"
    return f"1/{1 / max(ratio, 1e-12):.0f} of"


class WeightGuard:
    """A model's float weights watched for NaN/Inf, and the weights of the end of the last
    finite epoch, to put back after they break.

    The check is one compiled reduction over all weights (one call, one device sync): a NaN
    or Inf anywhere makes the sum of all values non-finite.

    Example:

    ```python
    guard = WeightGuard(model)
    model.fit(x, y, epochs=1)
    if not guard.finite():
        print(guard.broken())  # e.g. ["dense/kernel"]
        guard.restore()  # the weights guard.keep() last saw, or the initial ones
    ```

    Args:
        model: a built Keras model.

    Attributes:
        weights: the float weights checked and restored (trainable or not: batch norm's
            moving statistics break too).
        good: (epoch, values) kept by :meth:`keep`; epoch 0 is the initial weights.
    """

    def __init__(self, model: keras.Model):
        self.weights = [v for v in model.weights if "float" in str(v.dtype)]
        self._check = tf.function(lambda: _finite_sum(self.weights), autograph=False)
        self.keep(0)

    def finite(self) -> bool:
        """Whether every weight is finite (the first call traces the check)."""
        return bool(self._check())

    def broken(self) -> list[str]:
        """The paths of the weights holding NaN/Inf values."""
        return [v.path for v in self.weights if not bool(_finite_sum([v]))]

    def keep(self, epoch: int) -> None:
        """Keep the current weights as those of the end of ``epoch`` (costs no copy until
        the optimizer writes them: see :func:`~kerasdiag.callbacks.stats.snapshot`)."""
        self.good = (epoch, stats.snapshot(self.weights))

    def restore(self) -> int:
        """Put the kept weights back; returns the epoch they are of."""
        epoch, values = self.good
        for variable, value in zip(self.weights, values, strict=True):
            variable.assign(value)
        return epoch


def _finite_sum(variables: Sequence) -> tf.Tensor:
    # float32 sums of real weights are far from overflowing: only NaN/Inf make it non-finite.
    if not variables:
        return tf.constant(True)
    return tf.math.is_finite(tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32)) for v in variables]))
