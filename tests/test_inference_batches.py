"""Forward passes over a check's examples go in batches bounded in bytes, not in examples:
a batch of 256 images of 64x64 held ~130 MB per convolution layer, so a run's peak memory
grew with its validation sample. Batching must not change what is computed."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from kerasdiag.callbacks.probe_batch import example_loss_spread, inference_accuracy
from kerasdiag.checks.sanity._common import predict_outputs
from kerasdiag.checks.sanity.outputs import INFERENCE_BATCH_BYTES, inference_batch_size


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((10, 8), 256),  # a table: the most a batch takes
        ((10, 32, 32, 3), 256),  # CIFAR's size: 12 KB an image, still 256
        ((10, 64, 64, 3), INFERENCE_BATCH_BYTES // (64 * 64 * 3 * 4)),  # 85
        ((10, 224, 224, 3), 6),
        ((10, 4000, 4000, 3), 1),  # larger than the budget: one at a time
    ],
)
def test_the_batch_holds_at_most_the_byte_budget(shape, expected):
    assert inference_batch_size(np.zeros(shape, np.float32)) == expected


def test_several_inputs_share_the_budget():
    x = {"image": np.zeros((4, 64, 64, 3), np.uint8), "extra": np.zeros((4, 64 * 64 * 3))}
    assert inference_batch_size(x) == INFERENCE_BATCH_BYTES // (2 * 64 * 64 * 3 * 4)  # 42
    assert inference_batch_size(x, most=8) == 8


def _digits_64():
    """The real 8x8 digits, upscaled to 64x64x3 images: 300 of them, several batches."""
    digits = load_digits()
    x = digits.images[:300, :, :, None].astype(np.float32) / 16.0
    x = tf.image.resize(np.repeat(x, 3, axis=-1), (64, 64)).numpy()
    return x, digits.target[:300]


def test_batched_passes_equal_one_pass():
    x, y = _digits_64()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])  # fmt: skip
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert inference_batch_size(x) < len(x)  # the pass is split
    whole = model.predict_on_batch(x)
    np.testing.assert_allclose(predict_outputs(model, x)[0], whole, rtol=1e-5, atol=1e-5)
    right = np.mean(np.argmax(whole, -1) == y)
    assert inference_accuracy(model, x, y) == pytest.approx(right)
    each = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(y, whole)
    assert example_loss_spread(model, x, y) == pytest.approx(float(np.std(each, ddof=1)), rel=1e-3)
