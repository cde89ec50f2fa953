"""The fault grid in CI: each planted fault once, caught by the pieces built for it, and
healthy models of several task kinds with no alarm from any piece.

The whole grid (every task kind x family x piece, MobileNetV2 and the BN ResNet included)
is ``benchmarks/bench_fault_grid.py``; here a slice within the suite's time budget.
"""

from __future__ import annotations

import pytest
from model_zoo import GRID, GRID_FAULTY, RESPONSIBLE
from model_zoo_run import PIECES, TRAINED, run

# The BN ResNet's kernel bug runs in tests/test_model_zoo.py.
FAULTS = [e.name for e in GRID_FAULTY if e.name != "bn_resnet_grad_bug"]
# Regression (Huber), multi-label sigmoids, label smoothing, two outputs with a dict of losses.
HEALTHY = ["mlp_huber", "norm_mlp_multilabel", "mixer_smooth", "two_io_dict"]
BEFORE_TRAINING = [p for p in PIECES if p not in TRAINED]


@pytest.mark.parametrize("name", FAULTS)
def test_planted_fault_is_caught_by_the_pieces_built_for_it(name):
    entry = GRID[name]
    for piece in RESPONSIBLE[entry.fault]:
        verdict, line, _ = run(entry, piece)
        assert verdict == "caught", f"{name} / {piece}: {verdict}: {line}"


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_task_kinds_raise_no_alarm_before_training(name):
    for piece in BEFORE_TRAINING:
        verdict, line, _ = run(GRID[name], piece)
        assert verdict != "caught", f"{name} / {piece}: {line}"


def test_healthy_regression_raises_no_alarm_in_training():
    for piece in TRAINED:
        verdict, line, _ = run(GRID["mlp_mse"], piece)
        assert verdict == "pass", f"mlp_mse / {piece}: {line}"


def test_a_fault_is_not_caught_where_it_does_not_show():
    # the leaked rows are in the data, not the model: the model's own checks all pass
    entry = GRID["leaked_rows"]
    for piece in ("check_gradients", "initial_loss", "overfit", "batch_independence"):
        verdict, line, _ = run(entry, piece)
        assert verdict == "pass", f"leaked_rows / {piece}: {line}"
