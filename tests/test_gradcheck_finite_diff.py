"""Centered differences and their step-size retries, on closed-form functions (no TensorFlow).

Fast on purpose: ``scripts/mutation_test.py`` runs these against every mutant of
``kerasdiag/checks/gradcheck/finite_diff.py``. Each ``evaluate`` below is a function with a known
derivative, so every expected attempt is a hand computation.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasdiag.checks.gradcheck.finite_diff import (
    KINK_STEPS,
    RETRY_STEPS,
    Attempt,
    centered_difference,
    final,
    run_attempts,
)


def smooth(points, f, *, kink_at=None, calls=None):
    """``evaluate`` for f at the given points (one per entry); a kink wherever x+-h straddles
    ``kink_at``. ``calls`` collects (entries asked, h)."""
    points = np.asarray(points, np.float64)

    def evaluate(items, h):
        if calls is not None:
            calls.append((list(map(int, items)), h))
        x = points[items]
        kink = np.zeros(len(items), bool)
        if kink_at is not None:
            kink = (x - h < kink_at) & (x + h > kink_at)
        return {"data": f(x + h)}, {"data": f(x - h)}, kink

    return evaluate


def test_centered_difference_is_the_symmetric_quotient():
    np.testing.assert_allclose(centered_difference([3.0, 1.0], [1.0, 2.0], 0.5), [2.0, -1.0])
    # exact for a quadratic (O(h^2) error vanishes): (x+h)^2 - (x-h)^2 = 4xh
    x, h = 3.0, 1e-2
    assert centered_difference((x + h) ** 2, (x - h) ** 2, h) == pytest.approx(2 * x, rel=1e-12)
    # one-sided would give 2x + h: the centered one has no O(h) term
    assert abs(centered_difference(np.exp(h), np.exp(-h), h) - 1.0) < h**2


def test_a_correct_gradient_settles_at_the_first_step_with_every_number_kept():
    calls = []
    runs = run_attempts(
        smooth([2.0, -1.0], lambda x: x**3, calls=calls),
        {"data": np.array([12.0, 3.0])},
        h=1e-5,
        tolerance=1e-7,
        has_kinks=False,
    )
    assert calls == [([0, 1], 1e-5)]  # nothing to retry
    (a0,), (a1,) = runs["data"]
    assert isinstance(a0, Attempt) and a0.h == 1e-5 and a0.verdict == "ok"
    assert a0.f_plus == pytest.approx((2 + 1e-5) ** 3) and a0.f_minus == pytest.approx(
        (2 - 1e-5) ** 3
    )
    assert a0.numeric == pytest.approx(12.0, rel=1e-9)
    assert a0.relative_error < 1e-9 and a0.kink is False
    assert a1.numeric == pytest.approx(3.0, rel=1e-9) and a1.verdict == "ok"
    assert final(runs["data"][0]) == ("ok", a0)


def test_a_wrong_gradient_is_retried_at_every_step_then_fails():
    calls = []
    runs = run_attempts(
        smooth([2.0], lambda x: x**3, calls=calls),
        {"data": np.array([13.2])},  # 10% off
        h=1e-5,
        tolerance=1e-7,
        has_kinks=False,
    )
    assert [h for _, h in calls] == [1e-5, *RETRY_STEPS]  # no kink: the kink steps are not run
    attempts = runs["data"][0]
    assert [a.verdict for a in attempts] == ["fail"] * 3
    expected = abs(13.2 - 12.0) / 13.2
    assert all(a.relative_error == pytest.approx(expected, rel=1e-6) for a in attempts)
    verdict, deciding = final(attempts)
    assert verdict == "fail" and deciding in attempts


def test_only_the_entries_not_ok_are_retried_and_the_default_step_is_not_repeated():
    calls = []
    run_attempts(
        smooth([2.0, 2.0, 2.0], lambda x: x**3, calls=calls),
        {"data": np.array([12.0, 12.5, 12.0])},
        h=1e-4,  # also a retry step: not run twice
        retry_steps=(1e-4, 1e-6),
        tolerance=1e-7,
        has_kinks=False,
    )
    assert calls == [([0, 1, 2], 1e-4), ([1], 1e-6)]


def test_a_step_too_large_for_the_curvature_is_rescued_by_a_smaller_one():
    # f = exp(50 x): the O(h^2) term of the centered difference is h^2 f'''/6, relative
    # error ~ (50 h)^2 / 6: 4e-6 at h=1e-4 (suspicious), 4e-10 at h=1e-6 (ok).
    calls = []
    runs = run_attempts(
        smooth([0.1], lambda x: np.exp(50 * x), calls=calls),
        {"data": np.array([50 * np.exp(5.0)])},
        h=1e-4,
        retry_steps=(1e-6,),
        tolerance=1e-7,
        has_kinks=False,
    )
    first, second = runs["data"][0]
    assert first.verdict == "suspicious"
    assert first.relative_error == pytest.approx((50 * 1e-4) ** 2 / 6, rel=1e-2)
    assert second.h == 1e-6 and second.verdict == "ok"
    assert final(runs["data"][0]) == ("ok", second)


def test_entries_crossing_a_kink_at_every_step_get_the_kink_steps():
    # |x| at x = 5e-6: h = 1e-5 and 1e-4 straddle 0, h = 1e-6 does not; the true slope is 1.
    calls = []
    runs = run_attempts(
        smooth([5e-6, 5e-9], np.abs, kink_at=0.0, calls=calls),
        {"data": np.array([1.0, 1.0])},
        h=1e-5,
        retry_steps=(1e-4, 1e-6),
        tolerance=1e-7,
        has_kinks=True,
    )
    steps = [h for _, h in calls]
    assert steps == [1e-5, 1e-4, 1e-6, *KINK_STEPS]
    # entry 0 settled ok at h=1e-6; entry 1 (x=5e-9) crossed at every step: kink steps only for it
    assert calls[3][0] == [1] and calls[4][0] == [1]
    first = runs["data"][0]
    assert [a.kink for a in first] == [True, True, False]
    assert final(first)[0] == "ok"
    second = runs["data"][1]
    assert [a.kink for a in second] == [True] * 5
    assert [a.verdict for a in second] == ["kink"] * 5  # each attempt labelled, not "fail"
    assert final(second)[0] == "kink"


def test_an_entry_that_once_missed_the_kink_does_not_get_the_kink_steps():
    # x = 5e-5: h=1e-5 and 1e-6 do not straddle 0, 1e-4 does; analytic value wrong (2 vs 1)
    calls = []
    runs = run_attempts(
        smooth([5e-5], np.abs, kink_at=0.0, calls=calls),
        {"data": np.array([2.0])},
        h=1e-5,
        retry_steps=(1e-4, 1e-6),
        tolerance=1e-7,
        has_kinks=True,
    )
    assert [h for _, h in calls] == [1e-5, 1e-4, 1e-6]
    assert [a.kink for a in runs["data"][0]] == [False, True, False]
    assert final(runs["data"][0])[0] == "fail"  # a clean attempt measured the real slope


def test_rounding_noise_is_not_a_failure_and_the_floor_grows_with_depth():
    # f = 1e8 + x * 1e-12: the difference drowns in the rounding of 1e8 (ulp ~1.5e-8).
    big = 1e8
    evaluate = smooth([0.0], lambda x: big + 1e-12 * x)
    runs = run_attempts(evaluate, {"data": np.array([1e-12])}, h=1e-5, tolerance=1e-7,
                        has_kinks=False)  # fmt: skip
    first = runs["data"][0][0]
    assert first.within_rounding is True and first.verdict == "zero"
    # A real gradient of 1 next to the same offset: compared, ok
    ok = run_attempts(smooth([0.0], lambda x: big + x), {"data": np.array([1.0])}, h=1e-5,
                      tolerance=1e-7, has_kinks=False)["data"][0][0]  # fmt: skip
    assert ok.within_rounding is True and ok.verdict == "ok"
    # An error of 3e-5 on a slope of 1 with f ~ 1e2: outside the floor at tolerance 1e-7
    # (floor 64 eps 1e2 / 2h ~ 7e-8), inside it at 1e3 times the tolerance (a deep network).
    offset = smooth([0.0], lambda x: 100.0 + x)
    shallow = run_attempts(offset, {"data": np.array([1.0 + 3e-5])}, h=1e-5,
                           retry_steps=(), tolerance=1e-7, has_kinks=False)  # fmt: skip
    deep = run_attempts(offset, {"data": np.array([1.0 + 3e-5])}, h=1e-5,
                        retry_steps=(), tolerance=1e-4, has_kinks=False)  # fmt: skip
    assert shallow["data"][0][0].within_rounding is False
    assert shallow["data"][0][0].verdict == "suspicious"
    assert deep["data"][0][0].within_rounding is True and deep["data"][0][0].verdict == "ok"


def test_several_parts_settle_together():
    # Two parts of the objective (data and regularization); an entry is retried while any
    # part is not ok, and both parts get the retry's attempt.
    points = np.array([1.0, 1.0])
    calls = []

    def evaluate(items, h):
        calls.append((list(map(int, items)), h))
        x = points[items]
        plus = {"data": (x + h) ** 2, "regularization": 3 * (x + h)}
        minus = {"data": (x - h) ** 2, "regularization": 3 * (x - h)}
        return plus, minus, np.zeros(len(items), bool)

    runs = run_attempts(
        evaluate,
        {"data": np.array([2.0, 2.0]), "regularization": np.array([3.0, 3.5])},
        h=1e-5,
        retry_steps=(1e-6,),
        tolerance=1e-7,
        has_kinks=False,
    )
    assert calls == [([0, 1], 1e-5), ([1], 1e-6)]
    assert len(runs["data"][1]) == len(runs["regularization"][1]) == 2
    assert len(runs["data"][0]) == len(runs["regularization"][0]) == 1
    assert runs["regularization"][1][-1].verdict == "fail"
    assert runs["data"][1][-1].verdict == "ok"
    assert runs["data"][1][0].to_dict()["h"] == 1e-5


def test_the_rounding_floor_is_exact_at_shallow_depth():
    # f = 100 + x, h = 1e-5: the floor is 64 eps 100 / 2h = 7.1e-8 absolute. An analytic
    # error of 1.5 floors is outside it at the smooth tolerance (depth factor 1, not more),
    # and an exactly-zero function is within rounding (a zero difference is no error).
    floor = 64 * np.finfo(np.float64).eps * 100.0 / 2e-5
    offset = smooth([0.0], lambda x: 100.0 + x)
    attempt = run_attempts(offset, {"data": np.array([1.0 + 1.5 * floor])}, h=1e-5,
                           retry_steps=(), tolerance=1e-7, has_kinks=False)["data"][0][0]  # fmt: skip
    assert attempt.within_rounding is False
    flat = run_attempts(smooth([0.0], lambda x: 0.0 * x), {"data": np.array([0.0])}, h=1e-5,
                        retry_steps=(), tolerance=1e-7, has_kinks=False)["data"][0][0]  # fmt: skip
    assert flat.within_rounding is True and flat.verdict == "zero"


def test_a_kinked_objective_accepts_errors_below_the_kink_bound_at_once():
    # 12 * (1 + 1e-5): a relative error of 1e-5, above the 1e-7 tolerance but below the
    # 1e-4 bound an objective with kinks is held to: ok at the first step, no retry
    calls = []
    runs = run_attempts(
        smooth([2.0], lambda x: x**3, calls=calls),
        {"data": np.array([12.0 * (1 + 1e-5)])},
        h=1e-5,
        tolerance=1e-7,
        has_kinks=True,
    )
    assert calls == [([0], 1e-5)]
    assert [a.verdict for a in runs["data"][0]] == ["ok"]


def test_an_entry_settles_only_when_every_part_is_ok():
    # two outputs: the first part's gradient is right, the second's 10% off
    def evaluate(items, h):
        x = np.array([2.0])[items]
        return ({"a": (x + h) ** 3, "b": (x + h) ** 2}, {"a": (x - h) ** 3, "b": (x - h) ** 2},
                np.zeros(len(items), bool))  # fmt: skip

    runs = run_attempts(
        evaluate,
        {"b": np.array([4.4]), "a": np.array([12.0])},  # the failing part first
        h=1e-5,
        tolerance=1e-7,
        has_kinks=False,
    )
    assert len(runs["b"][0]) > 1 and len(runs["a"][0]) == len(runs["b"][0])  # retried
    assert final(runs["b"][0])[0] == "fail" and final(runs["a"][0])[0] == "ok"
