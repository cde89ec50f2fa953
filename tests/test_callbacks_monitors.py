"""Each monitor inside a plain user ``model.fit`` on real data (sklearn digits), planted faults
caught, healthy models left alone."""

from __future__ import annotations

import csv
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdiag.callbacks import (
    ActivationHistograms,
    CurvePlotter,
    GradientMonitor,
    LearningRateMonitor,
    MetricsCSV,
    MonitorWarning,
    UpdateRatioMonitor,
)
from kerasdiag.callbacks.curve_plotter import step_losses
from kerasdiag.config import load_config
from kerasdiag.data import load_dataset

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def digits():
    """Real 8x8 digits through kerasdiag's loader, flattened: (x, y) of the training split."""
    data = load_dataset(load_config(["recipe=digits_softmax"]).data)
    return data.x_train.reshape(len(data.x_train), -1), data.y_train


def mlp(hidden, activation="relu", optimizer=None, seed=0, **dense_kwargs):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,))]
    layers += [
        keras.layers.Dense(n, activation=activation, name=f"hidden{i}", **dense_kwargs)
        for i, n in enumerate(hidden)
    ]
    model = keras.Sequential([*layers, keras.layers.Dense(10, name="logits")])
    model.compile(optimizer or keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    return model


def fit(model, x, y, callbacks, epochs=1, batch_size=64, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MonitorWarning)
        history = model.fit(
            x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=callbacks, **kwargs
        )
    return history, [str(w.message) for w in caught if issubclass(w.category, MonitorWarning)]


def kernel_ratios(monitor):
    return np.array([r[3] for r in monitor.history if r[2].endswith("kernel")])


# --- update ratios -------------------------------------------------------------------


@pytest.mark.parametrize(
    "lr, verdict",
    [(1.0, "too_high"), (1e-7, "too_low"), (1e-3, None)],
    ids=["lr-too-high", "lr-too-low", "lr-healthy"],
)
def test_update_ratio_tells_the_learning_rate(digits, tmp_path, lr, verdict):
    x, y = digits
    monitor = UpdateRatioMonitor(freq=4, csv_path=tmp_path / "update_ratios.csv")
    _, messages = fit(mlp([32], optimizer=keras.optimizers.Adam(lr)), x, y, [monitor])
    ratios = kernel_ratios(monitor)
    assert len(ratios) >= 2 * 4  # two kernels, every 4th of ~20 steps
    if verdict == "too_high":
        assert np.all(ratios > 1e-2)
        assert any("hidden0" in m and "too high" in m for m in messages)
    elif verdict == "too_low":
        assert np.all(ratios < 1e-4)
        assert any("hidden0" in m and "too low" in m for m in messages)
    else:
        assert np.all((ratios > 1e-4) & (ratios < 1e-2))
        assert messages == []
    assert {f["verdict"] for f in monitor.findings} == ({verdict} if verdict else set())
    with open(tmp_path / "update_ratios.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(monitor.history)
    assert rows[0]["step"] == "0" and rows[0]["variable"] == monitor.history[0][2]


def test_update_ratio_equals_lr_times_gradient_over_weight_for_sgd(digits):
    # Plain SGD: W_after - W_before = -lr * dW, so the ratio is lr * ||dW|| / ||W||,
    # with dW the gradient on the first batch (no shuffling).
    x, y = digits
    lr = 0.05
    model = mlp([16], optimizer=keras.optimizers.SGD(lr))
    xb, yb = x[:64], y[:64]
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=xb, y=yb, y_pred=model(xb, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    expected = {
        v.path: lr * float(tf.norm(g)) / float(tf.norm(v))
        for v, g in zip(model.trainable_variables, grads, strict=True)
        if v.path.endswith("kernel")
    }
    monitor = UpdateRatioMonitor(freq=1)
    fit(model, xb, yb, [monitor], shuffle=False)
    measured = {r[2]: r[3] for r in monitor.history if r[0] == 0 and r[2] in expected}
    assert measured.keys() == expected.keys()
    for name, value in expected.items():
        assert measured[name] == pytest.approx(value, rel=1e-4)


# --- gradients ---------------------------------------------------------------------


def test_gradient_probe_matches_an_independent_gradient(digits):
    x, y = digits
    model = mlp([32], optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=0.5))
    xp, yp = x[:64], y[:64]
    with tf.GradientTape() as tape:
        loss = LOSS(yp, model(xp, training=False))
    grads = tape.gradient(loss, model.trainable_variables)
    first_layer = float(tf.linalg.global_norm(grads[:2]))
    monitor = GradientMonitor(xp, yp, freq=1000)
    _, messages = fit(model, x[:256], y[:256], [monitor])
    probe = monitor.history[0]
    assert probe["step"] == 0 and len(monitor.history) == 1
    assert probe["global_norm"] == pytest.approx(float(tf.linalg.global_norm(grads)), rel=1e-4)
    assert probe["layer_norms"]["hidden0"] == pytest.approx(first_layer, rel=1e-4)
    # The optimizer clips to a global norm of 0.5: that is what the update would use.
    assert probe["global_norm"] > 0.5
    assert probe["global_norm_clipped"] == pytest.approx(0.5, rel=1e-5)
    assert probe["flags"] == {} and messages == []


def test_deep_sigmoid_network_shows_vanishing_gradients(digits):
    x, y = digits
    model = mlp([32] * 8, activation="sigmoid")
    monitor = GradientMonitor(x[:64], y[:64], freq=10)
    _, messages = fit(model, x[:640], y[:640], [monitor])
    norms = monitor.history[0]["layer_norms"]
    assert list(norms)[0] == "hidden0" and list(norms)[-1] == "logits"
    assert norms["hidden0"] / norms["logits"] < 1e-3
    assert all("vanishing" in h["flags"] for h in monitor.history)
    assert sum("vanishing gradients" in m for m in messages) == 1  # warned once


def test_huge_init_relu_network_shows_exploding_gradients(digits):
    x, y = digits
    init = keras.initializers.RandomNormal(stddev=3.0)
    model = mlp([64] * 4, kernel_initializer=init, optimizer=keras.optimizers.SGD(1e-9))
    monitor = GradientMonitor(x[:64], y[:64], freq=1000)
    _, messages = fit(model, x[:128], y[:128], [monitor])
    assert monitor.history[0]["global_norm"] > 1e3
    assert "exploding" in monitor.history[0]["flags"]
    assert any("exploding gradients" in m and "learning rate" in m for m in messages)


# --- activations -----------------------------------------------------------------------


def activation_probe(digits, tmp_path=None, **model_kwargs):
    x, y = digits
    model = mlp([32, 32], **model_kwargs)
    csv_path = None if tmp_path is None else tmp_path / "activations.csv"
    monitor = ActivationHistograms(x[:64], freq=1000, csv_path=csv_path)
    fit(model, x[:128], y[:128], [monitor])
    return model, monitor.history[0][2]


def test_large_negative_bias_kills_relu_units(digits, tmp_path):
    model, probe = activation_probe(
        digits, tmp_path, bias_initializer=keras.initializers.Constant(-10.0)
    )
    assert probe["hidden0"].kind == "relu"
    assert probe["hidden0"].dead_fraction > 0.9
    _, healthy = activation_probe(digits)
    assert healthy["hidden0"].dead_fraction < 0.1
    assert healthy["logits"].dead_fraction is None
    with open(tmp_path / "activations.csv") as f:
        rows = {r["layer"]: r for r in csv.DictReader(f)}
    assert float(rows["hidden0"]["dead_fraction"]) == pytest.approx(probe["hidden0"].dead_fraction)


def test_dead_fraction_matches_the_layer_output_computed_by_hand(digits):
    x, _ = digits
    model, probe = activation_probe(digits, bias_initializer=keras.initializers.Constant(-1.5))
    # The probe ran before the first step: recompute with the initial weights (Adam has
    # moved them since, so rebuild the same seeded model).
    fresh = mlp([32, 32], bias_initializer=keras.initializers.Constant(-1.5))
    kernel, bias = (w.numpy() for w in fresh.get_layer("hidden0").weights)
    hidden = np.maximum(x[:64] @ kernel + bias, 0.0)
    assert 0.0 < probe["hidden0"].zero_fraction < 1.0
    assert probe["hidden0"].zero_fraction == pytest.approx(np.mean(hidden == 0), abs=1e-6)
    assert probe["hidden0"].dead_fraction == pytest.approx(np.mean(np.all(hidden == 0, axis=0)))


def test_huge_init_saturates_tanh_units(digits):
    init = keras.initializers.RandomNormal(stddev=5.0)
    _, probe = activation_probe(digits, activation="tanh", kernel_initializer=init)
    assert probe["hidden1"].kind == "tanh"
    assert probe["hidden1"].saturated_fraction > 0.8
    _, healthy = activation_probe(digits, activation="tanh")  # Glorot init
    assert healthy["hidden1"].saturated_fraction < 0.2


def test_a_backbone_reused_from_another_model_is_probed_in_this_one(digits):
    """A sub-model (and a layer) first called in a pretraining model: their outputs in the
    model being fit, not in the model they were first called in."""
    x, y = digits
    keras.utils.set_random_seed(0)
    backbone = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(32, activation="relu")], name="backbone"
    )
    shared = keras.layers.Dense(16, activation="relu", name="shared")
    first = keras.Input((64,))
    keras.Model(first, keras.layers.Dense(3)(shared(backbone(first))))  # pretraining
    inputs = keras.Input((64,))
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(shared(backbone(inputs))))
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    kernel, bias = (w.numpy() for w in backbone.weights)  # as the first probe sees them
    monitor = ActivationHistograms(x[:64], freq=5)
    fit(model, x[:256], y[:256], [monitor])
    layer_stats = monitor.history[0][2]
    assert list(layer_stats) == ["backbone", "shared", "logits"]
    # the backbone's output on the probe batch before the first step, computed by hand
    hidden = np.maximum(x[:64] @ kernel + bias, 0.0)
    assert layer_stats["backbone"].mean == pytest.approx(hidden.mean(), rel=1e-5)
    assert layer_stats["backbone"].zero_fraction == pytest.approx(np.mean(hidden == 0))


