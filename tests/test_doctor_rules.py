"""The doctor's rules on numbers alone: each threshold just below and just above (no TensorFlow).

Every rule of :mod:`kerasdiag.doctor_rules` is a pure function of measured numbers, so each
test builds the numbers by hand and checks the verdict on both sides of the threshold.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from kerasdiag import doctor_rules as rules
from kerasdiag.doctor_rules import ActivationStats, Thresholds
from kerasdiag.symptoms import fix_for, nan_advice

TH = Thresholds()
LR = 0.01


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def test_importing_report_and_diagnosis_starts_no_tensorflow():
    code = (
        "import sys, kerasdiag.report, kerasdiag.diagnosis, kerasdiag.doctor_rules\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
        "assert 'keras' not in sys.modules, 'keras imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- NaN and divergence -----------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_broken_loss_names_a_non_finite_loss(value):
    assert rules.broken_loss(value) == f"loss is {value}"
    assert rules.broken_loss(value, name="val_loss") == f"val_loss is {value}"


def test_broken_loss_divergence_boundary():
    first, factor = 2.0, 4.0
    assert rules.broken_loss(factor * first, first, factor) is None
    assert rules.broken_loss(above(factor * first), first, factor) == "loss 8 > 4 x first loss 2"
    assert rules.broken_loss(1e9) is None  # without a factor only NaN/Inf is broken
    assert rules.broken_loss(1e9, None, factor) is None  # no first loss yet
    assert rules.broken_loss(1e9, 0.0, factor) is None  # a first loss of 0 has no scale


def test_stable_before_boundary():
    assert rules.stable_before([below(4.0)], 2.0)
    assert not rules.stable_before([4.0], 2.0)
    assert not rules.stable_before([], 2.0)
    assert not rules.stable_before([1.0], None)


def test_nan_loss_finding_says_what_happens_and_the_likely_cause():
    stable = rules.nan_finding([2.3, 2.2], 2.3, LR, step=7, epoch=1, loss=math.nan)
    assert (stable.symptom, stable.severity, stable.step, stable.epoch) == ("nan", "error", 7, 1)
    assert stable.evidence == {"loss": math.nan, "previous_losses": [2.3, 2.2], "lr": LR}
    assert stable.fix.startswith("training stops and the weights of the end of the last finite")
    assert "stable just before (2.3, 2.2)" in stable.fix
    assert stable.fix.endswith(fix_for("nan", LR))
    grew = rules.nan_finding(
        [2.3, 9.0], 2.3, lambda: LR, step=7, loss=math.inf, stopping=False, restoring=False
    )
    assert grew.fix.startswith("the last good checkpoint holds the last finite weights; ")
    assert "grew before it broke (divergence)" in grew.fix
    assert grew.evidence["lr"] == LR  # a callable learning rate is read when the finding is made
    assert grew.message == "nan at step 7: the training loss became inf."


def test_nan_weights_finding_lists_the_broken_weights():
    names = [f"dense_{i}/kernel" for i in range(6)]
    finding = rules.nan_finding([2.0, 2.1], 2.3, LR, step=3, epoch=2, broken=names)
    assert "dense_0/kernel, dense_1/kernel, dense_2/kernel, dense_3/kernel ..." in finding.message
    assert "while the loss is still finite" in finding.message
    assert finding.evidence["non_finite_weights"] == names
    few = rules.nan_finding([math.nan], 2.3, LR, step=3, broken=names[:1])
    assert "..." not in few.message and "still finite" not in few.message


def test_nan_advice_of_the_nan_stop():
    early = nan_advice(0.1, step=10, clipped=True)
    assert early[0] == fix_for("nan", 0.1)
    assert "gradients are already clipped" in early[1] and "first steps" in early[2]
    late = nan_advice(0.1, step=11, clipped=False)
    assert late == [
        fix_for("nan", 0.1),
        "warm up to the rate: schedule=cosine schedule.warmup_epochs=1",
    ]
    scheduled = nan_advice(0.05, step=11, clipped=False, base_lr=0.1)
    assert scheduled == [fix_for("nan", 0.1) + " (the rate was 0.05 at that step)"]


# --- the loss of every step ---------------------------------------------------------------


def test_oscillation_index():
    assert rules.oscillation_index([1.0], 1.0) == 0.0
    assert rules.oscillation_index([1.0, 2.0], 0.0) == 0.0
    # the median ignores one bad batch
    assert rules.oscillation_index([1.0, 1.1, 1.0, 9.0, 1.0, 1.1], 1.0) == pytest.approx(0.1)


def test_oscillation_finding_boundary():
    window = [1.0, 1.5] * 10 + [1.0]  # every step jumps by 0.5
    assert rules.oscillation_index(window, 2.0) == 0.25 == TH.oscillation
    assert rules.oscillation_finding(window, 2.0, TH, LR, step=30) is None
    found = rules.oscillation_finding(window, below(2.0), TH, LR, step=30, epoch=2)
    assert (found.symptom, found.step, found.epoch) == ("oscillating_loss", 30, 2)
    assert found.evidence["recent_losses"] == window
    assert found.fix == fix_for("oscillating_loss", LR)
    assert "over the last 20 steps the loss jumped by a median 25%" in found.message


def test_slow_finding_boundary():
    scale = 2.0
    limit = (1 - TH.slow_drop) * scale
    assert rules.slow_finding(1, limit, scale, TH, LR) is None
    found = rules.slow_finding(1, above(limit), scale, TH, LR, step=40)
    assert (found.symptom, found.epoch, found.step) == ("slow_convergence", 2, 40)
    assert found.fix == fix_for("slow_convergence", LR)
    assert "only 20.0% below the initial 2" in found.message
    assert rules.slow_finding(0, 5.0, scale, TH, LR) is None  # judged after slow_epochs only
    assert rules.slow_finding(1, math.nan, scale, TH, LR) is None
    assert rules.slow_finding(1, 5.0, None, TH, LR) is None
    higher = rules.slow_finding(1, 3.0, scale, TH, LR, causes=["dying_relu", "nan", "nan"])
    assert "50% above the initial" in higher.message
    assert higher.fix.startswith("first fix dying_relu, nan (found above); then ")


# --- probes -------------------------------------------------------------------------------


def _stats(dead=None, saturated=None, kind="relu"):
    return ActivationStats(kind, mean=0.1, std=0.2, zero_fraction=0.3, dead_fraction=dead,
                           saturated_fraction=saturated)  # fmt: skip


def test_activation_findings_boundaries():
    at = {"step": 5, "epoch": 1}
    limit = TH.dead_fraction
    assert rules.activation_findings({"d": _stats(dead=limit)}, TH, LR, **at) == []
    (dying,) = rules.activation_findings({"d": _stats(dead=above(limit))}, TH, LR, **at)
    assert (dying.symptom, dying.layer, dying.step) == ("dying_relu", "d", 5)
    assert dying.fix == fix_for("dying_relu", LR)
    tanh = {"t": _stats(saturated=TH.saturated_fraction, kind="tanh")}
    assert rules.activation_findings(tanh, TH, LR, **at) == []
    tanh = {"t": _stats(saturated=above(TH.saturated_fraction), kind="tanh")}
    (saturated,) = rules.activation_findings(tanh, TH, LR, **at)
    assert saturated.symptom == "saturated_activations" and "tanh outputs" in saturated.message
    assert rules.activation_findings(tanh, TH, LR, skip=["t"], **at) == []
    assert rules.activation_findings({"x": _stats()}, TH, LR, **at) == []


def test_vanishing_ratio():
    assert rules.vanishing_ratio({"a": 1.0}) == 1.0
    assert rules.vanishing_ratio({"a": 1.0, "b": 0.0}) == math.inf
    assert rules.vanishing_ratio({"a": 0.0, "b": 0.0}) == 1.0
    assert rules.vanishing_ratio({"a": 1.0, "m": 5.0, "b": 4.0}) == 0.25


def test_gradient_flags_boundaries():
    healthy = {"first": 1.0, "last": 1.0}
    v = TH.vanishing_ratio
    assert rules.gradient_flags(1.0, {"first": v, "last": 1.0}) == {}
    assert set(rules.gradient_flags(1.0, {"first": below(v), "last": 1.0})) == {"vanishing"}
    e = TH.exploding_norm
    assert rules.gradient_flags(e, healthy) == {}
    assert rules.gradient_flags(above(e), healthy) == {
        "exploding": "global gradient norm 1e+03 is above 1000"
    }
    assert rules.gradient_flags(math.nan, healthy) == {"exploding": "global gradient norm is nan"}
    earlier = [1.0, 2.0, 3.0]  # median 2
    growth = TH.gradient_growth * 2.0
    assert rules.gradient_flags(growth, healthy, earlier) == {}
    assert (
        "grew more than 100x" in rules.gradient_flags(above(growth), healthy, earlier)["exploding"]
    )
    assert rules.gradient_flags(above(growth), healthy, earlier[:2]) == {}  # 3 probes needed
    assert rules.gradient_flags(above(growth), healthy, [*earlier[:2], math.nan]) == {}


def test_gradient_findings():
    probe = {"step": 9, "epoch": 0, "loss": 2.0, "global_norm": 5e3,
             "layer_norms": {"first": 1e-6, "last": 1.0}}  # fmt: skip
    exploding, vanishing = rules.gradient_findings(probe, [], TH, LR)
    assert (exploding.symptom, exploding.epoch, exploding.step) == ("exploding_gradients", 1, 9)
    assert exploding.fix == fix_for("exploding_gradients", LR)
    assert vanishing.fix == fix_for("vanishing_gradients")
    assert vanishing.evidence["first_last_ratio"] == 1e-6
    _, after_dying = rules.gradient_findings(probe, [], TH, LR, dying=["dense"])
    assert after_dying.fix.startswith("the dead ReLU units of dense pass no gradient")
    assert rules.gradient_findings({**probe, "loss": math.nan}, [], TH, LR) == []


@pytest.mark.parametrize(
    ("ratio", "verdict"),
    [
        (rules.UPDATE_RATIO_LOW, None),
        (below(rules.UPDATE_RATIO_LOW), "too_low"),
        (rules.UPDATE_RATIO_HIGH, None),
        (above(rules.UPDATE_RATIO_HIGH), "too_high"),
        (math.inf, "too_high"),
        (math.nan, None),
    ],
)
def test_update_ratio_verdict_boundaries(ratio, verdict):
    assert rules.update_ratio_verdict(ratio) == verdict


def test_stagnant_findings_boundary():
    limit = TH.stagnant_ratio
    at = {"step": 50, "epoch": 3}
    assert rules.stagnant_findings({"d": [limit, limit, 1.0]}, TH, LR, **at) == []
    (found,) = rules.stagnant_findings({"d": [below(limit), 0.0, 1.0]}, TH, LR, **at)
    assert (found.symptom, found.layer, found.epoch) == ("stagnant_weights", "d", 3)
    assert found.evidence["measurements"] == 3
    assert found.fix == fix_for("stagnant_weights", LR)


def test_median_update_ratio_counts_finite_kernels_only():
    rows = [
        [0, 1, "dense/kernel", "0.001"],
        [0, 1, "dense/bias", "5.0"],
        [1, 1, "dense/kernel", "0.003"],
        [2, 1, "dense/kernel", "nan"],
        [3, 1, "dense/kernel", "x"],
    ]
    assert rules.median_update_ratio(rows) == pytest.approx(0.002)
    assert rules.median_update_ratio(rows[1:2]) is None


# --- the curves and the bias/variance table ----------------------------------------------------


def test_loss_shape_too_short_and_rising():
    assert rules.loss_shape([2.0, 1.0, 0.5], 2.3, TH) == {"shape": "too_short", "epochs": 3}
    rise = 1.0 * (1 + TH.rise)
    assert rules.loss_shape([1.0, 1.0, 1.0, rise], None, TH)["shape"] != "rising"
    assert rules.loss_shape([1.0, 1.0, 1.0, above(rise)], None, TH)["shape"] == "rising"


def test_loss_shape_plateau_and_linear():
    bumpy = [2.0, 1.0, 1.0, 1.2, 1.0, 1.1, 1.0]
    assert rules.loss_shape(bumpy, 2.0, TH)["shape"] == "plateau_high"
    smooth = [2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert rules.loss_shape(smooth, 2.0, TH)["shape"] == "ok"
    linear = [2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4]
    shape = rules.loss_shape(linear, 2.0, TH)
    assert shape["shape"] == "linear" and shape["drop_ratio"] == pytest.approx(1.0)
    converged = [2.0, 1.0, 0.5, 0.3, 0.2, 0.15, 0.1]
    assert rules.loss_shape(converged, 2.0, TH)["shape"] == "ok"


def test_bias_variance_boundaries():
    table = rules.bias_variance(0.9, 0.8)
    bias, variance = table["avoidable_bias"], table["variance"]
    at_limit = Thresholds(bias=bias, variance=variance)
    assert rules.bias_variance(0.9, 0.8, thresholds=at_limit)["verdict"] == "low bias, low variance"
    both = Thresholds(bias=below(bias), variance=below(variance))
    table = rules.bias_variance(0.9, 0.8, 0.85, None, both)
    assert table["verdict"] == "high bias and high variance"
    assert table["fixes"] == [fix_for("underfitting"), fix_for("overfitting")]
    assert table["test_error"] == pytest.approx(0.15) and table["bayes_error_assumed"]
    known = rules.bias_variance(0.9, 0.8, bayes_error=0.01, thresholds=both)
    assert known["verdict"] == "high variance"  # the Bayes error explains part of the bias
    assert known["avoidable_bias"] == pytest.approx(0.09) and not known["bayes_error_assumed"]
    assert rules.bias_variance(None, 0.8) is None
    assert rules.bias_variance(0.9, math.nan) is None


def test_accuracies_at_prefers_the_kept_epoch():
    history = {"accuracy": [0.5, 0.7, 0.9], "val_accuracy": [0.5, 0.6, math.nan]}
    assert rules.accuracies_at(history) == (0.7, 0.6, 2)
    assert rules.accuracies_at(history, weights_epoch=1) == (0.5, 0.5, 1)
    inference = {**history, rules.TRAIN_INFERENCE_ACCURACY: [0.4, 0.65, 0.8]}
    assert rules.accuracies_at(inference) == (0.65, 0.6, 2)
    assert rules.accuracies_at({}) == (None, None, None)


def test_val_loss_rise_boundary():
    limit = 1.0 * (1 + TH.val_loss_rise)
    history = {"loss": [1.0, 0.8, 0.5], "val_loss": [1.0, 0.9, 0.9]}
    history["val_loss"] = [0.9, 1.0, limit * 0.9]
    assert rules.val_loss_rise(history, TH) is None
    history["val_loss"] = [0.9, 1.0, above(limit * 0.9)]
    assert rules.val_loss_rise(history, TH)["min_val_loss_epoch"] == 1
    history["loss"] = [0.5, 0.8, 1.0]  # the training loss rose too: not overfitting
    assert rules.val_loss_rise(history, TH) is None


def test_curve_findings_name_each_curve_symptom():
    rising = rules.curve_findings({"loss": [1.0, 1.0, 1.0, 2.0]}, lr=LR, step=40)
    assert [(f.symptom, f.source, f.epoch, f.step) for f in rising] == [
        ("lr_too_high", "curves", 4, 40)
    ]
    linear = {"loss": [2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4]}
    assert [f.symptom for f in rules.curve_findings(linear, initial_loss=2.0)] == ["lr_too_low"]
    healthy_ratio = rules.HEALTHY_UPDATE_RATIO
    assert rules.curve_findings(linear, initial_loss=2.0, update_ratio=healthy_ratio) == []
    assert [f.symptom for f in rules.curve_findings(
        linear, initial_loss=2.0, update_ratio=below(healthy_ratio))] == ["lr_too_low"]  # fmt: skip
    gap = {"loss": [0.5], "accuracy": [0.99], "val_accuracy": [0.8]}
    (overfit,) = rules.curve_findings(gap)
    assert overfit.symptom == "overfitting" and overfit.evidence["variance_threshold"] == 0.05
    low = {"loss": [0.5], "accuracy": [0.7], "val_accuracy": [0.69]}
    (underfit,) = rules.curve_findings(low, lr=LR)
    assert underfit.symptom == "underfitting" and "assumed 0" in underfit.message
    assert underfit.fix == fix_for("underfitting", LR)


def test_thresholds_of_checks_names_and_values():
    assert Thresholds.of(None) == Thresholds()
    assert Thresholds.of({"min_epochs": 6.0}).min_epochs == 6
    with pytest.raises(ValueError, match="unknown threshold 'foo'"):
        Thresholds.of({"foo": 1})
    with pytest.raises(ValueError, match="must be an integer"):
        Thresholds.of({"min_epochs": 2.5})
    with pytest.raises(ValueError, match="thresholds.bias"):
        Thresholds.of({"bias": 0})
    with pytest.raises(ValueError, match="must be a Thresholds or a mapping"):
        Thresholds.of(0.5)
