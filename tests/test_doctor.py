"""TrainingDoctor's contract: arguments, monitors it judges, stop_on, doctor.json, per-step losses."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from doctor_zoo import compiled, digits, mlp

from kerasdiag.callbacks import (
    ActivationHistograms,
    GradientMonitor,
    LearningRateMonitor,
    MonitorWarning,
    TrainingDoctor,
    UpdateRatioMonitor,
    stats,
)
from kerasdiag.callbacks.probe_batch import ProbeBudget
from kerasdiag.diagnosis import Finding
from kerasdiag.diagnosis.symptoms import large_updates_fix


@pytest.fixture(scope="module")
def data():
    return digits()


def dead_model(data):
    """A ReLU MLP whose biases start at -5: every hidden unit is dead."""
    model = mlp(data, bias_initializer=keras.initializers.Constant(-5.0))
    return compiled(model, keras.optimizers.Adam(1e-3))


def fit(model, data, callbacks, epochs=1, **kwargs):
    return model.fit(
        data.x_train,
        data.y_train,
        batch_size=32,
        epochs=epochs,
        validation_data=(data.x_val, data.y_val),
        callbacks=callbacks,
        verbose=0,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stop_on": ["nan", "exploding"]}, "unknown symptoms \\['exploding'\\]"),
        ({"budget": 0}, "`budget` must be a number in \\(0, 1\\]"),
        ({"budget": 1.5}, "`budget` must be a number in \\(0, 1\\]"),
        ({"y": np.zeros(4)}, "`y` was given without `x`"),
        ({"x": np.zeros((4, 8, 8, 1)), "y": np.zeros(3)}, "same number of examples"),
        ({"thresholds": {"dead_frac": 0.5}}, "unknown threshold 'dead_frac'"),
        ({"monitors": [keras.callbacks.History()]}, "`monitors` takes GradientMonitor"),
        ({"monitors": [UpdateRatioMonitor(), UpdateRatioMonitor()]}, "two UpdateRatioMonitor"),
        ({"bayes_error": 1.0}, "`bayes_error` must be in \\[0, 1\\)"),
    ],
)
def test_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainingDoctor(**kwargs)


def test_doctor_judges_the_monitors_it_is_given_without_probing(data):
    # hidden1 is dead (biases at -5) and cut off from the loss by a stop_gradient.
    model = mlp(data, bias_initializer=keras.initializers.Constant(-5.0), cut_after_first=True)
    model = compiled(model, keras.optimizers.Adam(1e-3))
    x, y = data.x_train[:64], data.y_train[:64]
    monitors = [
        ActivationHistograms(x, freq=10),
        GradientMonitor(x, y, freq=10),
        UpdateRatioMonitor(freq=5),
    ]
    doctor = TrainingDoctor(monitors=monitors, verbose=0)
    # The doctor comes first, as in a pipeline: it reads each probe one step later.
    fit(model, data, [doctor, *monitors])
    assert doctor.probes == 0
    symptoms = {(f.symptom, f.layer) for f in doctor.findings}
    assert ("dying_relu", "hidden1") in symptoms  # from ActivationHistograms
    assert ("vanishing_gradients", None) in symptoms  # from GradientMonitor
    assert ("stagnant_weights", "hidden1") in symptoms  # from UpdateRatioMonitor
    # cut off, it never moves: neither the doctor nor the monitor says to raise the rate
    stagnant = next(f for f in doctor.findings if f.symptom == "stagnant_weights")
    assert "raise the learning rate" not in stagnant.fix  # the dead units come first
    (warned,) = [f for f in monitors[2].findings if f["layer"] == "hidden1"]
    assert warned["median"] == 0 and "no learning rate would" in warned["message"]
    assert "too low" not in warned["message"]
    dying = next(f for f in doctor.findings if f.symptom == "dying_relu")
    # The monitor measured it at step 0 and the doctor reports that step, not its own.
    assert dying.step == 0 and dying.evidence["dead_fraction"] == 1.0
    assert monitors[0].history[0][2]["hidden1"].dead_fraction == 1.0


def test_stop_on_ends_training_at_the_first_finding(data):
    model = dead_model(data)
    doctor = TrainingDoctor(data.x_train[:64], data.y_train[:64], stop_on=["dying_relu"], verbose=0)
    fit(model, data, [doctor], epochs=5)
    # Found before step 0; Keras stops after the batch in flight.
    assert int(model.optimizer.iterations) == 1
    assert doctor.findings[0].symptom == "dying_relu"
    assert doctor.findings[0].step == 0


def test_thresholds_override_the_defaults(data):
    model = dead_model(data)
    x, y = data.x_train[:64], data.y_train[:64]
    defaults = TrainingDoctor(x, y, verbose=0)
    fit(model, data, [defaults])
    assert "dying_relu" in {f.symptom for f in defaults.findings}
    # 100% dead units are not "more than 100%": a user can switch the symptom off this way.
    model = dead_model(data)
    relaxed = TrainingDoctor(x, y, thresholds={"dead_fraction": 1.0}, verbose=0)
    fit(model, data, [relaxed])
    assert "dying_relu" not in {f.symptom for f in relaxed.findings}
    assert relaxed.thresholds.dead_fraction == 1.0


def test_step_losses_are_the_losses_of_each_batch(data):
    """With lr = 0 the model is fixed, so each step's loss can be computed directly."""
    model = compiled(mlp(data), keras.optimizers.SGD(0.0))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    x, y = data.x_train[:320], data.y_train[:320]
    expected = [
        float(loss_fn(y[i : i + 32], model(x[i : i + 32], training=False)))
        for i in range(0, 320, 32)
    ]
    doctor = TrainingDoctor(verbose=0)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, callbacks=[doctor], verbose=0)
    steps, losses = zip(*doctor.step_losses, strict=True)
    # The epoch's last batch is left out (it may be smaller: its recovered loss is biased).
    assert list(steps) == list(range(9))
    np.testing.assert_allclose(losses, expected[:9], rtol=1e-4)
    assert doctor.initial_loss == pytest.approx(expected[0], rel=1e-5)


