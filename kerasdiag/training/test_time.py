"""Test-time flip: score the test split on each image and its mirror image, outputs averaged.

A model trained with random horizontal flips (``data.augment.flip``) has learnt that a scene
and its mirror image are the same class; averaging its outputs on both views removes part
of its error at the cost of a second forward pass over the test split (the DAWNBench and
airbench CIFAR-10 recipes score this way). ``trainer.test_time_flip=true`` scores the kept
model both ways: ``test_metrics.json`` keeps the plain scores under ``loss``/``accuracy`` (what
``model.predict`` on one view gives, and what every other recipe reports) and adds the
flip-averaged ones under ``"flip"``.

The outputs are averaged as the model emits them: logits for a ``from_logits`` loss (as
airbench averages them), probabilities after a softmax.

Example:
    >>> import keras, numpy as np, tensorflow as tf, types
    >>> model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(2)])
    >>> model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x = np.random.default_rng(0).normal(size=(6, 4, 4, 1)).astype("float32")
    >>> test = tf.data.Dataset.from_tensor_slices((x, np.array([0, 1] * 3))).batch(4)
    >>> loss_cfg = types.SimpleNamespace(from_logits=True)
    >>> sorted(flip_averaged_scores(model, test, loss_cfg))
    ['accuracy', 'examples', 'loss']
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.modeling.losses import predicted_classes


def flip_averaged_outputs(
    model: keras.Model, test: tf.data.Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """The labels of ``test`` (batches of ``(images, labels)``) and the model's outputs
    averaged over each image and its horizontal mirror, in inference mode."""
    labels, outputs = [], []
    for x, y in test:
        if not isinstance(x, tf.Tensor) or x.shape.rank != 4:  # read from the data: a
            # subclassed model has no symbolic inputs to ask
            raise ValueError("test-time flip needs batches of images (batch, height, width, "
                             f"channels); got {getattr(x, 'shape', type(x))}")  # fmt: skip
        plain = model.predict_on_batch(x)
        mirrored = model.predict_on_batch(tf.reverse(x, axis=[2]))  # width: NHWC's axis 2
        outputs.append((np.asarray(plain) + np.asarray(mirrored)) / 2)
        labels.append(np.asarray(y))
    return np.concatenate(labels), np.concatenate(outputs)


def flip_averaged_scores(
    model: keras.Model, test: tf.data.Dataset, loss_cfg: Any
) -> dict[str, Any]:
    """The test loss (the model's compiled loss) and accuracy of the flip-averaged outputs
    of a classifier with one image input; ``loss_cfg``: the run's ``loss`` section (its
    ``from_logits`` sets a sigmoid output's threshold)."""
    y, out = flip_averaged_outputs(model, test)
    loss = float(np.mean(keras.ops.convert_to_numpy(keras.losses.get(model.loss)(y, out))))
    classes = np.argmax(y, axis=-1) if y.ndim > 1 and y.shape[-1] > 1 else y.reshape(len(y))
    accuracy = float(np.mean(predicted_classes(out, loss_cfg) == classes))
    return {"loss": loss, "accuracy": accuracy, "examples": int(len(y))}
