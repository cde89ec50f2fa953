"""All monitors in one user ``model.fit`` on the real CIFAR sample: files and TensorBoard events
written and readable; the config factory; evaluation with the weights' moving average."""

from __future__ import annotations

import csv
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from kerasdiag.callbacks import (
    ActivationHistograms,
    CurvePlotter,
    FilterImages,
    GradientMonitor,
    LearningRateMonitor,
    MonitorWarning,
    RestoreRawWeights,
    UpdateRatioMonitor,
    evaluate_with_ema,
    monitor_callbacks,
)
from kerasdiag.callbacks.factory import FALLBACK_FREQ, MONITOR_DEFAULTS, probe_batch
from kerasdiag.config import load_config
from kerasdiag.core.errors import ConfigError
from kerasdiag.data import load_dataset

from conftest import CIFAR_SAMPLE

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
EPOCHS = 2


def small_convnet():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="dense"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    """A user's own fit on 600 real CIFAR images with every monitor, no kerasdiag pipeline."""
    overrides = ["recipe=cifar_softmax", f"data.path={CIFAR_SAMPLE}", "data.limit=600"]
    data = load_dataset(load_config(overrides).data)
    run = tmp_path_factory.mktemp("cifar_run")
    logs = run / "logs"
    xp, yp = data.x_train[:32], data.y_train[:32]
    callbacks = [
        UpdateRatioMonitor(freq=3, log_dir=logs, csv_path=run / "update_ratios.csv"),
        ActivationHistograms(xp, freq=4, log_dir=logs, csv_path=run / "activations.csv"),
        GradientMonitor(xp, yp, freq=4, log_dir=logs, csv_path=run / "gradient_norms.csv"),
        LearningRateMonitor(log_dir=logs, csv_path=run / "learning_rate.csv"),
        FilterImages(out_dir=run, log_dir=logs),
        CurvePlotter(run),
    ]
    model = small_convnet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MonitorWarning)
        model.fit(
            data.x_train,
            data.y_train,
            batch_size=64,
            epochs=EPOCHS,
            validation_data=(data.x_val, data.y_val),
            callbacks=callbacks,
            verbose=0,
        )
    return run, model, callbacks


def events(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: acc.Tensors(tag) for tag in acc.Tags()["tensors"]}


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_run_files_are_written_and_parse(cifar_run):
    run, model, callbacks = cifar_run
    steps = 2 * 9  # 540 training images in batches of 64, two epochs
    ratios = read_csv(run / "update_ratios.csv")
    assert {int(r["step"]) for r in ratios} == set(range(0, steps, 3))
    assert {r["variable"] for r in ratios} == {v.path for v in model.trainable_variables}
    activations = read_csv(run / "activations.csv")
    assert {int(r["step"]) for r in activations} == {0, 4, 8, 12, 16}
    assert {r["layer"] for r in activations} == {"conv1", "conv2", "dense", "logits"}
    assert all(0.0 <= float(r["dead_fraction"]) <= 1.0 for r in activations if r["kind"] == "relu")
    norms = read_csv(run / "gradient_norms.csv")
    assert {r["name"] for r in norms} == {
        "conv1", "conv2", "dense", "logits", "global_norm", "global_norm_clipped",
    }  # fmt: skip
    assert all(float(r["norm"]) > 0 for r in norms)
    lr = read_csv(run / "learning_rate.csv")
    assert [(int(r["epoch"]), float(r["learning_rate"])) for r in lr] == [
        (1, pytest.approx(1e-3)),
        (2, pytest.approx(1e-3)),
    ]
    for png in (
        "loss.png",
        "accuracy.png",
        "filters_init.png",
        "filters_epoch001.png",
        "filters_epoch002.png",
    ):
        image = tf.io.decode_png((run / png).read_bytes())
        assert image.shape[0] > 20, png
    # The filters changed with training: the last image differs from the first.
    first = tf.io.decode_png((run / "filters_init.png").read_bytes()).numpy()
    last = tf.io.decode_png((run / "filters_epoch002.png").read_bytes()).numpy()
    assert first.shape == last.shape and not np.array_equal(first, last)


