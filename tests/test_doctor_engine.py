"""The doctor's pure engine: numbers in, findings out, no TensorFlow.

Every expectation is worked out from the numbers fed: the rules' thresholds
(:class:`Thresholds`' defaults) and hand-made losses, gradient norms, activation statistics
and update ratios.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from kerasdiag.diagnosis.doctor import (
    ALARM_FACTOR,
    FLAT_STEPS,
    MAX_SAVED_STEPS,
    DoctorEngine,
    flat_loss_finding,
)
from kerasdiag.diagnosis.rules import ActivationStats, Thresholds
from kerasdiag.diagnosis.rules.convergence import SLOW_MIN_STEPS
from kerasdiag.diagnosis.symptoms import Finding

from conftest import REPO

LN10 = math.log(10.0)


def engine(**kwargs) -> DoctorEngine:
    found = []
    doctor = DoctorEngine(on_finding=lambda f, stop: found.append((f.symptom, stop)), **kwargs)
    doctor.calls = found
    doctor.begin_epoch(0, start_step=0)
    return doctor


def falling(n: int, start: float = LN10, rate: float = 0.99) -> list[float]:
    return [start * rate**i for i in range(n)]


def test_the_engine_imports_no_tensorflow():
    code = (
        "import sys, kerasdiag.diagnosis.doctor; "
        "assert not {'tensorflow', 'keras'} & set(sys.modules), sorted(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stop_on": ["nan", "exploding"]}, "unknown symptoms \\['exploding'\\]"),
        ({"bayes_error": 1.0}, "`bayes_error` must be in \\[0, 1\\)"),
        ({"thresholds": {"dead_frac": 0.5}}, "unknown threshold 'dead_frac'"),
    ],
)
def test_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DoctorEngine(**kwargs)


def test_a_nan_loss_is_named_with_the_rate_and_asks_to_stop():
    doctor = engine(current_rate=lambda: 0.5)
    for step, loss in enumerate([2.3, 2.2, 2.1, math.nan]):
        doctor.step_loss(step, loss)
    (nan,) = doctor.findings
    assert nan.symptom == "nan" and nan.step == 3 and nan.epoch == 1
    assert nan.evidence["previous_losses"] == [2.3, 2.2, 2.1] and nan.evidence["lr"] == 0.5
    assert doctor.stop_requested and doctor.calls == [("nan", True)]
    assert doctor.nan_epoch == 0
    assert doctor.initial_loss == 2.3  # the first finite loss


def test_a_symptom_not_in_stop_on_does_not_ask_to_stop():
    doctor = engine(stop_on=())
    doctor.step_loss(0, math.inf)
    assert doctor.calls == [("nan", False)] and not doctor.stop_requested


def test_step_losses_are_recovered_from_keras_running_means():
    losses = [2.0, 1.0, 3.0, 0.5, 9.0]  # the last batch of the epoch: left out (may be smaller)
    doctor = engine()
    for n in range(1, len(losses) + 1):
        doctor.running_mean(0, n, sum(losses[:n]) / n, steps=len(losses))
    assert doctor.step_losses == pytest.approx([(0, 2.0), (1, 1.0), (2, 3.0), (3, 0.5)])
    # steps_per_execution=2: one report per two steps gives their mean, at the later step
    doctor = engine()
    doctor.begin_epoch(1, start_step=10)
    doctor.running_mean(1, 2, 1.5)
    doctor.running_mean(1, 4, 1.75)
    doctor.running_mean(0, 6, 9.9)  # a late report of the earlier epoch: ignored
    assert doctor.step_losses == pytest.approx([(11, 1.5), (13, 2.0)])


def test_an_oscillating_loss_is_named_once_and_its_repeats_counted():
    window = Thresholds().oscillation_window
    doctor = engine(current_rate=0.3)
    losses = [LN10, 0.5] * (window + 5)  # jumps by ~80% of the initial loss at every step
    for step, loss in enumerate(losses):
        doctor.step_loss(step, loss)
    (found,) = doctor.findings
    assert found.symptom == "oscillating_loss" and found.step == window
    assert found.count == len(losses) - window and found.last_step == len(losses) - 1
    assert "0.03" in found.fix  # lowered from the rate in force


def test_the_alarm_rings_once_when_the_loss_shoots_up():
    doctor = engine()
    doctor.step_loss(0, 1.0)
    doctor.step_loss(1, 0.9)
    assert not doctor.take_alarm()
    doctor.step_loss(2, ALARM_FACTOR * 1.0 + 0.1)
    doctor.step_loss(3, ALARM_FACTOR * 1.0 + 0.2)  # within the window: no second alarm
    assert doctor.take_alarm() and not doctor.take_alarm()


def test_a_flat_loss_is_named_after_its_first_steps():
    doctor = engine(current_rate=1e-7)
    for step in range(FLAT_STEPS):
        doctor.step_loss(step, LN10 + 0.01 * (-1) ** step)
    (flat,) = doctor.findings
    assert flat.symptom == "slow_convergence" and flat.step == FLAT_STEPS - 1
    assert "flat" in flat.message
    assert (
        flat_loss_finding([(i, v) for i, v in enumerate(falling(FLAT_STEPS))], LN10, 1e-3) is None
    )


def test_gradient_records_name_exploding_and_vanishing_gradients():
    doctor = engine(current_rate=0.1)

    def record(step, norm, first=1.0, last=1.0, loss=2.3):
        return {"step": step, "epoch": 0, "loss": loss, "global_norm": norm,
                "layer_norms": {"hidden": first, "logits": last}}  # fmt: skip

    for step in range(3):
        doctor.gradients(record(step, 1.0))
    assert doctor.findings == []
    doctor.gradients(record(3, 150.0))  # 150x the median of the earlier probes
    doctor.gradients(record(4, 5e3))  # above exploding_norm 1e3: a repeat
    doctor.gradients(record(5, 1.0, first=1e-5))  # first/last 1e-5 < 1e-3
    exploding, vanishing = doctor.findings
    assert exploding.symptom == "exploding_gradients" and exploding.step == 3
    assert "grew" in exploding.message and exploding.count == 2
    assert vanishing.symptom == "vanishing_gradients" and vanishing.step == 5
    assert vanishing.evidence["first_last_ratio"] == pytest.approx(1e-5)


def test_activation_statistics_name_dead_and_saturated_layers_but_not_the_output():
    doctor = engine()
    doctor.start(outputs={"out"})
    dead = ActivationStats("relu", mean=0.0, std=0.0, zero_fraction=1.0, dead_fraction=0.8)
    healthy = ActivationStats("relu", mean=0.3, std=0.5, zero_fraction=0.5, dead_fraction=0.1)
    saturated = ActivationStats("tanh", 0.0, 1.0, 0.0, saturated_fraction=0.9)
    doctor.activations(0, 0, {"h1": dead, "h2": healthy, "h3": saturated, "out": saturated})
    assert [(f.symptom, f.layer, f.step, f.epoch) for f in doctor.findings] == [
        ("dying_relu", "h1", 0, 1),
        ("saturated_activations", "h3", 0, 1),
    ]
    # a vanishing gradient behind a dead layer is told to revive that layer first
    doctor.gradients({"step": 1, "epoch": 0, "loss": 2.3, "global_norm": 1.0,
                      "layer_norms": {"h1": 0.0, "out": 1.0}})  # fmt: skip
    assert "h1" in doctor.findings[-1].fix


def test_stagnant_weights_are_judged_on_the_kernels_measured_in_the_epoch():
    doctor = engine(current_rate=1e-3)
    doctor.start(kernels={"h1/kernel": "h1", "out/kernel": "out"})
    doctor.begin_epoch(0, 0)
    rows = [[s, 1, v, r, v.split("/")[0]]
            for s in (1, 5, 9)
            for v, r in (("h1/kernel", 0.0), ("h1/bias", 0.0), ("out/kernel", 1e-3))]  # fmt: skip
    doctor.update_ratios(rows)
    doctor.step_loss(9, 2.0)
    doctor.end_epoch(0, {"loss": 2.0})
    (stagnant,) = doctor.findings
    assert stagnant.symptom == "stagnant_weights" and stagnant.layer == "h1"
    assert stagnant.evidence["measurements"] == 3 and stagnant.epoch == 1
    # no step changed it at all: no learning rate would, and none is advised
    assert "no learning rate would" in stagnant.fix and "raise" not in stagnant.fix
    # the next epoch judges only its own rows: none, so no repeat
    doctor.end_epoch(1, {"loss": 1.9})
    assert stagnant.count == 1


def test_weights_that_move_too_little_are_told_to_raise_the_learning_rate():
    doctor = engine(current_rate=1e-3)
    doctor.start(kernels={"h1/kernel": "h1"})
    doctor.begin_epoch(0, 0)
    doctor.update_ratios([[s, 1, "h1/kernel", 1e-8, "h1"] for s in (1, 5, 9)])
    doctor.step_loss(9, 2.0)
    doctor.end_epoch(0, {"loss": 2.0})
    (stagnant,) = doctor.findings
    assert stagnant.symptom == "stagnant_weights" and "raise the learning rate" in stagnant.fix


def test_slow_convergence_after_the_warmup_with_the_peak_rate_in_the_fix():
    doctor = engine(current_rate=0.0)
    doctor.step_loss(0, LN10)
    rates = [0.0, 0.5e-4, 1e-4, 0.5e-4]  # two warmup epochs, then decay
    for epoch, rate in enumerate(rates):
        doctor.begin_epoch(epoch, epoch * 10)
        doctor.step_loss(epoch * 10 + 9, 0.95 * LN10)  # 40 steps by the last: enough to judge
        doctor.end_epoch(epoch, {"loss": 0.95 * LN10, "lr": 9.9}, learning_rate=rate)
        # not before slow_epochs (2) epochs after the warmup
        assert (doctor.findings != []) == (epoch == 3)
    (slow,) = doctor.findings
    assert slow.evidence["warmup_epochs"] == 2 and slow.epoch == 4
    assert doctor.history["learning_rate"] == rates  # the record, not another key's number
    assert doctor.lr() == 1e-4  # the highest the run used: the schedule's peak
    assert "(optimizer.lr=0.001; it is 0.0001)" in slow.fix


def test_the_run_s_update_ratio_vetoes_raising_the_learning_rate():
    doctor = engine(current_rate=1e-3)
    doctor.start(kernels={"h/kernel": "h"})
    doctor.update_ratios([[s, 1, "h/kernel", 5e-3, "h"] for s in range(1, 6)])
    doctor.step_loss(0, LN10)
    doctor.step_loss(SLOW_MIN_STEPS - 1, LN10)  # enough steps for a rate
    for epoch in range(2):
        doctor.end_epoch(epoch, {"loss": LN10})
    (slow,) = doctor.findings
    assert slow.evidence["median_update_ratio"] == 5e-3
    assert "raise the learning rate 3-10x" not in slow.fix


def test_broken_weights_are_a_nan_finding_and_the_restore_is_recorded():
    doctor = engine()
    for step in range(4):
        doctor.step_loss(step, 2.0 - 0.1 * step)
    doctor.broken_weights(5, ["dense/kernel"])
    (nan,) = doctor.findings
    assert nan.step == 4 and nan.evidence["non_finite_weights"] == ["dense/kernel"]
    assert "bad batch" in nan.fix  # a finite, stable loss before: the data first
    doctor.weights_restored(0)
    assert nan.evidence["restored_weights_of_epoch"] == 0 and doctor.restored_epoch == 0
    doctor.end_training(step=5)  # a broken run's curves are not judged
    assert doctor.findings == [nan]


def test_initialisation_findings_skip_what_a_probe_measures():
    doctor = engine()
    kw = {"evidence": {}, "fix": "f", "step": 0, "epoch": 1}
    init = [
        Finding("exploding_gradients", "warning", layer="h1", **kw),
        Finding("saturated_activations", "warning", layer="h2", **kw),
    ]
    doctor.init_findings(init, measured=["exploding_gradients", "vanishing_gradients"])
    assert [f.symptom for f in doctor.findings] == ["saturated_activations"]


def test_the_curves_are_judged_at_the_end_of_training():
    doctor = engine(current_rate=2.0)
    doctor.step_loss(0, LN10)
    for epoch, loss in enumerate([1.0, 0.8, 1.2, 1.6, 2.2, 2.6]):  # rises after epoch 2
        doctor.step_loss(10 * epoch + 9, loss)  # 10 steps an epoch: enough for a rate
        doctor.end_epoch(epoch, {"loss": loss, "val_loss": loss}, learning_rate=2.0)
    doctor.end_training(step=60, judge_curves=False)
    assert [f.symptom for f in doctor.findings] == ["slow_convergence"]
    doctor.end_training(step=60)
    high = next(f for f in doctor.findings if f.symptom == "lr_too_high")
    assert high.source == "curves" and high.step == 60


def test_the_record_is_saved_and_a_resumed_fit_continues_it():
    doctor = engine()
    doctor.step_loss(0, LN10)
    doctor.activations(0, 0, {"h1": ActivationStats("relu", 0.0, 0.0, 1.0, dead_fraction=1.0)})
    for epoch in range(3):
        doctor.begin_epoch(epoch, 10 * epoch)
        doctor.step_loss(10 * epoch + 5, LN10 / 2 ** (epoch + 1))
        doctor.end_epoch(epoch, {"loss": LN10 / 2 ** (epoch + 1)}, learning_rate=0.01)
    saved = json.loads(json.dumps(doctor.to_json(probes=3, probe_seconds=0.5, train_seconds=9)))
    assert list(saved) == ["findings", "initial_loss", "step_losses", "probes", "probe_seconds",
                           "train_seconds", "history", "thresholds", "stop_on"]  # fmt: skip
    assert saved["stop_on"] == ["nan"] and saved["thresholds"]["dead_fraction"] == 0.5

    again = DoctorEngine()
    again.start(first_step=20, saved=saved)  # interrupted after epoch 2 (steps 0-19)
    assert again.initial_loss == LN10
    assert [s for s, _ in again.step_losses] == [0, 5, 15]
    assert [f.symptom for f in again.findings] == ["dying_relu"]
    again.begin_epoch(2, 20)  # epoch 3 is redone: its logs go
    assert again.history["loss"] == pytest.approx([LN10 / 2, LN10 / 4])
    again.activations(25, 2, {"h1": ActivationStats("relu", 0.0, 0.0, 1.0, dead_fraction=1.0)})
    assert len(again.findings) == 1 and again.findings[0].count == 2  # a repeat, not a new one
    # a fresh fit (step 0) starts a fresh record, whatever is saved
    again.start(first_step=0, saved=saved)
    assert again.findings == [] and again.initial_loss is None


def test_a_long_record_is_thinned_for_doctor_json():
    doctor = engine()
    for step in range(3 * MAX_SAVED_STEPS):
        doctor.step_loss(step, 1.0)
    points = doctor.to_json()["step_losses"]
    assert len(points) == MAX_SAVED_STEPS and points[0][0] == 0
    assert points[-1][0] == 3 * MAX_SAVED_STEPS - 1
    assert len(doctor.step_losses) == 3 * MAX_SAVED_STEPS  # in memory: all of them
