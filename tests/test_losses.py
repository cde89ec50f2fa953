"""The recipes' losses against hand-computed values."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasdiag.modeling.losses import MulticlassHinge, SparseCategoricalFocalLoss


def ww_hinge(scores, labels, margin=1.0):
    total = 0.0
    for s, y in zip(scores, labels, strict=True):
        total += sum(max(0.0, s[j] - s[y] + margin) for j in range(len(s)) if j != y)
    return total / len(labels)


def test_multiclass_hinge_matches_weston_watkins():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(16, 10)).astype("float32")
    labels = rng.integers(0, 10, size=16)
    got = float(MulticlassHinge()(labels, scores))
    assert got == pytest.approx(ww_hinge(scores, labels), rel=1e-5)
    assert float(MulticlassHinge()(labels, np.zeros((16, 10), "float32"))) == pytest.approx(9.0)


def test_focal_loss_values():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(8, 5)).astype("float32")
    labels = rng.integers(0, 5, size=8)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p_y = p[np.arange(8), labels]
    expected = np.mean(-((1 - p_y) ** 2) * np.log(p_y))
    assert float(SparseCategoricalFocalLoss(gamma=2.0)(labels, logits)) == pytest.approx(
        expected, rel=1e-5
    )
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert float(SparseCategoricalFocalLoss(gamma=0.0)(labels, logits)) == pytest.approx(
        float(ce), rel=1e-5
    )


def test_losses_round_trip_through_config():
    for loss in (MulticlassHinge(margin=2.0), SparseCategoricalFocalLoss(gamma=1.5, alpha=0.5)):
        clone = type(loss).from_config(loss.get_config())
        assert clone.get_config() == loss.get_config()


@pytest.mark.parametrize("bad", [{"margin": 0.0}])
def test_hinge_validates_arguments(bad):
    with pytest.raises(ValueError, match="margin"):
        MulticlassHinge(**bad)