def test_tensorboard_events_parse_with_the_logged_values(cifar_run):
    run, model, callbacks = cifar_run
    update, activations, gradients, lr, _, _ = callbacks
    logs = run / "logs"
    assert sorted(p.name for p in logs.iterdir()) == [
        "activations", "filters", "gradients", "learning_rate", "update_ratio",
    ]  # fmt: skip

    kernel = model.get_layer("conv1").kernel.path
    tagged = events(logs / "update_ratio")[f"update_ratio/{kernel}"]
    logged = [r[3] for r in update.history if r[2] == kernel]
    assert [e.step for e in tagged] == list(range(0, 18, 3))
    np.testing.assert_allclose([tf.make_ndarray(e.tensor_proto) for e in tagged], logged, rtol=1e-6)

    act = events(logs / "activations")
    histogram = tf.make_ndarray(act["activation/conv1"][0].tensor_proto)
    assert histogram.shape == (30, 3)
    assert histogram[:, 2].sum() == pytest.approx(32 * 30 * 30 * 8)  # every value counted once
    dead = [tf.make_ndarray(e.tensor_proto) for e in act["dead_fraction/dense"]]
    np.testing.assert_allclose(dead, [h[2]["dense"].dead_fraction for h in activations.history])

    grad = events(logs / "gradients")
    np.testing.assert_allclose(
        [tf.make_ndarray(e.tensor_proto) for e in grad["global_norm"]],
        [h["global_norm"] for h in gradients.history],
        rtol=1e-6,
    )
    assert f"gradient/{kernel}" in grad and "gradient_norm/conv2" in grad

    rates = events(logs / "learning_rate")["learning_rate"]
    assert [e.step for e in rates] == [1, 2]  # epochs from 1

    images = events(logs / "filters")["filters/conv1"]
    assert [e.step for e in images] == [0, 1, 2]  # 0: before training
    width, height, png = tf.make_ndarray(images[-1].tensor_proto)
    assert png == (run / "filters_epoch002.png").read_bytes()
    assert tf.io.decode_png(png).shape[:2] == (int(height), int(width))


# --- the factory the pipeline calls -------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_dataset(load_config(["recipe=digits_softmax"]).data)


def test_factory_builds_the_enabled_monitors_and_they_write_into_the_run(digits, tmp_path):
    from kerasdiag.modeling.factory import build_model

    cfg = OmegaConf.create({**MONITOR_DEFAULTS, "gradients": False, "update_ratio_freq": 5})
    monitors = monitor_callbacks(cfg, tmp_path, digits)
    callbacks = monitors.all
    names = [type(c).__name__ for c in callbacks]
    assert names == [
        "LearningRateMonitor", "UpdateRatioMonitor", "ActivationHistograms",
        "FilterImages", "CurvePlotter", "RestoreRawWeights",
    ]  # fmt: skip
    assert monitors.gradients is None
    assert monitors.measured == [monitors.update_ratio, monitors.activations]
    assert monitors.update_ratio.freq == 5
    assert monitors.activations.freq == FALLBACK_FREQ["activations_freq"]
    assert monitors.activations.histogram_every == 1  # without the run's length
    assert monitors.activations.x.shape == (MONITOR_DEFAULTS["probe_size"], 8, 8, 1)
    planned = monitor_callbacks(cfg, tmp_path, digits, steps_per_epoch=10, epochs=3)
    assert planned.activations.histogram_every == 2 and planned.activations.freq == 1
    # Thin batch hooks: no monitor stops Keras from running batch-end callbacks on its
    # worker thread (they either keep the default hook or are safe there).
    for callback in callbacks:
        default = type(callback).on_train_batch_end is keras.callbacks.Callback.on_train_batch_end
        assert default or callback.async_safe, type(callback).__name__

    model = build_model(load_config(["recipe=digits_softmax"]), digits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MonitorWarning)
        model.fit(
            digits.x_train, digits.y_train, batch_size=32, epochs=1, callbacks=callbacks, verbose=0
        )
    written = {p.name for p in tmp_path.iterdir()}
    assert {"update_ratios.csv", "activations.csv", "learning_rate.csv", "loss.png"} <= written
    assert {"filters_init.png", "filters_epoch001.png", "tensorboard"} <= written
    assert "gradient_norms.csv" not in written
    # The MLP has no convolution: its first Dense layer's weights are drawn as 8x8 images.
    assert callbacks[3].paths


def test_factory_reports_bad_values_with_their_key(digits, tmp_path):
    with pytest.raises(ConfigError, match="monitors.gradients_freq"):
        monitor_callbacks(OmegaConf.create({"gradients_freq": 0}), tmp_path, digits)
    with pytest.raises(ConfigError, match="monitors.probe_size"):
        monitor_callbacks(OmegaConf.create({"probe_size": -3}), tmp_path, digits)
    off = {k: False for k, v in MONITOR_DEFAULTS.items() if isinstance(v, bool)}
    only = monitor_callbacks(OmegaConf.create(off), tmp_path, digits)
    assert [type(c).__name__ for c in only.all] == ["RestoreRawWeights"]


