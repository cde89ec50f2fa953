"""Every recipe as configured passes every sanity stage (gradcheck when it is installed),
but for the one whose validation and test sets differ by design."""

from __future__ import annotations

import keras
import pytest
import sanity_helpers as h

from kerasdiag.checks.sanity import run_sanity_stages
from kerasdiag.checks.sanity.stages import STAGES, gradcheck_available
from kerasdiag.config import load_config
from kerasdiag.data import load_dataset
from kerasdiag.modeling.factory import build_model

CIFAR_RECIPES = ["cifar_softmax", "cifar_svm", "cifar_focal", "cifar_fast"]


@pytest.mark.parametrize("recipe", ["digits_softmax", *CIFAR_RECIPES])
def test_every_recipe_passes_every_stage(recipe, tmp_path):
    overrides = [f"recipe={recipe}"]
    if recipe in CIFAR_RECIPES:
        overrides.append(f"data.path={h.CIFAR_SAMPLE}")
    cfg = load_config(overrides)
    data = load_dataset(cfg.data)
    model = build_model(cfg, data)
    results = run_sanity_stages(cfg, model, data, tmp_path, lambda **o: build_model(cfg, data, **o))
    statuses = {r.name: r.status for r in results}
    messages = "\n".join(f"{r.name}: {r.message}" for r in results)
    assert statuses["gradcheck"] == ("pass" if gradcheck_available() else "skip"), messages
    assert [statuses[n] for n in STAGES[1:4]] == ["pass"] * 3, messages
    # cifar_focal's long tail is in the examples trained on only: its validation split, carved
    # before the tail, follows the balanced test split (it once failed this check every run)
    assert statuses["split_shift"] == "pass", messages
    beyond = ("leakage", "input_baseline", "batch_independence")
    assert [statuses[n] for n in beyond] == ["pass"] * 3, messages
    assert statuses["lr_range"] == "skip"  # off by default
    assert keras.ops.convert_to_numpy(model.optimizer.iterations) == 0
