"""Data: the safe CIFAR reader, splits, normalisation from training data only, augmentation."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from kerasdiag.config import load_config
from kerasdiag.core.errors import DataError
from kerasdiag.data import load_dataset, make_tf_dataset, prepare_splits
from kerasdiag.data.cifar import load_cifar10_folder, read_batch, safe_load_pickle
from kerasdiag.data.splits import imbalance_subsample, stratified_split


def test_cifar_sample_reads_as_official_layout(cifar_dir):
    x_train, y_train, x_test, y_test = load_cifar10_folder(cifar_dir)
    assert x_train.shape == (5000, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (1000, 32, 32, 3)
    assert set(np.unique(y_train)) == set(range(10))
    # Real photos: neighbouring pixels correlate strongly (a reshaping bug would break this).
    a = x_train[:50, :, :-1].astype(float).ravel()
    b = x_train[:50, :, 1:].astype(float).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.8


class _Payload:
    """Unpickling this would create a file: the classic pickle attack."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_hostile_pickle_is_refused_and_its_payload_never_runs(tmp_path):
    target = tmp_path / "pwned"
    bad = tmp_path / "data_batch_1"
    bad.write_bytes(pickle.dumps({b"data": _Payload(str(target)), b"labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="refused to load global"):
        read_batch(bad)
    assert not target.exists()


def test_corrupt_pickle_is_a_one_line_data_error(tmp_path, cifar_dir):
    truncated = tmp_path / "test_batch"
    truncated.write_bytes((cifar_dir / "test_batch").read_bytes()[:5000])
    with pytest.raises(DataError, match="corrupt pickle") as err:
        safe_load_pickle(truncated)
    assert "\n" not in str(err.value)


def test_missing_batch_files_are_named(tmp_path):
    with pytest.raises(DataError, match="data_batch_1"):
        load_cifar10_folder(tmp_path)


def test_splits_are_stratified_seeded_and_disjoint():
    y = np.repeat(np.arange(10), 50)
    keep, held = stratified_split(y, 0.2, seed=3)
    assert not set(keep) & set(held) and len(keep) + len(held) == len(y)
    assert np.all(np.bincount(y[held]) == 10)
    assert np.array_equal(held, stratified_split(y, 0.2, seed=3)[1])
    assert not np.array_equal(held, stratified_split(y, 0.2, seed=4)[1])


def test_imbalance_gives_a_long_tail():
    y = np.repeat(np.arange(10), 100)
    counts = np.bincount(y[imbalance_subsample(y, 0.1, 10, seed=0)], minlength=10)
    assert counts[0] == 100 and counts[-1] == 10
    assert np.all(np.diff(counts) <= 0)


def test_only_the_examples_trained_on_are_long_tailed(cifar_dir):
    """cifar_focal: validation is carved before the long tail, so it follows the balanced
    test split (it was long-tailed too, and the split-shift check failed every run: the kept
    epoch's validation accuracy 0.566 against a test accuracy of 0.378)."""
    from kerasdiag.checks.data import check_split_shift

    cfg = load_config(["recipe=cifar_focal", f"data.path={cifar_dir}"])
    data = load_dataset(cfg.data)
    train = np.bincount(data.y_train, minlength=10)
    val = np.bincount(data.y_val, minlength=10)
    assert np.all(np.diff(train) <= 0) and train[-1] == pytest.approx(0.1 * train[0], rel=0.05)
    assert val.max() - val.min() <= 0.2 * val.mean()  # as balanced as the raw classes allow
    assert len(data.y_val) == pytest.approx(0.1 * 5000, abs=5)
    assert check_split_shift(data).status == "pass"
    # the same recipe without the tail: validation and training drawn alike
    even = load_dataset(load_config(["recipe=cifar_focal", f"data.path={cifar_dir}",
                                     "data.imbalance=null"]).data)  # fmt: skip
    np.testing.assert_array_equal(even.y_val, data.y_val)


def test_normalisation_uses_training_statistics_only(cifar_dir):
    cfg = load_config(["recipe=cifar_softmax", f"data.path={cifar_dir}", "data.limit=2000"])
    data = load_dataset(cfg.data)
    assert data.x_train.dtype == np.float32
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-3)
    np.testing.assert_allclose(data.x_train.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
    # The same statistics were applied to the test split, which is not exactly centred.
    raw_test = load_cifar10_folder(cifar_dir)[2].astype(np.float32)
    np.testing.assert_allclose(data.x_test, (raw_test - data.mean) / data.std, rtol=1e-5, atol=1e-5)
    assert len(data.y_train) + len(data.y_val) == 2000 and len(data.y_test) == 1000


def test_digits_default_split_sizes():
    data = load_dataset(load_config().data)
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10
    assert len(data.y_test) == 359 and len(data.y_train) + len(data.y_val) == 1438


def _npz_cfg(path):
    return load_config(["data=npz", f"data.path={path}"]).data


def test_npz_data_with_nan_or_bad_labels_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 4)).astype("float32"), np.arange(40) % 3
    good = tmp_path / "good.npz"
    np.savez(good, x_train=x, y_train=y, x_test=x, y_test=y)
    assert load_dataset(_npz_cfg(good)).num_classes == 3
    x_nan = x.copy()
    x_nan[5, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x_train=x_nan, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match="NaN"):
        load_dataset(_npz_cfg(tmp_path / "nan.npz"))
    names = np.array(["a", "b", "c"])
    bad_y = y.copy()
    bad_y[0] = 7
    np.savez(tmp_path / "lab.npz", x_train=x, y_train=bad_y, x_test=x, y_test=y, class_names=names)
    with pytest.raises(DataError, match="label 7 out of range"):
        load_dataset(_npz_cfg(tmp_path / "lab.npz"))


def test_prepare_splits_rejects_mismatched_lengths():
    cfg = load_config().data
    x = np.zeros((10, 2), "float32")
    with pytest.raises(DataError, match="10 inputs but 9 labels"):
        prepare_splits(cfg, x, np.zeros(9, int), x, np.zeros(10, int), ["a", "b"])


def test_augmentation_touches_training_batches_only(cifar_dir):
    cfg = load_config(
        ["recipe=cifar_softmax", f"data.path={cifar_dir}", "data.augment.flip=true",
         "data.augment.crop=4"]
    )  # fmt: skip
    x = np.random.default_rng(0).normal(size=(64, 32, 32, 3)).astype("float32")
    y = np.zeros(64, "int64")
    eval_x = np.concatenate([b[0].numpy() for b in make_tf_dataset(x, y, 16)])
    np.testing.assert_array_equal(eval_x, x)
    train = make_tf_dataset(x, y, 64, training=True, augment_cfg=cfg.data.augment, seed=1)
    batch = next(iter(train))[0].numpy()
    changed = [not any(np.array_equal(b, a) for a in x) for b in batch]
    assert sum(changed) > 32  # most images flipped and/or shifted
