"""Tests written against behaviour a reviewer broke on purpose, one break at a time.

Each test names the break it kills. Expectations are independent of the library: closed
forms, hand computations or planted faults, so they survive refactoring of the code under
test. ``scripts/mutation_test.py`` measures how many such breaks the whole suite kills.
"""

from __future__ import annotations

import pickle
import sys

import keras
import numpy as np
import pytest
from _gradcheck_helpers import PlantedDense, cifar, digits, planted_dense_model, relu_convnet

from kerasdiag import check_gradients
from kerasdiag.callbacks import MetricsCSV, TrainingDoctor
from kerasdiag.checks.gradcheck.verdict import relative_error, settle
from kerasdiag.checks.sanity import check_initial_loss, overfit_small_subset
from kerasdiag.core.errors import DataError
from kerasdiag.core.rundir import read_metrics_csv
from kerasdiag.data.cifar import safe_load_pickle

LN10 = float(np.log(10.0))


# --- gradient checks -------------------------------------------------------------------


def test_relative_error_divides_by_the_larger_magnitude_not_the_sum():
    # |a - n| / max(|a|, |n|), computed by hand: 0.1 / 1.1, 3 / 2, 1 (opposite signs), 0.
    a = np.array([1.0, -2.0, 1e-3, 0.0])
    n = np.array([1.1, 1.0, -1e-3, 0.0])
    expected = [0.1 / 1.1, 3.0 / 2.0, 2e-3 / 1e-3, 0.0]
    np.testing.assert_allclose(relative_error(a, n), expected, rtol=1e-12)


def test_a_gradient_scaled_by_1_1_has_relative_error_one_eleventh():
    # analytic = 1.1 x numeric for every entry of the planted kernel: |1.1n - n| / 1.1|n|.
    x, y = digits()
    report = check_gradients(planted_dense_model("scaled"), x[:2], y[:2])
    assert report.max_relative_error == pytest.approx(0.1 / 1.1, rel=1e-4)


def test_an_entry_is_a_kink_only_if_every_step_size_crossed_one():
    # One clean attempt measured the true derivative: its failure stands.
    assert settle(["fail", "fail", "fail"], [True, False, True], [0.5, 0.3, 0.4])[0] == "fail"
    assert settle(["fail", "suspicious"], [False, True], [0.5, 1e-3])[0] == "fail"
    assert settle(["fail", "fail"], [True, True], [0.5, 0.3])[0] == "kink"
    # One ok attempt settles it, whatever the others crossed.
    assert settle(["fail", "ok"], [False, False], [0.5, 1e-9]) == ("ok", 1)


def test_a_planted_bug_inside_a_relu_max_pool_model_is_caught_not_excused():
    # The planted layer sits after a ReLU conv and a max-pool: the objective has kinks, and a
    # scaled gradient must still fail rather than be excused as one.
    x, y = cifar()
    model = relu_convnet(keras.layers.Flatten(), PlantedDense(16, bug="scaled", activation="relu"))
    report = check_gradients(model, x[:2], y[:2])
    assert not report.passed
    planted = next(layer for layer in model.layers if isinstance(layer, PlantedDense))
    assert planted.kernel.path in {r.name for r in report.failing}
    assert "Relu" in report.kink_types or "MaxPool" in report.kink_types


# --- sanity: initial loss ----------------------------------------------------------------


def constant_output_model(bias: np.ndarray) -> keras.Model:
    """Zero kernel, fixed bias: the same logits for every input, so the loss is known."""
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(
                10, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(bias)
            ),
        ]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def constant_logits_loss(bias: np.ndarray, y: np.ndarray) -> float:
    """Cross-entropy of constant logits, by hand: log-sum-exp(b) - mean(b[y])."""
    return float(np.log(np.exp(bias).sum()) - bias[y].mean())


@pytest.mark.parametrize(("excess", "passes"), [(0.1, True), (0.6, False)])
def test_initial_loss_tolerance_is_a_quarter_of_the_expected_value(excess, passes):
    # Logits [a, 0, ..., 0]: solve for the a that puts the loss at ln 10 x (1 + excess).
    x, y = digits()
    grid = np.linspace(0.0, 20.0, 20001)
    losses = [constant_logits_loss(np.r_[-a, np.zeros(9)], y) for a in grid]
    a = grid[int(np.argmin(np.abs(np.array(losses) - LN10 * (1 + excess))))]
    bias = np.r_[-a, np.zeros(9)]
    result = check_initial_loss(constant_output_model(bias), (x, y), max_examples=None)
    assert result.value == pytest.approx(constant_logits_loss(bias, y), rel=1e-4)
    assert result.expected == pytest.approx(LN10, rel=1e-6)
    assert result.passed is passes, result.message