def test_synchronous_and_asynchronous_dispatch_agree(data):
    """TerminateOnNaN turns Keras' async batch-end dispatch off; the doctor works either way."""
    results = []
    for extra in ([], [keras.callbacks.TerminateOnNaN()]):
        model = compiled(mlp(data), keras.optimizers.SGD(1e-4))
        doctor = TrainingDoctor(verbose=0)
        fit(model, data, [doctor, *extra], epochs=2, shuffle=False)
        results.append(doctor)
    async_doctor, sync_doctor = results
    assert [s for s, _ in async_doctor.step_losses] == [s for s, _ in sync_doctor.step_losses]
    np.testing.assert_allclose(
        [v for _, v in async_doctor.step_losses], [v for _, v in sync_doctor.step_losses], rtol=1e-5
    )
    assert [f.symptom for f in async_doctor.findings] == [f.symptom for f in sync_doctor.findings]
    assert "slow_convergence" in {f.symptom for f in sync_doctor.findings}


def test_doctor_json_holds_the_findings(data, tmp_path):
    model = dead_model(data)
    path = tmp_path / "doctor.json"
    doctor = TrainingDoctor(data.x_train[:64], data.y_train[:64], path=path, verbose=0)
    fit(model, data, [doctor], epochs=2)
    saved = json.loads(path.read_text())
    assert [Finding.from_dict(d) for d in saved["findings"]] == doctor.findings
    assert saved["initial_loss"] == pytest.approx(doctor.initial_loss)
    assert len(saved["step_losses"]) == len(doctor.step_losses)
    assert saved["thresholds"]["dead_fraction"] == 0.5
    assert saved["probes"] == doctor.probes >= 1


def test_budget_spaces_the_probes(data):
    counts = {}
    for budget in (1e-4, 1.0):
        model = compiled(mlp(data), keras.optimizers.Adam(1e-3))
        doctor = TrainingDoctor(data.x_train[:64], data.y_train[:64], budget=budget, verbose=0)
        fit(model, data, [doctor], epochs=2)
        counts[budget] = doctor.probes
    assert counts[1e-4] == 1  # the probe at step 0 only
    assert counts[1.0] > 5


