"""Data checks before training: leaked duplicates and validation/test shift.

- :func:`check_leakage`: examples of the validation or test split that are exact copies of
  training examples (or test copies of validation ones). A model is scored on examples it has
  memorised, so its validation and test accuracy are too high; the usual cause is a data set
  with duplicate rows split at random, or a test set assembled from training files.
- :func:`check_split_shift`: validation and test drawn from visibly different distributions
  (class frequencies, per-feature mean and standard deviation). The validation score then
  predicts the test score badly, and choices tuned on validation do not carry over (dev
  and test come from the same distribution).

For a streamed data set (an image folder) both read the whole set from the one streaming pass
made before training (a hash per example, per-feature running sums): memory independent of
the pixels' total, not a sample.

Both return a :class:`~kerasdiag.checks.sanity.result.StageResult` with the numbers and one fix, and
both run as sanity stages of a run (``sanity.leakage``, ``sanity.split_shift``). Rows are
compared by a vectorised 128-bit hash of their bytes (then byte for byte), so the
leakage check takes about a second for all of CIFAR-10 (60,000 x 3,072 values); the shift check reads means and standard deviations.
This module imports NumPy and SciPy only.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from scipy import stats as sps

from kerasdiag.checks.sanity.result import StageResult
from kerasdiag.data.splits import row_hashes
from kerasdiag.diagnosis.symptoms import LEAKAGE_FIX, SHIFT_FIX

# Class frequencies: a total variation distance above this, and a chi-square test of
# homogeneity below SHIFT_P_VALUE, is a visible difference.
CLASS_TV = 0.05
SHIFT_P_VALUE = 1e-3
# Features: mean |standardised mean difference| (or mean |log std ratio|) above this, and
# above NOISE_FACTOR times what sampling noise alone gives for these split sizes.
FEATURE_SHIFT = 0.1
NOISE_FACTOR = 3.0
# How many example indices / features the evidence lists.
SHOW = 5


def shared_rows(
    x_ref: np.ndarray,
    x_other: np.ndarray,
    hashes_ref: np.ndarray | None = None,
    hashes_other: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i_other, i_ref)``: row ``i_other`` of ``x_other`` equals row ``i_ref`` of
    ``x_ref`` byte for byte (the first matching reference row). Precomputed
    :func:`row_hashes` of either array may be passed."""
    empty = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(x_ref) == 0 or len(x_other) == 0:
        return empty
    if x_ref.dtype != x_other.dtype or x_ref.shape[1:] != x_other.shape[1:]:
        return empty
    h_ref = row_hashes(x_ref) if hashes_ref is None else hashes_ref
    h_other = row_hashes(x_other) if hashes_other is None else hashes_other
    first: dict[tuple[int, int], int] = {}
    for i, (a, b) in enumerate(h_ref.tolist()):
        first.setdefault((a, b), i)
    pairs = []
    for j, (a, b) in enumerate(h_other.tolist()):
        i = first.get((a, b))
        if i is not None and np.array_equal(x_other[j], x_ref[i]):
            pairs.append((j, i))
    if not pairs:
        return empty
    other, ref = np.array(pairs, dtype=np.int64).T
    return other, ref


