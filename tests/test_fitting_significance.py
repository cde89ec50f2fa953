"""Bias and variance verdicts know how many examples their errors were measured on."""

from __future__ import annotations

import json
import math

import pytest

from kerasdiag.diagnosis import bias_variance, diagnose
from kerasdiag.diagnosis.rules.fitting import error_se, examples_to_decide


def test_a_twenty_point_gap_on_24_validation_images_is_inconclusive():
    table = bias_variance(0.96, 0.76, train_examples=276, dev_examples=24)
    assert not table["high_variance"] and table["fixes"] == []
    assert table["verdict"].startswith("inconclusive: variance 20.0% > 5%")
    assert "24 validation examples" in table["verdict"] and "would decide" in table["verdict"]


def test_the_same_gap_on_2400_images_is_high_variance():
    table = bias_variance(0.96, 0.76, train_examples=2760, dev_examples=2400)
    assert table["high_variance"] and table["verdict"] == "high variance"
    assert table["inconclusive"] == []


def test_unknown_sizes_take_the_rates_as_exact():
    assert bias_variance(0.96, 0.76)["verdict"] == "high variance"
    assert bias_variance(0.80, 0.79)["verdict"] == "high bias"


def test_the_size_said_to_decide_does_decide():
    z, train_se, dev_error = 1.96, error_se(0.10, 276), 0.20
    need = examples_to_decide(0.10, 0.05, z, dev_error, train_se)
    assert need is not None and need > 24
    at_need = math.hypot(train_se, math.sqrt(dev_error * (1 - dev_error) / need))
    assert 0.10 - z * at_need >= 0.05 - 1e-9  # the gap clears the threshold there
    short = math.hypot(train_se, math.sqrt(dev_error * (1 - dev_error) / (need - 5)))
    assert 0.10 - z * short < 0.05  # and not with a few fewer


def test_error_se_never_claims_certainty_on_a_small_set():
    assert error_se(0.0, 20) > 0.03  # 0 errors in 20 is not an error rate of exactly 0
    assert error_se(0.3, None) == 0.0


@pytest.mark.parametrize(("val", "expected"), [(24, set()), (2400, {"overfitting"})])
def test_diagnose_reads_the_split_sizes_of_the_run(tmp_path, val, expected):
    """The same curves: a 300-image folder's 24 validation images cannot support an
    overfitting warning; 2400 can."""
    rows = ["epoch,loss,accuracy,val_loss,val_accuracy,learning_rate"]
    rows += [f"{e},{1.0 / e},{0.90 + 0.02 * e},{0.9},{0.74 + 0.002 * e},0.001" for e in (1, 2, 3)]
    (tmp_path / "metrics.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "data.json").write_text(json.dumps({"train": 10 * val, "val": val, "test": val}))
    found = {f.symptom for f in diagnose(tmp_path)}
    assert found & {"overfitting", "underfitting"} == expected