def test_a_resumed_fit_continues_the_record(data, tmp_path):
    """An interrupted run resumed in a new process: a new doctor, the same doctor.json."""
    model = dead_model(data)
    x, y = data.x_train[:64], data.y_train[:64]
    path = tmp_path / "doctor.json"
    first = TrainingDoctor(x, y, path=path, verbose=0)
    fit(model, data, [first], epochs=2)
    second = TrainingDoctor(x, y, path=path, verbose=0)
    fit(model, data, [second], epochs=4, initial_epoch=2)
    # The initial loss is still the loss before training, not the loss at the restart.
    assert second.initial_loss == first.initial_loss
    assert len(second.history["loss"]) == 4
    assert second.history["loss"][:2] == first.history["loss"]
    dying = [f for f in second.findings if f.symptom == "dying_relu"]
    assert len(dying) == 1 and dying[0].step == 0 and dying[0].count >= 2
    steps = [s for s, _ in second.step_losses]
    assert steps == sorted(steps) and steps[0] == 0 and len(steps) == len(set(steps))


class Subclassed(keras.Model):
    """No symbolic inputs: layer outputs cannot be probed, gradients can."""

    def __init__(self):
        super().__init__()
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(32, activation="relu", bias_initializer="ones")
        self.logits = keras.layers.Dense(10)

    def call(self, x):
        return self.logits(self.hidden(self.flatten(x)))


def test_subclassed_model_gets_every_judgement_but_activations(data):
    model = compiled(Subclassed(), keras.optimizers.SGD(3e-5))
    doctor = TrainingDoctor(data.x_train[:64], data.y_train[:64], verbose=0)
    with pytest.warns(UserWarning, match="no activation probes"):
        fit(model, data, [doctor], epochs=2)
    assert doctor.probes >= 1
    assert "slow_convergence" in {f.symptom for f in doctor.findings}


def test_training_accuracy_is_scored_in_inference_mode_each_epoch(data):
    """With ``train_sample`` the doctor scores those examples as validation is (BatchNorm on
    its moving statistics) at each epoch end; fit's accuracy is a training-mode running mean."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input(data.x_train.shape[1:])
    hidden = keras.layers.Dense(32)(keras.layers.Flatten()(inputs))
    hidden = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(hidden))
    model = compiled(keras.Model(inputs, keras.layers.Dense(10)(hidden)), keras.optimizers.Adam())
    sample = (data.x_train[:300], data.y_train[:300])
    doctor = TrainingDoctor(train_sample=sample, verbose=0)
    fit(model, data, [doctor], epochs=2)
    scored = doctor.history["train_accuracy_inference"]
    assert len(scored) == 2
    expected = model.evaluate(*sample, verbose=0, return_dict=True)["accuracy"]
    assert scored[-1] == pytest.approx(expected, abs=1e-6)  # the last epoch's weights
    assert scored[-1] != doctor.history["accuracy"][-1]
    # a doctor that leaves the curves to the diagnosis (scripts/train.py) does not score
    quiet = TrainingDoctor(train_sample=sample, verbose=0)
    quiet.judge_curves = False
    fit(model, data, [quiet], epochs=1)
    assert "train_accuracy_inference" not in quiet.history


def test_normalization_layers_are_measured_but_not_judged(data):
    """A BatchNormalization layer's gamma starts at 1 and moves little by design: under a
    small SGD step it measures ~4e-7 of its norm per step (below the 1e-6 stagnation limit)
    while the convolution around it learns. Judging it would give a false "stagnant
    weights" and a false "learning rate too low" for that layer."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input(data.x_train.shape[1:])
    hidden = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(inputs)
    hidden = keras.layers.Activation("relu")(keras.layers.BatchNormalization(name="bn")(hidden))
    outputs = keras.layers.Dense(10, name="out")(keras.layers.Flatten()(hidden))
    model = compiled(keras.Model(inputs, outputs), keras.optimizers.SGD(5e-6))
    ratios = UpdateRatioMonitor(freq=5)
    doctor = TrainingDoctor(monitors=[ratios], verbose=0)
    with pytest.warns(MonitorWarning) as warned:
        fit(model, data, [ratios, doctor], epochs=2)
    gamma = [r[3] for r in ratios.history if r[2] == "bn/gamma" and r[0] > 0]
    assert gamma and np.median(gamma) < doctor.thresholds.stagnant_ratio  # measured, tiny
    assert {f["layer"] for f in ratios.findings} == {"conv", "out"}  # lr too low: genuine
    assert not any("'bn'" in str(w.message) for w in warned)
    assert "bn" not in {f.layer for f in doctor.findings}
    assert stats.kernels_by_layer(model) == {"conv": model.get_layer("conv").kernel,
                                             "out": model.get_layer("out").kernel}  # fmt: skip


