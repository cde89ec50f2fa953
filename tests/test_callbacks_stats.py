"""The numbers behind the monitors, checked against independent computations."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdiag.callbacks import (
    ActivationHistograms,
    CurvePlotter,
    FilterImages,
    GradientMonitor,
    UpdateRatioMonitor,
    stats,
)
from kerasdiag.callbacks.base import CsvLog, FileWrites
from kerasdiag.callbacks.curve_plotter import step_losses
from kerasdiag.callbacks.filter_images import filter_grid, first_layer_filters
from kerasdiag.callbacks.stats import histogram_buckets
from kerasdiag.diagnosis import rules as doctor_rules


def test_update_ratios_match_hand_computation():
    before = [np.array([[3.0, 4.0]]), np.zeros(2), np.array([1.0, 0.0])]
    after = [np.array([[3.0, 4.5]]), np.array([0.1, 0.0]), np.array([1.0, 0.0])]
    ratios = stats.update_ratios(before, after)
    np.testing.assert_allclose(ratios[0], 0.5 / 5.0, rtol=1e-6)
    assert np.isnan(ratios[1])  # a zero bias has no scale to compare with
    assert ratios[2] == 0.0
    assert stats.update_ratios([], []).shape == (0,)  # a frozen model has nothing to measure


def test_update_ratios_of_a_keras_variable_against_its_snapshot():
    """The monitors' case: a snapshot tensor before the step, the live Keras variable after
    it (read without a copy), and a float16 variable under mixed precision."""
    v = keras.Variable(np.array([[3.0, 4.0]], dtype="float32"))
    before = stats.snapshot([v])
    v.assign([[3.0, 4.5]])
    np.testing.assert_allclose(stats.update_ratios(before, [v]), [0.1], rtol=1e-6)
    half = keras.Variable(np.array([3.0, 4.0]), dtype="float16")
    assert stats.host_array(half).dtype == np.float32
    np.testing.assert_array_equal(stats.host_array(half), [3.0, 4.0])
    np.testing.assert_array_equal(stats.host_array(tf.constant([1.5])), [1.5])


def test_snapshot_keeps_the_old_value_after_the_variable_changes():
    v = keras.Variable(np.ones(3, dtype="float32"))
    snap = stats.snapshot([v])
    v.assign([2.0, 2.0, 2.0])
    np.testing.assert_array_equal(snap[0].numpy(), np.ones(3))


@pytest.mark.parametrize(
    "ratio, verdict",
    [
        (1e-3, None),
        (5e-5, "too_low"),
        (0.5, "too_high"),
        (float("nan"), None),
        (float("inf"), "too_high"),
    ],
)
def test_update_ratio_verdict_bands(ratio, verdict):
    assert doctor_rules.update_ratio_verdict(ratio) == verdict


def test_activation_stats_on_known_values():
    # 2 examples x 3 units: unit 0 always 0 (dead), unit 1 sometimes 0.
    relu = np.array([[0.0, 0.0, 2.0], [0.0, 1.0, 4.0]])
    s = stats.activation_stats(relu, "relu")
    assert s.dead_fraction == pytest.approx(1 / 3)
    assert s.zero_fraction == pytest.approx(3 / 6)
    assert s.mean == pytest.approx(7 / 6)
    assert s.saturated_fraction is None
    tanh = np.array([[0.995, -0.999, 0.2, 0.0]])
    assert stats.activation_stats(tanh, "tanh").saturated_fraction == pytest.approx(0.5)
    sigmoid = np.array([[0.005, 0.5, 0.995, 0.98]])
    assert stats.activation_stats(sigmoid, "sigmoid").saturated_fraction == pytest.approx(0.5)
    # Conv output (N, H, W, C): a unit is a channel, dead only if 0 at every position.
    conv = np.zeros((2, 4, 4, 2))
    conv[1, 3, 3, 1] = 0.5
    assert stats.activation_stats(conv, "relu").dead_fraction == pytest.approx(0.5)


def test_activation_kind_reads_fused_and_separate_activations():
    assert stats.activation_kind(keras.layers.Dense(2, activation="tanh")) == "tanh"
    assert stats.activation_kind(keras.layers.Activation("sigmoid")) == "sigmoid"
    assert stats.activation_kind(keras.layers.ReLU()) == "relu"
    assert stats.activation_kind(keras.layers.ReLU(negative_slope=0.1)) is None
    assert stats.activation_kind(keras.layers.Dense(2)) is None
    assert stats.activation_kind(keras.layers.Flatten()) is None


def test_histogram_buckets_match_numpy_and_scale_subsamples():
    rng = np.random.default_rng(0)
    small = rng.normal(size=1000)
    buckets = np.asarray(histogram_buckets(small))
    counts, edges = np.histogram(small, bins=30)
    np.testing.assert_array_equal(buckets[:, 2], counts)
    np.testing.assert_allclose(buckets[:, 0], edges[:-1])
    big = rng.normal(size=300_000)
    assert np.asarray(histogram_buckets(big))[:, 2].sum() == pytest.approx(300_000, rel=1e-9)
    constant = np.asarray(histogram_buckets(np.full(10, 2.0)))
    assert constant[-1, 2] == 10 and np.all(constant[:, :2] == 2.0)
    # NaN cannot be binned: only the finite values are counted.
    finite = np.asarray(histogram_buckets(np.array([np.nan, 1.0, 2.0])))
    assert finite[:, 2].sum() == pytest.approx(2.0)
    assert np.all(np.asarray(histogram_buckets(np.array([np.nan])))[:, 2] == 0)


def test_step_losses_undo_the_running_mean():
    losses = [2.0, 1.0, 3.0, 0.5]
    running = [(i + 1, float(np.mean(losses[: i + 1]))) for i in range(4)]
    recovered = step_losses(running[::-1])  # order of arrival does not matter
    np.testing.assert_allclose([v for _, v in recovered], losses)
    # steps_per_execution=2: each record covers two steps.
    grouped = step_losses([(2, 1.5), (4, 1.625)])
    np.testing.assert_allclose([v for _, v in grouped], [1.5, 1.75])


def test_filter_grid_layout_and_scaling():
    filters = np.zeros((5, 2, 2, 3))
    filters[0, 0, 0] = [1.0, 0.0, 0.0]  # min 0, max 1 -> red pixel 255
    filters[1] = 7.0  # constant filter -> mid grey
    grid = filter_grid(filters, scale=1, pad=1)
    # 5 filters -> 3 columns x 2 rows of 2x2 cells with 1-pixel padding.
    assert grid.shape == (2 * 3 + 1, 3 * 3 + 1, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[1, 1], [255, 0, 0])
    np.testing.assert_array_equal(grid[1, 2], [0, 0, 0])
    np.testing.assert_array_equal(grid[1, 4], [128, 128, 128])
    assert grid[0].max() == 0  # padding row
    gray = filter_grid(np.random.default_rng(0).normal(size=(4, 3, 3, 16)))
    assert gray.shape[-1] == 1 and gray.shape[0] == 2 * 48 + 3  # 3x3 scaled to 48 pixels


def test_first_layer_filters_reads_conv_kernels_and_dense_images():
    conv = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="c1")])
    name, filters = first_layer_filters(conv)
    kernel = conv.layers[0].kernel.numpy()
    assert name == "c1" and filters.shape == (4, 3, 3, 3)
    np.testing.assert_array_equal(filters[2, 1, 0], kernel[1, 0, :, 2])
    mlp = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    name, filters = first_layer_filters(mlp)
    assert filters.shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(filters[3, 2, 5, 0], mlp.layers[1].kernel.numpy()[2 * 8 + 5, 3])
    odd = keras.Sequential([keras.Input((7,)), keras.layers.Dense(3)])
    assert first_layer_filters(odd) is None


def test_clip_like_optimizer_matches_the_optimizers_own_step():
    grads = [tf.constant([3.0, 4.0]), tf.constant([12.0])]  # global norm 13
    for kwargs, expected in [
        ({"global_clipnorm": 1.0}, 1.0),
        ({"clipnorm": 1.0}, np.sqrt(2.0)),
        ({"clipvalue": 1.0}, np.sqrt(3.0)),
        ({}, 13.0),
    ]:
        variables = [keras.Variable(np.zeros(2, "float32")), keras.Variable(np.zeros(1, "float32"))]
        optimizer = keras.optimizers.SGD(learning_rate=1.0, **kwargs)
        clipped = stats.clip_like_optimizer(optimizer, grads)
        optimizer.apply(grads, variables)  # SGD with lr 1: the step is minus the clipped gradient
        step = [-v.numpy() for v in variables]
        for ours, theirs in zip(clipped, step, strict=True):
            np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-6)
        assert stats.global_norm(clipped) == pytest.approx(expected, rel=1e-6)


def test_gradient_flags():
    healthy = {"a": 1.0, "b": 2.0}
    assert doctor_rules.gradient_flags(3.0, healthy, [2.0, 3.0, 2.5]) == {}
    assert "vanishing" in doctor_rules.gradient_flags(1.0, {"a": 1e-6, "b": 1.0})
    assert "exploding" in doctor_rules.gradient_flags(5e3, healthy)
    assert "exploding" in doctor_rules.gradient_flags(float("nan"), healthy)
    grown = doctor_rules.gradient_flags(500.0, healthy, [1.0, 2.0, 1.5])
    assert "grew" in grown["exploding"]


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: UpdateRatioMonitor(freq=0), "freq"),
        (lambda: UpdateRatioMonitor(freq=2.5), "freq"),
        (lambda: UpdateRatioMonitor(freq=True), "freq"),
        (lambda: UpdateRatioMonitor(low=1e-2, high=1e-4), "low"),
        (lambda: UpdateRatioMonitor(high=-1.0), "high"),
        (lambda: ActivationHistograms(np.zeros((0, 3))), "x"),
        (lambda: GradientMonitor(np.zeros((4, 3)), np.zeros(3)), "same number"),
        (
            lambda: GradientMonitor(np.zeros((4, 3)), np.zeros(4), vanishing_ratio=0),
            "vanishing_ratio",
        ),
        (lambda: FilterImages(), "out_dir"),
        (lambda: FilterImages("d", image_shape=(8, 0)), "image_shape"),
        (lambda: CurvePlotter(None), "out_dir"),
        (lambda: CurvePlotter("d", freq=-1), "freq"),
    ],
)
def test_invalid_arguments_are_named(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_background_writes_keep_their_order_and_report_failures(tmp_path):
    log = CsvLog(tmp_path / "rows.csv", ["a"])
    for i in range(20):
        log.add([i])
        log.flush()  # each flush rewrites the whole file; the last one must win
    log.wait()
    assert (tmp_path / "rows.csv").read_text().splitlines() == ["a", *map(str, range(20))]
    writes = FileWrites()
    writes.submit(open, tmp_path / "missing-dir" / "x.csv", "w")
    with pytest.raises(FileNotFoundError):
        writes.wait()


def _dropout_bn_net(run_eagerly: bool) -> keras.Model:
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile("sgd", "sparse_categorical_crossentropy", run_eagerly=run_eagerly)
    return model


def test_compiled_probe_matches_the_eager_pass_and_puts_the_state_back():
    """The probe pass runs as a tf.function unless the model asks to run eagerly: both give
    the same loss, gradients and layer outputs (same dropout masks), and leave the moving
    statistics and dropout seeds as they found them, so probing twice gives the same."""
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    y = np.arange(16) % 3
    results = {}
    for eager in (False, True):
        model = _dropout_bn_net(eager)
        extractor = stats.activation_model(model)
        before = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
        first = stats.probe_model(model, x, y, extractor=extractor)
        second = stats.probe_model(model, x, y, extractor=extractor)
        after = [keras.ops.convert_to_numpy(v) for v in model.non_trainable_variables]
        for b, a in zip(before, after, strict=True):
            np.testing.assert_array_equal(a, b)
        assert first.loss == pytest.approx(second.loss, rel=1e-6)
        (probe_pass,) = stats._PROBE_PASSES[model].values()
        assert hasattr(probe_pass, "get_concrete_function") is not eager
        results[eager] = first
    compiled, eager = results[False], results[True]
    assert compiled.loss == pytest.approx(eager.loss, rel=1e-5)
    for gc, ge in zip(compiled.grads, eager.grads, strict=True):
        np.testing.assert_allclose(np.asarray(gc), np.asarray(ge), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(compiled.gradient_squares, eager.gradient_squares, rtol=1e-4)
    # layer names differ (two models were built): compare in layer order
    assert len(compiled.layers) == len(eager.layers) == 3
    pairs = zip(compiled.layers, eager.layers, strict=True)
    for name_c, name_e in pairs:
        np.testing.assert_allclose(
            compiled.layers[name_c], eager.layers[name_e], rtol=1e-5, atol=1e-6
        )


class _HostSideLayer(keras.layers.Layer):
    """A layer that reads a tensor's value on the host: it cannot be traced."""

    def call(self, inputs):
        scale = float(keras.ops.convert_to_numpy(keras.ops.max(keras.ops.abs(inputs)))) + 1.0
        return inputs / scale

    def compute_output_shape(self, input_shape):
        return input_shape


