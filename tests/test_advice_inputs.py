"""Advice for a user's own model fits what it reads: image augmentation (flips, crops) for
images only; for token ids and table rows more data, dropout, L2 and fewer units."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasdiag.callbacks import TrainingDoctor
from kerasdiag.checks.sanity.outputs import input_kind
from kerasdiag.diagnosis import symptoms
from kerasdiag.diagnosis.advice import keras_terms

AUGMENTATION = ("RandomFlip", "RandomCrop", "augment")


def embedding_model():
    inputs = keras.Input((12,), dtype="int32")
    hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def image_model():
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def table_model():
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(8), keras.layers.Dense(3)])


@pytest.mark.parametrize(
    ("build", "kind"),
    [(embedding_model, "tokens"), (image_model, "images"), (table_model, "tables")],
)
def test_the_overfitting_fix_fits_the_models_inputs(build, kind):
    assert input_kind(build()) == kind
    fixes = [symptoms.fix_for("overfitting"), symptoms.variance_after_bias_fix()]
    for fix in fixes:
        text = keras_terms(kind).phrase(fix)
        if kind == "images":
            assert "keras.layers.RandomFlip, keras.layers.RandomCrop" in text
        else:
            assert not any(word in text for word in AUGMENTATION), text
            assert "more data" in text
    overfit = keras_terms(kind).phrase(symptoms.fix_for("overfitting"))
    assert "keras.layers.Dropout(0.5)" in overfit and "L2" in overfit
    if kind != "images":
        assert "fewer units" in overfit


def test_a_users_fit_of_an_embedding_model_is_advised_without_image_augmentation():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, size=(64, 12)).astype("int32")
    y = rng.integers(0, 3, size=64)
    model = embedding_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    doctor = TrainingDoctor(x[:32], y[:32], verbose=0)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[doctor])
    advice = doctor.engine.advice.phrase(symptoms.fix_for("overfitting"))
    assert not any(word in advice for word in AUGMENTATION), advice
    with pytest.raises(ValueError, match="^inputs: expected one of"):
        keras_terms("audio")
