"""Turn a data config into a :class:`Dataset`: load, check, split, subsample, normalise."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kerasdiag.data import cifar
from kerasdiag.data.dataset import Dataset
from kerasdiag.data.splits import (
    check_arrays,
    imbalance_subsample,
    normalisation_stats,
    stratified_split,
    stratified_subsample,
)
from kerasdiag.errors import ConfigError, DataError

# Raw arrays: (x_train, y_train, x_test, y_test, class_names); x as numeric images (N, H, W, C).
RawData = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]

DIGITS_TEST_FRACTION = 0.2  # sklearn's digits have no official test split: hold out 20%


def _load_digits(data_cfg: Any) -> RawData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[..., None]  # (1797, 8, 8, 1), values 0..16
    y = digits.target.astype(np.int64)
    # The test split is fixed (seed 0), whatever data.seed says, so scores stay comparable.
    train_idx, test_idx = stratified_split(y, DIGITS_TEST_FRACTION, seed=0)
    names = [str(n) for n in digits.target_names]
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], names


def _load_cifar10(data_cfg: Any) -> RawData:
    if data_cfg.path is None:
        folder = cifar.download_cifar10()
    else:
        folder = Path(data_cfg.path).expanduser()
        if not folder.exists():
            raise ConfigError("data.path", data_cfg.path, "no such directory")
    x_train, y_train, x_test, y_test = cifar.load_cifar10_folder(folder)
    return x_train, y_train, x_test, y_test, list(cifar.CIFAR10_CLASSES)


def _load_npz(data_cfg: Any) -> RawData:
    """Your own data: an ``.npz`` with x_train, y_train, x_test, y_test (and class_names).

    Read with ``allow_pickle=False``: an .npz holding Python objects is refused, not run.
    """
    if data_cfg.path is None:
        raise ConfigError("data.path", None, "data.name=npz needs the path of an .npz file")
    path = Path(data_cfg.path).expanduser()
    if not path.is_file():
        raise ConfigError("data.path", data_cfg.path, "no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks arrays: {', '.join(missing)}")
    y_all = np.concatenate([arrays["y_train"].ravel(), arrays["y_test"].ravel()])
    if "class_names" in arrays:
        names = [str(n) for n in arrays["class_names"]]
    else:
        top = int(y_all.max()) if y_all.size and y_all.dtype.kind in "iu" else 0
        names = [str(i) for i in range(top + 1)]
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], names


LOADERS: dict[str, Callable[[Any], RawData]] = {
    "digits": _load_digits,
    "cifar10": _load_cifar10,
    "npz": _load_npz,
}


def load_dataset(data_cfg: Any) -> Dataset:
    """Load the data set named by ``data_cfg.name`` and prepare its three splits.

    Order matters for honest numbers: the test split is set aside first; ``limit`` and
    ``imbalance`` then act on the training data only; the validation split is carved from
    what remains (stratified, seeded); normalisation statistics come from the training split.

    Example:
        >>> from kerasdiag.config import load_config
        >>> data = load_dataset(load_config().data)  # sklearn's 8x8 digits, offline
        >>> data.input_shape, data.num_classes
        ((8, 8, 1), 10)
    """
    if data_cfg.name not in LOADERS:
        raise ConfigError("data.name", data_cfg.name, f"must be one of {sorted(LOADERS)}")
    x_train, y_train, x_test, y_test, names = LOADERS[data_cfg.name](data_cfg)
    return prepare_splits(data_cfg, x_train, y_train, x_test, y_test, names)


def prepare_splits(
    data_cfg: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: list[str],
) -> Dataset:
    """Check raw arrays, then subsample, split and normalise them as ``data_cfg`` says."""
    num_classes = len(class_names)
    check_arrays(x_train, y_train, num_classes, "train")
    check_arrays(x_test, y_test, num_classes, "test")
    seed = int(data_cfg.seed)
    if data_cfg.imbalance is not None:
        keep = imbalance_subsample(y_train, float(data_cfg.imbalance), num_classes, seed)
        x_train, y_train = x_train[keep], y_train[keep]
    if data_cfg.limit is not None:
        keep = stratified_subsample(y_train, int(data_cfg.limit), seed)
        x_train, y_train = x_train[keep], y_train[keep]
    fit_idx, val_idx = stratified_split(y_train, float(data_cfg.val_fraction), seed)
    x_val, y_val = x_train[val_idx], y_train[val_idx]
    x_train, y_train = x_train[fit_idx], y_train[fit_idx]

    x_train, x_val, x_test = (a.astype(np.float32) for a in (x_train, x_val, x_test))
    mean = std = None
    if data_cfg.normalize:
        mean, std = normalisation_stats(x_train)
        x_train, x_val, x_test = ((a - mean) / std for a in (x_train, x_val, x_test))
    return Dataset(
        name=str(data_cfg.name),
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        class_names=class_names,
        mean=mean,
        std=std,
    )
