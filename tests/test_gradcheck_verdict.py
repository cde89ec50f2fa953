"""The verdict arithmetic of the gradient checks, against hand-computed values.

Pure NumPy and fast: these are also the tests ``scripts/mutation_test.py`` runs against each
mutant of ``kerasdiag/checks/gradcheck/verdict.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from kerasdiag.checks.gradcheck.verdict import (
    classify,
    relative_error,
    rounding_floor,
    settle,
    smooth_tolerance,
    tolerance_note,
    worst,
)

EPS = np.finfo(np.float64).eps


def test_relative_error_edge_cases():
    # both exactly zero: no error; one side zero: the whole value is error
    np.testing.assert_array_equal(relative_error([0.0, 0.0, 3.0], [0.0, 2.0, 0.0]), [0, 1, 1])
    # symmetric in its arguments, and scale-free
    assert relative_error(2.0, 3.0) == relative_error(3.0, 2.0) == pytest.approx(1 / 3)
    assert relative_error(2e-9, 3e-9) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("depth", "tolerance"), [(1, 1e-7), (4, 1e-7), (5, 1.25e-7), (8, 2e-7), (40, 1e-6)]
)
def test_smooth_tolerance_grows_linearly_beyond_four_weighted_layers(depth, tolerance):
    assert smooth_tolerance(depth) == pytest.approx(tolerance, rel=1e-12)


def test_tolerance_note_says_how_the_tolerance_grew():
    assert "1.0e-07" in tolerance_note(3) and "depth 3 <= 4" in tolerance_note(3)
    note = tolerance_note(8)
    assert "2.0e-07" in note and "depth 8 / 4" in note
    for depth in (3, 8):
        assert "> 1e-2 wrong" in tolerance_note(depth)


def test_rounding_floor_is_a_few_ulps_of_the_larger_loss_over_2h():
    floor = rounding_floor(np.array([2.0, -8.0]), np.array([-4.0, 1.0]), 1e-5)
    np.testing.assert_allclose(floor, 64 * EPS * np.array([4.0, 8.0]) / 2e-5, rtol=1e-12)


def verdicts(rel, *, tolerance=1e-7, kink=None, has_kinks=False, rounding=None):
    rel = np.asarray(rel, dtype=float)
    kink = np.zeros(rel.shape, bool) if kink is None else np.asarray(kink)
    rounding = np.zeros(rel.shape, bool) if rounding is None else np.asarray(rounding)
    return classify(
        rel, tolerance=tolerance, kink=kink, has_kinks=has_kinks, within_rounding=rounding
    ).tolist()


def test_bands_of_a_smooth_objective():
    # ok up to the tolerance; suspicious up to and including 1e-2; fail above
    assert verdicts([1e-7, 1.01e-7, 1e-4, 1e-2, 1.0001e-2, 1.0]) == [
        "ok", "suspicious", "suspicious", "suspicious", "fail", "fail"
    ]  # fmt: skip
    # a grown tolerance moves the ok band
    assert verdicts([1.5e-7, 2.5e-7], tolerance=2e-7) == ["ok", "suspicious"]


def test_an_objective_with_kinks_accepts_errors_below_1e_4():
    assert verdicts([9.9e-5, 1e-4, 5e-3], has_kinks=True) == ["ok", "suspicious", "suspicious"]
    assert verdicts([9.9e-5], has_kinks=False) == ["suspicious"]


def test_a_crossed_kink_excuses_a_failure_but_never_overrides_ok():
    assert verdicts([0.5, 5e-3, 1e-9], kink=[True, True, True]) == ["kink", "kink", "ok"]
    assert verdicts([0.5], kink=[False]) == ["fail"]


def test_rounding_noise_is_ok_whatever_its_relative_error():
    assert verdicts([0.9, 0.9], rounding=[True, False]) == ["ok", "fail"]


def test_worst_orders_ok_kink_suspicious_fail():
    assert worst([]) == "ok"
    assert worst(["ok", "kink"]) == "kink"
    assert worst(["kink", "suspicious", "ok"]) == "suspicious"
    assert worst(["suspicious", "fail", "kink"]) == "fail"


def test_settle_picks_the_deciding_attempt():
    # the first ok attempt decides, at its index
    assert settle(["fail", "suspicious", "ok"], [False, False, False], [0.5, 1e-3, 1e-9]) == (
        "ok",
        2,
    )
    # among clean attempts, the best verdict, then the smallest error
    assert settle(
        ["fail", "suspicious", "suspicious"], [False, False, False], [0.5, 3e-3, 2e-3]
    ) == (
        "suspicious",
        2,
    )
    assert settle(["suspicious", "fail"], [True, False], [1e-3, 0.5]) == ("fail", 1)
    # only when every attempt crossed a kink is the entry a kink, reported from the first
    assert settle(["fail", "fail", "fail"], [True, True, True], [0.5, 0.4, 0.3]) == ("kink", 0)


# --- found by mutation testing: behaviours no test pinned before --------------------------


def test_relative_error_of_integer_or_float32_inputs_is_computed_in_float64():
    # integers: an in-place float division into an integer buffer would fail or truncate
    np.testing.assert_array_equal(relative_error([1, 2, 0], [2, 2, 0]), [0.5, 0.0, 0.0])
    # float32 inputs one float32 ulp apart: their float64 difference, not a rounded one
    a, n = np.float32(1.0), np.nextafter(np.float32(1.0), np.float32(2.0))
    assert relative_error(a, n) == pytest.approx(float(n - a) / float(n), rel=1e-12)
    assert relative_error(a, n).dtype == np.float64


def test_flags_given_as_integers_act_as_booleans():
    # 0/1 lists must mark entries, never index them
    assert verdicts([0.5, 0.5, 0.5], kink=[1, 0, 0]) == ["kink", "fail", "fail"]
    assert verdicts([0.5, 0.5], rounding=[0, 1]) == ["fail", "ok"]


def test_a_kink_never_overrides_the_ok_band_of_an_objective_with_kinks():
    assert verdicts([5e-5, 5e-3], kink=[True, True], has_kinks=True) == ["ok", "kink"]


def test_an_ok_attempt_that_crossed_a_kink_still_settles_the_entry():
    assert settle(["fail", "ok"], [False, True], [0.5, 1e-9]) == ("ok", 1)


def test_tolerance_note_at_exactly_four_layers_and_its_bands_in_full():
    assert "depth 4 <= 4 weighted layers" in tolerance_note(4)
    assert "depth 5 / 4" in tolerance_note(5)
    bands = "> 1e-2 wrong, 1e-4..1e-2 suspicious, < 1e-4 only where the objective has kinks"
    assert tolerance_note(2).endswith("bands: " + bands)
    assert tolerance_note(9).endswith(
        "rounding error accumulates with every weighted layer; bands: " + bands
    )


def test_entries_that_are_both_rounding_noise_are_zero_not_ok():
    got = classify(
        np.array([0.9, 1e-9, 0.9]),
        tolerance=1e-7,
        kink=np.zeros(3, bool),
        has_kinks=False,
        within_rounding=np.array([True, True, False]),
        zero=np.array([1, 0, 0]),  # 0/1 flags act as booleans here too
    ).tolist()
    assert got == ["zero", "ok", "fail"]


def test_zero_entries_decide_nothing_and_all_zero_is_unverified():
    assert worst(["zero", "zero"]) == "unverified"
    assert worst(["zero", "ok"]) == "ok"
    assert worst(["zero", "kink"]) == "kink"
    assert worst(["fail", "zero"]) == "fail"


def test_a_zero_attempt_decides_only_when_no_attempt_measured_anything():
    # a measured attempt wins over a zero one, even when the zero one is "better"
    assert settle(["zero", "suspicious"], [False, False], [0.0, 1e-3]) == ("suspicious", 1)
    assert settle(["zero", "fail"], [True, False], [0.0, 0.5]) == ("fail", 1)
    # a zero attempt is not a kink: with nothing else measured, the entry is zero
    assert settle(["zero", "zero"], [True, True], [0.0, 0.0]) == ("zero", 0)
    assert settle(["zero", "fail"], [True, True], [0.0, 0.5]) == ("zero", 0)
