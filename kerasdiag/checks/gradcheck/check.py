"""``check_gradients``: compare a model's analytic gradient with centered differences.

The check runs on a float64 copy of the model with a float64 loss, on the first
``samples`` examples, on ``dims_per_variable`` entries of every trainable variable.
The data loss and the regularization term are compared separately; entries that fail
are retried at other step sizes; entries whose ``x - h`` and ``x + h`` straddle a ReLU,
max-pool or hinge kink are labelled ``kink``. Dropout and augmentation are off, or with
``training=True`` run with one frozen seed. ``warmup_steps`` trains the copy first.
Gradient checks are for debugging, never during training.

Example:
    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
    ...                           keras.layers.Dense(3)])
    >>> model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    >>> report = check_gradients(model, x, np.array([0, 2]))
    >>> report.passed, report.max_relative_error < 1e-7
    (True, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from kerasdiag.checks.gradcheck.batch_stats import stable_samples
from kerasdiag.checks.gradcheck.clone import in_float64_scope
from kerasdiag.checks.gradcheck.finite_diff import RETRY_STEPS, final, run_attempts
from kerasdiag.checks.gradcheck.kinks import crossed
from kerasdiag.checks.gradcheck.objective import (
    PARTS,
    ModelObjective,
    checked_weights,
    custom_train_step_note,
)
from kerasdiag.checks.gradcheck.report import ElementCheck, GradcheckReport, summarize
from kerasdiag.checks.gradcheck.sampling import stratified_sample, unravel, used_rows
from kerasdiag.checks.gradcheck.verdict import TINY, smooth_tolerance, tolerance_note
from kerasdiag.checks.sanity.outputs import as_arrays, count, uses_batch_statistics

# More than this share of entries crossing kinks means too many data points or a large h.
_KINK_SHARE = 0.25


def validate_settings(**settings: Any) -> None:
    """Raise ValueError naming the first invalid argument of a check."""
    for name in ("samples", "dims_per_variable", "directions"):
        value = settings.get(name)
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    h = settings.get("h")
    if h is not None and not (isinstance(h, (int, float)) and 0 < h < 1):
        raise ValueError(f"h must be a step size in (0, 1), got {h!r}")
    steps = settings.get("warmup_steps")
    if steps is not None and (not isinstance(steps, (int, np.integer)) or steps < 0):
        raise ValueError(f"warmup_steps must be an integer >= 0, got {steps!r}")
    scale = settings.get("loss_scale")
    if scale is not None and not (
        isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0
    ):
        raise ValueError(f"loss_scale must be a finite number > 0, got {scale!r}")


def variable_names(model: keras.Model) -> list[str]:
    """The names a report uses: the paths of the user's trainable variables."""
    return [v.path for v in model.trainable_variables]


def embedding_variables(model: keras.Model) -> set[str]:
    """The paths of the trainable tables of the model's Embedding layers."""
    layers = model._flatten_layers() if hasattr(model, "_flatten_layers") else []
    return {
        v.path
        for layer in layers
        if isinstance(layer, keras.layers.Embedding)
        for v in layer.trainable_variables
    }


