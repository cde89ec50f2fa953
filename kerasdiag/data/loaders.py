"""Turn a data config into a :class:`Dataset`: load, check, split, subsample, normalise."""

from __future__ import annotations

import glob
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kerasdiag.config.checks import check_path
from kerasdiag.config.schema import DATASET_TASKS, DATASETS
from kerasdiag.core.errors import ConfigError, DataError
from kerasdiag.data import cifar
from kerasdiag.data.dataset import Dataset
from kerasdiag.data.files import TEST_SEED, image_folder_files, read_csv_table
from kerasdiag.data.splits import (
    check_arrays,
    imbalance_subsample,
    normalisation_stats,
    stratified_split,
    stratified_subsample,
)
from kerasdiag.data.stream import CsvStream, ImageFolderStream, StreamedDataset, TFRecordStream

# Raw arrays: (x_train, y_train, x_test, y_test, class_names); x as numeric images (N, H, W, C).
RawData = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]

DIGITS_TEST_FRACTION = 0.2  # sklearn's digits have no official test split: hold out 20%


def _load_digits(data_cfg: Any) -> RawData:
    from sklearn.datasets import load_digits  # here: scikit-learn takes a second to import

    digits = load_digits()
    x = digits.images.astype(np.float32)[..., None]  # (1797, 8, 8, 1), values 0..16
    y = digits.target.astype(np.int64)
    # The test split is fixed (seed 0), whatever data.seed says, so scores stay comparable.
    train_idx, test_idx = stratified_split(y, DIGITS_TEST_FRACTION, seed=0)
    names = [str(n) for n in digits.target_names]
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx], names


# The attributes ``data=digits_attributes`` derives from each digit's class: several are true
# of most images (6 is even, >= 5 and has a closed loop), which makes them multi-label data.
DIGIT_ATTRIBUTES = {
    "even": (0, 2, 4, 6, 8),
    "at_least_5": (5, 6, 7, 8, 9),
    "prime": (2, 3, 5, 7),
    "closed_loop": (0, 6, 8, 9),  # as the digits are usually written (a 4 is left open)
}


def _load_digits_attributes(data_cfg: Any) -> RawData:
    """scikit-learn's digits (real images), each labelled with the attributes its digit has
    (``DIGIT_ATTRIBUTES``): derived labels, not annotations, and the same test split as
    ``data=digits``."""
    x_train, y_train, x_test, y_test, _ = _load_digits(data_cfg)
    table = np.array([[d in digits for digits in DIGIT_ATTRIBUTES.values()] for d in range(10)])
    as_labels = lambda y: table[y].astype(np.float32)  # noqa: E731
    return x_train, as_labels(y_train), x_test, as_labels(y_test), list(DIGIT_ATTRIBUTES)


REGRESSION_TEST_SEED = 0  # the test split of a regression set, whatever data.seed says


