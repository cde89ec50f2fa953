"""Data a user has on disk: an image folder written from the CIFAR-10 sample and CSV
tables from scikit-learn's bundled breast-cancer (binary) and wine (3 classes) data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from kerasdiag.config import load_config
from kerasdiag.core.errors import ConfigError, DataError
from kerasdiag.data import load_dataset
from kerasdiag.data.cifar import CIFAR10_CLASSES
from kerasdiag.modeling.factory import build_model

PER_CLASS = 60  # three classes: 180 PNGs


pytestmark = pytest.mark.usefixtures("hydra_conf")  # conftest: Hydra on conf/, per module


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, cifar_arrays):
    """``DIR/<class>/<n>.png`` for airplane, automobile, bird: the sample's first images."""
    x, y, _, _ = cifar_arrays
    root = tmp_path_factory.mktemp("images")
    for c in (0, 1, 2):
        (root / CIFAR10_CLASSES[c]).mkdir()
        for i in np.flatnonzero(y == c)[:PER_CLASS]:
            (root / CIFAR10_CLASSES[c] / f"{i:05d}.png").write_bytes(tf.io.encode_png(x[i]).numpy())
    return root


def _write_csv(path, bunch, *, label=None):
    names = [n.replace(" ", "_") for n in bunch.feature_names]
    label = label or (lambda t: bunch.target_names[t])
    lines = [",".join([*names, "label"])]
    lines += [
        ",".join([*(repr(float(v)) for v in row), str(label(t))])
        for row, t in zip(bunch.data, bunch.target, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def cancer_csv(tmp_path_factory):
    from sklearn.datasets import load_breast_cancer

    return _write_csv(tmp_path_factory.mktemp("csv") / "cancer.csv", load_breast_cancer())


@pytest.fixture(scope="module")
def wine_csv(tmp_path_factory):
    from sklearn.datasets import load_wine

    return _write_csv(tmp_path_factory.mktemp("csv") / "wine.csv", load_wine(), label=int)


def test_image_folder_reads_the_images_exactly(image_folder, cifar_arrays):
    cfg = load_config(["data=image_folder", f"data.path={image_folder}", "data.normalize=false"])
    data = load_dataset(cfg.data)
    assert data.class_names == ["airplane", "automobile", "bird"]  # Keras' sorted order
    assert data.input_shape == (32, 32, 3)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 3 * PER_CLASS
    assert len(data.y_test) == round(0.2 * 3 * PER_CLASS)
    assert np.bincount(data.y_test).tolist() == [12, 12, 12]  # stratified
    # PNG is lossless: every test image is one of the sample's images of its class, pixel-exact
    # (the folder is streamed: its bounded in-memory sample holds decoded images)
    x, y, _, _ = cifar_arrays
    sample = data.sample()
    for image, label in zip(sample.x_test[:5], sample.y_test[:5], strict=True):
        matches = np.all(x[y == label].astype(np.float32) == image, axis=(1, 2, 3))
        assert matches.any()


def test_image_folder_resizes_and_normalises_from_training_data(image_folder):
    cfg = load_config(
        ["data=image_folder", f"data.path={image_folder}", "data.image_size=[16,20]",
         "data.color_mode=grayscale"]
    )  # fmt: skip
    data = load_dataset(cfg.data)
    assert data.input_shape == (16, 20, 1)
    sample = data.sample()  # all of this small folder's training split
    assert len(sample.y_train) == len(data.y_train)
    assert abs(float(sample.x_train.mean())) < 1e-3 and abs(float(sample.x_train.std()) - 1) < 1e-2
    assert abs(float(sample.x_test.mean())) > 1e-4  # statistics of the training split only


def test_image_folder_with_train_and_test_folders(tmp_path, image_folder):
    for split, part in (("train", slice(0, 40)), ("test", slice(40, None))):
        for cls in ("airplane", "bird"):
            (tmp_path / split / cls).mkdir(parents=True)
            for f in sorted((image_folder / cls).iterdir())[part]:
                (tmp_path / split / cls / f.name).write_bytes(f.read_bytes())
    data = load_dataset(load_config(["data=image_folder", f"data.path={tmp_path}"]).data)
    assert data.class_names == ["airplane", "bird"] and len(data.y_test) == 40


def test_image_folder_trains_with_augmentation(image_folder, tmp_path):
    from kerasdiag.training.pipeline import fit

    cfg = load_config(
        ["recipe=cifar_softmax", "data=image_folder", f"data.path={image_folder}",
         "data.augment.flip=true", "data.augment.crop=2", "trainer.epochs=3",
         "model.conv_filters=[8]", "model.dense_units=[16]"]
    )  # fmt: skip
    data = load_dataset(cfg.data)
    model = build_model(cfg, data)
    history = fit(cfg, model, data, [])
    losses = history.history["loss"]
    assert losses[-1] < losses[0] and model.output.shape[-1] == 3


def load_error(*overrides: str) -> str:
    """The one-line error loading the config and data of ``overrides`` raises."""
    with pytest.raises((ConfigError, DataError)) as err:
        load_dataset(load_config(list(overrides)).data)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_image_folder_errors_are_one_line(tmp_path, image_folder):
    def error(*overrides):
        return load_error("data=image_folder", *overrides)

    assert "data.path" in error() and "needs the path" in error()
    assert "no such directory" in error(f"data.path={tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    assert "no class subfolders" in error(f"data.path={tmp_path / 'empty'}")
    (tmp_path / "one" / "cats").mkdir(parents=True)
    (tmp_path / "one" / "dogs").mkdir()
    (tmp_path / "one" / "dogs" / "a.png").write_bytes(
        (image_folder / "bird").iterdir().__next__().read_bytes()
    )
    assert "cats holds no images" in error(f"data.path={tmp_path / 'one'}")


def test_csv_binary_target_uses_sigmoid_and_ln2(cancer_csv, tmp_path):
    from kerasdiag.checks.sanity.initial_loss import check_initial_loss

    cfg = load_config(
        ["data=csv", f"data.path={cancer_csv}", "data.target=label", "loss=binary",
         "model.hidden_units=[16]"]
    )  # fmt: skip
    data = load_dataset(cfg.data)
    assert data.class_names == ["benign", "malignant"] and data.input_shape == (30,)
    assert len(data.y_test) == round(0.2 * 569)
    model = build_model(cfg, data)
    assert model.output.shape[-1] == 1  # one logit
    result = check_initial_loss(model, data)
    assert result.status == "pass" and result.expected == pytest.approx(math.log(2))
    from kerasdiag.training.pipeline import evaluate_test, fit

    fit(cfg, model, data, [])
    scores = evaluate_test(cfg, model, data)
    assert scores["accuracy"] > 0.9  # accuracy reads the one logit at 0, not argmax
    from kerasdiag.training.pipeline import write_test_confusion

    write_test_confusion(cfg, model, data, tmp_path / "c.json")
    assert "malignant" in (tmp_path / "c.json").read_text()


def test_csv_three_classes(wine_csv):
    cfg = load_config(["data=csv", f"data.path={wine_csv}", "data.target=label"])
    data = load_dataset(cfg.data)
    assert data.class_names == ["0", "1", "2"] and data.num_classes == 3
    assert data.input_shape == (13,)
    # streamed: its bounded sample (here all 106 training rows) normalised as the stream is
    sample = data.sample()
    assert len(sample.y_train) == len(data.y_train)
    assert abs(float(sample.x_train.mean())) < 1e-3  # normalised with training statistics
    with pytest.raises(ConfigError, match="loss.name.*needs 2 classes"):
        build_model(load_config([*_wine(wine_csv), "loss=binary"]), data)


def _wine(path):
    return ["data=csv", f"data.path={path}", "data.target=label"]


def test_csv_errors_are_one_line(tmp_path, wine_csv):
    def error(*overrides):
        return load_error("data=csv", *overrides)

    assert "needs the path" in error("data.target=label")
    assert "no such file" in error(f"data.path={tmp_path / 'nope.csv'}", "data.target=x")
    assert "data.target" in error(f"data.path={wine_csv}")
    message = error(f"data.path={wine_csv}", "data.target=kind")
    assert "data.target='kind'" in message and "alcohol" in message
    text = wine_csv.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "\n".join([text[0], text[1].replace(text[1].split(",")[0], "high", 1), *text[2:]])
    )
    message = error(f"data.path={bad}", "data.target=label")
    assert "line 2" in message and "'alcohol'" in message and "'high'" in message
    missing = tmp_path / "missing.csv"
    missing.write_text("\n".join([text[0], ",".join(["", *text[1].split(",")[1:]]), *text[2:]]))
    assert "NaN" in error(f"data.path={missing}", "data.target=label")


def test_tabular_mlp_recipe_on_a_binary_csv(cancer_csv, tmp_path):
    import json

    from conftest import run_train

    done = run_train(
        "recipe=tabular_mlp", f"data.path={cancer_csv}", "data.target=label", "loss=binary",
        "trainer.epochs=8", "sanity.gradcheck=false", "monitors=off",
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    stages = {s["name"]: s for s in json.loads((tmp_path / "run" / "sanity.json").read_text())}
    assert stages["initial_loss"]["status"] == "pass"
    assert stages["initial_loss"]["expected"] == pytest.approx(math.log(2))
    test = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert test["accuracy"] > 0.9
