"""The loss a freshly initialised classifier should report, before any training.

A network initialised with small random weights produces near-zero scores, so a softmax over
them is close to uniform. Every loss then takes a value that depends only on the number of
classes (and, for class-weighted losses, on the class priors). Measuring a different value at
step 0 is the cheapest bug report there is.

Recognising a loss needs no TensorFlow: Keras loss objects are read through ``get_config()``
and kerasdiag's own losses (``MulticlassHinge``, ``SparseCategoricalFocalLoss``) through their
attributes, so this module imports only NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Normalised loss name (lower case, no underscores) -> (kind, sparse labels, default params).
_KNOWN: dict[str, tuple[str, bool, dict[str, Any]]] = {
    "sparsecategoricalcrossentropy": ("crossentropy", True, {}),
    "categoricalcrossentropy": ("crossentropy", False, {}),
    "binarycrossentropy": ("binary_crossentropy", False, {}),
    "categoricalfocalcrossentropy": ("focal", False, {"gamma": 2.0, "alpha": 0.25}),
    "sparsecategoricalfocalloss": ("focal", True, {"gamma": 2.0, "alpha": None}),
    "sparsecategoricalfocal": ("focal", True, {"gamma": 2.0, "alpha": None}),
    "focal": ("focal", True, {"gamma": 2.0, "alpha": None}),
    "binaryfocalcrossentropy": (
        "binary_focal",
        False,
        {"gamma": 2.0, "alpha": 0.25, "apply_class_balancing": False},
    ),
    "multiclasshinge": ("multiclass_hinge", True, {"margin": 1.0}),
    "westonwatkinshinge": ("multiclass_hinge", True, {"margin": 1.0}),
    "categoricalhinge": ("categorical_hinge", False, {}),
    "hinge": ("binary_hinge", False, {}),
    "squaredhinge": ("binary_hinge", False, {}),
    "meansquarederror": ("mse", False, {}),
    "mse": ("mse", False, {}),
    "meanabsoluteerror": ("mae", False, {}),
    "mae": ("mae", False, {}),
    "huber": ("huber", False, {"delta": 1.0}),
    "huberloss": ("huber", False, {"delta": 1.0}),
    "logcosh": ("log_cosh", False, {}),
}
# Loss kinds whose inputs are logits or probabilities (the others take raw scores).
_PROBABILISTIC = {"crossentropy", "binary_crossentropy", "focal", "binary_focal"}
# Loss kinds on real-valued targets: their value at initialisation depends on the targets'
# scale, not on a class count (``regression_initial_range``).
REGRESSION = frozenset({"mse", "mae", "huber", "log_cosh"})
# Loss kinds that score each output on its own (one column: binary; several: multi-label).
PER_OUTPUT = frozenset({"binary_crossentropy", "binary_focal", "binary_hinge"})
# The spread (std) of a freshly initialised output that is still healthy, in units of
# max(1, the targets' std): Glorot/He initialisation keeps activations of unit order on
# standardised inputs, so outputs up to about twice that are normal, hundreds are not.
INIT_OUTPUT_SPREAD = 2.0


@dataclass(frozen=True)
class LossSpec:
    """What the sanity checks need to know about a loss.

    ``kind`` is one of crossentropy, binary_crossentropy, focal, binary_focal,
    multiclass_hinge, categorical_hinge, binary_hinge, mse. ``sparse`` says whether it takes
    class indices (True) or one-hot / per-output targets (False). ``from_logits`` is None for
    losses on raw scores (hinge, MSE).
    """

    kind: str
    name: str
    sparse: bool
    from_logits: bool | None
    gamma: float = 0.0
    alpha: Any = None
    margin: float = 1.0
    apply_class_balancing: bool = False
    label_smoothing: float = 0.0
    delta: float = 1.0

    @property
    def regression(self) -> bool:
        """Whether the loss compares real values (MSE, MAE, Huber, log-cosh)."""
        return self.kind in REGRESSION


def describe_loss(loss: Any) -> LossSpec:
    """Recognise ``loss`` (a Keras loss object or function, a Keras loss name, or a kerasdiag loss).

    Raises ValueError naming the loss when it is not one the sanity checks know.
    """
    params: dict[str, Any] = {}
    if isinstance(loss, str):
        names = [loss]
    elif callable(loss) and not hasattr(loss, "get_config") and hasattr(loss, "__name__"):
        names = [loss.__name__]  # a Keras loss function such as keras.losses.mse
    else:
        # A loss object: known by its class, else by its name ("focal", "multiclass_hinge").
        names = [type(loss).__name__, str(getattr(loss, "name", ""))]
        if hasattr(loss, "get_config"):
            try:
                params.update(loss.get_config() or {})
            except (NotImplementedError, TypeError):
                params = {}
        # Keras' function-wrapping losses keep some arguments (Huber's delta) only here.
        fn_kwargs = getattr(loss, "_fn_kwargs", None)
        if isinstance(fn_kwargs, dict):
            params.update(fn_kwargs)
        attrs = ("from_logits", "gamma", "alpha", "margin", "apply_class_balancing")
        for attr in (*attrs, "label_smoothing", "delta"):
            if hasattr(loss, attr):
                params[attr] = getattr(loss, attr)
    keys = [n.lower().replace("_", "") for n in names]
    key = next((k for k in keys if k in _KNOWN), None)
    name = names[0]
    if key is None:
        supported = ", ".join(sorted({v[0] for v in _KNOWN.values()}))
        raise ValueError(
            f"loss: no expected initial value is known for {name!r}; supported kinds: {supported}"
        )
    kind, sparse, defaults = _KNOWN[key]
    merged = {**defaults, **{k: v for k, v in params.items() if k in defaults}}
    from_logits = bool(params.get("from_logits", False)) if kind in _PROBABILISTIC else None
    return LossSpec(
        kind=kind,
        name=name,
        sparse=sparse,
        from_logits=from_logits,
        gamma=float(merged.get("gamma", 0.0)),
        alpha=merged.get("alpha"),
        margin=float(merged.get("margin", 1.0)),
        apply_class_balancing=bool(merged.get("apply_class_balancing", False)),
        label_smoothing=float(params.get("label_smoothing") or 0.0),
        delta=float(merged.get("delta", 1.0)),
    )


def expected_initial_loss(
    loss: Any,
    num_classes: int,
    class_priors: Sequence[float] | np.ndarray | None = None,
) -> float:
    """The loss a classifier reports when its outputs are uniform (probabilities) or zero (scores).

    That is what a network at small random initialisation produces, with regularization off.
    ``loss`` is a Keras loss object, function or name, or one of kerasdiag's losses;
    ``class_priors`` (the share of each class in the data, default uniform) only matters for
    class-weighted losses. The reasoning, loss by loss, for C classes:

    * softmax cross-entropy (sparse or one-hot, logits or probabilities): every class gets
      p = 1/C, so -ln p = ln C whatever the label and the class balance (ln 10 = 2.303).
      Label smoothing does not change it: the smoothed target still sums to 1.
    * binary cross-entropy: p = 0.5 for every output, -ln 0.5 = ln 2 = 0.693, again whatever
      the class balance.
    * Weston-Watkins multiclass hinge, sum over j != y of max(0, s_j - s_y + margin): all
      scores are 0, so each of the C - 1 wrong classes contributes the margin: (C - 1) * margin
      (9 for 10 classes at margin 1). Keras' ``categorical_hinge`` (Crammer-Singer, the largest
      wrong score only) and binary ``hinge`` / ``squared_hinge`` give 1 at zero scores.
    * categorical focal loss, -alpha_y (1 - p_y)^gamma ln p_y: at p = 1/C this is
      alpha_y (1 - 1/C)^gamma ln C; alpha_y is 1 when unset, the scalar alpha when set (Keras'
      default is 0.25), and with one alpha per class their average under the class priors.
    * binary focal loss: (1 - 0.5)^gamma ln 2, times prior_1 alpha + prior_0 (1 - alpha)
      when class balancing is on.
    * mean squared error against one-hot targets around a zero prediction: the targets' mean
      square, (1/C) sum_c y_c^2 = 1/C per example; for one output with 0/1 labels it is the
      share of positives, class_priors[1].

    Example:

    >>> round(expected_initial_loss("sparse_categorical_crossentropy", 10), 3)
    2.303
    >>> expected_initial_loss("categorical_hinge", 10)
    1.0
    """
    value, _ = expected_initial_loss_with_reason(loss, num_classes, class_priors)
    return value


def expected_initial_loss_with_reason(
    loss: Any,
    num_classes: int,
    class_priors: Sequence[float] | np.ndarray | None = None,
) -> tuple[float, str]:
    """:func:`expected_initial_loss` and a one-line explanation of where the value comes from."""
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    spec = loss if isinstance(loss, LossSpec) else describe_loss(loss)
    c = int(num_classes)
    if spec.kind in REGRESSION - {"mse"}:
        raise ValueError(
            f"loss: the initial value of {spec.name!r} depends on the targets' scale, not on "
            "a class count; regression_initial_range(spec, targets) gives it"
        )
    binary = spec.kind in {"binary_crossentropy", "binary_focal", "binary_hinge"} or (
        spec.kind == "mse" and c == 1
    )
    priors = _priors(class_priors, 2 if binary else c)
    if spec.kind == "crossentropy":
        return math.log(c), f"ln {c} for cross-entropy over {c} classes at uniform outputs"
    if spec.kind == "binary_crossentropy":
        return math.log(2.0), "ln 2 for binary cross-entropy at p = 0.5, whatever the balance"
    if spec.kind == "multiclass_hinge":
        return (c - 1) * spec.margin, (
            f"(C - 1) * margin = {c - 1} * {spec.margin:g} for the Weston-Watkins hinge "
            "at zero scores"
        )
    if spec.kind in {"categorical_hinge", "binary_hinge"}:
        return 1.0, f"1 (the margin) for {spec.name} at zero scores"
    if spec.kind == "focal":
        weight = _mean_alpha(spec.alpha, priors)
        value = weight * (1.0 - 1.0 / c) ** spec.gamma * math.log(c)
        return value, (
            f"alpha * (1 - 1/C)^gamma * ln C = {weight:g} * (1 - 1/{c})^{spec.gamma:g} "
            f"* ln {c} for the focal loss at uniform outputs"
        )
    if spec.kind == "binary_focal":
        weight = 1.0
        if spec.apply_class_balancing:
            alpha = float(spec.alpha)
            weight = priors[1] * alpha + priors[0] * (1.0 - alpha)
        value = weight * 0.5**spec.gamma * math.log(2.0)
        return value, f"{weight:g} * 0.5^{spec.gamma:g} * ln 2 for binary focal loss at p = 0.5"
    # mse: zero predictions against the targets
    if c == 1:
        return float(priors[1]), "the share of positive labels (mean y^2) for MSE at zero outputs"
    return 1.0 / c, f"1/C = 1/{c}, the mean square of one-hot targets, for MSE at zero outputs"


def regression_initial_range(
    spec: LossSpec, targets: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float, float, str]:
    """``(expected, low, high, reason)`` for a regression loss at initialisation.

    A freshly initialised network's outputs carry no information about the targets and are
    of unit order (Glorot/He keep activations' variance about 1 on standardised inputs), so:

    * ``expected``: the loss of zero outputs, e.g. mean(y^2) for MSE, mean|y| for MAE;
    * ``low``: the loss of the best constant (the targets' mean or median, e.g. var(y) for
      MSE). No output without information about the targets does better: a lower initial
      loss means the labels reach the model before training (a leak);
    * ``high``: the loss of outputs independent of the targets with a spread of
      ``INIT_OUTPUT_SPREAD`` x max(1, std(y)) (mean(y^2) + 4 max(1, var y) for MSE). Higher
      means outputs far larger than initialisation gives: unnormalised inputs (raw 0-255
      pixels) or weights initialised far too large.

    ``targets`` are in the form the loss takes (one column per output). ``weights``: one
    per example, as the loss weighs them (``sum(w_i * loss_i) / N``); the weighted mean joins
    the best constants. Pure NumPy.

    >>> round(regression_initial_range(describe_loss("mse"), np.array([[1.0], [-1.0]]))[0], 3)
    1.0
    """
    y = np.asarray(targets, dtype=np.float64)
    y = y.reshape(len(y), -1)
    per = _regression_elementwise(spec)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)

    def loss(pred: np.ndarray) -> float:
        return float(np.mean(w[:, None] * per(y - pred)))

    expected = loss(np.zeros_like(y))
    constants = [np.mean(y, axis=0), np.median(y, axis=0)]
    if weights is not None and w.sum() > 0:
        constants.append(np.average(y, axis=0, weights=w))
    low = min(loss(np.broadcast_to(c, y.shape)) for c in constants)
    spread = INIT_OUTPUT_SPREAD * np.maximum(1.0, np.std(y, axis=0))
    high = 0.5 * (loss(spread) + loss(-spread))
    reason = (
        f"{spec.name} of zero outputs is {expected:.4g}; an untrained model without "
        f"information about the targets lies between {low:.4g} (the best constant "
        f"prediction) and {high:.4g} (outputs of spread {INIT_OUTPUT_SPREAD:g} x max(1, std y))"
    )
    return expected, low, high, reason


def _regression_elementwise(spec: LossSpec) -> Any:
    """The loss of one residual, as Keras computes it (mean over outputs and examples)."""
    if spec.kind == "mse":
        return np.square
    if spec.kind == "mae":
        return np.abs
    if spec.kind == "log_cosh":
        return lambda r: np.logaddexp(r, -r) - math.log(2.0)
    if spec.kind == "huber":
        d = spec.delta
        return lambda r: np.where(np.abs(r) <= d, 0.5 * r * r, d * (np.abs(r) - 0.5 * d))
    raise ValueError(f"loss: {spec.name!r} is not a regression loss")


def smoothed_target_entropy(spec: LossSpec, num_outputs: int) -> float:
    """The lowest value a cross-entropy with label smoothing can reach: the entropy of the
    smoothed target, reached at 100% accuracy (0 without smoothing).

    Categorical over C classes at smoothing e: the target puts 1 - e + e/C on the true class
    and e/C on every other, so the floor is -(1 - e + e/C) ln(1 - e + e/C) - (C - 1)(e/C)
    ln(e/C): 0.50 for C = 10 and e = 0.1. Binary (per output): the target is 1 - e/2 or e/2,
    the floor the binary entropy of e/2.

    >>> round(smoothed_target_entropy(describe_loss("categorical_crossentropy"), 10), 3)
    0.0
    """
    e = spec.label_smoothing
    if not e or spec.kind not in {"crossentropy", "binary_crossentropy"}:
        return 0.0
    if spec.kind == "binary_crossentropy" or num_outputs < 2:
        q = e / 2.0
        return float(-(q * math.log(q) + (1 - q) * math.log(1 - q)))
    c = int(num_outputs)
    on, off = 1.0 - e + e / c, e / c
    return float(-(on * math.log(on) + (c - 1) * off * math.log(off)))


def _priors(class_priors: Sequence[float] | np.ndarray | None, n: int) -> np.ndarray:
    if class_priors is None:
        return np.full(n, 1.0 / n)
    p = np.asarray(class_priors, dtype=np.float64).reshape(-1)
    if p.size != n or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(
            f"class_priors must hold {n} non-negative shares (one per class), got {p.tolist()}"
        )
    return p / p.sum()


def _mean_alpha(alpha: Any, priors: np.ndarray) -> float:
    if alpha is None:
        return 1.0
    a = np.asarray(alpha, dtype=np.float64).reshape(-1)
    if a.size == 1:
        return float(a[0])
    if a.size != priors.size:
        raise ValueError(f"alpha has {a.size} class weights but there are {priors.size} classes")
    return float(np.dot(a, priors))
