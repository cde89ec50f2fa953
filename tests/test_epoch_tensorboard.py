"""EpochTensorBoard writes what Keras' TensorBoard writes, without its per-step summary calls."""

from __future__ import annotations

from pathlib import Path

import keras
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from kerasdiag.callbacks import EpochTensorBoard


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return (x[:300] / 16.0).astype("float32"), y[:300]


def _fit(callback: keras.callbacks.Callback, digits) -> None:
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(10)])  # fmt: skip
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])  # fmt: skip
    model.fit(x, y, batch_size=32, epochs=2, validation_split=0.2, verbose=0, callbacks=[callback])


def _tags(log_dir: Path) -> dict[str, list[tuple[str, int]]]:
    """{run (train, validation): sorted (tag, step)} from the event files TensorBoard reads."""
    out = {}
    for run in sorted(p for p in log_dir.iterdir() if p.is_dir()):
        events = []
        for path in run.glob("events.out.tfevents.*"):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                events += [(value.tag, int(event.step)) for value in event.summary.value]
        out[run.name] = sorted(events)
    return out


@pytest.mark.parametrize("graph", [False, True])
def test_it_writes_the_epoch_summaries_keras_tensorboard_writes(tmp_path, digits, graph):
    _fit(keras.callbacks.TensorBoard(tmp_path / "keras", write_graph=graph), digits)
    _fit(EpochTensorBoard(tmp_path / "ours", write_graph=graph), digits)
    ours, theirs = _tags(tmp_path / "ours"), _tags(tmp_path / "keras")
    assert ours == theirs
    assert (("keras", 0) in ours["train"]) == graph  # write_graph's model summary
    assert ("epoch_loss", 1) in ours["train"] and ("epoch_accuracy", 1) in ours["validation"]


def test_with_step_updates_it_records_every_step_as_keras_does(tmp_path, digits):
    _fit(EpochTensorBoard(tmp_path, write_graph=False, update_freq=1), digits)
    steps = [step for tag, step in _tags(tmp_path)["train"] if tag == "batch_loss"]
    assert steps == list(range(1, 17))  # 240 training examples / 32: 8 steps, 2 epochs