@in_float64_scope
def check_gradients(
    model: keras.Model,
    x: Any,
    y: Any,
    loss: Any = None,
    *,
    samples: int = 2,
    dims_per_variable: int = 8,
    h: float = 1e-5,
    seed: int = 0,
    warmup_steps: int = 0,
    training: bool | None = None,
    variables: Sequence[str] | None = None,
    loss_scale: float = 1.0,
    sample_weight: Any = None,
    class_weight: Mapping[Any, float] | None = None,
) -> GradcheckReport:
    """Check ``model``'s gradients on ``samples`` examples of ``(x, y)``.

    Args:
        model: a built Keras model: Sequential, functional or subclassed. One that cannot
            be rebuilt from its config (a custom layer without get_config, a subclassed
            model whose constructor takes Python objects) is turned float64 in place for
            the check and put back as it was (the same variables, the same values).
        x, y: examples; the first ``samples`` are checked, all of them feed a warm-up.
        loss: loss object, name or function; ``None`` uses the model's compiled loss.
        samples: data points in the objective (few: fewer kinks, faster).
        dims_per_variable: entries compared per trainable variable.
        h: step of the centered difference; failing entries retry at 1e-4 and 1e-6.
        seed: seeds the entry sampling and the copy's dropout seeds.
        warmup_steps: training steps of the copy before the check.
        training: ``False`` checks inference mode (dropout off); ``True`` the training-mode
            forward with every random layer's seed frozen; ``None`` (default) the mode
            ``fit`` trains in where it matters: training mode (batch statistics) for a model
            with BatchNormalization, inference mode otherwise.
        variables: check only these variable paths (as ``check_gradients_fast`` suggests).
        loss_scale: multiply the objective, when gradients are too small to compare.
        sample_weight, class_weight: as ``fit`` takes them (validated, one weight per example
            or ``{class index: weight}``): the check differentiates the weighted loss ``fit``
            minimises, on the first ``samples`` examples of weight > 0 (the warm-up, when
            asked for, trains on the unweighted loss: it only moves the weights off their
            initialisation).
    """
    validate_settings(
        samples=samples, dims_per_variable=dims_per_variable, h=h,
        warmup_steps=warmup_steps, loss_scale=loss_scale,
    )  # fmt: skip
    start = time.perf_counter()
    names = variable_names(model)
    include = _included(names, variables)
    mode = uses_batch_statistics(model) if training is None else bool(training)
    choice = stable_samples(model, samples, count(as_arrays(y)), mode)
    if choice.unstable:
        return _unstable_report(
            model, choice.unstable, h, samples, mode, time.perf_counter() - start
        )
    samples = choice.samples
    objective = ModelObjective.build(
        model, x, y, loss, sample_weight=checked_weights(model, y, sample_weight, class_weight),
        samples=samples, training=training,
        loss_scale=loss_scale, warmup_steps=warmup_steps, seed=seed,
    )  # fmt: skip
    grads = objective.gradients()
    shapes = [tuple(g.shape) for g in grads["data"]]
    # An Embedding's table: sample the rows the batch uses (elsewhere both gradients are 0)
    prefer = {
        i: used_rows(grads["data"][i])
        for i, name in enumerate(names)
        if name in embedding_variables(model)
    }
    var_idx, flat_idx = stratified_sample(shapes, dims_per_variable, seed, include, prefer)
    parts = PARTS if objective.has_regularization else PARTS[:1]
    analytic = {
        p: np.array([grads[p][v].ravel()[i] for v, i in zip(var_idx, flat_idx, strict=True)])
        for p in parts
    }

    def evaluate(items: np.ndarray, step: float):
        k = len(items)
        out = objective.at_elements(
            np.tile(var_idx[items], 2),
            np.tile(flat_idx[items], 2),
            np.concatenate([np.full(k, step), np.full(k, -step)]),
        )
        plus = {p: out[p][:k] for p in parts}
        minus = {p: out[p][k:] for p in parts}
        return plus, minus, crossed(out["fingerprint"][:k], out["fingerprint"][k:])

    tolerance = smooth_tolerance(objective.depth)
    runs = run_attempts(
        evaluate, analytic, h=h, retry_steps=RETRY_STEPS, tolerance=tolerance,
        has_kinks=bool(objective.kink_types),
    )  # fmt: skip
    elements, rows = [], []
    for part in parts:
        for v in sorted(set(var_idx.tolist())):
            entries = []
            for item in np.flatnonzero(var_idx == v):
                verdict, deciding = final(runs[part][item])
                entries.append(
                    ElementCheck(
                        part=part,
                        variable=names[v],
                        index=unravel(flat_idx[item], shapes[v]),
                        analytic=float(analytic[part][item]),
                        verdict=verdict,
                        relative_error=deciding.relative_error,
                        attempts=runs[part][item],
                    )
                )
            if part == "regularization" and not _regularized(entries):
                continue
            elements.extend(entries)
            rows.append(summarize(part, names[v], shapes[v], entries))

    report = GradcheckReport(
        rows=rows,
        elements=elements,
        tolerance=tolerance,
        depth=objective.depth,
        h=h,
        retry_steps=RETRY_STEPS,
        samples=count(objective.y),
        loss=grads["loss"],
        kink_types=objective.kink_types,
        settings={
            "dims_per_variable": dims_per_variable,
            "seed": seed,
            "warmup_steps": warmup_steps,
            "training": objective.training,
            "loss_scale": loss_scale,
            "variables": list(variables) if variables is not None else None,
        },  # fmt: skip
    )
    report.notes = _notes(report, objective) + ([choice.note] if choice.note else [])
    if custom_train_step_note(model):
        report.notes.insert(0, custom_train_step_note(model))
    report.warnings = _warnings(report)
    report.seconds = time.perf_counter() - start
    return report