def _load_diabetes(data_cfg: Any) -> RawData:
    """scikit-learn's diabetes table (442 patients, 10 measurements, shipped in the wheel):
    the target is a disease progression score one year later (25 to 346)."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    x = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.float32)[:, None]
    rest, test = stratified_split(target_strata(y), DIGITS_TEST_FRACTION, REGRESSION_TEST_SEED)
    return x[rest], y[rest], x[test], y[test], ["progression"]


def target_strata(y: np.ndarray, bins: int = 5) -> np.ndarray:
    """Groups to stratify non-class targets by: quantile bins of the first number to predict
    (every split sees low and high targets), or each distinct combination of 0/1 labels."""
    y = np.asarray(y).reshape(len(y), -1)
    if y.dtype.kind == "f" and not np.isin(y, (0.0, 1.0)).all():
        edges = np.quantile(y[:, 0], np.linspace(0, 1, bins + 1)[1:-1])
        return np.searchsorted(edges, y[:, 0], side="right").astype(np.int64)
    return np.unique(y > 0.5, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def _load_cifar10(data_cfg: Any) -> RawData:
    if data_cfg.path is None:
        folder = cifar.download_cifar10()
    else:
        folder = check_path("data.path", data_cfg.path, "directory")
    x_train, y_train, x_test, y_test = cifar.load_cifar10_folder(folder)
    return x_train, y_train, x_test, y_test, list(cifar.CIFAR10_CLASSES)


def _load_npz(data_cfg: Any) -> RawData:
    """Your own data: an ``.npz`` with x_train, y_train, x_test, y_test (and class_names).

    Read with ``allow_pickle=False``: an .npz holding Python objects is refused, not run.
    """
    path, arrays = _read_npz(data_cfg)
    y_train, y_test = (_label_vector(arrays[k]) for k in ("y_train", "y_test"))
    if "class_names" in arrays:
        class_names = arrays["class_names"]
        if class_names.ndim != 1 or class_names.size == 0:
            raise DataError(f"{path}: class_names must be a 1-D array of names")
        names = [str(n) for n in class_names]
        check_declared_labels(path, y_train, y_test, len(names))
    else:
        names = inferred_class_names(path, y_train, y_test)
    return arrays["x_train"], y_train, arrays["x_test"], y_test, names


def _load_npz_targets(data_cfg: Any, task: str) -> RawData:
    """``data=npz`` under a regression loss (``y_*``: numbers, (N,) or (N, targets)) or
    ``loss=multilabel`` (``y_*``: 0/1, (N, labels)); ``class_names`` (optional) names the
    targets or labels."""
    path, arrays = _read_npz(data_cfg)
    y_train, y_test = arrays["y_train"], arrays["y_test"]
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        if y.dtype.kind not in "biuf":
            raise DataError(f"{path}: {key} holds {y.dtype} values, not numbers to predict")
        if task == "multilabel" and (y.ndim != 2 or not np.isin(y, (0, 1)).all()):
            raise DataError(
                f"{path}: {key} must be 0/1 rows, one column per label, for loss=multilabel "
                f"(got shape {y.shape}{'' if y.ndim != 2 else ' with other values'})"
            )
    width = 1 if y_train.ndim == 1 else int(np.prod(y_train.shape[1:]))
    default = ["target"] if task == "regression" and width == 1 else [f"y{i}" for i in range(width)]
    names = [str(n) for n in arrays["class_names"]] if "class_names" in arrays else default
    if len(names) != width:
        raise DataError(f"{path}: class_names names {len(names)} targets, y_train has {width}")
    return arrays["x_train"], y_train, arrays["x_test"], y_test, names


def _read_npz(data_cfg: Any) -> tuple[Path, dict[str, np.ndarray]]:
    """The arrays of ``data.path``'s .npz, checked to hold x/y train/test."""
    if data_cfg.path is None:
        raise ConfigError("data.path", None, "data.name=npz needs the path of an .npz file")
    path = check_path("data.path", data_cfg.path, "file")
    _check_expanded_size(path)
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataError(f"{path} holds a single array, not an .npz archive of named arrays")
        with npz:
            arrays = {k: npz[k] for k in npz.files}
    except DataError:
        raise
    except Exception as exc:  # truncated, not a zip, object arrays (pickles): many types
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {reason}") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DataError(f"{path} lacks arrays: {', '.join(missing)}")
    return path, arrays


def _integer_labels(*labels: np.ndarray) -> np.ndarray | None:
    y = np.concatenate([np.ravel(a) for a in labels])
    return y if y.size and y.dtype.kind in "iu" else None  # others: check_arrays says why


def _listed(values: np.ndarray, most: int = 8) -> str:
    shown = ", ".join(str(int(v)) for v in values[:most])
    return shown + (f" ... ({len(values)} in all)" if len(values) > most else "")


def _labels(values: np.ndarray) -> str:
    return f"label{'s' if len(values) > 1 else ''} {_listed(values)}"


