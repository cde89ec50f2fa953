"""Data a user has on disk: a folder of images (one subfolder per class) and a CSV table.

Both give the raw arrays the other loaders give (``kerasdiag.data.loaders.RawData``), so they go
through the same checks, splits, training-only normalisation and augmentation. Every problem
that can be seen without TensorFlow (missing path, empty folder, missing target column,
non-numeric feature) is one :class:`DataError`/:class:`ConfigError` line before it starts.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from kerasdiag.config.checks import check_path
from kerasdiag.core.errors import ConfigError, DataError, shorten
from kerasdiag.data.splits import stratified_split

# What keras.utils.image_dataset_from_directory reads.
IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
CHANNELS = {"rgb": 3, "grayscale": 1, "rgba": 4}
# Held out as the test split when the data has no test split of its own; seed 0 whatever
# data.seed says, so test scores stay comparable between runs.
TEST_SEED = 0

RawData = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]


def _existing(data_cfg: Any, kind: str) -> Path:
    if data_cfg.path is None:
        raise ConfigError(
            "data.path", None, f"data.name={data_cfg.name} needs the path of a {kind}"
        )
    return check_path("data.path", data_cfg.path, kind)


def _hold_out_test(x: np.ndarray, y: np.ndarray, names: list[str], data_cfg: Any) -> RawData:
    train, test = stratified_split(y, float(data_cfg.test_fraction), TEST_SEED)
    return x[train], y[train], x[test], y[test], names


# -- image folders -------------------------------------------------------------------------------


def image_files(folder: Path) -> dict[str, list[Path]]:
    """``{class name: image files}`` of a folder with one subfolder per class, in Keras' order
    (class names sorted; files sorted, subfolders of a class included)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {
        name: sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMAGE_FORMATS)
        for name in classes
    }


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    files = image_files(folder)
    if not files:
        raise DataError(
            f"{folder} has no class subfolders: expected {folder}/<class name>/<image> "
            f"({', '.join(IMAGE_FORMATS)})"
        )
    empty = [name for name, found in files.items() if not found]
    if empty:
        raise DataError(
            f"{folder}: class folder{'s' if len(empty) > 1 else ''} {', '.join(empty)} "
            f"hold{'' if len(empty) > 1 else 's'} no images ({', '.join(IMAGE_FORMATS)})"
        )
    return files


def tf_reason(exc: Exception) -> str:
    """TensorFlow's error text without its op and function-node decorations."""
    text = getattr(exc, "message", None) or str(exc)
    text = re.sub(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]|\s+name:\s*$", "", text.strip()).strip()
    return shorten(text, 200)


def _labelled_files(folder: Path, names: list[str] | None = None):
    files = _class_folders(folder)
    if names is not None and list(files) != names:
        raise DataError(
            f"{folder}: classes {', '.join(files)} differ from the training classes "
            f"{', '.join(names)}"
        )
    paths = [str(p) for found in files.values() for p in found]
    labels = np.concatenate(
        [np.full(len(found), c, np.int64) for c, found in enumerate(files.values())]
    )
    return paths, labels, list(files)


def image_folder_files(data_cfg: Any):
    """``data=image_folder data.path=DIR``: ``DIR/<class>/<image>`` (Keras'
    ``image_dataset_from_directory`` conventions: classes in sorted order, .png/.jpg/.jpeg/
    .bmp/.gif, resized to ``data.image_size`` when read), or ``DIR/train/<class>/`` and
    ``DIR/test/<class>/``. Without a test folder, ``data.test_fraction`` of the images is held
    out (stratified, seed 0) as the test split.

    Returns ``(train files, train labels, test files, test labels, class names)``: paths and
    labels only; no image is read here (:mod:`kerasdiag.data.stream` reads them)."""
    folder = _existing(data_cfg, "directory")
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        files, labels, names = _labelled_files(folder / "train")
        test_files, test_labels, _ = _labelled_files(folder / "test", names)
        return files, labels, test_files, test_labels, names
    files, labels, names = _labelled_files(folder)
    if len(names) < 2:
        raise DataError(f"need at least 2 classes to classify, got {len(names)} in {folder}")
    train, test = stratified_split(labels, float(data_cfg.test_fraction), TEST_SEED)
    return [files[i] for i in train], labels[train], [files[i] for i in test], labels[test], names


# -- CSV tables ----------------------------------------------------------------------------------


def load_csv(data_cfg: Any) -> RawData:
    """``data=csv data.path=FILE data.target=COLUMN``: a header row, numeric feature columns
    (an empty cell is a missing value, refused by the NaN check), and a categorical target
    column: its distinct values, sorted (numerically when they are all numbers), are the
    classes. ``data.test_fraction`` is held out (stratified, seed 0) as the test split.

    Read in one pass into float32 rows: nothing but the table is kept.
    """
    path = _existing(data_cfg, "file")
    if not data_cfg.target:
        raise ConfigError("data.target", data_cfg.target, "data=csv needs the target column's name")
    target = str(data_cfg.target)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise DataError(f"{path} is empty: expected a header row naming the columns")
        if target not in header:
            raise ConfigError(
                "data.target", target, f"is not a column of {path} (columns: {', '.join(header)})"
            )
        t = header.index(target)
        features = [h for i, h in enumerate(header) if i != t]
        if not features:
            raise DataError(f"{path}: no feature columns besides the target {target!r}")
        rows, labels = [], []
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path} line {line}: {len(row)} cells, the header has {len(header)}"
                )
            labels.append(row[t].strip())
            rows.append([_number(path, line, header[i], c) for i, c in enumerate(row) if i != t])
    if not rows:
        raise DataError(f"{path} has a header but no rows")
    names = _class_names(labels)
    index = {name: i for i, name in enumerate(names)}
    y = np.array([index[v] for v in labels], np.int64)
    return _hold_out_test(np.array(rows, np.float32), y, names, data_cfg)


def _number(path: Path, line: int, column: str, cell: str) -> float:
    cell = cell.strip()
    if not cell:
        return math.nan  # missing: the NaN check names it
    try:
        return float(cell)
    except ValueError:
        raise DataError(
            f"{path} line {line}: column {column!r} holds {cell!r}, not a number: features "
            "must be numeric (encode categories as numbers, or drop the column)"
        ) from None


def _class_names(labels: list[str]) -> list[str]:
    distinct = set(labels)
    if "" in distinct:
        raise DataError("the target column has empty cells: every row needs a class")
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)
