"""Named symptoms with concrete fixes, from the numbers a run already produced (B1, M1, M2, P2).

:func:`diagnose` reads a finished run directory and writes ``diagnosis.json``: a list of
findings, each a named symptom with its severity, the numbers that show it (evidence) and
what to change (fix). It judges

- the **loss curve's shape** (M1): rising = learning rate far too high; a fast drop then a
  bumpy plateau at a high loss = too high; a near-linear decay still far from converged =
  too low (vetoed when the measured update/weight ratios are healthy, M3);
- the **train/validation gap** (M2) and the **bias/variance table** (P2): training error
  against the optional human/Bayes error (config ``bayes_error``, 0 when unknown) is the
  avoidable bias, validation minus training error the variance. High bias -> bigger network
  or train longer (``underfitting``); high variance -> more data or regularization
  (``overfitting``);
- and it carries over what :class:`~kerasdiag.callbacks.TrainingDoctor` saw during training
  (``doctor.json``) and a NaN stop record (``nan.json``).

The same functions serve the doctor at the end of ``fit``, so a run judged live and a run
judged afterwards get the same verdicts. Every threshold is a field of :class:`Thresholds`
(documented there) that a user can override.

Example:
    >>> from kerasdiag import diagnose
    >>> for f in diagnose("outputs/digits_softmax/2026-01-01_00-00-00-000000"):  # doctest: +SKIP
    ...     print(f.symptom, f.severity, f.fix)
"""

from __future__ import annotations

import itertools
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from kerasdiag.arguments import check_positive_float
from kerasdiag.io import write_json_atomic
from kerasdiag.symptoms import fix_for, lr_hint, reconcile

# Symptoms the doctor names while training runs, then those judged from the finished curves.
TRAINING_SYMPTOMS = (
    "nan",
    "exploding_gradients",
    "vanishing_gradients",
    "dying_relu",
    "saturated_activations",
    "oscillating_loss",
    "slow_convergence",
    "stagnant_weights",
)
CURVE_SYMPTOMS = ("lr_too_high", "lr_too_low", "overfitting", "underfitting")
SYMPTOMS = TRAINING_SYMPTOMS + CURVE_SYMPTOMS
# A pre-training check that failed (sanity.json): shown with the run's other findings.
SANITY_SYMPTOMS = ("failed_sanity_check",)

# "error": training is broken and its result is unusable; "warning": it works, but badly.
ERROR_SYMPTOMS = frozenset({"nan", "exploding_gradients"})

# M3: an update/weight ratio around 1e-3 is healthy (UpdateRatioMonitor's band is 1e-4..1e-2).
HEALTHY_UPDATE_RATIO = 1e-3

DIAGNOSIS_FILE = "diagnosis.json"
DOCTOR_FILE = "doctor.json"
NAN_FILE = "nan.json"