def check_declared_labels(path: Path, y_train: np.ndarray, y_test: np.ndarray, n: int) -> None:
    """Refuse labels outside the ``n`` classes that ``class_names`` declares."""
    y = _integer_labels(y_train, y_test)
    if y is None:
        return
    outside = np.unique(y[(y < 0) | (y >= n)])
    if outside.size:
        raise DataError(
            f"{path}: {_labels(outside)} out of range [0, {n - 1}] of the {n} classes in "
            "class_names: fix the labels or list every class in class_names"
        )


def inferred_class_names(path: Path, y_train: np.ndarray, y_test: np.ndarray) -> list[str]:
    """Classes 0..max(label) of an .npz without ``class_names``, each with a training example.

    A class with no training example would be a softmax output the model never learns
    (one stray label 99 among 0..9 makes 90 of them): refused, naming the labels.
    """
    y = _integer_labels(y_train, y_test)
    if y is None:
        return ["0", "1"]
    if y.min() < 0:
        negative = np.unique(y[y < 0])
        raise DataError(f"{path}: {_labels(negative)} out of range: class labels are 0, 1, 2, ...")
    top = int(y.max())
    y_fit = _integer_labels(y_train)
    seen = np.unique(y_fit) if y_fit is not None else np.array([], dtype=np.int64)
    missing = np.setdiff1d(np.arange(top + 1), seen)
    if missing.size:
        present = np.unique(y)
        raise DataError(
            f"{path}: labels run 0..{top} but classes {_listed(missing)} have no training "
            f"example (labels present: {_listed(present)}): relabel to 0..K-1, or declare "
            f"the classes with a class_names array in the .npz"
        )
    return [str(i) for i in range(top + 1)]


def _check_expanded_size(path: Path, memory: int | None = None) -> None:
    """Refuse an archive whose arrays would not fit in ``memory`` bytes (default: this
    machine's RAM) before reading it: a zip bomb of a few kB can declare gigabytes."""
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # not a zip: np.load reports what it is
    if memory is None:
        try:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # not POSIX
            return
    if total > memory:
        raise DataError(
            f"{path} expands to {total / 1e9:.1f} GB, more than this machine's "
            f"{memory / 1e9:.1f} GB of memory"
        )


def _label_vector(y: np.ndarray) -> np.ndarray:
    # (N, 1) columns, as keras.datasets returns them, are a label vector too.
    return y.ravel() if y.ndim == 2 and y.shape[1] == 1 else y


def load_dataset(data_cfg: Any, task: str = "classification") -> Dataset | StreamedDataset:
    """Load the data set named by ``data_cfg.name`` and prepare its three splits.

    Order matters for honest numbers: the test split is set aside first; ``limit`` then acts
    on the training data; the validation split is carved from what remains (stratified,
    seeded); ``imbalance`` makes only the rest, the examples trained on, long-tailed, so
    validation follows the test split's distribution (dev and test from one distribution:
    the epoch kept for its validation score is the one best on the test's terms);
    normalisation statistics come from the training split. ``task`` (the loss's, from
    :func:`kerasdiag.config.schema.loss_task`) says what a CSV table's target column(s) hold.

    Image folders and CSV tables are streamed from disk: a
    :class:`~kerasdiag.data.stream.StreamedDataset` (file lists or line splits, and labels; the
    examples are read by tf.data), split by the same rules.

    Example:
        >>> from kerasdiag.config import load_config
        >>> data = load_dataset(load_config().data)  # sklearn's 8x8 digits, offline
        >>> data.input_shape, data.num_classes
        ((8, 8, 1), 10)
    """
    if data_cfg.name not in DATASETS:
        raise ConfigError("data.name", data_cfg.name, f"must be one of {sorted(DATASETS)}")
    if data_cfg.name == "csv":  # its target column(s) serve the loss's task
        return stream_csv(data_cfg, task)
    if data_cfg.name in STREAMED:
        return STREAMED[data_cfg.name](data_cfg)
    if data_cfg.name == "npz" and task != "classification":
        raw = _load_npz_targets(data_cfg, task)
        return prepare_target_splits(data_cfg, task, *raw)
    x_train, y_train, x_test, y_test, names = LOADERS[data_cfg.name](data_cfg)
    task = DATASET_TASKS.get(data_cfg.name, ("classification",))[0]
    if task != "classification":
        return prepare_target_splits(data_cfg, task, x_train, y_train, x_test, y_test, names)
    return prepare_splits(data_cfg, x_train, y_train, x_test, y_test, names)


