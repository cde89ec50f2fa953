"""Splitting, subsampling and normalisation, all seeded and stratified."""

from __future__ import annotations

import numpy as np

from kerasdiag.core.errors import DataError


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out): ``round(fraction * N)`` held out, every class in proportion.

    Per-class counts use the largest-remainder rule, so the total is exact and each class
    with at least two examples keeps one on either side.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    n_held = int(round(fraction * len(y)))
    quota = counts * n_held / len(y)
    held_per_class = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - held_per_class), kind="stable")[: n_held - held_per_class.sum()]:
        held_per_class[i] += 1
    both_sides = counts > 1
    held_per_class = np.where(both_sides, np.clip(held_per_class, 1, counts - 1), 0)
    keep, held = [], []
    for c, n in zip(classes, held_per_class, strict=True):
        idx = rng.permutation(np.flatnonzero(y == c))
        held.append(idx[:n])
        keep.append(idx[n:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def stratified_subsample(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of ``limit`` examples (all if fewer), keeping the class proportions."""
    if limit >= len(y):
        return np.arange(len(y))
    _, kept = stratified_split(y, limit / len(y), seed)
    return kept


def imbalance_subsample(y: np.ndarray, ratio: float, num_classes: int, seed: int) -> np.ndarray:
    """Long-tailed subsample: class c keeps ``ratio ** (c / (C - 1))`` of its examples.

    Class 0 keeps everything and the last class keeps ``ratio`` of it (the CIFAR-10-LT profile),
    so a loss that copes with imbalance (focal) has something to do.
    """
    rng = np.random.default_rng(seed)
    kept = []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        frac = ratio ** (c / max(1, num_classes - 1))
        kept.append(idx[: max(1, int(round(frac * len(idx))))])
    return np.sort(np.concatenate(kept))


def check_arrays(x: np.ndarray, y: np.ndarray, num_classes: int, split: str) -> None:
    """Reject data a model must not see: NaN/Inf, bad shapes or dtypes, labels out of range."""
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DataError(f"{split} split: inputs and labels must be numpy arrays")
    if x.ndim < 2:
        raise DataError(
            f"{split} split: inputs must be (N, features...) with one row per example, "
            f"got shape {x.shape}"
        )
    if len(x) != len(y):
        raise DataError(f"{split} split: {len(x)} inputs but {len(y)} labels")
    if len(x) == 0:
        raise DataError(f"{split} split is empty")
    if x.dtype.kind not in "iuf":  # bool, complex, strings, objects: not pixel or feature values
        raise DataError(f"{split} split: inputs have non-numeric dtype {x.dtype}")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            first = np.argwhere(bad)[0][0]
            raise DataError(
                f"{split} split: {int(bad.sum())} NaN/Inf input values (first in example {first})"
            )
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(
            f"{split} split: labels must be a 1-D integer array, got {y.dtype} {y.shape}"
        )
    if y.min() < 0 or y.max() >= num_classes:
        bad = y[(y < 0) | (y >= num_classes)]
        raise DataError(
            f"{split} split: label {int(bad[0])} out of range [0, {num_classes - 1}]"
            f" ({len(bad)} such labels)"
        )


def normalisation_stats(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (last axis) mean and std of the training split only."""
    axes = tuple(range(x_train.ndim - 1))
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std = np.where(std < 1e-8, 1.0, std)  # constant features (digits' blank corners) stay 0
    return mean.astype(np.float32), std.astype(np.float32)


def row_hashes(x: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Two 64-bit hashes per row of its bytes, shape (N, 2): equal rows, equal hashes.

    Vectorised (NumPy integer arithmetic, no Python loop over rows): each row's bytes, read
    as 64-bit words, are multiplied by fixed random odd multipliers and summed with
    wrap-around, twice with different multipliers. Rows with equal hashes are compared
    byte for byte before they count as duplicates (:func:`shared_rows`).
    """
    x = np.ascontiguousarray(x)
    rows = x.reshape(len(x), -1).view(np.uint8)
    pad = (-rows.shape[1]) % 8
    width = (rows.shape[1] + pad) // 8
    multipliers = np.random.default_rng(20161).integers(
        1, 2**63, size=(2, width), dtype=np.uint64, endpoint=False
    ) * np.uint64(2) + np.uint64(1)
    out = np.empty((len(rows), 2), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(0, len(rows), chunk):
            block = rows[i : i + chunk]
            if pad:
                block = np.pad(block, ((0, 0), (0, pad)))
            words = np.ascontiguousarray(block).view(np.uint64)
            for k in range(2):
                out[i : i + chunk, k] = (words * multipliers[k]).sum(axis=1, dtype=np.uint64)
    return out
