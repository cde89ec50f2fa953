"""``check_gradients_fast``: a whole-model check in a handful of forward passes (B2).

Along a random unit direction ``u`` over all parameters at once, the analytic directional
derivative ``g . u`` must match ``(f(w + h u) - f(w - h u)) / 2h``. Each direction costs two
forward passes, whatever the model's size, and a wrong gradient anywhere shows up in almost
every direction. ``u`` gives every variable the same share of its length, so a small
variable (a bias) weighs as much as a big kernel. When a direction fails, the same
direction is split per variable (two passes each) and the report names the variables whose
piece disagrees: pass them to ``check_gradients(..., variables=...)``.

Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
    ...                           keras.layers.Dense(3)])
    >>> model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    >>> report = check_gradients_fast(model, x, np.array([0, 2]))
    >>> report.passed, report.suspects
    (True, [])
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.gradcheck.check import validate_settings, variable_names
from kerasdiag.gradcheck.finite_diff import RETRY_STEPS, Attempt, final, run_attempts
from kerasdiag.gradcheck.kinks import crossed
from kerasdiag.gradcheck.objective import ModelObjective
from kerasdiag.gradcheck.report import PASSING, VerdictRows, format_table
from kerasdiag.gradcheck.verdict import VERDICTS, smooth_tolerance, tolerance_note

TOTAL = "all variables"


@dataclass
class DirectionCheck:
    """The directional derivative along one direction (or one variable's piece of it)."""

    direction: int
    variable: str
    analytic: float
    verdict: str
    relative_error: float
    attempts: list[Attempt]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FastReport(VerdictRows):
    """The outcome of ``check_gradients_fast``."""

    rows: list[DirectionCheck]
    variable_rows: list[DirectionCheck] = field(default_factory=list)
    tolerance: float = 0.0
    depth: int = 0
    h: float = 1e-5
    loss: float = 0.0
    kink_types: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def max_relative_error(self) -> float:
        return max((r.relative_error for r in self.rows if r.verdict != "kink"), default=0.0)

    @property
    def suspects(self) -> list[str]:
        """Variables whose piece of a failing direction disagrees: sample these."""
        return [r.variable for r in self.variable_rows if r.verdict not in PASSING]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "max_relative_error": self.max_relative_error,
            "suspects": self.suspects,
            "tolerance": self.tolerance,
            "depth": self.depth,
            "h": self.h,
            "loss": self.loss,
            "kink_types": list(self.kink_types),
            "rows": [r.to_dict() for r in self.rows],
            "variable_rows": [r.to_dict() for r in self.variable_rows],
            "notes": list(self.notes),
            "seconds": self.seconds,
        }

    def __str__(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        headers = ("direction", "variable", "analytic", "numeric", "rel err", "verdict")
        lines = [
            f"Fast gradient check {status}: max relative error {self.max_relative_error:.1e} "
            f"over {len(self.rows)} random directions (h={self.h:g}, {self.seconds:.1f} s)",
            format_table(headers, [_cells(r) for r in self.rows + self.variable_rows]),
        ]
        lines += [f"  note: {n}" for n in self.notes]
        if not self.passed:
            if self.suspects and len(self.suspects) == len(self.variable_rows) > 1:
                lines.append(
                    "  every variable disagrees: the error enters above all weights "
                    "(the loss or the output layer's gradient)"
                )
            if self.suspects:
                lines.append(
                    f"  sample these variables: check_gradients(model, x, y, "
                    f"variables={self.suspects})"
                )
            else:
                lines.append("  no single variable stands out: run check_gradients on all")
        return "\n".join(lines)


def _cells(r: DirectionCheck) -> tuple:
    shown = next((a for a in r.attempts if a.relative_error == r.relative_error), r.attempts[0])
    return (r.direction, r.variable, r.analytic, shown.numeric, r.relative_error, r.verdict)


def random_directions(shapes: list[tuple[int, ...]], count: int, seed: int) -> list[np.ndarray]:
    """``count`` random unit directions, stacked per variable (``[count, *shape]`` each).

    Each variable's block has length ``1 / sqrt(#variables)``: every variable, small or
    large, moves the objective comparably.
    """
    rng = np.random.default_rng(seed)
    blocks = []
    for shape in shapes:
        r = rng.standard_normal((count, *shape))
        norms = np.sqrt(np.sum(r.reshape(count, -1) ** 2, axis=1)).reshape(
            (count,) + (1,) * len(shape)
        )
        blocks.append(r / np.maximum(norms, 1e-300) / np.sqrt(len(shapes)))
    return blocks


def check_gradients_fast(
    model: keras.Model,
    x: Any,
    y: Any,
    loss: Any = None,
    *,
    directions: int = 4,
    h: float = 1e-5,
    seed: int = 0,
    samples: int = 2,
    training: bool = False,
    loss_scale: float = 1.0,
) -> FastReport:
    """Compare directional derivatives of ``model``'s objective along random directions.

    The objective is the data loss plus the regularization term on the first ``samples``
    examples, on a float64 copy (see ``check_gradients`` for the arguments).
    """
    validate_settings(samples=samples, directions=directions, h=h, loss_scale=loss_scale)
    start = time.perf_counter()
    names = variable_names(model)
    objective = ModelObjective.build(
        model, x, y, loss, samples=samples, training=training, loss_scale=loss_scale, seed=seed
    )
    grads = objective.gradients()
    total = [a + b for a, b in zip(grads["data"], grads["regularization"], strict=True)]
    blocks = random_directions([g.shape for g in total], directions, seed)
    # per (direction, variable): g_v . u_v
    pieces = np.array(
        [[np.vdot(g, b[k]) for g, b in zip(total, blocks, strict=True)] for k in range(directions)]
    )
    stacked = [tf.constant(b) for b in blocks]
    tolerance = smooth_tolerance(objective.depth)

    def run(dir_idx: np.ndarray, masks: np.ndarray, analytic: np.ndarray):
        def evaluate(items: np.ndarray, step: float):
            k = len(items)
            out = objective.along(
                stacked,
                np.tile(dir_idx[items], 2),
                np.concatenate([np.full(k, step), np.full(k, -step)]),
                np.tile(masks[items], (2, 1)),
            )
            value = out["data"] + out["regularization"]
            kink = crossed(out["fingerprint"][:k], out["fingerprint"][k:])
            return {"total": value[:k]}, {"total": value[k:]}, kink

        runs = run_attempts(
            evaluate, {"total": analytic}, h=h, retry_steps=RETRY_STEPS,
            tolerance=tolerance, has_kinks=bool(objective.kink_types),
        )  # fmt: skip
        return runs["total"]

    n_vars = len(names)
    dir_idx = np.arange(directions)
    runs = run(dir_idx, np.ones((directions, n_vars)), pieces.sum(axis=1))
    rows = [_row(k, TOTAL, pieces[k].sum(), runs[k]) for k in range(directions)]
    report = FastReport(
        rows=rows,
        tolerance=tolerance,
        depth=objective.depth,
        h=h,
        loss=grads["loss"]["data"] + grads["loss"]["regularization"],
        kink_types=objective.kink_types,
        notes=[tolerance_note(objective.depth)],
    )
    if not report.passed:
        # Split the worst direction into its per-variable pieces.
        worst = max(rows, key=lambda r: (VERDICTS.index(r.verdict), r.relative_error)).direction
        var_runs = run(np.full(n_vars, worst), np.eye(n_vars), pieces[worst])
        report.variable_rows = [
            _row(worst, names[v], pieces[worst][v], var_runs[v]) for v in range(n_vars)
        ]
    report.seconds = time.perf_counter() - start
    return report


def _row(direction: int, variable: str, analytic: float, attempts: list[Attempt]) -> DirectionCheck:
    verdict, deciding = final(attempts)
    return DirectionCheck(
        direction=int(direction),
        variable=variable,
        analytic=float(analytic),
        verdict=verdict,
        relative_error=deciding.relative_error,
        attempts=attempts,
    )