def prepare_target_splits(
    data_cfg: Any,
    task: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    names: list[str],
) -> Dataset:
    """:func:`prepare_splits` for numbers to predict or several 0/1 labels (``task``): the
    same order (limit, validation carved, inputs normalised by training statistics),
    stratified by :func:`target_strata`; targets float32 rows, their training mean and std
    kept for a regression model's head."""
    y_train, y_test = (np.asarray(y, np.float32).reshape(len(y), -1) for y in (y_train, y_test))
    for split, y in (("train", y_train), ("test", y_test)):
        if not np.isfinite(y).all():
            raise DataError(f"{split} split: a target is NaN or infinite")
    if x_train.ndim < 2 or x_train.shape[1:] != x_test.shape[1:] or len(x_train) != len(y_train):
        raise DataError(f"inputs {x_train.shape} and targets {y_train.shape} do not match")
    fit_idx, val_idx = carve_splits(data_cfg, target_strata(y_train), 1)
    x_fit, x_val, x_test, mean, std = normalised(data_cfg, x_train[fit_idx], x_train[val_idx],
                                                 x_test)  # fmt: skip
    data = Dataset(
        name=str(data_cfg.name), x_train=x_fit, y_train=y_train[fit_idx], x_val=x_val,
        y_val=y_train[val_idx], x_test=x_test, y_test=y_test, num_classes=y_train.shape[1],
        class_names=list(names), mean=mean, std=std, task=task,
    )  # fmt: skip
    if task == "regression" and data_cfg.get("scale_target", True):
        scale_targets(data)
    return data


def scale_targets(data: Any) -> None:
    """Standardise a regression set's targets by their training mean and std, kept as
    ``target_mean`` and ``target_std``: the loss is then of unit order at initialisation,
    whatever the targets' units (a gradient norm, a learning rate and the doctor's
    thresholds mean the same on every table); the metrics report in the targets' units."""
    y = np.asarray(data.y_train, np.float64)
    mean, std = y.mean(0), y.std(0)
    std = np.where(std > 0, std, 1.0)
    data.target_mean, data.target_std = mean.astype(np.float32), std.astype(np.float32)
    for split in ("train", "val", "test"):
        values = getattr(data, f"y_{split}")
        setattr(data, f"y_{split}", ((values - mean) / std).astype(np.float32))


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
    if num_classes < 2:
        raise DataError(f"need at least 2 classes to classify, got {num_classes}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"train inputs are {x_train.shape[1:]} per example but test inputs {x_test.shape[1:]}"
        )
    fit_idx, val_idx = carve_splits(data_cfg, y_train, num_classes)
    x_val, y_val = x_train[val_idx], y_train[val_idx]
    x_train, y_train = x_train[fit_idx], y_train[fit_idx]

    x_train, x_val, x_test, mean, std = normalised(data_cfg, x_train, x_val, x_test)
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