def test_probe_batch_is_fixed_and_spread_over_the_training_set(digits):
    x, y = probe_batch(digits, 64)
    x2, _ = probe_batch(digits, 64)
    assert len(x) == 64 and np.array_equal(x, x2)
    assert len(np.unique(y)) == 10
    assert len(probe_batch(digits, 10**6)[0]) == len(digits.x_train)


# --- EMA evaluation -------------------------------------------------------------------


def ema_model(digits):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    optimizer = keras.optimizers.Adam(1e-2, use_ema=True, ema_momentum=0.9)
    model.compile(optimizer, LOSS, metrics=["accuracy"])
    return model


def test_evaluate_with_ema_scores_the_average_and_restores_the_raw_weights(digits):
    model = ema_model(digits)

    class LastEpochWeights(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.weights = [v.numpy() for v in self.model.trainable_variables]

    last = LastEpochWeights()
    model.fit(
        digits.x_train, digits.y_train, batch_size=64, epochs=2, verbose=0,
        callbacks=[last, RestoreRawWeights()],
    )  # fmt: skip
    raw = [v.numpy() for v in model.trainable_variables]
    for ours, theirs in zip(raw, last.weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)  # fit's EMA overwrite was undone

    scores = evaluate_with_ema(model, digits.x_val, digits.y_val, batch_size=128)
    assert set(scores) == {"raw", "ema"} and set(scores["raw"]) == {"loss", "accuracy"}
    assert scores["ema"]["loss"] != scores["raw"]["loss"]
    for ours, before in zip(model.trainable_variables, raw, strict=True):
        np.testing.assert_array_equal(ours.numpy(), before)  # bit for bit

    # The EMA score is the score of the optimizer's averages, evaluated independently.
    averages = [a.numpy() for a in model.optimizer._model_variables_moving_average]
    clone = keras.models.clone_model(model)
    clone.compile(loss=LOSS, metrics=["accuracy"])
    clone.set_weights(averages)
    independent = clone.evaluate(
        digits.x_val, digits.y_val, batch_size=128, verbose=0, return_dict=True
    )
    assert scores["ema"]["loss"] == pytest.approx(independent["loss"], rel=1e-5)
    assert scores["raw"]["loss"] == pytest.approx(
        model.evaluate(digits.x_val, digits.y_val, verbose=0)[0], rel=1e-5
    )


def test_evaluate_with_ema_warns_when_fit_left_the_average_in_the_model(digits):
    model = ema_model(digits)
    model.fit(digits.x_train[:256], digits.y_train[:256], batch_size=64, epochs=1, verbose=0)
    with pytest.warns(MonitorWarning, match="RestoreRawWeights"):
        scores = evaluate_with_ema(model, digits.x_val, digits.y_val)
    assert scores["raw"] == scores["ema"]


def test_evaluate_with_ema_needs_an_ema_optimizer(digits):
    model = small_convnet()
    with pytest.raises(ValueError, match="use_ema"):
        evaluate_with_ema(model, np.zeros((2, 32, 32, 3)), np.zeros(2))


@pytest.mark.parametrize(
    ("monitor", "files", "kept"),
    [
        ("val_accuracy", ["best-epoch001-val_accuracy0.8380", "best-epoch002-val_accuracy0.9000"],
         "best-epoch002-val_accuracy0.9000"),
        ("val_loss", ["best-epoch003-val_loss0.4000", "best-epoch004-val_loss0.3000"],
         "best-epoch004-val_loss0.3000"),
    ],
)  # fmt: skip
def test_a_resumed_best_checkpoint_keeps_one_best_file(tmp_path, monitor, files, kept):
    """A process killed between writing a new best and removing the previous one leaves
    two best files; the resumed run keeps only the best, as an uninterrupted run would."""
    from kerasdiag.callbacks.best_checkpoint import BestCheckpoint

    for name in files:
        (tmp_path / f"{name}.keras").write_bytes(b"model")
    (tmp_path / "epoch001-val_accuracy0.8380.keras").write_bytes(b"every-epoch copy")
    checkpoint = BestCheckpoint(tmp_path, monitor=monitor)
    checkpoint.on_train_begin()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{kept}.keras", "epoch001-val_accuracy0.8380.keras"]
    )
    assert checkpoint.best_path == tmp_path / f"{kept}.keras"
    assert checkpoint.best_epoch == int(kept[10:13])
