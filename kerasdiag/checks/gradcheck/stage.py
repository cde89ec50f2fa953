"""The gradient check as the first pre-training sanity stage of a run.

``gradcheck_stage`` checks the compiled model on ``sanity.gradcheck_samples`` training
examples with the model's compiled loss, writes ``gradcheck.json`` into the run
folder, prints the per-variable table and returns a ``StageResult`` named ``gradcheck``.
A model with more than ``sanity.gradcheck_max_params`` parameters is skipped (the check's
cost grows with every forward pass), as is a model the check cannot copy to float64.

Config keys read (``sanity`` section): ``gradcheck``, ``gradcheck_samples``,
``gradcheck_dims_per_variable``, ``gradcheck_max_params``, ``gradcheck_warmup_steps``.

Example:
    >>> from pathlib import Path
    >>> from types import SimpleNamespace
    >>> import keras, numpy as np, tempfile
    >>> from kerasdiag.data.dataset import Dataset
    >>> x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    >>> y = np.arange(8) % 3
    >>> data = Dataset("toy", x, y, x, y, x, y, num_classes=3)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> cfg = SimpleNamespace(gradcheck=True, gradcheck_samples=2, gradcheck_dims_per_variable=4,
    ...                       gradcheck_max_params=10_000, gradcheck_warmup_steps=0)
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> result = gradcheck_stage(cfg, model, data, run_dir)  # doctest: +ELLIPSIS
    Gradient check PASSED...
    >>> result.status, (run_dir / RunLayout.GRADCHECK).exists()
    ('pass', True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras

from kerasdiag.checks.gradcheck.batch_stats import MAX_SAMPLES
from kerasdiag.checks.gradcheck.check import check_gradients
from kerasdiag.checks.sanity.result import StageResult
from kerasdiag.core.io import write_json_atomic
from kerasdiag.core.rundir import RunLayout

NAME = "gradcheck"
# Warm-up steps draw batches from this many training examples (the check uses only a few).
_WARMUP_EXAMPLES = 256


def gradcheck_stage(
    sanity_cfg: Any, model: keras.Model, data: Any, run_dir: str | os.PathLike
) -> StageResult:
    """Run ``check_gradients`` on a few training examples; skip big or uncheckable models."""
    if not sanity_cfg.gradcheck:
        return StageResult(NAME, None, message="disabled (sanity.gradcheck=false)")
    params = int(model.count_params())
    limit = int(sanity_cfg.gradcheck_max_params)
    if params > limit:
        return StageResult(
            NAME,
            None,
            message=(
                f"skipped: the model has {params:,} parameters, more than "
                f"sanity.gradcheck_max_params={limit:,}"
            ),
            details={"params": params, "max_params": limit},
        )
    samples = int(sanity_cfg.gradcheck_samples)
    warmup = int(sanity_cfg.gradcheck_warmup_steps)
    # Up to MAX_SAMPLES: the check raises its examples for BatchNormalization's statistics.
    n = max(samples, MAX_SAMPLES) if warmup == 0 else max(samples, _WARMUP_EXAMPLES)
    try:
        report = check_gradients(
            model,
            data.x_train[:n],
            data.y_train[:n],
            samples=samples,
            dims_per_variable=int(sanity_cfg.gradcheck_dims_per_variable),
            warmup_steps=warmup,
        )
    except ValueError as exc:
        # A model the check cannot copy or evaluate is not a gradient bug: say why, go on.
        return StageResult(NAME, None, message=f"skipped: {exc}", details={"params": params})
    path = write_json_atomic(Path(run_dir) / RunLayout.GRADCHECK, report.to_dict())
    print(report)
    failing = [f"{r.part}:{r.name} ({r.verdict})" for r in report.failing]
    excused, total = report.excused()
    if report.unstable:
        message = f"inconclusive: {report.unstable}"
    elif report.status == "inconclusive":
        # Not a pass (nothing was verified), not a gradient bug either: say so, go on.
        message = (
            f"inconclusive: {excused} of {total} entries crossed kinks at every step or were "
            "zero within rounding; see the report for what to run instead"
        )
    elif report.passed:
        message = (
            f"{len(report.rows)} variable checks passed ({len(report.unverified)} unverified), "
            f"max relative error {report.max_relative_error:.1e}"
        )
        if report.kink_types:
            kinds = ", ".join(report.kink_types)
            message += f" (objective with kinks: {kinds}; errors below {report.bound:.0e} pass)"
        if report.max_relative_error > report.bound:
            message += (
                "; errors above the bound are float64 rounding noise of near-zero differences"
            )
    else:
        message = f"gradient check failed for {', '.join(failing)}"
    return StageResult(
        NAME,
        None if report.status == "inconclusive" else report.passed,
        value=report.max_relative_error,
        expected=report.bound,
        message=message,
        seconds=report.seconds,
        details={
            "report": path.name,
            "params": params,
            "failing": failing,
            "warnings": report.warnings,
        },
        inconclusive=report.status == "inconclusive",
    )