def test_activation_probe_needs_a_model_with_inputs():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Sub()
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="Sequential or functional"):
        model.fit(
            np.zeros((4, 3)),
            np.zeros((4, 2)),
            verbose=0,
            callbacks=[ActivationHistograms(np.zeros((2, 3)))],
        )


def test_shared_probe_batch_serves_both_monitors_from_one_pass(digits, monkeypatch):
    """Activation and gradient monitors on one ProbeBatch, due at the same steps: one probe
    pass per step (counted at kerasdiag's own entry point), with the same numbers as the
    monitors computing separately."""
    from kerasdiag.callbacks import ProbeBatch, stats

    x, y = digits
    passes = []
    original = stats.probe_model

    def counted(model, x, y=None, **kwargs):
        passes.append((y is not None, kwargs.get("extractor") is not None))
        return original(model, x, y, **kwargs)

    monkeypatch.setattr(stats, "probe_model", counted)
    probe = ProbeBatch(x[:64], y[:64])
    shared = [ActivationHistograms(probe, freq=5), GradientMonitor(probe, freq=5)]
    fit(mlp([32, 32], activation="tanh"), x[:768], y[:768], shared)  # 12 steps: 0, 5, 10
    assert passes == [(True, True)] * 3

    passes.clear()
    alone = [ActivationHistograms(x[:64], freq=5), GradientMonitor(x[:64], y[:64], freq=5)]
    fit(mlp([32, 32], activation="tanh"), x[:768], y[:768], alone)
    assert sorted(passes) == [(False, True)] * 3 + [(True, False)] * 3
    for (s1, e1, a), (s2, e2, b) in zip(shared[0].history, alone[0].history, strict=True):
        assert (s1, e1) == (s2, e2)
        for layer in a:
            assert a[layer].mean == pytest.approx(b[layer].mean, rel=1e-5, abs=1e-7)
            assert a[layer].saturated_fraction == b[layer].saturated_fraction
    for a, b in zip(shared[1].history, alone[1].history, strict=True):
        assert a["step"] == b["step"]
        assert a["global_norm"] == pytest.approx(b["global_norm"], rel=1e-5)
        assert a["layer_norms"] == pytest.approx(b["layer_norms"], rel=1e-5)


