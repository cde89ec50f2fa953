"""The sampled gradient check reaches an Embedding's gradient: the rows the batch looks up.

A planted 1.1x gradient bug right after an Embedding of 5000 rows changes the gradient of the
dozen rows two examples use; entries drawn uniformly from the table compare 0 with 0 and
passed it (only the fast check caught it). The token ids are generated: what matters here is
only that few rows of a large table are used.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdiag import check_gradients, check_gradients_fast
from kerasdiag.checks.gradcheck.sampling import stratified_sample, used_rows

VOCAB, LENGTH = 5000, 6


class ScaleGrad(keras.layers.Layer):
    """Identity forward; the gradient to its input times ``factor`` (1.1: a planted bug)."""

    def __init__(self, factor: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        factor = self.factor

        @tf.custom_gradient
        def identity(x):
            return tf.identity(x), lambda dy: factor * dy

        return identity(x)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def text_model(factor: float) -> keras.Model:
    keras.utils.set_random_seed(0)
    ids = keras.Input((LENGTH,), dtype="int32")
    vectors = ScaleGrad(factor)(keras.layers.Embedding(VOCAB, 8, name="embedding")(ids))
    hidden = keras.layers.Dense(16, "tanh")(keras.layers.GlobalAveragePooling1D()(vectors))
    model = keras.Model(ids, keras.layers.Dense(2)(hidden))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.fixture(scope="module")
def tokens():
    rng = np.random.default_rng(7)
    x = rng.integers(0, VOCAB, size=(64, LENGTH))
    return x, (x[:, 0] % 2).astype("int64")


def embedding_row(report):
    (row,) = [r for r in report.rows if r.name == "embedding/embeddings" and r.part == "data"]
    return row


def test_a_scaled_gradient_after_an_embedding_fails_the_sampled_check(tokens):
    x, y = tokens
    model = text_model(1.1)
    assert not check_gradients_fast(model, x, y).passed
    report = check_gradients(model, x, y)
    assert not report.passed
    assert embedding_row(report).verdict == "fail"
    assert embedding_row(report).max_relative_error == pytest.approx(1 - 1 / 1.1, rel=1e-3)


def test_a_healthy_embedding_is_verified_not_zero_against_zero(tokens):
    x, y = tokens
    report = check_gradients(text_model(1.0), x, y)
    assert report.passed
    assert embedding_row(report).verdict == "ok"


def test_used_rows_are_the_rows_with_a_gradient_and_are_preferred():
    gradient = np.zeros((6, 2))
    gradient[[1, 4]] = 1.0
    assert used_rows(gradient).tolist() == [2, 3, 8, 9]
    var_idx, flat_idx = stratified_sample(
        [(6, 2), (3,)], 3, seed=0, prefer={0: used_rows(gradient)}
    )
    assert set(flat_idx[var_idx == 0].tolist()) <= {2, 3, 8, 9}
    # the other variable's draw does not change with the preference
    _, plain = stratified_sample([(6, 2), (3,)], 3, seed=0)
    assert flat_idx[var_idx == 1].tolist() == plain[3:].tolist()