def _unstable_report(
    model: keras.Model, why: str, h: float, samples: int, training: bool, seconds: float
) -> GradcheckReport:
    """The inconclusive report of a check whose objective is unstable with the examples at
    hand: nothing compared, the reason in ``unstable``."""
    depth = len({v.path.rsplit("/", 1)[0] for v in model.trainable_variables})
    return GradcheckReport(
        rows=[], elements=[], tolerance=smooth_tolerance(depth), depth=depth, h=h,
        retry_steps=RETRY_STEPS, samples=samples, settings={"training": training},
        seconds=seconds, unstable=why,
    )  # fmt: skip


def _included(names: list[str], variables: Sequence[str] | None) -> list[int] | None:
    if variables is None:
        return None
    unknown = [v for v in variables if v not in names]
    if unknown:
        raise ValueError(f"variables: unknown {unknown}; the model's variables are {names}")
    return [names.index(v) for v in variables]


def _regularized(entries: list[ElementCheck]) -> bool:
    # A variable no regularizer touches has exactly zero on both sides: no row for it.
    return any(e.analytic != 0 or any(a.numeric != 0 for a in e.attempts) for e in entries)


def _notes(report: GradcheckReport, objective: ModelObjective) -> list[str]:
    notes = [tolerance_note(report.depth)]
    if objective.has_regularization:
        notes.append(
            f"data loss ({report.loss['data']:.4g}) and regularization term "
            f"({report.loss['regularization']:.4g}) checked separately"
        )
    if report.kink_types:
        notes.append(
            f"objective has kinks ({', '.join(report.kink_types)}): entries whose x-h and x+h "
            "straddle one are labelled 'kink'"
        )
    if objective.training and uses_batch_statistics(objective.model):
        notes.append(
            "BatchNormalization in training mode (batch statistics of the checked examples), "
            "as fit trains it; its moving statistics are not updated"
        )
    random_layers = any("seed_generator" in v.path for v in objective.model.non_trainable_variables)
    if random_layers:
        notes.append(
            "random layers (dropout, augmentation) run in training mode with one frozen seed"
            if objective.training
            else "random layers (dropout, augmentation) are off (inference mode)"
        )
    return notes


def _warnings(report: GradcheckReport) -> list[str]:
    warnings = []
    magnitudes = [
        max(abs(e.analytic), max(abs(a.numeric) for a in e.attempts)) for e in report.elements
    ]
    tiny = [m for m in magnitudes if 0 < m < TINY]
    if tiny:
        scale = 10.0 ** math.ceil(math.log10(1e-2 / min(tiny)))
        warnings.append(
            f"{len(tiny)} entries compare gradients below {TINY:g} (smallest {min(tiny):.1e}), "
            f"where relative errors are unreliable; scale the loss: loss_scale={scale:g}"
        )
    kinks = sum(e.verdict == "kink" for e in report.elements)
    if report.elements and kinks > _KINK_SHARE * len(report.elements):
        warnings.append(
            f"{kinks} of {len(report.elements)} entries crossed kinks: use fewer samples or a "
            "smaller h, so the check measures gradients rather than kinks"
        )
    return warnings
