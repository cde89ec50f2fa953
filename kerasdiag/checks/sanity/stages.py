"""The pre-training sanity stages of a run: gradcheck -> initial_loss -> regularization -> overfit.

Then the checks beyond the notes: leakage -> split_shift (the data) -> input_baseline ->
batch_independence -> lr_range (off by default).

``scripts/train.py`` calls :func:`run_sanity_stages` between building the model and training
it. Each stage is switched by ``sanity.<stage>`` in the config; results go to ``sanity.json``
in the run directory and to a table on the console. With ``sanity.fail_fast=true`` the first
failing stage stops the run (:class:`SanityCheckFailed`). No stage changes the model that then
trains, nor the global random state it trains with.

This module imports TensorFlow only when a stage runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kerasdiag.checks.data import check_leakage, check_split_shift
from kerasdiag.checks.lr_range import lr_range_stage
from kerasdiag.checks.sanity._common import preserved_random_state
from kerasdiag.checks.sanity.baseline import check_input_dependence
from kerasdiag.checks.sanity.batch_independence import check_batch_independence
from kerasdiag.checks.sanity.initial_loss import check_initial_loss
from kerasdiag.checks.sanity.overfit import overfit_small_subset
from kerasdiag.checks.sanity.regularization import check_regularization_raises_loss
from kerasdiag.checks.sanity.result import SanityCheckFailed, StageResult
from kerasdiag.core import text
from kerasdiag.core.faults import kill_point
from kerasdiag.core.io import json_safe, write_json_atomic
from kerasdiag.core.rundir import RunLayout
from kerasdiag.modeling.factory import builder_takes_regularization

STAGES = ("gradcheck", "initial_loss", "regularization", "overfit")
# Beyond the notes' four: the data checks (kerasdiag.checks.data), the practitioner's checks
# (kerasdiag.checks.sanity.baseline, .batch_independence) and the range test (kerasdiag.checks.lr_range).
STAGES = (*STAGES, "leakage", "split_shift", "input_baseline", "batch_independence", "lr_range")

# sanity.* keys and the defaults used when a config lacks them.
DEFAULTS: dict[str, Any] = {
    "gradcheck": True,
    "initial_loss": True,
    "regularization": True,
    "overfit": True,
    "fail_fast": False,
    "initial_loss_rtol": 0.25,
    "regularization_factor": 10.0,
    "overfit_examples": 20,
    "overfit_max_steps": 300,
    "overfit_loss_fraction": 0.05,
    "leakage": True,
    "split_shift": True,
    "input_baseline": True,
    "input_baseline_steps": 60,
    "batch_independence": True,
    "lr_range": False,  # ~100 training steps: 10-25% of a short run, so opt-in
    "lr_range_steps": 100,
    "lr_range_start": 1e-7,
    "lr_range_end": 10.0,
}
# L2 strength used to test the wiring when the config asks for no regularization.
PROBE_L2 = 1e-3


def run_sanity_stages(
    cfg: Any,
    model: Any,
    data: Any,
    run_dir: str | Path,
    build_model: Callable[..., Any],
    *,
    class_weight: Mapping[int, float] | None = None,
) -> list[StageResult]:
    """Run the enabled stages in order, write ``sanity.json``, print a table, return the results.

    Args:
        cfg: the run config (``cfg.sanity.*``, ``cfg.model.l2`` / ``cfg.model.l1``).
        model: the compiled model that will train; it is read, never changed.
        data: the run's kerasdiag ``Dataset``.
        run_dir: the run directory (``sanity.json`` goes there).
        build_model: ``build_model(**model_overrides)`` returns a freshly built, compiled model
            of the run's config with the given ``cfg.model`` fields overridden.
        class_weight: the ``class_weight`` the run's ``fit`` trains with (``{class: weight}``),
            so that the stages that read the loss read the weighted one.

    Raises:
        SanityCheckFailed: a stage failed and ``sanity.fail_fast`` is true (after writing
            ``sanity.json``).
    """
    run_dir = Path(run_dir)
    settings = {**_settings(cfg), "class_weight": class_weight}
    results: list[StageResult] = []
    failed: StageResult | None = None
    with preserved_random_state():
        for name in STAGES:
            if not settings[name]:
                results.append(StageResult(name, None, message=f"disabled (sanity.{name}=false)"))
                continue
            if failed is not None and settings["fail_fast"]:
                results.append(
                    StageResult(
                        name,
                        None,
                        message=f"not run: stage '{failed.name}' failed and sanity.fail_fast=true",
                    )
                )
                continue
            start = time.perf_counter()
            result = _RUNNERS[name](cfg, settings, model, data, run_dir, build_model)
            result.seconds = time.perf_counter() - start  # including model builds
            results.append(result)
            kill_point("sanity-stage", len(results))  # a test's fault injection; else inert
            if result.passed is False and failed is None:
                failed = result
    write_json_atomic(run_dir / RunLayout.SANITY, [_record(r) for r in results])
    print(format_table(results))
    if failed is not None and settings["fail_fast"]:
        raise SanityCheckFailed(failed)
    return results


def format_table(results: list[StageResult]) -> str:
    """The console table: one row per stage, its verdict, numbers and message."""
    rows = [("stage", "status", "value", "expected", "seconds", "message")]
    for r in results:
        rows.append(
            (
                r.name,
                r.status.upper(),
                _num(r.value),
                _expected(r),
                f"{r.seconds:.1f}",
                r.text,
            )
        )
    return "sanity stages:\n" + text.format_table(rows, indent="  ", free_last=True)


def _settings(cfg: Any) -> dict[str, Any]:
    sanity = cfg.get("sanity") or {}
    settings = {}
    for key, default in DEFAULTS.items():
        value = sanity.get(key)
        settings[key] = default if value is None else value
    return settings


def _model_strengths(cfg: Any) -> tuple[float, float]:
    model_cfg = cfg.get("model") or {}
    return float(model_cfg.get("l2") or 0.0), float(model_cfg.get("l1") or 0.0)


def gradcheck_available() -> bool:
    """Whether ``kerasdiag.checks.gradcheck.stage`` (the gradient-check stage) is installed."""
    try:
        return importlib.util.find_spec("kerasdiag.checks.gradcheck.stage") is not None
    except ModuleNotFoundError:
        return False


def _gradcheck(cfg, settings, model, data, run_dir, build_model) -> StageResult:
    if not gradcheck_available():
        return StageResult(
            "gradcheck", None, message="skipped: kerasdiag.checks.gradcheck.stage is not available"
        )
    stage = importlib.import_module("kerasdiag.checks.gradcheck.stage")
    return stage.gradcheck_stage(cfg.sanity, model, data, run_dir)


def _initial_loss(cfg, settings, model, data, run_dir, build_model) -> StageResult:
    return check_initial_loss(
        model,
        data,
        rtol=float(settings["initial_loss_rtol"]),
        class_weight=settings.get("class_weight"),
    )


def _regularization(cfg, settings, model, data, run_dir, build_model) -> StageResult:
    if not builder_takes_regularization(cfg.get("model") or {}):
        return StageResult(
            "regularization",
            None,
            message="the model builder declares no 'layers', 'l2' or 'l1' parameter: "
            "model.l2 cannot reach it, nothing to check",
        )
    l2, l1 = _model_strengths(cfg)
    factor = float(settings["regularization_factor"])
    unregularized = build_model(l2=0.0, l1=0.0)
    if l2 or l1:
        stronger = build_model(l2=l2 * factor, l1=l1 * factor)
        what = f"model.l2={l2:g}, model.l1={l1:g}, stronger = x{factor:g}"
    else:
        stronger = build_model(l2=PROBE_L2, l1=0.0)
        what = f"model.l2 = model.l1 = 0, probe l2={PROBE_L2:g}"
    result = check_regularization_raises_loss(
        model,
        data,
        unregularized=unregularized,
        stronger=stronger,
        factor=factor,
        class_weight=settings.get("class_weight"),
    )
    result.message = f"{what}: {result.message}"
    return result


def _overfit(cfg, settings, model, data, run_dir, build_model) -> StageResult:
    # The compiled loss as it is: label smoothing's floor is part of the check's criterion.
    return overfit_small_subset(
        model,
        data,
        num_examples=int(settings["overfit_examples"]),
        max_steps=int(settings["overfit_max_steps"]),
        loss_fraction=float(settings["overfit_loss_fraction"]),
        class_weight=settings.get("class_weight"),
    )


def _leakage(cfg, settings, model, data, run_dir, build_model) -> StageResult:
    return check_leakage(data)


def _split_shift(cfg, settings, model, data, run_dir, build_model) -> StageResult:
    return check_split_shift(data)


def _input_baseline(cfg, settings, model, data, run_dir, build_model) -> StageResult:
    return check_input_dependence(
        model,
        data,
        steps=int(settings["input_baseline_steps"]),
        seed=int(cfg.data.seed),
        class_weight=settings.get("class_weight"),
    )


def _batch_independence(cfg, settings, model, data, run_dir, build_model) -> StageResult:
    return check_batch_independence(model, data, seed=int(cfg.data.seed))


def _lr_range(cfg, settings, model, data, run_dir, build_model) -> StageResult:
    return lr_range_stage(cfg, model, data, run_dir, settings.get("class_weight"))


_RUNNERS = {
    "leakage": _leakage,
    "split_shift": _split_shift,
    "input_baseline": _input_baseline,
    "batch_independence": _batch_independence,
    "lr_range": _lr_range,
    "gradcheck": _gradcheck,
    "initial_loss": _initial_loss,
    "regularization": _regularization,
    "overfit": _overfit,
}


def _record(result: StageResult) -> dict[str, Any]:
    return json_safe(
        {
            "name": result.name,
            "status": result.status,
            "value": result.value,
            "expected": result.expected,
            "seconds": round(result.seconds, 3),
            "message": result.message,
            "fix": result.fix,
            "details": result.details,
        }
    )


def _expected(result: StageResult) -> str:
    """The expected value and, where the check accepts a range, the range: a failure never
    reads "value 2.303, expected 2.303" without the bounds that decided it."""
    accepted = result.details.get("accepted")
    if not accepted or result.expected is None:
        return _num(result.expected)
    return f"{_num(result.expected)} [{accepted[0]:.4g}..{accepted[1]:.4g}]"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
