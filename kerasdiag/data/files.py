"""Data a user has on disk: a folder of images (one subfolder per class) and a CSV table.

Neither is loaded into arrays: this module lists a folder's images with their labels and
checks a table's rows in one pass keeping only their labels; :mod:`kerasdiag.data.stream`
reads the examples with tf.data. Every problem that can be seen without TensorFlow (missing
path, empty folder, missing target column, non-numeric feature) is one
:class:`DataError`/:class:`ConfigError` line before it starts.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasdiag.config.checks import check_path
from kerasdiag.config.schema import target_columns
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
    # regression and multi-label: the target columns' values, one row per line after the
    # header (NaN for a blank or skipped line); class_names then names the target columns
    targets: np.ndarray | None = None


def read_csv_table(data_cfg: Any, task: str = "classification") -> CsvTable:
    """``data=csv data.path=FILE data.target=COLUMN``: a header row, numeric feature columns,
    and a categorical target column: its distinct values, sorted (numerically when they are
    all numbers), are the classes. One row per line.

    One streaming pass that checks every row (cell count, numbers, no empty cell; by
    TensorFlow's string ops, a batch of lines at a time) and keeps only each line's class:
    memory a few bytes per row, whatever the table's size. A bad row is named by its line
    and why (``bad``); what becomes of it is ``data.on_bad_file``'s call.
    """
    path = _existing(data_cfg, "file")
    if not data_cfg.target:
        raise ConfigError("data.target", data_cfg.target, "data=csv needs the target column's name")
    targets = target_columns(data_cfg.target)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = [h.strip() for h in next(csv.reader([handle.readline()]), [])]
    if not header:
        raise DataError(f"{path} is empty: expected a header row naming the columns")
    for target in targets:
        if target not in header:
            raise ConfigError(
                "data.target", target, f"is not a column of {path} (columns: {', '.join(header)})"
            )
    target = targets[0]
    t = header.index(target)
    columns = [header.index(name) for name in targets]
    features = [i for i in range(len(header)) if i not in columns]
    if not features:
        raise DataError(f"{path}: no feature columns besides the target {target!r}")
    label_ids: dict[bytes, int] = {}
    chunks, bad = [], []
    for start, ok, values, index, bad_index, bad_lines in _checked_lines(path, len(header), t):
        ids = np.full(len(ok), -1, np.int32)
        if ok.any():
            found = np.full(len(values), -1, np.int32)
            for i in np.unique(index[ok]):  # the classes of rows in error are no classes
                found[i] = label_ids.setdefault(values[i], len(label_ids))
            ids[ok] = found[index[ok]]
        for i, line in zip(bad_index.tolist(), bad_lines, strict=True):
            row = next(csv.reader([line.decode("utf-8", "replace")]), [])
            reason = _row_problem(row, header, t, features) or "cannot be parsed"
            bad.append((start + i + 2, reason))
        chunks.append(ids)
    if not label_ids and bad:  # not one usable row: say why, whatever data.on_bad_file says
        line, reason = bad[0]
        raise DataError(
            f"{path}: none of its {len(bad)} rows can be an example (line {line}: {reason})"
        )
    if not label_ids:
        raise DataError(f"{path} has a header but no rows")
    line_labels = np.concatenate(chunks)
    if task != "classification":  # the rows are checked: read the numbers to predict
        known = (line_labels >= 0).astype(np.int32) - 1  # 0: a row, -1: blank or skipped
        values = _target_values(path, header, columns, known, task, data_cfg.target)
        return CsvTable(path, header, features, known, list(targets), bad, values)
    names = _class_names([v.decode("utf-8") for v in label_ids])
    order = np.array([names.index(v.decode("utf-8")) for v in label_ids], np.int32)
    known = line_labels >= 0
    line_labels[known] = order[line_labels[known]]
    return CsvTable(path, header, features, line_labels, names, bad)


def _target_values(
    path: Path, header: list[str], columns: list[int], rows: np.ndarray, task: str, target: Any
) -> np.ndarray:
    """The target columns of every row (``rows`` >= 0) as float32, NaN elsewhere: numbers
    for regression, 0/1 for multi-label. A cell that is not one refuses the table in one
    line naming ``data.target``, the column, the line and the cell: the whole column is
    meant otherwise (classes under a regression loss, a count under multi-label), so no
    row is skipped for it. One pass in Python over the target cells only."""
    values = np.full((len(rows), len(columns)), np.nan, np.float32)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        handle.readline()
        for i, row in enumerate(csv.reader(handle)):
            if i >= len(rows) or rows[i] < 0:
                continue
            for j, c in enumerate(columns):
                values[i, j] = _target_cell(header[c], row[c], i + 2, task, target)
    return values


def _target_cell(column: str, cell: str, line: int, task: str, target: Any) -> float:
    shown = target if isinstance(target, str) else list(target)
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if task == "regression" and not math.isfinite(value):
        raise ConfigError(
            "data.target", shown, f"column {column!r} holds {cell.strip()!r} (line {line}), not "
            "a number: a regression loss (mse, mae, huber) predicts numbers; for classes use "
            "loss=softmax (or binary)"
        )  # fmt: skip
    if task == "multilabel" and value not in (0.0, 1.0):
        raise ConfigError(
            "data.target", shown, f"column {column!r} holds {cell.strip()!r} (line {line}): "
            "loss=multilabel needs 0/1 label columns (one per label); one class column is "
            "loss=softmax, numbers to predict a regression loss (loss=mse)"
        )  # fmt: skip
    return value


# A feature cell: a finite decimal number (what float() reads, less nan and inf).
_NUMBER = r"\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*"


def _checked_lines(path: Path, columns: int, target: int, batch: int = 16384):
    """Batches of the lines after the header, checked by TensorFlow (no Python loop over
    rows): ``(index of the first line, ok, target cells, indices and text of the lines in
    error)``, ``ok`` true for a line of ``columns`` cells, a non-empty target and finite
    numbers elsewhere. ``tf.io.decode_csv`` checks a batch at once; a batch it refuses (a
    malformed line in it) is checked cell by cell with string ops, to say which lines."""
    import tensorflow as tf

    def fast(lines):
        cells = tf.io.decode_csv(lines, record_defaults=[
            tf.constant([], tf.string if i == target else tf.float32) for i in range(columns)
        ])  # fmt: skip
        values = tf.stack([c for i, c in enumerate(cells) if i != target], axis=1)
        label = tf.strings.strip(cells[target])
        ok = tf.reduce_all(tf.math.is_finite(values), axis=1) & (tf.strings.length(label) > 0)
        return _in_error(lines, ok, label)

    def slow(lines):
        cells = tf.strings.split(lines, ",")
        count_ok = cells.row_lengths() == columns
        padded = cells.to_tensor(default_value="", shape=[None, columns])
        numeric = tf.strings.regex_full_match(padded, _NUMBER)
        is_target = tf.one_hot(target, columns, on_value=True, off_value=False, dtype=tf.bool)
        cells_ok = tf.reduce_all(numeric | is_target[None, :], axis=1)
        label = tf.strings.strip(tf.strings.regex_replace(padded[:, target], '^\\s*"|"\\s*$', ""))
        return _in_error(lines, count_ok & cells_ok & (tf.strings.length(label) > 0), label)

    batches = tf.data.TextLineDataset(str(path)).skip(1).batch(batch)
    checked = batches.enumerate().map(lambda k, lines: (k, fast(lines)), tf.data.AUTOTUNE)
    done = dict(checked.ignore_errors().prefetch(2).as_numpy_iterator())
    total = max(done, default=-1) + 1
    if not done or len(done[total - 1][0]) == batch:  # batches refused at the end?
        total += sum(1 for _ in batches.skip(total).map(lambda lines: 0))
    for k in range(total):
        result = done.pop(k, None)
        if result is None:
            result = next(batches.skip(k).take(1).map(slow).as_numpy_iterator())
        yield (k * batch, *result)


def _in_error(lines, ok, label):
    """``(ok, label, indices, text)``: only the lines in error come back to Python (a blank
    line is no row, and no error)."""
    import tensorflow as tf

    wrong = tf.where(~ok & (tf.strings.length(tf.strings.strip(lines)) > 0))[:, 0]
    values, index = tf.unique(label)  # a table has few classes: only they come back
    return ok, values, index, wrong, tf.gather(lines, wrong)


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
        value = float(cell)
    except ValueError:
        raise ValueError(
            f"column {column!r} holds {cell!r}, not a number: features "
            "must be numeric (encode categories as numbers, or drop the column)"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"column {column!r} holds {cell!r}, not a finite number")
    return value


def _class_names(labels: list[str]) -> list[str]:
    distinct = set(labels)
    if "" in distinct:
        raise DataError("the target column has empty cells: every row needs a class")
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)