# --- learning rate ----------------------------------------------------------------------------


def test_learning_rate_monitor_follows_a_per_step_schedule(digits, tmp_path):
    x, y = digits
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    model = mlp([16], optimizer=keras.optimizers.SGD(schedule))
    monitor = LearningRateMonitor(csv_path=tmp_path / "lr.csv")
    history, _ = fit(model, x[:256], y[:256], [monitor], epochs=3)  # 4 steps per epoch
    expected = [0.1 * 0.5 ** (4 * e / 10) for e in range(3)]
    np.testing.assert_allclose([r[2] for r in monitor.history], expected, rtol=1e-6)
    assert [r[1] for r in monitor.history] == [0, 4, 8]
    np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-6)
    assert (tmp_path / "lr.csv").read_text().splitlines()[0] == "epoch,step,learning_rate"


def test_learning_rate_monitor_sees_scheduler_callbacks_in_any_order(digits):
    x, y = digits
    monitor = LearningRateMonitor()
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: 0.1 / (1 + epoch))
    model = mlp([16], optimizer=keras.optimizers.SGD(0.5))
    fit(model, x[:128], y[:128], [monitor, scheduler], epochs=3)  # monitor first
    np.testing.assert_allclose([r[2] for r in monitor.history], [0.1, 0.05, 0.1 / 3], rtol=1e-6)