def normalised(data_cfg: Any, x_train: np.ndarray, x_val: np.ndarray, x_test: np.ndarray):
    """The three splits' inputs as float32, standardised by the training split's statistics
    (``data.normalize``), and those statistics: ``(x_train, x_val, x_test, mean, std)``."""
    x_train, x_val, x_test = (a.astype(np.float32) for a in (x_train, x_val, x_test))
    mean = std = None
    if data_cfg.normalize:
        mean, std = normalisation_stats(x_train)
        x_train, x_val, x_test = ((a - mean) / std for a in (x_train, x_val, x_test))
    for split, x in (("train", x_train), ("validation", x_val), ("test", x_test)):
        if not np.isfinite(x).all():  # float64 values beyond float32's range become Inf
            raise DataError(f"{split} split: input values overflow float32 (|x| > 3.4e38)")
    return x_train, x_val, x_test, mean, std


def carve_splits(
    data_cfg: Any, y_train: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the training data ``(trained on, validation)``, as ``data_cfg`` says:
    ``limit`` first, then the validation split (stratified, seeded by ``data.seed``), then
    ``imbalance`` on what is trained on only. Shared by the in-memory and streamed sets."""
    seed = int(data_cfg.seed)
    keep = np.arange(len(y_train))
    if data_cfg.limit is not None:
        keep = stratified_subsample(y_train, int(data_cfg.limit), seed)
    fit_idx, val_idx = stratified_split(y_train[keep], float(data_cfg.val_fraction), seed)
    if len(fit_idx) == 0 or len(val_idx) == 0:
        raise DataError(
            f"{len(keep)} training examples are too few to carve a validation split "
            f"(data.val_fraction={data_cfg.val_fraction}, data.limit={data_cfg.limit})"
        )
    fit_idx, val_idx = keep[fit_idx], keep[val_idx]
    if data_cfg.imbalance is not None:
        kept = imbalance_subsample(y_train[fit_idx], float(data_cfg.imbalance), num_classes, seed)
        fit_idx = fit_idx[kept]
    return fit_idx, val_idx


def _streamed_options(data_cfg: Any) -> dict[str, Any]:
    if data_cfg.name != "image_folder":
        augment = data_cfg.get("augment") or {}
        on = [k for k in ("flip", "crop", "noise") if augment.get(k)]
        if on:  # a record stream's epochs are not augmented: say so rather than ignore it
            raise ConfigError(
                f"data.augment.{on[0]}", augment.get(on[0]),
                f"is not applied to data={data_cfg.name} (streamed): set it to 0/false",
            )  # fmt: skip
    return {
        "name": str(data_cfg.name),
        "normalize": bool(data_cfg.normalize),
        "on_bad_file": str(data_cfg.get("on_bad_file", "fail")),
        "sample_size": int(data_cfg.get("sample_size", 1000)),
        "cache": data_cfg.get("cache"),
    }


def stream_image_folder(data_cfg: Any) -> ImageFolderStream:
    """``data=image_folder``: the folder's splits as file lists (no pixel read yet), split
    as the in-memory sets are (:func:`carve_splits`); read by tf.data when trained on."""
    files, labels, test_files, test_labels, names = image_folder_files(data_cfg)
    fit_idx, val_idx = carve_splits(data_cfg, labels, len(names))
    return ImageFolderStream(
        **_streamed_options(data_cfg),
        files={
            "train": [files[i] for i in fit_idx],
            "val": [files[i] for i in val_idx],
            "test": test_files,
        },
        y_train=labels[fit_idx],
        y_val=labels[val_idx],
        y_test=test_labels,
        num_classes=len(names),
        class_names=names,
        image_size=tuple(int(s) for s in data_cfg.image_size),
        color_mode=str(data_cfg.color_mode),
    )


def stream_csv(data_cfg: Any, task: str = "classification") -> CsvStream:
    """``data=csv``: the table checked in one pass (:func:`read_csv_table`; bad rows skipped
    and counted or refused by ``data.on_bad_file``), split by line as the in-memory sets are
    (test held out with seed 0, then :func:`carve_splits`); read by tf.data when trained on.
    ``task`` (the loss's): the target column is a class column, or the target columns hold
    numbers to predict (``regression``) or 0/1 labels (``multilabel``)."""
    table = read_csv_table(data_cfg, task)
    if task != "classification":
        return _stream_csv_targets(data_cfg, table, task)
    stream = CsvStream(
        **_streamed_options(data_cfg),
        y_train=np.zeros(0, np.int64), y_val=np.zeros(0, np.int64), y_test=np.zeros(0, np.int64),
        num_classes=len(table.class_names),
        class_names=table.class_names,
        path=str(table.path),
        columns=table.columns,
        feature_columns=table.feature_columns,
        line_split=np.full(len(table.line_labels), -1, np.int8),
        line_labels=table.line_labels,
        shuffle_buffer=int(data_cfg.shuffle_buffer),
    )  # fmt: skip
    for line, reason in table.bad:
        stream._refuse_or_skip(f"{table.path} line {line}", reason)
    if len(table.class_names) < 2:
        raise DataError(f"need at least 2 classes to classify, got {len(table.class_names)}")
    lines = np.flatnonzero(table.line_labels >= 0)
    y = table.line_labels[lines].astype(np.int64)
    rest, test = stratified_split(y, float(data_cfg.test_fraction), TEST_SEED)
    fit_idx, val_idx = carve_splits(data_cfg, y[rest], len(table.class_names))
    stream.line_split[lines[test]] = 2
    stream.line_split[lines[rest[val_idx]]] = 1
    stream.line_split[lines[rest[fit_idx]]] = 0
    stream._set_labels()
    return stream


def _stream_csv_targets(data_cfg: Any, table: Any, task: str) -> CsvStream:
    """:func:`stream_csv` for numbers to predict or 0/1 labels: each line's target row is its
    label, the splits stratified by :func:`target_strata`, a regression's targets
    standardised by the training lines' (``data.scale_target``)."""
    empty = np.zeros((0, table.targets.shape[1]), np.float32)
    stream = CsvStream(
        **_streamed_options(data_cfg), y_train=empty, y_val=empty, y_test=empty,
        num_classes=table.targets.shape[1], class_names=list(table.class_names),
        path=str(table.path), columns=table.columns, feature_columns=table.feature_columns,
        line_split=np.full(len(table.targets), -1, np.int8), line_labels=table.targets,
        shuffle_buffer=int(data_cfg.shuffle_buffer), task=task,
    )  # fmt: skip
    for line, reason in table.bad:
        stream._refuse_or_skip(f"{table.path} line {line}", reason)
    lines = np.flatnonzero(table.line_labels >= 0)
    if len(lines) < 3:
        raise DataError(f"{table.path}: {len(lines)} rows are too few to split")
    strata = target_strata(table.targets[lines])
    rest, test = stratified_split(strata, float(data_cfg.test_fraction), TEST_SEED)
    fit_idx, val_idx = carve_splits(data_cfg, strata[rest], 1)
    stream.line_split[lines[test]] = 2
    stream.line_split[lines[rest[val_idx]]] = 1
    stream.line_split[lines[rest[fit_idx]]] = 0
    stream._set_labels()
    if task == "regression" and data_cfg.get("scale_target", True):
        scale_targets(stream)
        known = stream.line_split >= 0
        stream.line_labels[known] = (stream.line_labels[known] - stream.target_mean) / (
            stream.target_std
        )
        stream._set_labels()  # from the scaled lines: as a resumed run reads them back
    return stream


def stream_tfrecord(data_cfg: Any) -> TFRecordStream:
    """``data=tfrecord data.path='train-*.tfrecord'``: shards of ``tf.train.Example`` with an
    encoded image (``image``, bytes) and its class index (``label``, int64). One pass reads
    the labels (no image is decoded); a shard that cannot be read is refused, or skipped whole
    (``data.on_bad_file``). Split by record as a table is by line (test held out with seed
    0); the images are decoded and resized (``data.image_size``) when read."""
    import tensorflow as tf

    from kerasdiag.data.files import tf_reason
    from kerasdiag.data.stream import TFRECORD_LABEL

    files = sorted(glob.glob(os.path.expanduser(str(data_cfg.path))))
    if not files:
        raise ConfigError("data.path", data_cfg.path, "matches no file")
    spec = {TFRECORD_LABEL: tf.io.FixedLenFeature([], tf.int64)}
    stream = TFRecordStream(
        **_streamed_options(data_cfg),
        y_train=np.zeros(0, np.int64), y_val=np.zeros(0, np.int64), y_test=np.zeros(0, np.int64),
        num_classes=0, class_names=[], path=str(data_cfg.path), files=[],
        line_split=np.zeros(0, np.int8), line_labels=np.zeros(0, np.int32),
        shuffle_buffer=int(data_cfg.shuffle_buffer),
        image_size=tuple(int(s) for s in data_cfg.image_size),
        color_mode=str(data_cfg.color_mode),
    )  # fmt: skip
    labels = []
    for path in files:
        ds = tf.data.TFRecordDataset(path).map(
            lambda r: tf.io.parse_single_example(r, spec)[TFRECORD_LABEL], tf.data.AUTOTUNE
        )
        try:
            labels.append(
                np.concatenate([np.zeros(0, np.int64), *ds.batch(4096).as_numpy_iterator()])
            )
        except tf.errors.OpError as exc:  # corrupt, truncated, or records without a label
            stream._refuse_or_skip(path, f"cannot read its records: {tf_reason(exc)}", "",
                                   "TFRecord file")  # fmt: skip
            continue
        stream.files.append(path)
    if not stream.files or not sum(len(y) for y in labels):
        raise DataError(f"data.path={data_cfg.path}: no readable record")
    y = np.concatenate(labels)
    if y.min() < 0:
        raise DataError(f"{data_cfg.path}: label {int(y.min())} is negative (class indices 0..K-1)")
    names = [str(i) for i in range(int(y.max()) + 1)]
    if len(names) < 2:
        raise DataError(f"need at least 2 classes to classify, got {len(names)}")
    stream.num_classes, stream.class_names = len(names), names
    stream.line_labels = y.astype(np.int32)
    stream.line_split = np.full(len(y), -1, np.int8)
    rest, test = stratified_split(y, float(data_cfg.test_fraction), TEST_SEED)
    fit_idx, val_idx = carve_splits(data_cfg, y[rest], len(names))
    stream.line_split[test] = 2
    stream.line_split[rest[val_idx]] = 1
    stream.line_split[rest[fit_idx]] = 0
    stream._set_labels()
    return stream


LOADERS: dict[str, Callable[[Any], RawData]] = {
    "digits": _load_digits,
    "digits_attributes": _load_digits_attributes,
    "diabetes": _load_diabetes,
    "cifar10": _load_cifar10,
    "npz": _load_npz,
}
# Sources streamed from disk by tf.data rather than loaded into arrays.
STREAMED: dict[str, Callable[[Any], StreamedDataset]] = {
    "image_folder": stream_image_folder,
    "csv": stream_csv,
    "tfrecord": stream_tfrecord,
}
assert set(LOADERS) | set(STREAMED) == set(DATASETS), "schema.DATASETS names one loader each"


def check_batch_size(data_cfg: Any, data: Dataset) -> None:
    """Refuse a ``data.batch_size`` larger than the training split: Keras would train on one
    short batch per epoch without a word, which a typo'd size (an extra zero or three) means.

    A check of the command line's run, not of :func:`load_dataset`: a library caller may
    load a tiny set with the default size and batch it otherwise.
    """
    batch_size, examples = data_cfg.get("batch_size"), len(data.y_train)
    if batch_size is not None and int(batch_size) > examples:
        raise ConfigError(
            "data.batch_size", batch_size,
            f"is larger than the training split ({examples} examples): choose at most {examples}",
        )  # fmt: skip