@dataclass
class Thresholds:
    """Every threshold of the diagnosis, with the reason for its default.

    Fractions "of the initial loss" are relative to the loss before training (the first
    step's loss; about ln C = 2.30 for softmax over 10 classes), so one setting serves
    cross-entropy, hinge and focal losses alike.

    In training (:class:`~kerasdiag.callbacks.TrainingDoctor`):

    - ``exploding_norm``: global gradient norm above this explodes (P8; as GradientMonitor).
    - ``gradient_growth``: a global norm this many times the median of earlier probes explodes.
    - ``vanishing_ratio``: first-layer / last-layer gradient norm below this vanishes (P8).
    - ``dead_fraction``: a ReLU layer with more than this share of units that output 0 for
      every probe example is dying (healthy He-initialised layers: a few percent).
    - ``saturated_fraction``: a tanh/sigmoid layer with more than this share of outputs
      saturated (|a| > 0.99, sigmoid outside [0.01, 0.99]) is saturated (M4). The output
      layer is never judged (a confident classifier saturates its output on purpose).
    - ``oscillation``: the median absolute step-to-step change of the training loss over the
      last ``oscillation_window`` steps, above this fraction of the initial loss, is an
      oscillating loss. Minibatch noise of a healthy run is a few percent; a too-high learning
      rate makes the loss jump by about its own size.
    - ``slow_drop`` / ``slow_epochs``: after ``slow_epochs`` epochs the epoch's mean loss
      should be at least ``slow_drop`` (20%) below the initial loss.
    - ``stagnant_ratio``: a layer whose kernel's median update/weight ratio over an epoch is
      below this has stagnant weights: 100x under the "learning rate too low" end of M3's
      healthy band (1e-4 .. 1e-2).

    After training (:func:`curve_findings`, also run by the doctor at the end of ``fit``):

    - ``min_epochs``: the loss curve's shape is judged only with at least this many epochs.
    - ``rise``: a final epoch loss above the first epoch's and this fraction above the
      curve's minimum is a rising loss (learning rate far too high).
    - ``plateau_change``: a second half of training that lowers the best loss by less than
      this fraction of the initial loss is a plateau;
    - ``plateau_level``: ... a high one when the final loss is above this fraction of the
      initial loss;
    - ``bump``: ... with the learning rate to blame when the loss rises between two epochs
      after the first by more than this fraction of the initial loss (a capacity-limited
      model flattens smoothly instead).
    - ``linear_ratio`` / ``linear_level``: a decay whose second half lowers the loss per epoch
      by more than ``linear_ratio`` times the first half's rate (a healthy curve is convex:
      ~0.1-0.3), with the final loss still above ``linear_level`` of the initial loss, is
      linear (lr too low).
    - ``variance``: validation error minus training error above this is high variance,
      overfitting (P2: 1% train vs 11% dev error).
    - ``val_loss_rise``: a final validation loss this fraction above its minimum while the
      training loss kept falling is overfitting too.
    - ``bias``: training error minus the Bayes error above this is high bias, underfitting
      (P2: 15% train error against ~0% human error).
    """

    # GradientMonitor's defaults (kerasdiag.callbacks.stats; this module imports no TensorFlow)
    exploding_norm: float = 1e3
    gradient_growth: float = 100.0
    vanishing_ratio: float = 1e-3
    dead_fraction: float = 0.5
    saturated_fraction: float = 0.5
    oscillation: float = 0.25
    oscillation_window: int = 20
    slow_drop: float = 0.2
    slow_epochs: int = 2
    stagnant_ratio: float = 1e-6
    min_epochs: int = 4
    rise: float = 0.1
    plateau_change: float = 0.1
    plateau_level: float = 0.2
    bump: float = 0.02
    linear_ratio: float = 0.5
    linear_level: float = 0.5
    variance: float = 0.05
    val_loss_rise: float = 0.2
    bias: float = 0.05

    @classmethod
    def of(cls, value: Thresholds | Mapping[str, Any] | None) -> Thresholds:
        """``value`` as Thresholds: None = the defaults, a mapping overrides some fields.

        Raises ValueError naming an unknown field or a value that is not a positive number.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(
                f"`thresholds` must be a Thresholds or a mapping of its fields. Received: {value!r}"
            )
        known = {f.name: f for f in fields(cls)}
        changes = {}
        for key, v in value.items():
            if key not in known:
                raise ValueError(f"unknown threshold {key!r}; known: {', '.join(sorted(known))}")
            number = check_positive_float(f"thresholds.{key}", v)
            if known[key].type == "int":
                if number != int(number):
                    raise ValueError(f"threshold {key!r} must be an integer. Received: {v!r}")
                number = int(number)
            changes[key] = number
        return replace(cls(), **changes)


@dataclass
class Finding:
    """One named symptom: where it was seen, the numbers that show it, and what to change.

    ``step`` is the optimizer step (0 = before the first update) and ``epoch`` the 1-based
    epoch it was seen in (as in metrics.csv); both are None for whole-run judgements that
    have no single moment. ``count`` and ``last_step`` record repeats of the same symptom in
    the same layer. ``source`` is ``"doctor"`` (seen during training), ``"curves"`` (judged
    from the finished curves) or ``"nan_stop"`` (from nan.json).
    """

    symptom: str
    severity: str
    evidence: dict[str, Any]
    fix: str
    step: int | None = None
    epoch: int | None = None
    layer: str | None = None
    message: str = ""
    source: str = "doctor"
    count: int = 1
    last_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Finding:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.fix}"


def make_finding(
    symptom: str,
    what: str,
    evidence: dict[str, Any],
    fix: str,
    *,
    step: int | None = None,
    epoch: int | None = None,
    layer: str | None = None,
    source: str = "doctor",
) -> Finding:
    """A Finding with its severity and a one-line message ``"<symptom> at ...: <what>."``."""
    if symptom not in SYMPTOMS + SANITY_SYMPTOMS:
        known = ", ".join(SYMPTOMS + SANITY_SYMPTOMS)
        raise ValueError(f"unknown symptom {symptom!r}; known: {known}")
    where = []
    if step is not None:
        where.append(f"step {step}")
    if epoch is not None:
        where.append(f"epoch {epoch}")
    at = f" at {', '.join(where)}" if where else ""
    return Finding(
        symptom=symptom,
        severity="error" if symptom in ERROR_SYMPTOMS else "warning",
        evidence=evidence,
        fix=fix,
        step=step,
        epoch=epoch,
        layer=layer,
        message=f"{symptom}{at}: {what}.",
        source=source,
        last_step=step,
    )


# --- fixes --------------------------------------------------------------------------------


# The fix texts live in one table, kerasdiag.symptoms (fix_for, lr_hint re-exported here).


# --- the loss curve and the bias/variance table ---------------------------------------------


def oscillation_index(losses: Sequence[float], scale: float) -> float:
    """Median |loss[t+1] - loss[t]| over ``losses``, as a fraction of ``scale``.

    The median ignores one bad batch; a loss that bounces at every step raises it.
    """
    # Plain Python: the doctor calls this after every step on a ~20-value window, where
    # numpy's per-call overhead would cost ~10x more.
    values = [float(v) for v in losses]
    if len(values) < 2 or not scale > 0:
        return 0.0
    return statistics.median(abs(b - a) for a, b in itertools.pairwise(values)) / scale


def loss_shape(
    losses: Sequence[float], initial_loss: float | None, thresholds: Thresholds
) -> dict[str, Any]:
    """The shape of a per-epoch training loss curve (M1).

    Returns ``{"shape": s, ...numbers}`` where ``s`` is ``"rising"`` (lr far too high),
    ``"plateau_high"`` (fast drop then a bumpy high plateau: lr too high), ``"linear"``
    (near-linear decay far from converged: lr too low), ``"ok"``, or ``"too_short"`` when
    fewer than ``min_epochs`` finite epochs exist.
    """
    th = thresholds
    loss = np.asarray([v for v in losses if math.isfinite(v)], dtype=np.float64)
    n = loss.size
    if n < th.min_epochs:
        return {"shape": "too_short", "epochs": int(n)}
    scale = initial_loss if initial_loss and math.isfinite(initial_loss) else float(loss[0])
    mid = (n - 1) // 2
    first_drop = float(loss[0] - loss[mid])
    second_drop = float(loss[mid] - loss[-1])
    late_gain = float(loss[: mid + 1].min() - loss[mid:].min())
    # Rises anywhere after the first epoch's drop: a capacity-limited model flattens smoothly.
    late_bump = float(np.max(np.diff(loss[1:]), initial=0.0))
    numbers = {
        "initial_loss": scale,
        "first_epoch_loss": float(loss[0]),
        "final_loss": float(loss[-1]),
        "min_loss": float(loss.min()),
        "first_half_drop": first_drop,
        "second_half_drop": second_drop,
        "epochs": int(n),
    }
    if loss[-1] > loss[0] and loss[-1] > (1 + th.rise) * loss.min():
        return {"shape": "rising", **numbers}
    if (
        late_gain < th.plateau_change * scale
        and loss[-1] > th.plateau_level * scale
        and late_bump > th.bump * scale
    ):
        return {"shape": "plateau_high", "largest_late_rise": late_bump, **numbers}
    # Per-epoch rates of the two halves (they differ in length when n is even).
    first_rate, second_rate = first_drop / mid, second_drop / (n - 1 - mid)
    if (
        first_rate > 0
        and second_rate > th.linear_ratio * first_rate
        and loss[-1] > th.linear_level * scale
    ):
        return {"shape": "linear", "drop_ratio": second_rate / first_rate, **numbers}
    return {"shape": "ok", **numbers}


def bias_variance(
    train_accuracy: float | None,
    dev_accuracy: float | None,
    test_accuracy: float | None = None,
    bayes_error: float | None = None,
    thresholds: Thresholds | None = None,
) -> dict[str, Any] | None:
    """The P2 table: errors, avoidable bias, variance and the verdict with its fixes.

    None when the training or validation accuracy is unknown. ``bayes_error`` None counts as
    0 (``bayes_error_assumed`` says so).
    """
    th = Thresholds.of(thresholds)
    if not _finite(train_accuracy) or not _finite(dev_accuracy):
        return None
    bayes = 0.0 if bayes_error is None else float(bayes_error)
    train_error, dev_error = 1.0 - float(train_accuracy), 1.0 - float(dev_accuracy)
    avoidable_bias, variance = train_error - bayes, dev_error - train_error
    high_bias, high_variance = avoidable_bias > th.bias, variance > th.variance
    verdict = {
        (False, False): "low bias, low variance",
        (True, False): "high bias",
        (False, True): "high variance",
        (True, True): "high bias and high variance",
    }[(high_bias, high_variance)]
    fixes = []  # the symptoms' fixes, from the one table
    if high_bias:
        fixes.append(fix_for("underfitting"))
    if high_variance:
        fixes.append(fix_for("overfitting"))
    return {
        "train_error": train_error,
        "dev_error": dev_error,
        "test_error": None if not _finite(test_accuracy) else 1.0 - float(test_accuracy),
        "bayes_error": bayes,
        "bayes_error_assumed": bayes_error is None,
        "avoidable_bias": avoidable_bias,
        "variance": variance,
        "high_bias": high_bias,
        "high_variance": high_variance,
        "verdict": verdict,
        "fixes": fixes,
    }


def median_update_ratio(rows: Sequence[Sequence[Any]]) -> float | None:
    """Median update/weight ratio of the kernels in UpdateRatioMonitor rows (step, epoch,
    variable, ratio, ...); None without finite kernel measurements.

    Biases start at zero and say nothing about the learning rate, so only kernels count.
    """
    ratios = [
        float(r[3]) for r in rows if str(r[2]).endswith("kernel") and _finite(_float_or_none(r[3]))
    ]
    return float(np.median(ratios)) if ratios else None


def curve_findings(
    history: Mapping[str, Sequence[float]],
    *,
    initial_loss: float | None = None,
    update_ratio: float | None = None,
    test_accuracy: float | None = None,
    bayes_error: float | None = None,
    lr: float | None = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    step: int | None = None,
    weights_epoch: int | None = None,
) -> list[Finding]:
    """lr_too_high / lr_too_low / overfitting / underfitting from per-epoch curves.

    Args:
        history: per-epoch lists, ``loss`` and optionally ``accuracy``, ``val_loss``,
            ``val_accuracy`` (Keras' ``History.history`` or metrics.csv columns).
        initial_loss: the loss before training (scale of the shape tests); None = the first
            epoch's loss.
        update_ratio: median kernel update/weight ratio of the run (M3), if measured: a
            healthy or high ratio vetoes "learning rate too low".
        test_accuracy: shown in the bias/variance evidence.
        bayes_error: human/Bayes error for the bias/variance table (None = 0).
        lr: the learning rate, to say which value to try.
        thresholds: overrides of :class:`Thresholds`.
        step: the final optimizer step, recorded in the findings.
        weights_epoch: the epoch (from 1) whose weights the model kept, e.g. early
            stopping's best: the bias/variance table is of that epoch (see
            :func:`accuracies_at`).
    """
    th = Thresholds.of(thresholds)
    findings: list[Finding] = []
    losses = list(history.get("loss") or [])
    epochs = len(losses)
    at = {"step": step, "epoch": epochs or None, "source": "curves"}
    shape = loss_shape(losses, initial_loss, th)
    ratio_note = {} if update_ratio is None else {"median_update_ratio": update_ratio}
    if shape["shape"] == "rising":
        findings.append(
            make_finding(
                "lr_too_high",
                f"the training loss rose to {shape['final_loss']:.4g} from "
                f"{shape['first_epoch_loss']:.4g} in the first epoch (a rising loss: the "
                f"learning rate is far too high)",
                {**shape, **ratio_note},
                fix_for("lr_too_high", lr),
                **at,
            )
        )
    elif shape["shape"] == "plateau_high":
        findings.append(
            make_finding(
                "lr_too_high",
                f"the loss dropped fast, then stalled on a bumpy plateau at "
                f"{shape['final_loss']:.4g} ({shape['final_loss'] / shape['initial_loss']:.0%} "
                f"of the initial {shape['initial_loss']:.4g})",
                {**shape, **ratio_note},
                fix_for("lr_too_high", lr),
                **at,
            )
        )
    elif shape["shape"] == "linear" and (
        update_ratio is None or update_ratio < HEALTHY_UPDATE_RATIO
    ):
        findings.append(
            make_finding(
                "lr_too_low",
                f"the loss decays almost linearly (in the second half of training it fell "
                f"{shape['drop_ratio']:.0%} as fast per epoch as in the first) and is still at "
                f"{shape['final_loss']:.4g}, {shape['final_loss'] / shape['initial_loss']:.0%} "
                f"of the initial {shape['initial_loss']:.4g}",
                {**shape, **ratio_note},
                fix_for("lr_too_low", lr),
                **at,
            )
        )

    train_acc, val_acc, table_epoch = accuracies_at(history, weights_epoch)
    table = bias_variance(train_acc, val_acc, test_accuracy, bayes_error, th)
    rise = _val_loss_rise(history, th)
    if (table and table["high_variance"]) or rise:
        evidence = dict(rise or {})
        if table:
            evidence.update(_pick(table, "train_error", "dev_error", "test_error", "variance"))
            evidence["epoch"] = table_epoch
            evidence["variance_threshold"] = th.variance
        parts = []
        if table and table["high_variance"]:
            parts.append(
                f"validation error {table['dev_error']:.1%} vs training error "
                f"{table['train_error']:.1%} (variance {table['variance']:.1%} > "
                f"{th.variance:.0%})"
            )
        if rise:
            parts.append(
                f"validation loss rose to {rise['final_val_loss']:.4g} from its minimum "
                f"{rise['min_val_loss']:.4g} (epoch {rise['min_val_loss_epoch']}) while the "
                f"training loss kept falling"
            )
        # The epoch the numbers are of: the kept weights' table, else the last epoch's curve.
        where = {**at, "epoch": table_epoch} if table and table["high_variance"] else at
        findings.append(
            make_finding("overfitting", "; ".join(parts), evidence, fix_for("overfitting"), **where)
        )
    if table and table["high_bias"]:
        bayes = "assumed 0" if table["bayes_error_assumed"] else f"{table['bayes_error']:.1%}"
        findings.append(
            make_finding(
                "underfitting",
                f"training error {table['train_error']:.1%} against a Bayes error of {bayes} "
                f"(avoidable bias {table['avoidable_bias']:.1%} > {th.bias:.0%}); validation "
                f"error {table['dev_error']:.1%}",
                {
                    **_pick(
                        table,
                        "train_error",
                        "dev_error",
                        "test_error",
                        "bayes_error",
                        "bayes_error_assumed",
                        "avoidable_bias",
                    ),
                    "bias_threshold": th.bias,
                },
                fix_for("underfitting", lr),
                **{**at, "epoch": table_epoch},
            )
        )
    return findings


def _val_loss_rise(history: Mapping[str, Sequence[float]], th: Thresholds) -> dict | None:
    val = np.asarray(history.get("val_loss") or [], dtype=np.float64)
    train = np.asarray(history.get("loss") or [], dtype=np.float64)
    if val.size < 2 or train.size != val.size or not np.isfinite(val).all():
        return None
    best = int(np.argmin(val))
    if val[-1] > (1 + th.val_loss_rise) * val[best] and train[-1] < train[best]:
        return {
            "min_val_loss": float(val[best]),
            "min_val_loss_epoch": best + 1,
            "final_val_loss": float(val[-1]),
        }
    return None


# --- a run directory --------------------------------------------------------------------------


def diagnose(
    run_dir: str | os.PathLike,
    bayes_error: float | None = None,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    write: bool = True,
) -> list[Finding]:
    """Diagnose a finished (or stopped) run directory; write ``diagnosis.json``.

    Reads whatever exists of ``metrics.csv``, ``config.yaml`` (``bayes_error``,
    ``optimizer.lr``, ``monitors.doctor_thresholds``), ``doctor.json`` (findings seen during
    training, the initial loss), ``nan.json`` (a NaN stop), ``update_ratios.csv``,
    ``sanity.json`` (the measured initial loss) and ``test_metrics.json``.

    Args:
        run_dir: the run directory.
        bayes_error: human/Bayes error (0..1); None = the config's ``bayes_error``, else 0.
        thresholds: overrides of :class:`Thresholds`; None = the config's, else the defaults.
        write: write ``diagnosis.json`` (a list of findings, errors first).

    Returns:
        The findings, errors first, then in the order they were seen.
    """
    run = RunFiles(run_dir)
    cfg = run.config()
    if bayes_error is None:
        bayes_error = _get(cfg, "bayes_error")
    if thresholds is None:
        thresholds = _get(cfg, "monitors", "doctor_thresholds") or None
    th = Thresholds.of(dict(thresholds) if isinstance(thresholds, Mapping) else thresholds)

    doctor = run.json(DOCTOR_FILE) or {}
    findings = [
        Finding.from_dict(d)
        for d in doctor.get("findings", [])
        if d.get("symptom") in TRAINING_SYMPTOMS
    ]
    nan_record = run.json(NAN_FILE)
    if nan_record and not any(f.symptom == "nan" for f in findings):
        findings.append(nan_stop_finding(nan_record))
    findings += sanity_findings(run.json("sanity.json") or [])

    history = run.history()
    if history.get("loss"):
        initial = doctor.get("initial_loss") or run.sanity_initial_loss()
        test = run.json("test_metrics.json") or {}
        findings += curve_findings(
            history,
            initial_loss=initial,
            update_ratio=median_update_ratio(run.csv_rows("update_ratios.csv")),
            test_accuracy=test.get("accuracy"),
            weights_epoch=test.get("weights_epoch"),
            bayes_error=bayes_error,
            lr=_get(cfg, "optimizer", "lr"),
            thresholds=th,
        )
    findings.sort(key=lambda f: f.severity != "error")
    reconcile(findings)
    if write:
        write_json_atomic(Path(run_dir) / DIAGNOSIS_FILE, [f.to_dict() for f in findings])
    return findings


def sanity_findings(stages: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """One ``failed_sanity_check`` finding per failed stage of ``sanity.json``."""
    return [
        make_finding(
            "failed_sanity_check",
            f"the {stage.get('name')} check failed before training: {stage.get('message', '')}".rstrip(
                ": "
            ),
            {
                "stage": stage.get("name"),
                "value": stage.get("value"),
                "expected": stage.get("expected"),
            },
            fix_for("failed_sanity_check"),
            source="sanity",
        )
        for stage in stages
        if stage.get("status") == "fail"
    ]


def failed_stages(stages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The names of the failed stages in ``sanity.json``'s list."""
    return [str(s.get("name")) for s in stages if s.get("status") == "fail"]


