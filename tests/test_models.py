"""Recipe builders: init by activation, kernel-only regularization, dropout per block, BN."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasdiag.config import load_config
from kerasdiag.modeling.factory import build_model, model_summary_text


class _Data:  # the two attributes build_model reads, for shape-only tests
    def __init__(self, shape, n=10):
        self.input_shape, self.num_classes = shape, n
        self.y_train = np.zeros(100)


def kernel(model, name):
    return np.asarray(model.get_layer(name).kernel)


def test_he_init_for_relu_and_glorot_for_tanh():
    wide = ["model.hidden_units=[512]"]
    relu = build_model(load_config([*wide, "model.activation=relu"]), _Data((8, 8, 1)))
    tanh = build_model(load_config([*wide, "model.activation=tanh"]), _Data((8, 8, 1)))
    # He normal: var 2 / n_in (truncated normal shrinks it slightly); Glorot uniform: 2/(in+out)
    assert np.var(kernel(relu, "hidden1_dense")) == pytest.approx(2 / 64, rel=0.2)
    assert np.var(kernel(tanh, "hidden1_dense")) == pytest.approx(2 / (64 + 512), rel=0.1)
    named = build_model(load_config([*wide, "model.kernel_initializer=zeros"]), _Data((8, 8, 1)))
    assert not kernel(named, "hidden1_dense").any()


def test_l2_and_l1_reach_kernels_but_not_biases():
    cfg = load_config(["model.l2=0.01", "model.l1=0.001"])
    model = build_model(cfg, _Data((8, 8, 1)))
    kernels = [v for v in model.trainable_variables if "kernel" in v.path]
    expected = sum(0.01 * np.sum(np.square(k)) + 0.001 * np.sum(np.abs(k)) for k in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert len(model.losses) == len(kernels) == 2
    assert not build_model(load_config(["model.l2=0"]), _Data((8, 8, 1))).losses


def test_dropout_per_block_and_batch_norm():
    cfg = load_config(
        ["recipe=cifar_softmax", "model.dropout=[0.1,0.2,0.5]", "model.batch_norm=true"]
    )
    model = build_model(cfg, _Data((32, 32, 3)))
    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == [0.1, 0.2, 0.5]
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 3


def test_cifar_softmax_architecture_and_summary():
    model = build_model(load_config(["recipe=cifar_softmax"]), _Data((32, 32, 3)))
    text = model_summary_text(model)
    for needle in (
        "block1_conv",
        "(None, 16, 16, 32)",
        "(None, 8, 8, 64)",
        "524,416",
        "(None, 10)",
    ):
        assert needle in text
    assert model.count_params() == 896 + 18_496 + 524_416 + 1_290


def test_same_seed_same_initial_weights():
    cfg = load_config()
    a, b = build_model(cfg, _Data((8, 8, 1))), build_model(cfg, _Data((8, 8, 1)))
    for va, vb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(va, vb)