def test_metrics_csv_learning_rate_is_the_learning_rate_monitors_record(digits, tmp_path):
    x, y = digits
    monitor = LearningRateMonitor()
    shared = MetricsCSV(tmp_path / "shared.csv", learning_rate=monitor)
    alone = MetricsCSV(tmp_path / "alone.csv")  # reads the rate the same way itself
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: 0.1 / (1 + epoch))
    model = mlp([16], optimizer=keras.optimizers.SGD(0.5))
    # metrics.csv before the scheduler: read at epoch begin, its rate would lag one epoch
    history, _ = fit(model, x[:128], y[:128], [shared, alone, monitor, scheduler], epochs=3)
    expected = [0.1, 0.05, 0.1 / 3]
    np.testing.assert_allclose([r[2] for r in monitor.history], expected, rtol=1e-6)
    np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-6)
    for metrics in (shared, alone):
        rates = [metrics.rows[e]["learning_rate"] for e in (1, 2, 3)]
        np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert shared.learning_rate is monitor and alone.learning_rate is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.csv", "shared.csv"]
    header = (tmp_path / "shared.csv").read_text().splitlines()[0].split(",")
    # one name, Keras' own, once
    assert header[:6] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"]
    assert "lr" not in header and header.count("learning_rate") == 1


def test_the_learning_rate_is_read_once_per_step_whoever_asks(digits, monkeypatch):
    """LearningRateMonitor reads the rate before each epoch's first step and, when a reader
    asks within a step (the doctor's advice, a NaN stop's record), once for that step: a
    per-step schedule's value at that step, however many readers ask."""
    from kerasdiag.callbacks import learning_rate_monitor

    reads = []
    real = learning_rate_monitor.current_lr
    monkeypatch.setattr(
        learning_rate_monitor, "current_lr", lambda *args: reads.append(1) or real(*args)
    )
    x, y = digits
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    monitor = LearningRateMonitor()
    seen = []

    class Reader(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                seen.extend([monitor.current(), monitor.current()])  # two readers, one step

    model = mlp([16], optimizer=keras.optimizers.SGD(schedule))
    fit(model, x[:256], y[:256], [monitor, Reader()], epochs=2)  # 4 steps per epoch
    # epoch starts at steps 0 and 4, plus one read at step 2 and one at step 6
    assert len(reads) == 4
    assert seen == pytest.approx([0.1 * 0.5**2] * 2 + [0.1 * 0.5**6] * 2)


def test_a_nan_stop_reports_the_rate_of_the_broken_step_from_the_monitor(digits):
    from kerasdiag.callbacks.nan_stop import NaNStop, NonFiniteLossError

    x, y = digits
    x = x[:256].copy()
    x[2 * 64] = np.nan  # the first example of the third batch (step 2)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    monitor = LearningRateMonitor()
    # tanh passes the NaN on to the loss (ReLU would turn it into 0)
    model = mlp([16], activation="tanh", optimizer=keras.optimizers.SGD(schedule))
    with pytest.raises(NonFiniteLossError) as raised:
        fit(model, x, y[:256], [NaNStop(learning_rate=monitor), monitor], shuffle=False)
    record = raised.value.record
    assert record["batch"] == 3 and record["global_step"] == 3
    assert record["learning_rate"] == pytest.approx(0.1 * 0.5**2)  # what step 2 used


# --- curves ----------------------------------------------------------------------


def test_curve_plotter_recovers_per_step_losses_and_draws_pngs(digits, tmp_path):
    x, y = digits
    x, y = x[:288], y[:288]  # 4 full batches of 64 and one of 32
    model = mlp([16], optimizer=keras.optimizers.SGD(0.0))  # weights fixed: losses known
    batch_losses = [
        float(model.evaluate(x[i : i + 64], y[i : i + 64], verbose=0)[0]) for i in range(0, 288, 64)
    ]
    plotter = CurvePlotter(tmp_path)
    fit(model, x, y, [plotter], epochs=2, shuffle=False, validation_data=(x[:64], y[:64]))
    recovered = [loss for _, loss in step_losses(plotter._steps[0])]
    np.testing.assert_allclose(recovered[:4], batch_losses[:4], rtol=1e-4)
    xs, _ = plotter._step_points()
    assert (
        min(xs) > 0 and max(xs) < 2
    )  # fractional epochs; each epoch's smaller last batch left out
    assert set(plotter.paths) == {"loss", "accuracy"}
    assert plotter.epochs["val_accuracy"] and len(plotter.epochs["loss"]) == 2
    for name in ("loss", "accuracy"):
        image = tf.io.decode_png((tmp_path / f"{name}.png").read_bytes())
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert len(np.unique(np.asarray(image))) > 10  # something was drawn


def test_curve_plotter_keeps_its_drawing_time_within_budget(digits, tmp_path):
    x, y = digits
    plotter = CurvePlotter(tmp_path, max_overhead=1e-6)  # any drawing exceeds this budget
    history, _ = fit(mlp([16]), x[:256], y[:256], [plotter], epochs=4)
    assert plotter.drawn == [1, 4]  # the first epoch (nothing spent yet) and the last
    stopper = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: setattr(stopper.model, "stop_training", epoch == 1)
    )
    every = CurvePlotter(tmp_path, max_overhead=1.0)
    fit(mlp([16]), x[:256], y[:256], [stopper, every], epochs=5)
    assert every.drawn == [1, 2]  # early stop after epoch 2: the final state is drawn


def test_curve_plotter_marks_the_kept_epoch_where_it_moves(digits, tmp_path):
    x, y = digits
    kept = {"epoch": None}

    def keep(epoch, logs):
        kept["epoch"] = 1 if epoch < 2 else 3  # the kept epoch moves from 1 to 3

    plotter = CurvePlotter(tmp_path, max_overhead=1.0, kept_epoch=lambda: kept["epoch"])
    marker = keras.callbacks.LambdaCallback(on_epoch_end=keep)
    fit(mlp([16]), x[:256], y[:256], [marker, plotter], epochs=4)
    line = plotter._figures["loss"].lines["mark"]
    assert list(line.get_xdata()) == [3, 3] and line.get_label() == "kept: epoch 3"
    with pytest.raises(ValueError, match="kept_epoch"):
        CurvePlotter(tmp_path, kept_epoch=3)