def confusion_summary(
    y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]
) -> dict[str, Any]:
    """Confusion matrix (rows: true class, columns: predicted) and per-class accuracy.

    Per-class accuracy is the recall of each class (the diagonal over the row's total);
    None for a class with no example.
    """
    n = len(class_names)
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    totals = matrix.sum(axis=1)
    per_class = [int(matrix[i, i]) / int(totals[i]) if totals[i] else None for i in range(n)]
    return {
        "class_names": [str(c) for c in class_names],
        "matrix": matrix.tolist(),
        "per_class_accuracy": per_class,
        "accuracy": float(np.trace(matrix) / max(int(matrix.sum()), 1)),
    }


def nan_stop_finding(record: Mapping[str, Any]) -> Finding:
    """A ``nan`` finding from the record NaNStop leaves in ``nan.json``."""
    advice = record.get("advice") or []
    fix = (
        "; ".join(advice) if advice else fix_for("exploding_gradients", record.get("learning_rate"))
    )
    return make_finding(
        "nan",
        f"the training loss became {record.get('loss')} in batch {record.get('batch')} "
        f"(training stopped; the last {record.get('completed_epochs')} complete epochs and "
        f"the best checkpoint are kept)",
        {k: v for k, v in record.items() if k not in ("advice", "symptom")},  # advice: the fix
        fix,
        step=record.get("global_step"),
        epoch=record.get("epoch"),
        source="nan_stop",
    )