def shared_hashes(h_ref: np.ndarray, h_other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`shared_rows`, from the rows' 128-bit :func:`row_hashes` alone: what a
    streamed data set keeps of its examples (two rows with equal hashes by chance: about
    one in 2**128 per pair)."""
    first: dict[tuple[int, int], int] = {}
    for i, key in enumerate(map(tuple, h_ref.tolist())):
        first.setdefault(key, i)
    pairs = [(j, first[k]) for j, k in enumerate(map(tuple, h_other.tolist())) if k in first]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    other, ref = np.array(pairs, dtype=np.int64).T
    return other, ref


def check_leakage(
    data: Any = None,
    *,
    x_train: Any = None,
    x_val: Any = None,
    x_test: Any = None,
    y_train: Any = None,
    y_val: Any = None,
    y_test: Any = None,
) -> StageResult:
    """Name examples shared by training and validation/test (and validation and test).

    Pass a kerasdiag ``Dataset`` as ``data``, or the arrays by name (any of val/test may be
    None). Fails when any example is shared; the counts, the share of each split and the
    first few indices are in ``details`` (with how many duplicates carry the same label).

    Sample and class weights take no part: a validation or test example that copies a
    training example inflates the scores whatever weight training gave it (a copy of a
    weight-0 example still makes validation easier when the class is learnt from others).
    """
    start = time.perf_counter()
    streamed = _streamed(data)
    if streamed is not None:  # the whole streamed set, from its streaming pass's hashes
        labels = {k: s.labels for k, s in streamed.items()}
        hashes = {k: s.hashes for k, s in streamed.items()}
        sizes = {k: s.count for k, s in streamed.items()}
    else:
        splits = _splits(data, x_train=x_train, x_val=x_val, x_test=x_test)
        labels = _splits(data, x_train=y_train, x_val=y_val, x_test=y_test, labels=True)
        hashes = {k: row_hashes(v) for k, v in splits.items() if v is not None}
        sizes = {k: len(v) for k, v in splits.items() if v is not None}
    details: dict[str, Any] = {}
    parts = []
    for ref, other in (("train", "val"), ("train", "test"), ("val", "test")):
        if ref not in hashes or other not in hashes:
            continue
        if streamed is not None:
            i_other, i_ref = shared_hashes(hashes[ref], hashes[other])
        else:
            i_other, i_ref = shared_rows(splits[ref], splits[other], hashes[ref], hashes[other])
        n = sizes[other]
        entry: dict[str, Any] = {
            "count": int(len(i_other)),
            "of": int(n),
            "fraction": len(i_other) / n if n else 0.0,
            f"{other}_indices": i_other[:SHOW].tolist(),
            f"{ref}_indices": i_ref[:SHOW].tolist(),
        }
        if labels.get(ref) is not None and labels.get(other) is not None and len(i_other):
            same = np.asarray(labels[other])[i_other] == np.asarray(labels[ref])[i_ref]
            entry["same_label"] = int(np.sum(same))
        details[f"{ref}/{other}"] = entry
        if len(i_other):
            parts.append(
                f"{len(i_other)} of {n} {_long(other)} examples ({len(i_other) / n:.1%}) are "
                f"exact copies of {_long(ref)} examples (e.g. {other}[{i_other[0]}] = "
                f"{ref}[{i_ref[0]}])"
            )
    seconds = time.perf_counter() - start
    total = sum(e["count"] for e in details.values())
    if not details:
        return StageResult("leakage", None, message="skipped: no validation or test split")
    if total:
        return StageResult(
            "leakage",
            False,
            float(total),
            0.0,
            f"leaked duplicates: {'; '.join(parts)}. Their scores are inflated.",
            seconds,
            details,
            fix=LEAKAGE_FIX,
        )
    compared = ", ".join(f"{k} ({e['of']})" for k, e in details.items())
    return StageResult(
        "leakage", True, 0.0, 0.0, f"no example shared between {compared}", seconds, details
    )


def check_split_shift(
    data: Any = None,
    *,
    x_val: Any = None,
    y_val: Any = None,
    x_test: Any = None,
    y_test: Any = None,
    num_classes: int | None = None,
) -> StageResult:
    """Warn when validation and test visibly differ: class frequencies or feature statistics.

    Classes: the total variation distance between the two class distributions (half the sum
    of the absolute differences of the frequencies) above ``CLASS_TV`` with a chi-square test
    of homogeneity at p < ``SHIFT_P_VALUE``. Features (flattened: pixels x channels for
    images): the mean over features of |mean_val - mean_test| / pooled std, and of
    |log(std_val / std_test)|, each above ``FEATURE_SHIFT`` and above ``NOISE_FACTOR`` times
    the value sampling noise alone gives for these sizes (constant features are left out).

    Sample and class weights take no part: they weigh the training loss, while this check
    compares the validation and test splits, which Keras scores unweighted by default.
    """
    start = time.perf_counter()
    streamed = _streamed(data)
    if streamed is not None:  # the whole streamed set, from its streaming pass's sums
        val, test = streamed["val"], streamed["test"]
        y_val, y_test, num_classes = val.labels, test.labels, int(data.num_classes)
        n_a, n_b = val.count, test.count
    else:
        if data is not None:
            x_val, y_val, x_test, y_test = data.x_val, data.y_val, data.x_test, data.y_test
            num_classes = int(data.num_classes)
        n_a = 0 if x_val is None else len(x_val)
        n_b = 0 if x_test is None else len(x_test)
    if n_a < 2 or n_b < 2:
        return StageResult("split_shift", None, message="skipped: needs validation and test")
    details: dict[str, Any] = {"val": int(n_a), "test": int(n_b)}
    problems = []

    if y_val is not None and y_test is not None:
        y_v = np.asarray(y_val).reshape(len(y_val), -1)
        y_t = np.asarray(y_test).reshape(len(y_test), -1)
        if y_v.shape[1] == 1 and np.issubdtype(y_v.dtype, np.integer):
            k = num_classes or int(max(y_v.max(), y_t.max()) + 1)
            c_v = np.bincount(y_v[:, 0], minlength=k)
            c_t = np.bincount(y_t[:, 0], minlength=k)
            f_v, f_t = c_v / c_v.sum(), c_t / c_t.sum()
            tv = 0.5 * float(np.abs(f_v - f_t).sum())
            seen = (c_v + c_t) > 0
            p = (
                float(sps.chi2_contingency(np.stack([c_v[seen], c_t[seen]]))[1])
                if seen.sum() > 1
                else 1.0
            )
            worst = np.argsort(-np.abs(f_v - f_t))[:3]
            details["classes"] = {
                "total_variation": tv,
                "p_value": p,
                "val_frequencies": f_v.round(4).tolist(),
                "test_frequencies": f_t.round(4).tolist(),
            }
            if tv > CLASS_TV and p < SHIFT_P_VALUE:
                most = ", ".join(f"class {c}: {f_v[c]:.1%} vs {f_t[c]:.1%}" for c in worst)
                problems.append(
                    f"class frequencies differ (total variation {tv:.3f} > {CLASS_TV}, "
                    f"chi-square p = {p:.1e}; {most})"
                )

    if streamed is not None:
        (m_a, s_a), (m_b, s_b) = val.feature_moments(), test.feature_moments()
    else:
        a = np.asarray(x_val, dtype=np.float64).reshape(n_a, -1)
        b = np.asarray(x_test, dtype=np.float64).reshape(n_b, -1)
        m_a, m_b = a.mean(0), b.mean(0)
        s_a, s_b = a.std(0, ddof=1), b.std(0, ddof=1)
    pooled = np.sqrt((s_a**2 + s_b**2) / 2)
    varying = (s_a > 1e-8 * (1 + np.abs(m_a))) & (s_b > 1e-8 * (1 + np.abs(m_b)))
    if varying.any():
        d = np.abs(m_a - m_b)[varying] / pooled[varying]
        log_ratio = np.abs(np.log(s_a[varying] / s_b[varying]))
        # E|N(0, s^2)| = s * sqrt(2/pi): what sampling noise alone gives, per feature.
        noise_d = math.sqrt(2 / math.pi) * math.sqrt(1 / n_a + 1 / n_b)
        noise_s = math.sqrt(2 / math.pi) * math.sqrt(1 / (2 * (n_a - 1)) + 1 / (2 * (n_b - 1)))
        mean_d, mean_s = float(d.mean()), float(log_ratio.mean())
        limit_d = max(FEATURE_SHIFT, NOISE_FACTOR * noise_d)
        limit_s = max(FEATURE_SHIFT, NOISE_FACTOR * noise_s)
        features = np.flatnonzero(varying)
        top = features[np.argsort(-d)[:SHOW]]
        details["features"] = {
            "compared": int(varying.sum()),
            "mean_abs_standardised_mean_difference": mean_d,
            "limit_mean_difference": limit_d,
            "mean_abs_log_std_ratio": mean_s,
            "limit_log_std_ratio": limit_s,
            "most_shifted": [
                {
                    "feature": int(f),
                    "val_mean": float(m_a[f]),
                    "test_mean": float(m_b[f]),
                    "val_std": float(s_a[f]),
                    "test_std": float(s_b[f]),
                }
                for f in top
            ],
        }
        if mean_d > limit_d:
            f = int(top[0])
            problems.append(
                f"feature means differ by {mean_d:.2f} pooled standard deviations on average "
                f"(limit {limit_d:.2f}; feature {f}: {m_a[f]:.3g} vs {m_b[f]:.3g})"
            )
        if mean_s > limit_s:
            problems.append(
                f"feature spreads differ: mean |log(std_val / std_test)| = {mean_s:.2f} "
                f"(limit {limit_s:.2f}; std ratio ~{math.exp(mean_s):.2f}x)"
            )
    seconds = time.perf_counter() - start
    if problems:
        return StageResult(
            "split_shift",
            False,
            details.get("features", {}).get("mean_abs_standardised_mean_difference"),
            None,
            f"validation ({n_a}) and test ({n_b}) look drawn from different "
            f"distributions: {'; '.join(problems)}. Validation scores will mispredict test "
            f"scores.",
            seconds,
            details,
            fix=SHIFT_FIX,
        )
    return StageResult(
        "split_shift",
        True,
        details.get("features", {}).get("mean_abs_standardised_mean_difference"),
        None,
        f"validation ({n_a}) and test ({n_b}) match in "
        + ("class frequencies and " if "classes" in details else "")
        + "per-feature mean/std within sampling noise",
        seconds,
        details,
    )


def _streamed(data: Any) -> dict | None:
    """The streaming pass's per-split statistics when ``data`` is a streamed set's sample
    (:class:`kerasdiag.data.stream.DataSample`): the checks then cover the whole set."""
    source = getattr(data, "source", None)
    return getattr(source, "statistics", None)


def _splits(data: Any, *, x_train: Any, x_val: Any, x_test: Any, labels: bool = False) -> dict:
    if data is not None:
        prefix = "y" if labels else "x"
        return {s: getattr(data, f"{prefix}_{s}", None) for s in ("train", "val", "test")}
    out = {"train": x_train, "val": x_val, "test": x_test}
    return {k: None if v is None else np.asarray(v) for k, v in out.items()}


def _long(split: str) -> str:
    return {"train": "training", "val": "validation", "test": "test"}[split]