class _TensorBranchLayer(keras.layers.Layer):
    """A Python ``if`` on a tensor: the probe traces without AutoGraph, as Keras traces its
    train step, so this cannot be traced either."""

    def call(self, inputs):
        if keras.ops.max(inputs) > 0:
            return inputs * 2.0
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


@pytest.mark.parametrize("layer", [_HostSideLayer, _TensorBranchLayer])
def test_a_model_that_cannot_be_traced_is_probed_eagerly(layer):
    keras.utils.set_random_seed(4)
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(2, activation="softmax")(layer()(inputs))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(1).normal(size=(8, 5)).astype("float32")
    y = np.arange(8) % 2
    probe = stats.probe_model(model, x, y)
    loss, grads = probe.loss, probe.grads
    (probe_pass,) = stats._PROBE_PASSES[model].values()
    assert not hasattr(probe_pass, "get_concrete_function")  # tracing failed: eager from now on
    expected = float(model.compute_loss(x=x, y=y, y_pred=model(x, training=True)))
    assert loss == pytest.approx(expected, rel=1e-6)
    assert all(g is not None for g in grads)


def test_probe_gradient_norms_match_the_raw_gradients():
    """The squared sums computed inside the compiled probe pass give the same norms as the
    raw gradients in numpy, before and after the optimizer's clipping."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dense(8, activation="tanh", name="squash"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    clip = 0.05
    model.compile(keras.optimizers.SGD(clipnorm=clip), "sparse_categorical_crossentropy")
    x = np.random.default_rng(2).normal(size=(32, 6)).astype("float32") * 3
    y = np.arange(32) % 3
    probe = stats.probe_model(model, x, y, extractor=stats.activation_model(model))
    grads = [np.asarray(g, dtype=np.float64) for g in probe.grads]
    squares = np.array([np.sum(g * g) for g in grads])
    np.testing.assert_allclose(probe.gradient_squares, squares, rtol=1e-5)
    assert probe.global_norm == pytest.approx(np.sqrt(squares.sum()), rel=1e-5)
    # clipnorm clips each variable's gradient to norm 0.05 on its own
    clipped = np.minimum(np.sqrt(squares), clip)
    assert probe.global_norm_clipped == pytest.approx(np.sqrt(np.sum(clipped**2)), rel=1e-5)
    assert stats.layer_gradient_norms(model, probe.gradient_squares) == pytest.approx(
        {"hidden": np.sqrt(squares[:2].sum()), "squash": np.sqrt(squares[2:4].sum()),
         "out": np.sqrt(squares[4:].sum())}, rel=1e-5
    )  # fmt: skip
    assert list(probe.layers) == ["hidden", "squash", "out"]
    # the activations pass shares the forward pass: its prediction gives the same loss
    expected = model.compute_loss(x=x, y=y, y_pred=probe.layers["out"], training=True)
    assert probe.loss == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("run_eagerly", [False, True])
def test_a_probe_leaves_the_metric_trackers_as_it_found_them(run_eagerly):
    """A two-output model's compiled loss updates per-output loss trackers in the pass: the
    probe puts back what fit had accumulated, and trackers the pass created start at zero
    (compiled and eager passes alike)."""
    keras.utils.set_random_seed(6)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = [
        keras.layers.Dense(3, activation="softmax", name="a")(hidden),
        keras.layers.Dense(1, name="b")(hidden),
    ]
    model = keras.Model(inputs, outputs)
    model.compile("sgd", ["sparse_categorical_crossentropy", "mse"], run_eagerly=run_eagerly)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = [np.arange(16) % 3, rng.normal(size=(16, 1)).astype("float32")]
    extractor = stats.activation_model(model)
    # Never trained: whatever the pass creates or updates is zero afterwards.
    probe = stats.probe_model(model, x, y, extractor=extractor)
    assert probe.loss > 0 and len(model.metrics_variables) > 2  # per-output trackers exist
    assert all(not np.any(keras.ops.convert_to_numpy(v)) for v in model.metrics_variables)
    # After fit: the probe leaves fit's accumulated values untouched.
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    held = [keras.ops.convert_to_numpy(v).copy() for v in model.metrics_variables]
    assert any(np.any(h) for h in held)
    stats.probe_model(model, x, y, extractor=extractor)
    for variable, value in zip(model.metrics_variables, held, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