def test_a_slow_run_with_large_steps_is_not_told_to_raise_the_learning_rate(data):
    """Labels shuffled: nothing to learn, so the loss stays near ln 10 while Adam's steps
    are large. The slow-convergence fix must not say to raise the learning rate (the
    update ratios the same run measured say the steps are not too small)."""
    keras.utils.set_random_seed(2)
    shuffled = np.random.default_rng(0).permutation(data.y_train)
    model = compiled(mlp(data), keras.optimizers.Adam(1e-3))
    ratios = UpdateRatioMonitor(freq=5)
    doctor = TrainingDoctor(monitors=[ratios], verbose=0)
    model.fit(
        data.x_train, shuffled, batch_size=32, epochs=2, callbacks=[ratios, doctor], verbose=0
    )
    (slow,) = [f for f in doctor.findings if f.symptom == "slow_convergence"]
    measured = slow.evidence["median_update_ratio"]
    assert measured >= 1e-3
    assert "raise the learning rate 3-10x" not in slow.fix
    assert slow.fix.endswith(large_updates_fix(measured))


def test_alone_the_doctor_probes_itself_without_monitors_of_its_own(data, monkeypatch):
    """``TrainingDoctor(x, y)`` alone measures on its probe batch through ProbeBatch and the
    stats functions: it creates no monitor and drives no other callback's hooks."""
    from kerasdiag.callbacks.base import StepMonitor

    created = []
    real_init = StepMonitor.__init__
    monkeypatch.setattr(
        StepMonitor,
        "__init__",
        lambda self, *a, **k: created.append(self) or real_init(self, *a, **k),
    )
    model = dead_model(data)
    doctor = TrainingDoctor(data.x_train[:64], data.y_train[:64], verbose=0)
    fit(model, data, [doctor], epochs=2)
    assert created == [] and doctor.probes >= 1
    dying = next(f for f in doctor.findings if f.symptom == "dying_relu")
    assert dying.step == 0 and dying.evidence["dead_fraction"] == 1.0
    assert len(doctor.history["learning_rate"]) == 2


def test_the_doctor_reads_the_learning_rate_monitors_record(data):
    """One record of the rate: given the run's LearningRateMonitor, the doctor's history and
    advice take its numbers, whatever the order of the callbacks."""
    model = compiled(mlp(data), keras.optimizers.SGD(0.5))
    monitor = LearningRateMonitor()
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: 1e-4 / (1 + epoch))
    doctor = TrainingDoctor(monitors=[monitor], verbose=0)
    fit(model, data, [doctor, scheduler, monitor], epochs=3)  # the doctor first
    expected = [1e-4, 0.5e-4, 1e-4 / 3]
    np.testing.assert_allclose([r[2] for r in monitor.history], expected, rtol=1e-6)
    np.testing.assert_allclose(doctor.history["learning_rate"], expected, rtol=1e-6)
    slow = next(f for f in doctor.findings if f.symptom == "slow_convergence")
    assert "it is 0.0001" in slow.fix  # the highest rate the run used, not the configured 0.5


def test_the_probe_budget_spaces_measurements_by_their_cost():
    now = [0.0]
    budget = ProbeBudget(0.1, clock=lambda: now[0])
    budget.restart(first_step=0)
    assert budget.due("probe", 0, share=0.5)  # the first of a kind: at once
    now[0] = 0.01
    budget.spend(0.01, "probe", step=0)  # it cost 10 ms
    now[0] = 0.01 + 10 * 0.01  # ten steps of 10 ms of training
    # due when steps * step time * budget * share pays for the last cost: after 20 steps
    assert not budget.due("probe", 10, share=0.5)
    now[0] = 0.01 + 21 * 0.01
    assert budget.due("probe", 21, share=0.5)
    assert budget.last("probe") == (0, 0.01) and budget.spent == 0.01
    with pytest.raises(ValueError, match="`budget` must be a number in \\(0, 1\\]"):
        ProbeBudget(0)