def test_an_initial_loss_far_below_the_expected_value_fails():
    # A model that already fits the data (trained, not freshly initialised) starts far below
    # ln 10: the check must not accept that as "close enough".
    x, y = digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=20, batch_size=256, verbose=0)
    result = check_initial_loss(model, (x, y))
    assert result.value < 0.3 * LN10
    assert not result.passed, result.message


# --- sanity: overfit a tiny subset -------------------------------------------------------


def test_overfit_needs_a_loss_near_zero_not_just_below_half_of_ln_c():
    # Logits squashed into [-1, 1] by tanh can rank every example right (100% accuracy) but
    # the loss can never go below -log(e / (e + 9 / e)) = 0.80: the subset is not memorised.
    floor = -np.log(np.e / (np.e + 9 / np.e))
    assert 0.5 < floor < LN10 / 2
    x, y = digits()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(10), keras.layers.Activation("tanh")]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    result = overfit_small_subset(model, (x, y), num_examples=20, max_steps=300)
    assert not result.passed, result.message
    assert result.value >= floor - 1e-3


# --- metrics.csv keeps one row per epoch -------------------------------------------------


def test_metrics_csv_replaces_the_epochs_a_resumed_fit_repeats(tmp_path):
    # A crash after epoch 3's row but before its backup: the resumed fit repeats epoch 3.
    x, y = digits()
    path = tmp_path / "metrics.csv"
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, epochs=3, batch_size=512, verbose=0, callbacks=[MetricsCSV(path)])
    first = read_metrics_csv(path)
    model.fit(
        x, y, initial_epoch=2, epochs=5, batch_size=512, verbose=0, callbacks=[MetricsCSV(path)]
    )
    lines = path.read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["1", "2", "3", "4", "5"]
    rows = read_metrics_csv(path)
    assert rows[2]["loss"] == first[2]["loss"]  # kept from the first try
    assert rows[3]["loss"] != first[3]["loss"]  # epoch 3 trained again: the new row won
    # Resumed from epoch 2's backup again, and stopped after epoch 3: rows 4 and 5 belong to
    # a try that was lost, and go.
    model.fit(
        x, y, initial_epoch=2, epochs=3, batch_size=512, verbose=0, callbacks=[MetricsCSV(path)]
    )
    assert sorted(read_metrics_csv(path)) == [1, 2, 3]


# --- the safe unpickler refuses before it imports -----------------------------------------


def test_a_refused_global_from_a_module_never_imported_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported.txt"
    module = "kerasdiag_planted_payload_mod"
    (tmp_path / f"{module}.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndef boom():\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module not in sys.modules
    payload = tmp_path / "data_batch_1"
    # protocol 0: GLOBAL 'module boom', empty tuple, REDUCE
    payload.write_bytes(f"c{module}\nboom\n(tR.".encode())
    with pytest.raises(DataError, match=f"{module}.boom"):
        safe_load_pickle(payload)
    assert module not in sys.modules
    assert not marker.exists()
    # the same pickle does run its module through the standard unpickler (the test can fail)
    pickle.loads(payload.read_bytes())
    assert marker.read_text() == "ran"
    sys.modules.pop(module, None)


# --- the doctor flags gradients that grow 100x ---------------------------------------------


def test_doctor_flags_a_global_gradient_norm_that_grows_100x():
    # Linear least squares with a step size past the stability limit 2 / lambda_max: the
    # iterates, and so the gradients, grow geometrically by a known factor per step. The
    # absolute threshold is out of reach, so only the growth rule can name it.
    x, _ = digits()
    x = x[:256].astype("float32")
    rng = np.random.default_rng(0)
    y = (x @ rng.normal(size=(64, 1)) / 8).astype("float32")
    lam_max = float(np.linalg.eigvalsh(2 * x.T @ x / len(x)).max())
    lr = 2.2 / lam_max  # |1 - lr * lam_max| = 1.2 per step
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(1, kernel_initializer="zeros", use_bias=False)]
    )
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    doctor = TrainingDoctor(
        x,
        y,
        thresholds={"exploding_norm": 1e30},
        budget=1.0,
        stop_on=["nan", "exploding_gradients"],
        verbose=0,
    )
    model.fit(x, y, batch_size=len(x), epochs=200, verbose=0, callbacks=[doctor])
    exploding = [f for f in doctor.findings if f.symptom == "exploding_gradients"]
    assert exploding, [f.symptom for f in doctor.findings]
    # 1.2 ** 26 = 114: found after tens of steps, not at the first probe and not never.
    assert 10 <= exploding[0].step <= 120
    assert "grew" in exploding[0].message or "grew" in str(exploding[0].evidence)
