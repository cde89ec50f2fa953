"""``check_layer_gradients``: one layer or op against its full Jacobian.

For a single layer the whole Jacobian is affordable: ``tf.test.compute_gradient`` builds the
theoretical Jacobian (one backward pass per output) and the numeric one (two forward passes
per input entry) of the layer's output with respect to each floating input and each
trainable weight, on a float64 copy of the layer. Every Jacobian entry is compared with the
bands of ``check_gradients``; rounding noise in entries that are exactly zero is recognised
as such, entries that fail are retried at the other step sizes, and columns whose
perturbation crosses a kink (ReLU, max-pool) are labelled ``kink``.

Example:
    >>> import keras, numpy as np
    >>> layer = keras.layers.Dense(3, activation="tanh")
    >>> report = check_layer_gradients(layer, np.ones((2, 4), "float32"))
    >>> report.passed, [r.name for r in report.rows]
    (True, ['input', 'kernel', 'bias'])
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.checks.gradcheck.clone import FLOAT64, clone_float64
from kerasdiag.checks.gradcheck.finite_diff import RETRY_STEPS
from kerasdiag.checks.gradcheck.kinks import KinkRecorder, crossed
from kerasdiag.checks.gradcheck.objective import training_kwargs
from kerasdiag.checks.gradcheck.perturb import batched
from kerasdiag.checks.gradcheck.report import VerdictRows, format_table, verdict_cell
from kerasdiag.checks.gradcheck.verdict import (
    EPS64,
    ROUNDING_SAFETY,
    classify,
    relative_error,
    settle,
    smooth_tolerance,
    worst,
)

_SHOWN_ENTRIES = 8


@dataclass
class JacobianRow:
    """One argument of the layer (an input or a trainable weight) and its Jacobian."""

    name: str
    shape: tuple[int, ...]
    jacobian_shape: tuple[int, int]
    max_relative_error: float
    verdict: str
    kinks: int = 0
    retried: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"], d["jacobian_shape"] = list(self.shape), list(self.jacobian_shape)
        return d


@dataclass
class LayerReport(VerdictRows):
    """The outcome of ``check_layer_gradients``."""

    layer: str
    rows: list[JacobianRow]
    # The entries that are not ok: argument, output row, input column, raw values per step.
    entries: list[dict[str, Any]] = field(default_factory=list)
    tolerance: float = 0.0
    h: float = 1e-5
    kink_types: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def max_relative_error(self) -> float:
        return max((r.max_relative_error for r in self.rows), default=0.0)

    def excused(self) -> tuple[int, int]:
        """(Jacobian entries excused as kinks, Jacobian entries compared)."""
        total = sum(int(np.prod(r.jacobian_shape)) for r in self.rows)
        return sum(r.kinks for r in self.rows), total

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "passed": self.passed,
            "status": self.status,
            "max_relative_error": self.max_relative_error,
            "tolerance": self.tolerance,
            "h": self.h,
            "kink_types": list(self.kink_types),
            "rows": [r.to_dict() for r in self.rows],
            "entries": list(self.entries),
            "seconds": self.seconds,
        }

    def __str__(self) -> str:
        status = self.status.upper()
        headers = ("argument", "shape", "jacobian", "max rel err", "verdict")
        rows = [
            (r.name, r.shape, r.jacobian_shape, r.max_relative_error, verdict_cell(r))
            for r in self.rows
        ]
        lines = [
            f"Layer gradient check {status} for {self.layer}: max relative error "
            f"{self.max_relative_error:.1e} (full Jacobians, float64, h={self.h:g}, "
            f"{self.seconds:.1f} s)",
            format_table(headers, rows),
        ]
        for e in self.entries[:_SHOWN_ENTRIES]:
            tries = "; ".join(
                f"h={h:g}: {n:.6e}" for h, n in zip(e["h"], e["numeric"], strict=True)
            )
            lines.append(
                f"  {e['argument']} d out[{e['row']}] / d in[{e['column']}] {e['verdict']}: "
                f"analytic {e['analytic']:.6e}; {tries}"
            )
        return "\n".join(lines)


def _as_list(inputs: Any) -> tuple[list[Any], bool]:
    if isinstance(inputs, (list, tuple)):
        return list(inputs), True
    return [inputs], False


def check_layer_gradients(
    layer: keras.layers.Layer, inputs: Any, *, h: float = 1e-5, training: bool = False
) -> LayerReport:
    """Check ``layer`` (called as ``layer(inputs)``) against its full Jacobians.

    ``inputs`` is an array or a list of arrays (for layers that take a list, like ``Add``);
    floating inputs and all trainable weights are checked. The layer keeps its weights and
    dtype; a layer that was never built is checked at its initial weights.
    """
    if not (isinstance(h, (int, float)) and 0 < h < 1):
        raise ValueError(f"h must be a step size in (0, 1), got {h!r}")
    start = time.perf_counter()
    arrays, as_list = _as_list(inputs)
    tensors = [
        tf.constant(np.asarray(a, np.float64) if np.asarray(a).dtype.kind == "f" else np.asarray(a))
        for a in arrays
    ]
    call_input = tensors if as_list else tensors[0]
    clone = clone_float64(layer, build_input=call_input)
    weights = [tf.identity(v.value) for v in clone.trainable_variables]
    non_trainable = [tf.identity(v.value) for v in clone.non_trainable_variables]
    checked = [i for i, t in enumerate(tensors) if t.dtype == FLOAT64]
    names = [("input" if not as_list else f"input[{i}]") for i in checked]
    names += [v.path.rsplit("/", 1)[-1] for v in clone.trainable_variables]
    kink_types: list[str] = []

    def call(args: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        full = list(tensors)
        for i, t in zip(checked, args[: len(checked)], strict=True):
            full[i] = t
        with KinkRecorder() as rec:
            out, _ = clone.stateless_call(
                args[len(checked) :], non_trainable, full if as_list else full[0],
                **training_kwargs(clone, training),
            )  # fmt: skip
        kink_types[:] = rec.kink_types
        flat = tf.concat([tf.reshape(o, [-1]) for o in keras.tree.flatten(out)], axis=0)
        return flat, rec.fingerprint()

    args = [tensors[i] for i in checked] + weights
    output = tf.function(lambda *a: call(list(a))[0], autograph=False)
    fingerprints = batched(lambda a: (call(a)[1],), args, (tf.int64,))
    out_scale = float(np.max(np.abs(output(*args).numpy()), initial=0.0))
    tolerance = smooth_tolerance(1)

    steps = (h, *[s for s in RETRY_STEPS if s != h])
    rows, entries = [], []
    for p, name in enumerate(names):

        def compare(step: float, p: int = p) -> dict[str, Any]:
            def moved(a: tf.Tensor) -> tf.Tensor:
                return output(*args[:p], a, *args[p + 1 :])

            (a,), (n,) = tf.test.compute_gradient(moved, [args[p]], delta=step)
            rel = relative_error(a, n)
            within = np.abs(a - n) <= ROUNDING_SAFETY * EPS64 * out_scale / (2 * step)
            bad_columns = np.flatnonzero(np.any((rel > tolerance) & ~within, axis=0))
            kink = np.zeros(a.shape, bool)
            if bad_columns.size:
                kink[:, bad_columns] = _crossing(fingerprints, p, bad_columns, step)[None, :]
            verdict = classify(
                rel,
                tolerance=tolerance,
                kink=kink,
                has_kinks=bool(kink_types),
                within_rounding=within,
            )
            return {
                "h": step,
                "analytic": a,
                "numeric": n,
                "rel": rel,
                "kink": kink,
                "verdict": verdict,
            }

        # Retry the whole Jacobian at the next step while some entry is ok at none so far.
        runs = [compare(steps[0])]
        for step in steps[1:]:
            if not np.logical_and.reduce([r["verdict"] != "ok" for r in runs]).any():
                break
            runs.append(compare(step))
        row, bad = _settle_argument(name, tuple(args[p].shape), runs)
        rows.append(row)
        entries.extend(bad)
    entries.sort(key=lambda e: -e["relative_error"])
    return LayerReport(
        layer=layer.name,
        rows=rows,
        entries=entries,
        tolerance=tolerance,
        h=h,
        kink_types=list(kink_types),
        seconds=time.perf_counter() - start,
    )


def _crossing(fingerprints, p: int, columns: np.ndarray, step: float) -> np.ndarray:
    """Whether moving entry ``column`` of argument ``p`` by +-step crosses a kink."""
    k = len(columns)
    out = fingerprints(
        "element",
        tf.constant(np.full(2 * k, p), tf.int32),
        tf.constant(np.tile(columns, 2), tf.int64),
        tf.constant(np.concatenate([np.full(k, step), np.full(k, -step)]), tf.float64),
    )[0].numpy()
    return crossed(out[:k], out[k:])


def _settle_argument(name: str, shape: tuple[int, ...], runs: list[dict[str, Any]]):
    """The row of one argument and its entries that are not ok, from its attempts."""
    first = runs[0]
    verdict = first["verdict"].copy()
    error = first["rel"].copy()
    retried = 0
    bad = []
    for r, c in zip(*np.nonzero(verdict != "ok"), strict=True):
        v, i = settle(
            [str(a["verdict"][r, c]) for a in runs],
            [bool(a["kink"][r, c]) for a in runs],
            [float(a["rel"][r, c]) for a in runs],
        )
        verdict[r, c], error[r, c] = v, runs[i]["rel"][r, c]
        retried += len(runs) > 1
        if v != "ok":
            bad.append(
                {
                    "argument": name, "row": int(r), "column": int(c), "verdict": v,
                    "relative_error": float(error[r, c]), "analytic": float(first["analytic"][r, c]),
                    "h": [a["h"] for a in runs], "numeric": [float(a["numeric"][r, c]) for a in runs],
                }
            )  # fmt: skip
    smooth = error[verdict != "kink"]
    row = JacobianRow(
        name=name,
        shape=shape,
        jacobian_shape=tuple(int(s) for s in first["rel"].shape),
        max_relative_error=float(smooth.max() if smooth.size else error.max(initial=0.0)),
        verdict=worst(str(v) for v in np.unique(verdict)),
        kinks=int(np.sum(verdict == "kink")),
        retried=retried,
    )
    return row, bad
