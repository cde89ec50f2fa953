"""Test-time flip: the test split scored on each image and its mirror image, outputs averaged
(``trainer.test_time_flip``), next to the plain scores. Real data: the CIFAR-10 sample."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasdiag.config import load_config
from kerasdiag.core.errors import ConfigError
from kerasdiag.data.cifar import load_cifar10_folder
from kerasdiag.training.pipeline import run_training
from kerasdiag.training.test_time import flip_averaged_scores

from conftest import run_train


def test_the_scores_are_those_of_the_outputs_averaged_over_the_width_mirror(cifar_dir):
    _, _, x, y = load_cifar10_folder(cifar_dir)
    x, y = x[:200].astype("float32") / 255.0, y[:200]
    keras.utils.set_random_seed(0)
    # a dense layer on the flattened pixels: any flip changes its output, so a flip on the
    # wrong axis (height, channels) or none at all gives other numbers
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])  # fmt: skip
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    test = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    loss_cfg = load_config(["loss=softmax"]).loss
    scores = flip_averaged_scores(model, test, loss_cfg)
    averaged = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, averaged)
    assert scores["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert scores["accuracy"] == pytest.approx(float(np.mean(np.argmax(averaged, -1) == y)))
    assert scores["examples"] == 200
    plain = model.evaluate(test, verbose=0, return_dict=True)["loss"]
    assert abs(plain - scores["loss"]) > 1e-4  # the mirror view did change the outputs


class SubclassedClassifier(keras.Model):
    """A subclassed model: no symbolic inputs to read its input's rank from."""

    def __init__(self):
        super().__init__()
        self.flat, self.out = keras.layers.Flatten(), keras.layers.Dense(10)

    def call(self, x):
        return self.out(self.flat(x))


@pytest.mark.parametrize("kind", ["subclassed", "mobilenet_v2"])
def test_models_we_did_not_design_are_scored_on_both_views(kind, cifar_dir):
    _, _, x, y = load_cifar10_folder(cifar_dir)
    x, y = x[:64].astype("float32"), y[:64]
    keras.utils.set_random_seed(0)
    if kind == "subclassed":
        model, x = SubclassedClassifier(), x / 255.0
    else:  # its own preprocessing takes 0-255 pixels
        model = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=kind != "mobilenet_v2")
    )
    test = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    loss_cfg = load_config(["loss=softmax", f"loss.from_logits={kind != 'mobilenet_v2'}"]).loss
    scores = flip_averaged_scores(model, test, loss_cfg)
    averaged = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    assert scores["accuracy"] == pytest.approx(float(np.mean(np.argmax(averaged, -1) == y)))
    assert scores["loss"] == pytest.approx(float(model.loss(y, averaged)), rel=1e-4)


def test_batches_that_are_not_images_are_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(loss="sparse_categorical_crossentropy")
    table = tf.data.Dataset.from_tensor_slices((np.zeros((4, 4), "float32"), [0, 1, 0, 1]))
    with pytest.raises(ValueError, match=r"batches of images .*\(2, 4\)"):
        flip_averaged_scores(model, table.batch(2), load_config(["loss=softmax"]).loss)


def test_a_run_reports_both_scores(tmp_path):
    cfg = load_config(["trainer.test_time_flip=true", "trainer.epochs=2", "sanity=off",
                       "monitors=off", "trainer.verbose=0", "trainer.tensorboard=false"])  # fmt: skip
    run_training(cfg, tmp_path)
    test = json.loads((tmp_path / "test_metrics.json").read_text())
    sizes = json.loads((tmp_path / "data.json").read_text())
    assert test["flip"]["examples"] == sizes["test"]  # the whole test split, each both ways
    assert 0.5 < test["flip"]["accuracy"] <= 1.0 and np.isfinite(test["flip"]["loss"])
    assert 0.5 < test["accuracy"] <= 1.0  # the plain scores stay where they were


def test_a_table_or_a_regression_is_refused_in_one_line(tmp_path):
    import sklearn

    iris = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data", "iris.csv")
    proc = run_train("recipe=tabular_mlp", "data=csv", f"data.path={iris}",
                     "data.target=virginica", "trainer.test_time_flip=true",
                     f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "trainer.test_time_flip" in lines[0] and "shape (4,)" in lines[0]
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"trainer\.test_time_flip.*loss=mse"):
        load_config(["loss=mse", "data=diabetes", "trainer.test_time_flip=true"])
