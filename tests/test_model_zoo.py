"""The model zoo in CI: realistic models pass every piece, planted faults are caught and named.

The whole table (every model x every piece, MobileNetV2 included) is
``benchmarks/bench_zoo.py``; here each piece runs on the models that exercise what it must
support (Embedding, recurrent, attention, BatchNorm, several inputs/outputs as lists and
dicts, subclassed, custom train_step, jit_compile + steps_per_execution, mixed float16,
tf.data with sample weights), within the suite's time budget.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from model_zoo import ZOO, cifar, mobilenet
from model_zoo_run import run

from kerasdiag import diagnosis
from kerasdiag.callbacks import stats
from kerasdiag.checks.gradcheck import check_gradients
from kerasdiag.diagnosis import rules as doctor_rules

GRADIENT_MODELS = [
    "bn_resnet",
    "text_cnn",
    "gru",
    "transformer",
    "two_io_dict",
    "subclassed",
    "custom_train_step",
    "mixed_float16",
]


@pytest.mark.parametrize("name", GRADIENT_MODELS)
def test_gradient_checks_pass_on_healthy_models(name):
    for piece in ("check_gradients", "check_gradients_fast"):
        verdict, line, _ = run(ZOO[name], piece)
        assert verdict == "pass", f"{name} / {piece}: {line}"


def test_planted_1_1x_gradient_bug_in_bn_relu_network_is_caught_by_both_checks():
    entry = ZOO["bn_resnet_grad_bug"]
    for piece in ("check_gradients", "check_gradients_fast"):
        verdict, line, _ = run(entry, piece)
        assert verdict == "caught", f"{piece}: {line}"
        assert "custom_conv/kernel" in line or "stem/kernel" in line, line


def test_layer_check_runs_on_a_layer_inside_a_model():
    for name in ("text_cnn", "two_io_list"):
        verdict, line, _ = run(ZOO[name], "check_layer_gradients")
        assert verdict == "pass", f"{name}: {line}"


@pytest.mark.parametrize("name", ["two_io_list", "two_io_dict", "subclassed", "text_cnn"])
def test_sanity_checks_pass_on_multi_io_subclassed_and_embedding_models(name):
    for piece in ("initial_loss", "regularization", "overfit"):
        verdict, line, _ = run(ZOO[name], piece)
        assert verdict == "pass", f"{name} / {piece}: {line}"


@pytest.mark.parametrize(
    "name", ["two_io_dict", "text_cnn", "jit_steps_per_execution", "tf_data_sample_weights"]
)
def test_monitors_and_doctor_stay_quiet_on_healthy_models(name):
    for piece in ("monitors", "doctor"):
        verdict, line, _ = run(ZOO[name], piece)
        assert verdict == "pass", f"{name} / {piece}: {line}"


@pytest.mark.parametrize(
    ("name", "named"),
    [("lr_far_too_high", "exploding"), ("vanishing_sigmoid", "vanishing")],
)
def test_planted_training_faults_are_caught_and_named(name, named):
    for piece in ("monitors", "doctor"):
        verdict, line, _ = run(ZOO[name], piece)
        assert verdict == "caught" and named in line, f"{piece}: {line}"


def test_mobilenet_v2_probe_in_training_mode_sees_no_vanishing_gradients():
    # In inference mode at init, BatchNorm's fresh moving statistics shrink the first
    # layers' gradients below 1e-3 of the last layer's: a false alarm the probe must not raise.
    model, x, y = mobilenet()
    probe = stats.probe_model(model, x[:32], y[:32])
    norms = stats.layer_gradient_norms(model, probe.gradient_squares)
    assert "vanishing" not in doctor_rules.gradient_flags(probe.global_norm, norms)
    moving = [v for v in model.non_trainable_variables if "moving_mean" in v.path]
    assert all(np.all(keras.ops.convert_to_numpy(v) == 0) for v in moving)  # state put back


def test_zero_gradients_are_unverified_not_ok():
    # A bias followed by training-mode BatchNorm has a gradient that is exactly 0 (the batch
    # mean removes it): the check must call it unverified and say what to do, never "ok".
    x, y = cifar()
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("tanh"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    report = check_gradients(model, x, y, samples=4)
    bias = next(r for r in report.rows if r.name.endswith("conv/bias"))
    assert bias.verdict == "unverified", str(report)
    assert report.passed and f"unverified (1): {bias.name}" in str(report)
    assert "training=True" not in str(report)  # it already ran in training mode (BN)
    assert all(r.verdict == "ok" for r in report.rows if r is not bias)


def test_update_ratio_band_follows_the_optimizer():
    def band(optimizer, **kwargs):
        return doctor_rules.update_ratio_band(stats.optimizer_name(optimizer), **kwargs)

    assert band(keras.optimizers.SGD(0.1)) == (1e-4, 1e-2)
    assert band(keras.optimizers.Adam())[1] == doctor_rules.ADAPTIVE_UPDATE_RATIO_HIGH
    sparse = band(keras.optimizers.Adam(), sparse=True)
    assert sparse[1] == doctor_rules.ADAPTIVE_SPARSE_UPDATE_RATIO_HIGH
    assert band(keras.optimizers.Adam(), high=0.05) == (1e-4, 0.05)
    # the report shades the band of the run's configured optimizer: the same numbers
    assert doctor_rules.update_ratio_band("adam") == band(keras.optimizers.Adam())
    assert doctor_rules.update_ratio_band("sgd_nesterov") == band(keras.optimizers.SGD(0.1))


def test_embedding_update_ratio_is_over_the_rows_the_step_changed():
    layer = keras.layers.Embedding(1000, 4)
    layer.build((None,))
    before = stats.snapshot([layer.embeddings])
    table = keras.ops.convert_to_numpy(layer.embeddings).copy()
    table[:2] *= 1.01  # a step that touched two rows, each by 1% of its norm
    layer.embeddings.assign(table)
    (ratio,) = stats.update_ratios(before, [layer.embeddings])
    assert ratio == pytest.approx(0.01, rel=1e-3)


def test_doctor_scores_the_training_split_in_inference_mode_for_batchnorm_models():
    history = {
        "accuracy": [0.9],
        doctor_rules.TRAIN_INFERENCE_ACCURACY: [0.62],
        "val_accuracy": [0.6],
        "loss": [0.5],
    }
    assert diagnosis.accuracies_at(history) == (0.62, 0.6, 1)
    findings = diagnosis.curve_findings(history, initial_loss=2.3, bayes_error=0.35)
    assert "overfitting" not in {f.symptom for f in findings}


def test_custom_train_step_is_said_in_one_line():
    model, x, y = ZOO["custom_train_step"].build()
    report = check_gradients(model, x, y, dims_per_variable=2)
    assert report.passed
    assert "note: CustomStepModel overrides train_step" in str(report)


def test_float64_copy_of_a_graph_with_an_add_layer_and_an_add_operation():
    # keras.applications' MobileNetV3 has both a residual Add layer and `x + 3.0` (the Add
    # operation): the layer's name must not stand in for the operation in the copy.
    inputs = keras.Input((4,))
    h = keras.layers.Dense(4)(inputs)
    h = keras.layers.Add()([h, inputs]) + 3.0
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    report = check_gradients(model, x, np.arange(8) % 3, samples=4)
    assert report.passed, str(report)