class RunFiles:
    """Read-only access to the files of a run directory; a missing file reads as empty."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir)
        if not self.path.is_dir():
            raise FileNotFoundError(f"run directory {self.path} does not exist")

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    def json(self, name: str) -> Any:
        path = self.path / name
        if not path.is_file():
            return None
        with open(path) as f:
            return json.load(f)

    def config(self) -> Any:
        path = self.path / "config.yaml"
        if not path.is_file():
            return None
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)

    def history(self) -> dict[str, list[float]]:
        """metrics.csv as {column: [value per epoch]} (NaN where a cell is empty)."""
        path = self.path / "metrics.csv"
        if not path.is_file():
            return {}
        from kerasdiag.callbacks.metrics_csv import read_metrics_csv  # starts TensorFlow

        rows = read_metrics_csv(path)
        columns = sorted({k for row in rows.values() for k in row})
        return {c: [float(rows[e].get(c, math.nan)) for e in sorted(rows)] for c in columns}

    def csv_rows(self, name: str) -> list[list[str]]:
        """A CSV file's data rows (header dropped) as lists of strings."""
        import csv

        path = self.path / name
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            return list(csv.reader(f))[1:]

    def sanity_initial_loss(self) -> float | None:
        for stage in self.json("sanity.json") or []:
            if stage.get("name") == "initial_loss" and _finite(stage.get("value")):
                return float(stage["value"])
        return None


