"""``check_gradients_fast``: a whole-model check in a handful of forward passes.

Along a random unit direction ``u`` over all parameters at once, the analytic directional
derivative ``g . u`` must match ``(f(w + h u) - f(w - h u)) / 2h``. Each direction costs two
forward passes, whatever the model's size, and a wrong gradient anywhere shows up in almost
every direction. ``u`` gives every variable the same share of its length, so a small
variable (a bias) weighs as much as a big kernel. When a direction fails, the same
direction is split per variable (two passes each) and the report names the variables whose
piece disagrees: pass them to ``check_gradients(..., variables=...)``.

In a ReLU/BatchNorm network at initialisation some units sit exactly on a kink (a
zero-initialised ``beta`` over a channel the batch statistics flatten), so every direction
over all parameters crosses one at every step size. Such a result is inconclusive, never a
pass: the check then falls back to the per-variable pieces of one direction, each of which
moves only one variable, and decides on those (``fallback``).

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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.checks.gradcheck.batch_stats import stable_samples
from kerasdiag.checks.gradcheck.check import validate_settings, variable_names
from kerasdiag.checks.gradcheck.clone import in_float64_scope
from kerasdiag.checks.gradcheck.finite_diff import RETRY_STEPS, Attempt, final, run_attempts
from kerasdiag.checks.gradcheck.kinks import crossed
from kerasdiag.checks.gradcheck.objective import (
    ModelObjective,
    checked_weights,
    custom_train_step_note,
)
from kerasdiag.checks.gradcheck.report import (
    EXCUSED,
    FAILING,
    VerdictRows,
    format_table,
    unverified_advice,
)
from kerasdiag.checks.gradcheck.verdict import VERDICTS, smooth_tolerance, tolerance_note
from kerasdiag.checks.sanity.outputs import as_arrays, count, uses_batch_statistics

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
    # True when the whole directions were inconclusive and the per-variable pieces decided.
    fallback: bool = False
    settings: dict[str, Any] = field(default_factory=dict)
    # Why the objective itself is unstable with the examples at hand (then inconclusive).
    unstable: str = ""

    @property
    def max_relative_error(self) -> float:
        rows = self.variable_rows if self.fallback else self.rows
        return max((r.relative_error for r in rows if r.verdict not in EXCUSED), default=0.0)

    @property
    def suspects(self) -> list[str]:
        """Variables whose piece of a failing direction disagrees: sample these."""
        return [r.variable for r in self.variable_rows if r.verdict in FAILING]

    @property
    def failing(self) -> list:
        return [r for r in self.rows + self.variable_rows if r.verdict in FAILING]

    def excused(self) -> tuple[int, int]:
        rows = self.variable_rows if self.fallback else self.rows
        return sum(r.verdict in EXCUSED for r in rows), len(rows)

    @property
    def unverified(self) -> list:
        return [r for r in self.variable_rows if r.verdict in ("zero", "unverified")]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "status": self.status,
            "fallback": self.fallback,
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
            "unstable": self.unstable,
        }

    def __str__(self) -> str:
        status = self.status.upper()
        headers = ("direction", "variable", "analytic", "numeric", "rel err", "verdict")
        excused, total = self.excused()
        what = (
            f"over {total - excused} of {total} per-variable pieces (every whole direction "
            "crossed a kink)"
            if self.fallback
            else f"over {total - excused} of {len(self.rows)} random directions"
        )
        lines = [
            f"Fast gradient check {status}: max relative error {self.max_relative_error:.1e} "
            f"{what} (h={self.h:g}, {self.seconds:.1f} s)",
            format_table(headers, [_cells(r) for r in self.rows + self.variable_rows]),
        ]
        lines += [f"  note: {n}" for n in self.notes]
        if self.unstable:
            lines.append(f"  inconclusive: {self.unstable}")
        elif self.status == "inconclusive":
            lines += [f"  {line}" for line in unverified_advice(self, self.settings)]
            lines.append("  or run check_gradients, which samples entries one at a time")
        if self.status == "failed":
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
    error = float("nan") if r.verdict == "zero" else r.relative_error
    return (r.direction, r.variable, r.analytic, shown.numeric, error, r.verdict)


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


@in_float64_scope
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
    training: bool | None = None,
    loss_scale: float = 1.0,
    sample_weight: Any = None,
    class_weight: Mapping[Any, float] | None = None,
) -> FastReport:
    """Compare directional derivatives of ``model``'s objective along random directions.

    The objective is the data loss plus the regularization term on the first ``samples``
    examples (of weight > 0, with ``sample_weight`` or ``class_weight``: the weighted loss
    ``fit`` minimises), on a float64 copy, or on the model itself turned float64 in place and
    put back when it cannot be copied (see ``check_gradients`` for the arguments).
    """
    validate_settings(samples=samples, directions=directions, h=h, loss_scale=loss_scale)
    start = time.perf_counter()
    names = variable_names(model)
    mode = uses_batch_statistics(model) if training is None else bool(training)
    choice = stable_samples(model, samples, count(as_arrays(y)), mode)
    if choice.unstable:
        return FastReport(rows=[], h=h, settings={"training": mode}, unstable=choice.unstable)
    samples = choice.samples
    objective = ModelObjective.build(
        model,
        x,
        y,
        loss,
        sample_weight=checked_weights(model, y, sample_weight, class_weight),
        samples=samples,
        training=training,
        loss_scale=loss_scale,
        seed=seed,
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
        notes=[
            n
            for n in (custom_train_step_note(model), tolerance_note(objective.depth), choice.note)
            if n
        ],
        settings={"training": objective.training, "warmup_steps": 0},
    )
    if report.status != "passed":
        # Split the worst direction (the least excused one when none failed) per variable.
        if report.status == "failed":
            worst = max(rows, key=lambda r: (VERDICTS.index(r.verdict), r.relative_error))
        else:
            worst = min(rows, key=lambda r: sum(a.kink for a in r.attempts))
            report.fallback = True
        k = worst.direction
        var_runs = run(np.full(n_vars, k), np.eye(n_vars), pieces[k])
        report.variable_rows = [_row(k, names[v], pieces[k][v], var_runs[v]) for v in range(n_vars)]
    if objective.training and uses_batch_statistics(objective.model):
        report.notes.append("BatchNormalization in training mode (batch statistics), as fit trains")
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
