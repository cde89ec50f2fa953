"""Data a user has on disk: a folder of images (one subfolder per class) and a CSV table.

Neither is loaded into arrays: this module lists a folder's images with their labels and
checks a table's rows in one pass keeping only their labels; :mod:`kerasdiag.data.stream`
reads the examples with tf.data. Every problem that can be seen without TensorFlow (missing
path, empty folder, missing target column, non-numeric feature) is one
:class:`DataError`/:class:`ConfigError` line before it starts.
"""

from __future__ import annotations

import csv
import re
from array import array
from dataclasses import dataclass
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


def _existing(data_cfg: Any, kind: str) -> Path:
    if data_cfg.path is None:
        raise ConfigError(
            "data.path", None, f"data.name={data_cfg.name} needs the path of a {kind}"
        )
    return check_path("data.path", data_cfg.path, kind)


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


@dataclass
class CsvTable:
    """What one pass over a CSV table keeps: per line after the header, its class (-1 for
    a blank or skipped line), and the lines it refused with why."""

    path: Path
    columns: list[str]
    feature_columns: list[int]
    line_labels: np.ndarray  # int32, one per line after the header
    class_names: list[str]
    bad: list[tuple[int, str]]  # (line number in the file, reason)


def read_csv_table(data_cfg: Any) -> CsvTable:
    """``data=csv data.path=FILE data.target=COLUMN``: a header row, numeric feature columns,
    and a categorical target column: its distinct values, sorted (numerically when they are
    all numbers), are the classes. One row per line.

    One streaming pass that checks every row (cell count, numbers, no empty cell) and keeps
    only each line's class: memory a few bytes per row, whatever the table's size. A bad row
    is named by its line (``bad``); what becomes of it is ``data.on_bad_file``'s call.
    """
    path = _existing(data_cfg, "file")
    if not data_cfg.target:
        raise ConfigError("data.target", data_cfg.target, "data=csv needs the target column's name")
    target = str(data_cfg.target)
    label_ids: dict[str, int] = {}
    labels = array("i")
    bad: list[tuple[int, str]] = []
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
        features = [i for i in range(len(header)) if i != t]
        if not features:
            raise DataError(f"{path}: no feature columns besides the target {target!r}")
        line = 1
        for row in reader:
            # blank lines stay lines: the stream (tf.data.TextLineDataset) counts them too
            while line + 1 < reader.line_num:
                labels.append(-1)
                line += 1
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                labels.append(-1)
                continue
            problem = _row_problem(row, header, t, features)
            if problem is not None:
                bad.append((line, problem))
                labels.append(-1)
                continue
            labels.append(label_ids.setdefault(row[t].strip(), len(label_ids)))
    if not label_ids:
        raise DataError(f"{path} has a header but no rows")
    names = _class_names(list(label_ids))
    order = np.array([names.index(v) for v in label_ids], np.int32)
    line_labels = np.frombuffer(labels, np.int32).copy()
    known = line_labels >= 0
    line_labels[known] = order[line_labels[known]]
    return CsvTable(path, header, features, line_labels, names, bad)


def _row_problem(row: list[str], header: list[str], t: int, features: list[int]) -> str | None:
    """Why a row cannot be an example, or None."""
    if len(row) != len(header):
        return f"{len(row)} cells, the header has {len(header)}"
    if not row[t].strip():
        return "the target column is empty: every row needs a class"
    for i in features:
        try:
            _number(header[i], row[i])
        except ValueError as exc:
            return str(exc)
    return None


def _number(column: str, cell: str) -> float:
    cell = cell.strip()
    if not cell:
        raise ValueError(f"column {column!r} is empty (a missing value, NaN): fill or drop it")
    try:
        return float(cell)
    except ValueError:
        raise ValueError(
            f"column {column!r} holds {cell!r}, not a number: features "
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
