"""trainer.mixed_precision and trainer.jit_compile: correct on CPU, for accelerator users."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasdiag.config import load_config
from kerasdiag.data import load_dataset
from kerasdiag.modeling.factory import build_model
from kerasdiag.training.pipeline import fit


@pytest.fixture(scope="module")
def digits():
    return load_dataset(load_config(["data.limit=400"]).data)


def _train(overrides, data):
    cfg = load_config(
        [
            "trainer.epochs=4",
            "trainer.verbose=0",
            "optimizer.lr=0.01",
            "model.hidden_units=[32]",
            *overrides,
        ]
    )
    model = build_model(cfg, data)
    history = fit(cfg, model, data, [])
    return model, history.history["loss"]


def test_mixed_precision_sets_the_policy_on_layers_keeps_float32_outputs_and_learns(digits):
    model, losses = _train(["trainer.mixed_precision=true"], digits)
    hidden = model.get_layer("hidden1_dense")
    assert hidden.dtype_policy.name == "mixed_float16"
    assert hidden.compute_dtype == "float16" and hidden.kernel.dtype == "float32"
    assert model.output.dtype == "float32"  # loss and softmax in float32
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is put back
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
    scores = model.evaluate(digits.x_test, digits.y_test, verbose=0, return_dict=True)
    assert scores["accuracy"] > 0.8


def test_jit_compile_trains_the_same_model(digits):
    jit, jit_losses = _train(["trainer.jit_compile=true"], digits)
    plain, plain_losses = _train(["trainer.jit_compile=false"], digits)
    assert jit.jit_compile is True and plain.jit_compile is False
    assert jit_losses[-1] < 0.5 * jit_losses[0]
    # XLA changes rounding only: the same seeded run ends at nearly the same loss
    assert jit_losses[-1] == pytest.approx(plain_losses[-1], rel=0.05)
