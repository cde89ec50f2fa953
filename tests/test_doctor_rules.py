"""The doctor's rules on numbers alone: each threshold just below and just above (no TensorFlow).

Every rule of :mod:`kerasdiag.diagnosis.rules` is a pure function of measured numbers, so each
test builds the numbers by hand and checks the verdict on both sides of the threshold.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from kerasdiag.diagnosis import rules
from kerasdiag.diagnosis.rules import ActivationStats, Thresholds
from kerasdiag.diagnosis.symptoms import (
    fix_for,
    large_updates_fix,
    nan_advice,
    variance_after_bias_fix,
)

TH = Thresholds()
LR = 0.01


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def test_importing_report_and_diagnosis_starts_no_tensorflow():
    code = (
        "import sys, kerasdiag.report, kerasdiag.diagnosis, kerasdiag.diagnosis.rules\n"
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
    # judged at the precision shown: 20.0% below is not below 20%
    assert rules.slow_finding(1, above(limit), scale, TH, LR, step=40) is None
    found = rules.slow_finding(1, (1 - 0.199) * scale, scale, TH, LR, step=40)
    assert (found.symptom, found.epoch, found.step) == ("slow_convergence", 2, 40)
    assert found.fix == fix_for("slow_convergence", LR)
    assert "only 19.9% below the initial 2 (expected at least 20.0% below)" in found.message
    assert rules.slow_finding(0, 5.0, scale, TH, LR) is None  # judged after slow_epochs only
    assert rules.slow_finding(1, math.nan, scale, TH, LR) is None
    assert rules.slow_finding(1, 5.0, None, TH, LR) is None
    higher = rules.slow_finding(1, 3.0, scale, TH, LR, causes=["dying_relu", "nan", "nan"])
    assert "50% above the initial" in higher.message
    assert higher.fix == "first fix dying_relu, nan (found above); then " + fix_for(
        "slow_convergence", LR
    )


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
    assert rules.loss_shape([2.0, 1.0, 0.5], 2.3, TH) == {
        "shape": "too_short",
        "epochs": 3,
        "warmup_epochs": 0,
    }
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


def test_warmup_epochs_from_the_rate_of_each_epochs_first_step():
    # a 2-epoch linear warmup from 0 to 0.1, then cosine decay: the first two epochs start
    # below the peak, the third at it
    assert rules.warmup_epochs([0.0, 0.05, 0.1, 0.09, 0.07]) == 2
    assert rules.warmup_epochs([0.01, 0.02, 0.04, 0.1, 0.1, 0.1]) == 3
    assert rules.warmup_epochs([0.0, 0.1, 0.1]) == 1
    for no_warmup in ([0.1, 0.1, 0.1], [0.1, 0.05, 0.01], [0.1], [], None):
        assert rules.warmup_epochs(no_warmup) == 0
    # a rate that dips before its peak is not a warmup; a non-finite rate is not read
    assert rules.warmup_epochs([0.05, 0.02, 0.1, 0.1]) == 0
    assert rules.warmup_epochs([0.05, math.nan, 0.1]) == 0
    assert rules.warmup_epochs([math.nan, 0.05, 0.1]) == 0
    assert rules.warmup_epochs([0.0, 0.1, math.inf]) == 0
    # within float noise of the peak counts as the peak
    assert rules.warmup_epochs([0.05, 0.1 * (1 - 1e-7), 0.1, 0.1]) == 1


def test_loss_shape_leaves_out_the_warmup_epochs():
    """A loss that falls slowly while the rate climbs is not 'lr too low' (cifar_resnet's
    2 warmup epochs of 4 were read as a linear decay: 'raise the learning rate 3-10x')."""
    warm = [2.3, 2.2, 2.1, 2.0, 1.4, 1.0, 0.8, 0.7, 0.65]
    rates = [0.0, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert rules.loss_shape(warm[:4], 2.3, TH)["shape"] == "linear"
    assert rules.loss_shape(warm[:4], 2.3, TH, rates[:4]) == {
        "shape": "too_short",
        "epochs": 2,
        "warmup_epochs": 2,
    }
    shape = rules.loss_shape(warm, 2.3, TH, rates)
    assert shape["shape"] == "ok" and shape["warmup_epochs"] == 2
    assert shape["first_epoch_loss"] == 2.1 and shape["epochs"] == 7
    # after the warmup the rule still reads a linear decay
    linear = [2.3, 2.25, 2.2, 2.1, 2.0, 1.9, 1.8, 1.7]
    shape = rules.loss_shape(linear, 2.3, TH, [0.0, 0.05] + [0.1] * 6)
    assert shape["shape"] == "linear" and shape["epochs"] == 6


def test_a_loss_rising_while_the_rate_climbs_is_still_too_high_a_rate():
    """MobileNetV2 (weights=None) under SGD-momentum 0.05 with a warmup: the loss rose from
    2.55 to 3.26 while the rate climbed; leaving the warmup out hid lr_too_high."""
    losses, rates = [2.547, 3.095, 3.227, 3.255], [0.0, 0.0276, 0.0499, 0.0443]
    assert rules.warmup_epochs(rates) == 2
    shape = rules.loss_shape(losses, 2.3, TH, rates)
    assert shape["shape"] == "rising" and shape["warmup_epochs"] == 0
    (found,) = rules.curve_findings({"loss": losses, "learning_rate": rates}, initial_loss=2.3)
    assert found.symptom == "lr_too_high" and "in the first epoch" in found.message


def test_curve_findings_name_the_warmup_they_left_out():
    rates = [0.0, 0.05] + [0.1] * 6
    history = {"loss": [2.3, 2.25, 2.2, 2.1, 2.0, 1.9, 1.8, 1.7], "learning_rate": rates}
    (finding,) = rules.curve_findings(history, initial_loss=2.3, lr=0.1)
    assert finding.symptom == "lr_too_low" and finding.evidence["warmup_epochs"] == 2
    assert "second half of training after the 2-epoch warmup" in finding.message
    # one name for the record: a column under another name is not the learning rate
    history["lr"] = history.pop("learning_rate")
    (finding,) = rules.curve_findings(history, initial_loss=2.3, lr=0.1)
    assert finding.evidence["warmup_epochs"] == 0
    # a rise after the warmup, from a low level the whole curve does not call high, names the
    # epoch it is measured from
    rising = {
        "loss": [2.0, 0.3, 0.2, 0.25, 0.3, 0.35, 0.4],
        "learning_rate": [0.0, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1],
    }
    assert rules.loss_shape(rising["loss"], 2.3, TH)["shape"] == "ok"
    (finding,) = rules.curve_findings(rising, initial_loss=2.3, lr=0.1)
    assert finding.symptom == "lr_too_high" and finding.evidence["warmup_epochs"] == 2
    assert "from 0.2 in epoch 3, the first after the warmup" in finding.message


def test_bias_variance_boundaries():
    table = rules.bias_variance(0.9, 0.8)
    bias, variance = table["avoidable_bias"], table["variance"]
    at_limit = Thresholds(bias=bias, variance=variance)
    assert rules.bias_variance(0.9, 0.8, thresholds=at_limit)["verdict"] == "low bias, low variance"
    both = Thresholds(bias=below(bias), variance=below(variance))
    table = rules.bias_variance(0.9, 0.8, 0.85, None, both)
    assert table["verdict"] == "high bias and high variance"
    assert table["inconclusive"] == []  # sizes unknown: the rates are taken as exact
    # high variance's own fixes (regularize more, a smaller network) would raise the bias
    assert table["fixes"] == [fix_for("underfitting"), variance_after_bias_fix()]
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
    # the kept weights scored on training examples in inference mode: their row's training side
    assert rules.accuracies_at(history, 1, kept_train_accuracy=0.55) == (0.55, 0.5, 1)
    assert rules.accuracies_at(inference, 2, kept_train_accuracy=0.61) == (0.61, 0.6, 2)
    # ... only when the table is of the kept epoch (epoch 3 has no validation accuracy)
    assert rules.accuracies_at(history, 3, kept_train_accuracy=0.55) == (0.7, 0.6, 2)
    assert rules.accuracies_at(history, None, kept_train_accuracy=0.55) == (0.7, 0.6, 2)
    assert rules.accuracies_at(history, 1, kept_train_accuracy=math.nan) == (0.5, 0.5, 1)


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


# --- whole findings: every field a user reads (message, evidence, where, severity, fix) ---------
# Each expectation below is written out by hand from the numbers the test feeds in, so a
# changed key, number format, step/epoch/layer or severity fails here.


def test_thresholds_defaults_are_the_documented_ones():
    # The numbers the Thresholds docstring argues for; a changed default is a changed verdict.
    assert Thresholds() == Thresholds(
        exploding_norm=1e3, gradient_growth=100.0, vanishing_ratio=1e-3, dead_fraction=0.5,
        saturated_fraction=0.5, oscillation=0.25, oscillation_window=20, slow_drop=0.2,
        slow_epochs=2, stagnant_ratio=1e-6, min_epochs=4, rise=0.1, plateau_change=0.1,
        plateau_level=0.2, bump=0.02, linear_ratio=0.5, linear_level=0.5, variance=0.05,
        val_loss_rise=0.2, bias=0.05,
    )  # fmt: skip
    assert (rules.UPDATE_RATIO_LOW, rules.UPDATE_RATIO_HIGH) == (1e-4, 1e-2)
    assert rules.HEALTHY_UPDATE_RATIO == 1e-3 and rules.STABLE_BEFORE_NAN == 2.0
    assert (rules.ADAPTIVE_UPDATE_RATIO_HIGH, rules.ADAPTIVE_SPARSE_UPDATE_RATIO_HIGH) == (
        5e-2,
        0.3,
    )


def test_oscillation_finding_whole():
    window = [1.0, 1.5] * 10 + [1.0]  # 20 steps, each a jump of 0.5 = 50% of the initial 1.0
    found = rules.oscillation_finding(window, 1.0, TH, lambda: LR, step=30, epoch=2)
    assert found.to_dict() == {
        "symptom": "oscillating_loss",
        "severity": "warning",
        "evidence": {
            "oscillation_index": 0.5,
            "threshold": 0.25,
            "initial_loss": 1.0,
            "recent_losses": window,
        },
        "fix": fix_for("oscillating_loss", LR),
        "step": 30,
        "epoch": 2,
        "layer": None,
        "message": "oscillating_loss at step 30, epoch 2: over the last 20 steps the loss "
        "jumped by a median 50% of the initial loss 1 per step.",
        "source": "doctor",
        "count": 1,
        "last_step": 30,
    }
    # a window of exactly the threshold's size is judged with the threshold passed in
    assert rules.oscillation_finding(window, 1.0, Thresholds(oscillation=0.5), LR, step=30) is None


def test_nan_finding_whole():
    loss = rules.nan_finding([2.0, 9.0], 2.0, LR, step=12, epoch=3, loss=math.inf)
    assert (loss.severity, loss.layer, loss.source, loss.last_step) == ("error", None, "doctor", 12)
    assert loss.message == "nan at step 12, epoch 3: the training loss became inf."
    assert loss.evidence == {"loss": math.inf, "previous_losses": [2.0, 9.0], "lr": LR}
    assert loss.fix.startswith(
        "training stops and the weights of the end of the last finite epoch are put back; "
        "the loss grew before it broke (divergence); "
    )
    weights = rules.nan_finding(
        [2.0, 2.1], 2.0, LR, step=4, broken=[f"w{i}" for i in range(5)], stopping=False
    )
    assert weights.message == (
        "nan at step 4: the weights w0, w1, w2, w3 ... hold NaN/Inf values while the loss is "
        "still finite (ReLU turns NaN inputs into 0)."
    )
    assert weights.evidence == {
        "non_finite_weights": ["w0", "w1", "w2", "w3", "w4"],
        "previous_losses": [2.0, 2.1],
    }
    assert weights.fix.startswith(
        "the weights of the end of the last finite epoch are put back; the loss was stable "
        "just before (2, 2.1), so a bad batch or an unsafe operation is more likely than "
        "divergence; "
    )
    four = rules.nan_finding([], None, LR, step=4, broken=["a", "b", "c", "d"])
    assert four.message == "nan at step 4: the weights a, b, c, d hold NaN/Inf values."
    # no loss before the NaN: nothing says it was stable
    assert "grew before it broke" in four.fix


def test_stable_before_is_relative_to_the_initial_loss():
    assert rules.stable_before([3.9, 1.0], 2.0)  # the largest recent loss decides
    assert not rules.stable_before([1.0, 4.1], 2.0)
    assert not rules.stable_before([1.0], 0.0)


def test_slow_finding_whole():
    found = rules.slow_finding(1, 1.8, 2.0, TH, LR, step=40)
    assert found.to_dict() == {
        "symptom": "slow_convergence",
        "severity": "warning",
        "evidence": {
            "epoch_loss": 1.8,
            "initial_loss": 2.0,
            "drop": pytest.approx(0.1),
            "expected_drop": 0.2,
        },
        "fix": fix_for("slow_convergence", LR),
        "step": 40,
        "epoch": 2,
        "layer": None,
        "message": "slow_convergence at step 40, epoch 2: after 2 epochs the loss is 1.8, only "
        "10.0% below the initial 2 (expected at least 20.0% below).",
        "source": "doctor",
        "count": 1,
        "last_step": 40,
    }
    # judged from the slow_epochs-th epoch on (epoch is 0-based here), with its own thresholds
    th = Thresholds(slow_epochs=3, slow_drop=0.5)
    assert rules.slow_finding(1, 1.8, 2.0, th, LR) is None
    later = rules.slow_finding(2, 1.2, 2.0, th, lambda: LR)
    assert later.epoch == 3 and later.step is None and later.fix == fix_for("slow_convergence", LR)
    assert later.message.endswith("only 40.0% below the initial 2 (expected at least 50.0% below).")
    assert rules.slow_finding(2, 0.9, 2.0, th, LR) is None
    assert rules.slow_finding(2, 1.2, 2.0, th, LR, causes=()).fix == fix_for("slow_convergence", LR)
    same = rules.slow_finding(1, 2.0, 2.0, TH, LR)  # no drop at all: 0% above
    assert "after 2 epochs the loss is 2, 0% above the initial 2" in same.message
    assert rules.slow_finding(1, 2.0, 2.0, TH, LR, step=None).step is None
    assert rules.slow_finding(1, math.inf, 2.0, TH, LR) is None
    assert rules.slow_finding(1, None, 2.0, TH, LR) is None


def test_slow_finding_counts_epochs_after_the_warmup():
    # 2 warmup epochs: slow_epochs (2) counts from the third epoch on
    assert rules.slow_finding(1, 1.8, 2.0, TH, LR, warmup=2) is None
    assert rules.slow_finding(2, 1.8, 2.0, TH, LR, warmup=2) is None
    found = rules.slow_finding(3, 1.8, 2.0, TH, LR, warmup=2)
    assert found.epoch == 4 and found.evidence["warmup_epochs"] == 2
    assert "warmup_epochs" not in rules.slow_finding(1, 1.8, 2.0, TH, LR).evidence


def test_slow_finding_does_not_raise_the_learning_rate_when_the_steps_are_large():
    # measured median kernel update/weight ratio at the healthy 1e-3 or above: the fix points
    # elsewhere, and the ratio is in the evidence
    for ratio in (1e-3, 1.2e-2):
        found = rules.slow_finding(1, 1.8, 2.0, TH, LR, update_ratio=ratio)
        assert found.fix == large_updates_fix(ratio)
        assert found.evidence["median_update_ratio"] == ratio
    assert large_updates_fix(1.2e-2) == (
        "the steps are already large (median update/weight ratio 1.2e-02; ~1e-3 is healthy), "
        "so do not raise the learning rate: check the initialisation, the input normalisation "
        "and the labels, and whether the model can fit the data"
    )
    small = rules.slow_finding(1, 1.8, 2.0, TH, LR, update_ratio=0.999e-3)
    assert small.fix == fix_for("slow_convergence", LR)
    assert small.evidence["median_update_ratio"] == 0.999e-3
    after = rules.slow_finding(1, 1.8, 2.0, TH, LR, causes=["dying_relu"], update_ratio=2e-3)
    assert after.fix == f"first fix dying_relu (found above); then {large_updates_fix(2e-3)}"


def test_activation_findings_whole():
    stats = {
        "out": _stats(dead=0.9),  # skipped: an output layer
        "relu": ActivationStats("relu", mean=0.1, std=0.2, zero_fraction=0.95, dead_fraction=0.75),
        "tanh": ActivationStats(
            "tanh", mean=0.9, std=0.05, zero_fraction=0.0, saturated_fraction=0.625
        ),  # fmt: skip
    }
    dying, saturated = rules.activation_findings(
        stats, TH, lambda: LR, step=8, epoch=2, skip=["out"]
    )
    assert dying.to_dict() == {
        "symptom": "dying_relu",
        "severity": "warning",
        "evidence": {"dead_fraction": 0.75, "threshold": 0.5},
        "fix": fix_for("dying_relu", LR),
        "step": 8,
        "epoch": 2,
        "layer": "relu",
        "message": "dying_relu at step 8, epoch 2: 75% of the units of layer 'relu' output 0 "
        "for every probe example.",
        "source": "doctor",
        "count": 1,
        "last_step": 8,
    }
    assert saturated.to_dict() == {
        "symptom": "saturated_activations",
        "severity": "warning",
        "evidence": {"saturated_fraction": 0.625, "threshold": 0.5, "mean": 0.9, "std": 0.05},
        "fix": fix_for("saturated_activations"),
        "step": 8,
        "epoch": 2,
        "layer": "tanh",
        "message": "saturated_activations at step 8, epoch 2: 62% of the tanh outputs of layer "
        "'tanh' are saturated.",
        "source": "doctor",
        "count": 1,
        "last_step": 8,
    }
    # each rule reads its own threshold
    th = Thresholds(dead_fraction=0.8, saturated_fraction=0.7)
    assert rules.activation_findings(stats, th, LR, step=8, epoch=2, skip=["out"]) == []
    # a layer with both numbers is judged on both
    both = {"x": ActivationStats("relu", 0.0, 1.0, 0.9, dead_fraction=0.9, saturated_fraction=0.9)}
    assert [f.symptom for f in rules.activation_findings(both, TH, LR, step=1, epoch=1)] == [
        "dying_relu",
        "saturated_activations",
    ]


def test_gradient_flags_vanishing_message_names_both_layers():
    flags = rules.gradient_flags(1.0, {"conv": 1e-5, "mid": 1.0, "head": 2.0})
    assert flags == {
        "vanishing": "gradient norm of the first layer 'conv' is 5.0e-06 times that of the last "
        "layer 'head' (below 0.001)"
    }
    # each flag reads the thresholds it is given
    assert rules.gradient_flags(1.0, {"a": 1e-5, "b": 1.0}, vanishing=1e-6) == {}
    assert rules.gradient_flags(50.0, {"a": 1.0, "b": 1.0}, exploding=10.0) == {
        "exploding": "global gradient norm 50 is above 10"
    }
    assert rules.gradient_flags(50.0, {"a": 1.0, "b": 1.0}, [1.0, 2.0, 3.0], growth=10.0) == {
        "exploding": "global gradient norm 50 grew more than 10x over the median 2 of the "
        "earlier probes"
    }
    assert rules.gradient_flags(50.0, {"a": 1.0, "b": 1.0}, [1.0, 2.0, 3.0], growth=25.0) == {}
    assert rules.gradient_flags(-math.inf, {"a": 1.0}) == {
        "exploding": "global gradient norm is -inf"
    }


def test_gradient_findings_whole():
    norms = {"first": 1e-6, "last": 1.0}
    probe = {"step": 9, "epoch": 1, "loss": 2.5, "global_norm": 5e3, "layer_norms": norms}
    exploding, vanishing = rules.gradient_findings(probe, [1.0, 1.0, 1.0], TH, lambda: LR)
    assert exploding.to_dict() == {
        "symptom": "exploding_gradients",
        "severity": "error",
        "evidence": {
            "global_norm": 5e3,
            "threshold": 1e3,
            "probe_loss": 2.5,
            "layer_norms": norms,
        },
        "fix": fix_for("exploding_gradients", LR),
        "step": 9,
        "epoch": 2,
        "layer": None,
        "message": "exploding_gradients at step 9, epoch 2: global gradient norm 5e+03 is above "
        "1000.",
        "source": "doctor",
        "count": 1,
        "last_step": 9,
    }
    assert vanishing.to_dict() == {
        "symptom": "vanishing_gradients",
        "severity": "warning",
        "evidence": {"first_last_ratio": 1e-6, "threshold": 1e-3, "layer_norms": norms},
        "fix": fix_for("vanishing_gradients"),
        "step": 9,
        "epoch": 2,
        "layer": None,
        "message": "vanishing_gradients at step 9, epoch 2: gradient norm of the first layer "
        "'first' is 1.0e-06 times that of the last layer 'last' (below 0.001).",
        "source": "doctor",
        "count": 1,
        "last_step": 9,
    }
    # the thresholds passed in decide, and growth over the earlier probes counts
    th = Thresholds(exploding_norm=1e4, vanishing_ratio=1e-7, gradient_growth=1000.0)
    assert rules.gradient_findings(probe, [10.0, 10.0, 10.0], th, LR) == []
    grown = {**probe, "global_norm": 500.0, "layer_norms": {"a": 1.0, "b": 1.0}}
    (growth,) = rules.gradient_findings(grown, [1.0, 2.0, 3.0], TH, LR)
    assert growth.message.endswith("grew more than 100x over the median 2 of the earlier probes.")
    assert rules.gradient_findings(grown, [1.0, 2.0, 3.0], th, LR) == []
    _, after = rules.gradient_findings(probe, [], TH, LR, dying=["d1", "d2"])
    assert after.fix == (
        "the dead ReLU units of d1, d2 pass no gradient: fix dying_relu first; "
        + fix_for("vanishing_gradients")
    )
    assert rules.gradient_findings({**probe, "loss": math.inf}, [], TH, LR) == []


def test_stagnant_findings_whole():
    (found,) = rules.stagnant_findings(
        {"ok": [1e-3, 1e-3], "stuck": [1e-8, 3e-8, 2e-7]}, TH, lambda: LR, step=50, epoch=3
    )
    assert found.to_dict() == {
        "symptom": "stagnant_weights",
        "severity": "warning",
        "evidence": {"median_update_ratio": 3e-8, "measurements": 3, "threshold": 1e-6},
        "fix": fix_for("stagnant_weights", LR),
        "step": 50,
        "epoch": 3,
        "layer": "stuck",
        "message": "stagnant_weights at step 50, epoch 3: the kernel of layer 'stuck' changes "
        "by a median 3.0e-08 of its norm per step (below 1e-06).",
        "source": "doctor",
        "count": 1,
        "last_step": 50,
    }
    # the median, not the mean (one large step does not hide a stuck layer), and its threshold
    assert len(rules.stagnant_findings({"s": [0.0, 0.0, 1.0]}, TH, LR, step=1, epoch=1)) == 1
    assert rules.stagnant_findings({"s": [1e-8] * 3}, Thresholds(stagnant_ratio=1e-9), LR,
                                   step=1, epoch=1) == []  # fmt: skip


def test_median_update_ratio_reads_the_ratio_column_of_kernels():
    rows = [[0, 1, "conv/kernel", 4e-3, 9.0], [1, 1, "conv/kernel", 1e-3, 9.0],
            [2, 1, "conv/kernel", 2e-3, 9.0], [2, 1, "kernel_scale", 1.0, 9.0]]  # fmt: skip
    assert rules.median_update_ratio(rows) == 2e-3
    assert rules.median_update_ratio([[0, 1, "d/kernel", "inf"]]) is None
    assert rules.median_update_ratio([[0, 1, "d/kernel", None]]) is None
    assert rules.median_update_ratio([]) is None


def test_loss_shape_numbers():
    # 7 epochs: mid = 3; halves [2.0 .. 1.7] and [1.7 .. 1.4]
    linear = [2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4]
    assert rules.loss_shape(linear, 2.5, TH) == {
        "shape": "linear",
        "drop_ratio": pytest.approx(1.0),
        "initial_loss": 2.5,
        "first_epoch_loss": 2.0,
        "final_loss": 1.4,
        "min_loss": 1.4,
        "first_half_drop": pytest.approx(0.3),
        "second_half_drop": pytest.approx(0.3),
        "epochs": 7,
        "warmup_epochs": 0,
    }
    # without an initial loss the first epoch's loss is the scale; non-finite epochs are dropped
    shape = rules.loss_shape([2.0, math.nan, 1.0, 1.0, 1.2, 1.0, 1.1, 1.0], None, TH)
    assert shape == {
        "shape": "plateau_high",
        "largest_late_rise": pytest.approx(0.2),
        "initial_loss": 2.0,
        "first_epoch_loss": 2.0,
        "final_loss": 1.0,
        "min_loss": 1.0,
        "first_half_drop": pytest.approx(0.8),  # to epoch 4 (mid), 1.2
        "second_half_drop": pytest.approx(0.2),
        "epochs": 7,
        "warmup_epochs": 0,
    }
    assert rules.loss_shape([2.0, 1.0, 1.0, 1.0], math.inf, TH)["initial_loss"] == 2.0
    assert rules.loss_shape([2.0, 1.0, 1.0, 1.0], 0.0, TH)["initial_loss"] == 2.0
    assert rules.loss_shape([2.0, 1.0, math.inf, 1.0], 2.0, TH) == {"shape": "too_short",
                                                                   "epochs": 3,
                                                                   "warmup_epochs": 0}  # fmt: skip
    # min_epochs is read from the thresholds
    assert rules.loss_shape([2.0, 1.0, 1.0], 2.0, Thresholds(min_epochs=3))["shape"] == "ok"


def test_loss_shape_rules_each_read_their_threshold():
    rising = [1.0, 0.5, 0.9, 1.05]  # ends above the first epoch and 110% above the minimum
    assert rules.loss_shape(rising, 1.0, TH)["shape"] == "rising"
    assert rules.loss_shape(rising, 1.0, Thresholds(rise=1.2))["shape"] != "rising"
    # ends above the minimum by more than `rise` but below the first epoch: not rising
    assert rules.loss_shape([1.0, 0.5, 0.9, 0.95], 1.0, TH)["shape"] != "rising"
    bumpy = [2.0, 1.0, 1.0, 1.2, 1.0, 1.1, 1.0]  # a late bump of 0.2 = 10% of 2.0
    assert rules.loss_shape(bumpy, 2.0, Thresholds(bump=0.11))["shape"] != "plateau_high"
    assert rules.loss_shape(bumpy, 2.0, Thresholds(bump=0.09))["shape"] == "plateau_high"
    # final loss 1.0 is 50% of 2.0: a plateau above `plateau_level` only
    assert rules.loss_shape(bumpy, 2.0, Thresholds(plateau_level=0.51))["shape"] != "plateau_high"
    # the second half gained 0 on the best; a required gain of 0 is never undercut
    assert rules.loss_shape(bumpy, 2.0, Thresholds(plateau_change=1e-9))["shape"] == "plateau_high"
    late_gain = [2.0, 1.0, 1.0, 1.2, 0.5, 0.6, 0.5]  # the second half improved the best by 0.5
    assert rules.loss_shape(late_gain, 2.0, TH)["shape"] != "plateau_high"
    # the first epoch's own drop is not a late bump: [2.0 -> 1.0] then flat with one 1.02 rise
    assert rules.loss_shape([2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2.0, TH)["shape"] == "ok"
    linear = [2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4]  # final 1.4 = 70% of 2.0, ratio 1.0
    assert rules.loss_shape(linear, 2.0, Thresholds(linear_ratio=1.01))["shape"] == "ok"
    assert rules.loss_shape(linear, 2.0, Thresholds(linear_level=0.71))["shape"] == "ok"
    assert rules.loss_shape(linear, 2.0, Thresholds(linear_level=0.69))["shape"] == "linear"
    # an even count: halves of 2 and 3 epochs, rates per epoch (0.2/2 and 0.3/3)
    even = rules.loss_shape([2.0, 1.9, 1.8, 1.7, 1.6, 1.5], 2.0, TH)
    assert even["first_half_drop"] == pytest.approx(0.2)
    assert even["second_half_drop"] == pytest.approx(0.3)
    assert even["drop_ratio"] == pytest.approx(1.0)
    # a flat first half (rate 0) is not "linear"
    assert rules.loss_shape([2.0, 2.0, 2.0, 2.0, 1.9, 1.8, 1.7], 2.0, TH)["shape"] == "ok"


def test_bias_variance_whole():
    table = rules.bias_variance(0.75, 0.6, 0.55, 0.05)
    assert table == {
        "train_error": 0.25,
        "dev_error": 0.4,
        "test_error": pytest.approx(0.45),
        "bayes_error": 0.05,
        "bayes_error_assumed": False,
        "avoidable_bias": pytest.approx(0.2),
        "variance": pytest.approx(0.15),
        "high_bias": True,
        "high_variance": True,
        "verdict": "high bias and high variance",
        "fixes": [fix_for("underfitting"), variance_after_bias_fix()],
        "inconclusive": [],
    }
    assert rules.bias_variance(0.99, 0.98, math.nan)["test_error"] is None
    assert rules.bias_variance(0.99, 0.98)["verdict"] == "low bias, low variance"
    assert rules.bias_variance(0.8, 0.79)["verdict"] == "high bias"
    assert rules.bias_variance(0.8, 0.79)["fixes"] == [fix_for("underfitting")]
    assert rules.bias_variance(0.99, 0.8)["fixes"] == [fix_for("overfitting")]
    assert rules.bias_variance(0.99, 0.98)["fixes"] == []
    assert rules.bias_variance(0.9, 0.8, thresholds={"bias": 0.2, "variance": 0.2})["verdict"] == (
        "low bias, low variance"
    )


def test_accuracies_at_reads_epoch_numbers_and_skips_incomplete_epochs():
    history = {"epoch": [3, 4, 5], "accuracy": [0.5, 0.7, 0.9], "val_accuracy": [0.4, 0.6, 0.8]}
    assert rules.accuracies_at(history, weights_epoch=4) == (0.7, 0.6, 4)
    assert rules.accuracies_at(history, weights_epoch=9) == (0.9, 0.8, 5)  # unknown: the last
    assert rules.accuracies_at({"accuracy": [0.5], "val_accuracy": [None]}) == (None, None, None)
    # the training accuracy alone is not a table
    assert rules.accuracies_at({"accuracy": [0.5, 0.6]}) == (None, None, None)


def test_val_loss_rise_whole():
    history = {"loss": [1.0, 0.8, 0.5, 0.4], "val_loss": [1.0, 0.5, 0.7, 0.75]}
    assert rules.val_loss_rise(history, TH) == {
        "min_val_loss": 0.5,
        "min_val_loss_epoch": 2,
        "final_val_loss": 0.75,
    }
    assert rules.val_loss_rise(history, Thresholds(val_loss_rise=0.6)) is None
    assert rules.val_loss_rise({**history, "loss": [1.0, 0.8, 0.5]}, TH) is None  # lengths differ
    assert rules.val_loss_rise({"loss": [1.0], "val_loss": [1.0]}, TH) is None
    assert rules.val_loss_rise({**history, "val_loss": [1.0, 0.5, math.nan, 0.75]}, TH) is None
    # a training loss that stayed level at the best epoch's value is not "kept falling"
    assert rules.val_loss_rise({**history, "loss": [1.0, 0.4, 0.5, 0.4]}, TH) is None


def test_curve_findings_rising_whole():
    (found,) = rules.curve_findings(
        {"loss": [1.0, 1.0, 1.0, 2.0]}, lr=LR, step=40, update_ratio=0.02
    )
    assert found.to_dict() == {
        "symptom": "lr_too_high",
        "severity": "warning",
        "evidence": {
            "shape": "rising",
            "initial_loss": 1.0,
            "first_epoch_loss": 1.0,
            "final_loss": 2.0,
            "min_loss": 1.0,
            "first_half_drop": 0.0,
            "second_half_drop": -1.0,
            "epochs": 4,
            "warmup_epochs": 0,
            "median_update_ratio": 0.02,
        },
        "fix": fix_for("lr_too_high", LR),
        "step": 40,
        "epoch": 4,
        "layer": None,
        "message": "lr_too_high at step 40, epoch 4: the training loss rose to 2 from 1 in the "
        "first epoch (a rising loss: the learning rate is far too high).",
        "source": "curves",
        "count": 1,
        "last_step": 40,
    }


def test_curve_findings_plateau_and_linear_messages():
    (plateau,) = rules.curve_findings(
        {"loss": [2.0, 1.0, 1.0, 1.2, 1.0, 1.1, 1.0]}, initial_loss=2.0, lr=LR
    )
    assert (plateau.symptom, plateau.epoch, plateau.step, plateau.source) == (
        "lr_too_high", 7, None, "curves")  # fmt: skip
    assert plateau.message == (
        "lr_too_high at epoch 7: the loss dropped fast, then stalled on a bumpy plateau at 1 "
        "(50% of the initial 2)."
    )
    assert plateau.evidence["largest_late_rise"] == pytest.approx(0.2)
    assert "median_update_ratio" not in plateau.evidence
    assert plateau.fix == fix_for("lr_too_high", LR)
    (linear,) = rules.curve_findings(
        {"loss": [2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4]}, initial_loss=2.0, lr=LR, update_ratio=5e-4
    )
    assert linear.message == (
        "lr_too_low at epoch 7: the loss decays almost linearly (in the second half of training "
        "it fell 100% as fast per epoch as in the first) and is still at 1.4, 70% of the "
        "initial 2."
    )
    assert linear.evidence["median_update_ratio"] == 5e-4
    assert linear.fix == fix_for("lr_too_low", LR)
    assert rules.curve_findings({"loss": [2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4]}, initial_loss=2.0,
                                thresholds={"linear_level": 0.9}) == []  # fmt: skip


def test_curve_findings_overfitting_whole():
    history = {
        "loss": [1.0, 0.6, 0.4, 0.3],
        "accuracy": [0.6, 0.8, 0.96, 0.99],
        "val_loss": [0.8, 0.5, 0.6, 0.7],
        "val_accuracy": [0.6, 0.8, 0.82, 0.83],
    }
    (found,) = rules.curve_findings(history, test_accuracy=0.8, step=99, weights_epoch=3)
    assert found.symptom == "overfitting" and found.severity == "warning"
    assert (found.epoch, found.step, found.source, found.layer) == (3, 99, "curves", None)
    assert found.evidence == {
        "min_val_loss": 0.5,
        "min_val_loss_epoch": 2,
        "final_val_loss": 0.7,
        "train_error": pytest.approx(0.04),
        "dev_error": pytest.approx(0.18),
        "test_error": pytest.approx(0.2),
        "variance": pytest.approx(0.14),
        "epoch": 3,
        "variance_threshold": 0.05,
    }
    assert found.message == (
        "overfitting at step 99, epoch 3: validation error 18.0% vs training error 4.0% "
        "(variance 14.0% > 5%); validation loss rose to 0.7 from its minimum 0.5 (epoch 2) "
        "while the training loss kept falling."
    )
    assert found.fix == fix_for("overfitting")
    # the validation loss alone: the numbers are of the curve's last epoch
    rise_only = {**history, "val_accuracy": [0.6, 0.8, 0.93, 0.97]}
    (found,) = rules.curve_findings(rise_only, step=99, weights_epoch=3)
    assert found.epoch == 4 and found.message == (
        "overfitting at step 99, epoch 4: validation loss rose to 0.7 from its minimum 0.5 "
        "(epoch 2) while the training loss kept falling."
    )
    assert found.evidence["epoch"] == 3 and found.evidence["variance"] == pytest.approx(0.03)
    # the gap alone, against the variance threshold passed in
    gap_only = {**history, "val_loss": [0.8, 0.5, 0.45, 0.44]}
    (found,) = rules.curve_findings(gap_only, weights_epoch=4)
    assert "validation loss rose" not in found.message and found.epoch == 4
    assert "min_val_loss" not in found.evidence
    assert rules.curve_findings(gap_only, thresholds={"variance": 0.2}) == []


def test_curve_findings_underfitting_whole():
    history = {"loss": [0.9], "accuracy": [0.7], "val_accuracy": [0.69]}
    (found,) = rules.curve_findings(history, test_accuracy=0.68, bayes_error=0.1, lr=LR, step=5)
    assert found.to_dict() == {
        "symptom": "underfitting",
        "severity": "warning",
        "evidence": {
            "train_error": pytest.approx(0.3),
            "dev_error": pytest.approx(0.31),
            "test_error": pytest.approx(0.32),
            "bayes_error": 0.1,
            "bayes_error_assumed": False,
            "avoidable_bias": pytest.approx(0.2),
            "bias_threshold": 0.05,
        },
        "fix": fix_for("underfitting", LR),
        "step": 5,
        "epoch": 1,
        "layer": None,
        "message": "underfitting at step 5, epoch 1: training error 30.0% against a Bayes error "
        "of 10.0% (avoidable bias 20.0% > 5%); validation error 31.0%.",
        "source": "curves",
        "count": 1,
        "last_step": 5,
    }
    assert rules.curve_findings(history, bayes_error=0.1, thresholds={"bias": 0.25}) == []


def test_rules_at_their_smallest_inputs():
    # a first loss below 1 still scales the divergence test
    assert rules.broken_loss(2.5, first=0.5, factor=4.0) == "loss 2.5 > 4 x first loss 0.5"
    # two losses are one step: enough to measure a jump
    assert rules.oscillation_index([1.0, 2.0], 1.0) == 1.0
    assert rules.oscillation_index([1.0, 2.0, 1.0], 2.0) == 0.5
    stats = ActivationStats("tanh", mean=0.5, std=0.25, zero_fraction=0.0, saturated_fraction=0.75)
    assert stats.to_dict() == {
        "kind": "tanh",
        "mean": 0.5,
        "std": 0.25,
        "zero_fraction": 0.0,
        "dead_fraction": None,
        "saturated_fraction": 0.75,
    }


def test_curve_findings_judge_the_shape_against_the_initial_loss_given():
    linear = {"loss": [2.0, 1.9, 1.8, 1.7, 1.6, 1.5, 1.4]}
    # 1.4 is 70% of a first epoch's 2.0 (linear, far from converged) but 35% of a 4.0 start
    assert [f.symptom for f in rules.curve_findings(linear)] == ["lr_too_low"]
    assert rules.curve_findings(linear, initial_loss=4.0) == []


def test_underfitting_says_when_the_bayes_error_is_assumed():
    history = {"loss": [0.9], "accuracy": [0.7], "val_accuracy": [0.69]}
    (found,) = rules.curve_findings(history)
    assert found.message == (
        "underfitting at epoch 1: training error 30.0% against a Bayes error of assumed 0 "
        "(avoidable bias 30.0% > 5%); validation error 31.0%."
    )
    assert found.evidence["bayes_error_assumed"] is True and found.evidence["bayes_error"] == 0.0


def test_val_loss_rise_over_two_epochs_and_the_last_training_loss():
    two = {"loss": [1.0, 0.8], "val_loss": [0.5, 0.7]}
    assert rules.val_loss_rise(two, TH) == {
        "min_val_loss": 0.5,
        "min_val_loss_epoch": 1,
        "final_val_loss": 0.7,
    }
    # the training loss dipped below the best epoch's, then ended above it: it did not keep
    # falling, so the rising validation loss is not called overfitting
    history = {"loss": [1.0, 0.5, 0.4, 0.6], "val_loss": [1.0, 0.5, 0.7, 0.8]}
    assert rules.val_loss_rise(history, TH) is None


def test_unknown_threshold_lists_the_known_ones():
    with pytest.raises(ValueError) as error:
        Thresholds.of({"foo": 1})
    assert str(error.value) == (
        "unknown threshold 'foo'; known: bias, bump, confidence_z, dead_fraction, exploding_norm, "
        "gradient_growth, linear_level, linear_ratio, min_epochs, oscillation, "
        "oscillation_noise, oscillation_window, plateau_change, plateau_level, rise, saturated_fraction, "
        "slow_drop, slow_epochs, stagnant_ratio, val_loss_rise, vanishing_ratio, variance"
    )


def test_loss_shape_boundaries_each_strict():
    """Each comparison of the shape rules at exact equality (values exact in binary)."""
    # ends exactly at its first epoch's loss: not rising (a bumpy plateau instead)
    assert rules.loss_shape([1.0, 0.5, 0.8, 1.0], None, TH)["shape"] == "plateau_high"
    # the second half gains exactly plateau_change of the initial loss: not a plateau
    gains = [1.0, 0.75, 0.875, 0.75, 0.5, 0.625, 0.5]
    assert rules.loss_shape(gains, 1.0, Thresholds(plateau_change=0.25))["shape"] == "ok"
    assert rules.loss_shape(gains, 1.0, Thresholds(plateau_change=0.2501))["shape"] == (
        "plateau_high"
    )
    # the gain threshold scales with the initial loss: 0.1 of 2.0 is 0.2 > the gain 0.1
    assert rules.loss_shape([2.0, 1.1, 1.1, 1.3, 1.0, 1.1, 1.0], 2.0, TH)["shape"] == (
        "plateau_high"
    )
    # the final loss, not the second epoch's, must stay above plateau_level
    low_end = [2.0, 0.5, 0.3, 0.35, 0.3, 0.35, 0.3]
    assert rules.loss_shape(low_end, 2.0, TH)["shape"] == "ok"
    level = [2.0, 0.5, 0.5, 0.625, 0.5, 0.5625, 0.5]  # ends at exactly 0.25 of 2.0
    assert rules.loss_shape(level, 2.0, Thresholds(plateau_level=0.25))["shape"] == "ok"
    bump = [2.0, 1.0, 1.0, 1.125, 1.0, 1.0, 1.0]  # its late rise is exactly 0.0625 of 2.0
    assert rules.loss_shape(bump, 2.0, Thresholds(bump=0.0625))["shape"] == "ok"
    assert rules.loss_shape(bump, 2.0, Thresholds(bump=0.0624))["shape"] == "plateau_high"
    # a rise between the second and the third epoch is late too
    early = [2.0, 1.0, 1.2, 1.0, 1.0, 1.0, 1.0]
    assert rules.loss_shape(early, 2.0, TH)["shape"] == "plateau_high"
    # both halves fall by exactly 0.125 per epoch, to exactly 0.625 of 2.0
    linear = [2.0, 1.875, 1.75, 1.625, 1.5, 1.375, 1.25]
    assert rules.loss_shape(linear, 2.0, TH)["shape"] == "linear"
    assert rules.loss_shape(linear, 2.0, Thresholds(linear_ratio=1.0))["shape"] == "ok"
    assert rules.loss_shape(linear, 2.0, Thresholds(linear_level=0.625))["shape"] == "ok"
    # two epochs are judged when min_epochs allows: no late rise to look at
    assert rules.loss_shape([2.0, 1.0], 2.0, Thresholds(min_epochs=2))["shape"] == "ok"
    assert rules.loss_shape([2.0], 2.0, Thresholds(min_epochs=1))["shape"] == "ok"
    assert rules.loss_shape([2.0, 3.0], 2.0, Thresholds(min_epochs=2))["shape"] == "rising"
