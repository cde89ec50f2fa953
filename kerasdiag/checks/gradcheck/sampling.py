"""Which entries a sampled gradient check compares.

Checking every entry of a large model costs two forward passes per weight. Sampling a few
entries uniformly over all parameters would, in practice, only ever pick kernel entries:
biases and other small variables would go unchecked, and a missing bias gradient would
pass. The sampling here is stratified: every variable gets ``dims_per_variable`` entries
(all of them when it has fewer), drawn without replacement by a seeded generator.

An Embedding's gradient lives only in the rows the batch looks up (a dozen of thousands):
uniform entries of its table would compare 0 with 0 and pass a wrong gradient. Such a
variable is sampled among ``prefer``: the entries of the rows the batch uses.

Example:
    >>> var_idx, flat_idx = stratified_sample([(100, 10), (10,)], dims_per_variable=3, seed=0)
    >>> var_idx.tolist()
    [0, 0, 0, 1, 1, 1]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def stratified_sample(
    shapes: Sequence[tuple[int, ...]],
    dims_per_variable: int,
    seed: int = 0,
    include: Sequence[int] | None = None,
    prefer: Mapping[int, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(variable index, flat entry index)`` arrays: ``dims_per_variable`` per variable.

    ``include`` restricts the check to those variable indices (all by default); ``prefer``
    maps a variable index to the flat entries its draw is made from (when not empty).
    """
    rng = np.random.default_rng(seed)
    var_idx, flat_idx = [], []
    for i, shape in enumerate(shapes):
        size = int(np.prod(shape, dtype=np.int64))
        # Draw for every variable, checked or not, so a variable's entries do not depend
        # on which others are included (nor on which are drawn from preferred entries).
        picked = np.sort(rng.choice(size, size=min(size, dims_per_variable), replace=False))
        pool = None if prefer is None else prefer.get(i)
        if pool is not None and len(pool):
            own = np.random.default_rng([seed, i])
            picked = np.sort(
                own.choice(pool, size=min(len(pool), dims_per_variable), replace=False)
            )
        if include is not None and i not in include:
            continue
        var_idx.extend([i] * len(picked))
        flat_idx.extend(picked.tolist())
    return np.asarray(var_idx, np.int64), np.asarray(flat_idx, np.int64)


def used_rows(gradient: np.ndarray) -> np.ndarray:
    """The flat entries of the rows (first axis) where ``gradient`` is not all zero: for an
    Embedding table, the rows the batch looked up."""
    g = np.asarray(gradient)
    if g.ndim < 1:
        return np.zeros(0, np.int64)
    rows = np.flatnonzero(np.any(g.reshape(len(g), -1) != 0, axis=1))
    width = int(np.prod(g.shape[1:], dtype=np.int64))
    return (rows[:, None] * width + np.arange(width)[None, :]).reshape(-1)


def unravel(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The multi-dimensional index of a flat entry (for the report)."""
    return tuple(int(i) for i in np.unravel_index(int(flat_index), shape)) if shape else ()
