"""A sequence tagger (one class per position, labels of shape (N, T)) and a model whose
loss is still falling when the memorisation budget ends: each check applies its rule per
position, and a budget that runs out on a model still learning is not a failure.

The sequences are the rows of scikit-learn's digits images (8 rows of 8 pixels); each row is
tagged with one of 4 classes from its ink (above the median, more on its left half).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from kerasdiag.checks.sanity import check_initial_loss, check_input_dependence, overfit_small_subset
from kerasdiag.checks.sanity.expected import describe_loss
from kerasdiag.checks.tasks import accuracy, class_indices, task_of


@pytest.fixture(scope="module")
def rows():
    images = (load_digits().images / 16.0).astype("float32")
    ink = images.sum(-1)
    tags = (ink > np.median(ink)).astype("int32") + 2 * (
        images[:, :, :4].sum(-1) > images[:, :, 4:].sum(-1)
    )
    return images[:600], tags[:600]


def _tagger(optimizer: str = "adam") -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8)), keras.layers.LSTM(16, return_sequences=True), keras.layers.Dense(4)]
    )
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_sparse_labels_of_a_sequence_are_one_class_per_position(rows):
    _, tags = rows
    task = task_of(describe_loss("sparse_categorical_crossentropy"), 4, tags)
    assert (task.kind, task.labels) == ("multiclass", "sparse")
    assert class_indices(tags, task.labels).shape == tags.shape  # not argmax over positions
    outputs = np.eye(4)[tags]  # right at every position
    outputs[0, 0] = np.roll(outputs[0, 0], 1)  # one position wrong
    assert accuracy(task, outputs, tags) == pytest.approx(1 - 1 / tags.size)


def test_a_tagger_gets_its_initial_loss_and_input_verdicts_per_position(rows):
    model = _tagger()
    initial = check_initial_loss(model, rows)
    assert initial.status == "pass", initial.message
    assert initial.expected == pytest.approx(np.log(4))
    used = check_input_dependence(model, rows)
    assert used.status == "pass", used.message


def test_a_model_still_learning_when_the_budget_ends_is_inconclusive_not_failed(rows):
    """The tagger at Adam's 1e-3 memorises 20 sequences only after ~1300 steps: at 300 its
    loss still falls ~16% every 50 steps, so the budget, not the model, ran out."""
    result = overfit_small_subset(_tagger(), rows, max_steps=300)
    assert result.status == "inconclusive", result.message
    assert "steps would decide" in result.message and result.passed is None


def test_a_loss_that_has_stalled_still_fails_the_memorisation_check(rows):
    """Plain SGD at 1e-3 moves the same tagger ~1% per 50 steps: stalled, a failure."""
    result = overfit_small_subset(_tagger(keras.optimizers.SGD(1e-3)), rows, max_steps=300)
    assert result.status == "fail", result.message