def _pick(mapping: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: mapping[k] for k in keys if k in mapping}


def _get(container: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(container, Mapping) or key not in container:
            return None
        container = container[key]
    return container


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and math.isfinite(value)


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


TRAIN_INFERENCE_ACCURACY = "train_accuracy_inference"


def accuracies_at(
    history: Mapping[str, Sequence[float]], weights_epoch: int | None = None
) -> tuple[float | None, float | None, int | None]:
    """(training accuracy, validation accuracy, epoch) for the bias/variance table.

    Of the epoch whose weights the model kept (``weights_epoch``, counted from 1 as
    metrics.csv does: early stopping's best epoch when it restores that), so that the table
    and the test score describe the same model; without it, or when that epoch lacks either
    accuracy, of the last epoch that has both. (None, None, None) when none has.
    """
    # The training split scored in inference mode, as validation is, when it was measured
    # (TrainingDoctor): fit's own training accuracy is a training-mode running mean.
    train = history.get(TRAIN_INFERENCE_ACCURACY) or history.get("accuracy") or []
    val = history.get("val_accuracy") or []
    numbers = history.get("epoch") or range(1, len(train) + 1)
    both = [
        (int(e), float(t), float(v))
        for e, t, v in zip(numbers, train, val, strict=False)
        if _finite(t) and _finite(v)
    ]
    if not both:
        return None, None, None
    epoch, t, v = next((row for row in both if row[0] == weights_epoch), both[-1])
    return t, v, epoch


def _plain(value: Any) -> Any:
    # JSON has no NaN/Inf: write them as strings a person can read.
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else str(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


__all__ = [
    "CURVE_SYMPTOMS",
    "HEALTHY_UPDATE_RATIO",
    "SYMPTOMS",
    "TRAINING_SYMPTOMS",
    "Finding",
    "Thresholds",
    "accuracies_at",
    "bias_variance",
    "confusion_summary",
    "failed_stages",
    "fix_for",
    "lr_hint",
    "sanity_findings",
    "curve_findings",
    "diagnose",
    "loss_shape",
    "make_finding",
    "oscillation_index",
]
