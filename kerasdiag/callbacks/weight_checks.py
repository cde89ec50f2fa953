"""What the TrainingDoctor judges from the weights and the loss alone (no probe batch).

Without probe inputs the doctor cannot see activations or gradients, but the weights and the
loss still show the commonest faults:

- :func:`init_scale_findings`: at initialisation, a kernel whose standard deviation is far
  from what its fan-in and activation call for (He, variance 2/n_in, for ReLU-like units;
  Glorot/LeCun, variance 1/n_in, for tanh, sigmoid and linear ones). Too large: each layer
  multiplies the activations, and the gradients, by the excess (ReLU: exploding gradients;
  tanh/sigmoid: saturated units); too small: the signal shrinks layer by layer (vanishing
  gradients). Named in the doctor's vocabulary, with the layer.
- :func:`flat_loss_finding`: the loss has not moved after the first ``FLAT_STEPS`` steps
  (slow convergence, named long before the epoch-based judgement).
- :func:`unjudged_note`: the one line the doctor prints at the start, saying which symptoms
  it cannot judge without probe data and how to pass some.

Stagnant weights (update/weight ratios) and NaN weights are judged without a probe by the
doctor itself. Pure functions of the model's weights and the recorded losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from kerasdiag.checks.sanity.outputs import output_layers
from kerasdiag.core.activations import init_gain
from kerasdiag.diagnosis.symptoms import (
    INIT_TOO_LARGE_FIX,
    INIT_TOO_SMALL_FIX,
    NO_PROBE_HINT,
    Finding,
    fix_for,
    make_finding,
)

# A kernel whose std is this many times the expected one is too large (standard
# initialisers stay within ~1.5x: Glorot on a layer with fan_out < fan_in gives at most
# sqrt(2) of LeCun's std) ...
INIT_TOO_LARGE = 5.0
# ... or this share of it too small (Glorot on a first conv layer with few input channels
# and many filters gives ~0.1-0.2 of He's std, and does no harm).
INIT_TOO_SMALL = 0.05
# The loss counts as flat when, after FLAT_STEPS steps, the mean of the last FLAT_WINDOW
# step losses is less than FLAT_DROP of the initial loss (plus the noise) below the mean of
# the first ones.
FLAT_STEPS = 100
FLAT_WINDOW = 20
FLAT_DROP = 0.01


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


def flat_loss_finding(
    step_losses: Sequence[tuple[int, float]], initial_loss: float | None, lr: float | None
) -> Finding | None:
    """``slow_convergence`` when the loss has not moved over the first ``FLAT_STEPS`` steps.

    Judged once, at step ``FLAT_STEPS``: the mean of the last ``FLAT_WINDOW`` losses must be
    below the mean of the first ``FLAT_WINDOW`` by ``FLAT_DROP`` of the initial loss plus
    twice the standard error of that difference (the minibatch noise); a healthy run has
    fallen far more by then.
    """
    if initial_loss is None or len(step_losses) < FLAT_STEPS or not initial_loss > 0:
        return None
    losses = [v for _, v in step_losses[:FLAT_STEPS]]
    if not all(math.isfinite(v) for v in losses):
        return None
    head, tail = np.array(losses[:FLAT_WINDOW]), np.array(losses[-FLAT_WINDOW:])
    first, last = float(head.mean()), float(tail.mean())
    drop = (first - last) / initial_loss
    # Twice the standard error of the difference of the two means: minibatch noise alone.
    noise = 2 * math.sqrt((head.var(ddof=1) + tail.var(ddof=1)) / FLAT_WINDOW) / initial_loss
    if drop >= FLAT_DROP + noise:
        return None
    step = step_losses[FLAT_STEPS - 1][0]
    return make_finding(
        "slow_convergence",
        f"the loss is flat: over the first {FLAT_STEPS} steps its mean went from {first:.4g} "
        f"(first {FLAT_WINDOW} steps) to {last:.4g} (last {FLAT_WINDOW}), "
        f"{drop:.2%} of the initial loss (expected at least {FLAT_DROP + noise:.1%}: "
        f"{FLAT_DROP:.0%} plus twice the minibatch noise)",
        {
            "first_mean": first,
            "last_mean": last,
            "drop": drop,
            "expected_drop": FLAT_DROP + noise,
            "noise": noise,
            "steps": FLAT_STEPS,
            "initial_loss": initial_loss,
        },
        fix_for("slow_convergence", lr),
        step=step,
    )


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
