"""Data checks: leaked duplicates between splits, and validation vs test shift."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kerasdiag.checks.data import check_leakage, check_split_shift, row_hashes, shared_rows
from kerasdiag.config import load_config
from kerasdiag.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset(load_config(["recipe=digits_softmax"]).data)


@pytest.fixture(scope="module")
def cifar(cifar_dir):
    return load_dataset(load_config(["recipe=cifar_softmax", f"data.path={cifar_dir}"]).data)


def test_real_splits_pass_both_checks(digits, cifar):
    for data in (digits, cifar):
        leak, shift = check_leakage(data), check_split_shift(data)
        assert leak.status == "pass", leak.message
        assert shift.status == "pass", shift.message
        assert leak.details["train/test"]["of"] == len(data.x_test)


def test_leaked_duplicates_are_named_with_counts(digits):
    rng = np.random.default_rng(1)
    x_test, x_val = digits.x_test.copy(), digits.x_val.copy()
    y_test = digits.y_test.copy()
    to_test = rng.choice(len(digits.x_train), 7, replace=False)
    at_test = rng.choice(len(x_test), 7, replace=False)
    x_test[at_test] = digits.x_train[to_test]
    y_test[at_test] = digits.y_train[to_test]
    x_val[[3, 4, 5]] = digits.x_train[[10, 11, 12]]
    leaky = dataclasses.replace(digits, x_test=x_test, y_test=y_test, x_val=x_val)
    result = check_leakage(leaky)
    assert result.status == "fail" and result.value == 10
    test = result.details["train/test"]
    assert test["count"] == 7 and test["same_label"] == 7
    assert sorted(test["test_indices"]) == sorted(at_test.tolist())[:5]
    assert result.details["train/val"]["count"] == 3
    assert "7 of 359 test examples (1.9%)" in result.message
    assert "3 of 216 validation examples" in result.message
    assert result.fix and "Fix:" in result.text


def test_rows_that_differ_in_one_value_are_not_duplicates():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3, 5)).astype(np.float32)
    b = a.copy()
    b[:, 2, 4] += np.float32(1e-6)
    b[7] = a[7]
    other, ref = shared_rows(a, b)
    assert other.tolist() == [7] and ref.tolist() == [7]
    # Hashes agree exactly where rows do (odd row width: padded to whole 64-bit words).
    h_a, h_b = row_hashes(a), row_hashes(b)
    assert (h_a[7] == h_b[7]).all() and not (h_a[0] == h_b[0]).all()


def test_leakage_check_at_cifar10_scale():
    """60,000 CIFAR-sized rows (its speed is measured in benchmarks/bench_checks.py)."""
    rng = np.random.default_rng(0)
    # Raw CIFAR-10 is uint8 (184 MB for both splits here; float32 would be four times that).
    x_train = rng.integers(0, 256, size=(50000, 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(10000, 32, 32, 3), dtype=np.uint8)
    x_test[:5] = x_train[100:105]
    result = check_leakage(x_train=x_train, x_test=x_test)
    assert result.details["train/test"]["count"] == 5
    assert result.details["train/test"]["train_indices"] == [100, 101, 102, 103, 104]


def test_shifted_test_set_is_warned_with_numbers(digits):
    shifted = dataclasses.replace(digits, x_test=digits.x_test + 0.5)
    result = check_split_shift(shifted)
    assert result.status == "fail"
    features = result.details["features"]
    # Independently: the standardised mean difference averaged over the varying features.
    v = digits.x_val.reshape(len(digits.x_val), -1).astype(np.float64)
    t = digits.x_test.reshape(len(digits.x_test), -1).astype(np.float64) + 0.5
    sv, st = v.std(0, ddof=1), t.std(0, ddof=1)
    keep = (sv > 1e-6) & (st > 1e-6)
    d = np.abs(v.mean(0) - t.mean(0))[keep] / np.sqrt((sv**2 + st**2) / 2)[keep]
    assert features["mean_abs_standardised_mean_difference"] == pytest.approx(d.mean(), rel=1e-6)
    assert "feature means differ" in result.message and result.fix


def test_rescaled_test_set_is_warned_as_a_spread_difference(digits):
    result = check_split_shift(dataclasses.replace(digits, x_test=digits.x_test * 3.0))
    assert result.status == "fail" and "feature spreads differ" in result.message
    assert result.details["features"]["mean_abs_log_std_ratio"] == pytest.approx(np.log(3), 0.05)


def test_different_class_frequencies_are_warned(digits):
    keep = digits.y_test < 5  # a test set of digits 0-4 only
    subset = dataclasses.replace(digits, x_test=digits.x_test[keep], y_test=digits.y_test[keep])
    result = check_split_shift(subset)
    assert result.status == "fail" and "class frequencies differ" in result.message
    classes = result.details["classes"]
    f_v = np.bincount(digits.y_val, minlength=10) / len(digits.y_val)
    f_t = np.bincount(subset.y_test, minlength=10) / len(subset.y_test)
    assert classes["total_variation"] == pytest.approx(0.5 * np.abs(f_v - f_t).sum())
    assert classes["p_value"] < 1e-3
