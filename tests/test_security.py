"""Hostile and malformed input: pickles that would run code, crafted CIFAR batches, bad .npz
files and model files are refused with one DataError line, and their payloads never run."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from kerasdiag.config import load_config
from kerasdiag.core.errors import ConfigError, DataError, KerasdiagError
from kerasdiag.data import load_dataset
from kerasdiag.data.cifar import read_batch
from kerasdiag.data.loaders import _check_expanded_size
from kerasdiag.modeling.safe_load import load_model_safely

# -- pickles -----------------------------------------------------------------------------------


class _Reduce:
    """Unpickling calls ``func(*args)``: the classic pickle attack."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(target: str) -> dict[str, object]:
    """Ways a pickle can make a file appear at ``target`` when it is loaded."""
    code = f"open({target!r}, 'w').write('pwned')"
    return {
        "builtins.open": _Reduce(open, target, "w"),
        "os.system": _Reduce(os.system, f"touch {target}"),
        "builtins.exec": _Reduce(exec, code),
        "builtins.eval": _Reduce(eval, code),
        "numpy.save": _Reduce(np.save, target, np.zeros(1)),
    }


@pytest.mark.parametrize("name", ["builtins.open", "os.system", "builtins.exec", "builtins.eval",
                                  "numpy.save"])  # fmt: skip
def test_pickle_payloads_are_refused_and_never_run(tmp_path, name):
    target = tmp_path / "pwned"
    made = (target, tmp_path / "pwned.npy")  # numpy.save adds .npy
    payload = _payloads(str(target))[name]
    # Hidden where a CIFAR batch keeps its pixels, as an attacker would.
    blob = pickle.dumps({b"data": payload, b"labels": [0]}, protocol=2)
    # The payload is live: plain pickle runs it (this is what SafeUnpickler must prevent).
    pickle.loads(blob)
    assert any(p.exists() for p in made)
    for p in made:
        p.unlink(missing_ok=True)

    batch = tmp_path / "data_batch_1"
    batch.write_bytes(blob)
    with pytest.raises(DataError, match="refused to load global") as err:
        read_batch(batch)
    assert "\n" not in str(err.value) and str(batch) in str(err.value)
    assert not any(p.exists() for p in made)


def _batch(tmp_path, **entries) -> str:
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({k.encode(): v for k, v in entries.items()}, protocol=2))
    return path


@pytest.mark.parametrize(
    ("entries", "needle"),
    [
        ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "uint8"),
        ({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, "100 columns"),
        ({"data": np.zeros(3072, np.uint8), "labels": [0]}, "uint8 (N, 3072)"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": 5}, "labels"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "not one per image"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": ["a", "b"]}, "not integers"),
        ({"data": np.zeros((2, 3072), np.uint8), "labels": [[0], [1, 2]]}, "not integers"),
        ({"data": np.zeros((2, 3072), object), "labels": [0, 1]}, "uint8"),
        ({"labels": [0, 1]}, "uint8"),
    ],
)
def test_crafted_cifar_batches_are_one_line_errors(tmp_path, entries, needle):
    with pytest.raises(DataError, match="malformed CIFAR batch") as err:
        read_batch(_batch(tmp_path, **entries))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_not_a_dict_and_truncated_pickles(tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DataError, match="expected a dict"):
        read_batch(path)
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
    for cut in (1, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:cut])
        with pytest.raises(DataError, match="corrupt pickle"):
            read_batch(path)


def test_crafted_cifar_folder_with_labels_out_of_range(tmp_path, cifar_dir):
    folder = tmp_path / "cifar"
    folder.mkdir()
    for f in cifar_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    batch = pickle.dumps(
        {b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, -1, 2]}, protocol=2
    )
    (folder / "data_batch_4").write_bytes(batch)
    cfg = load_config(["recipe=cifar_softmax", f"data.path={folder}"])
    with pytest.raises(DataError, match="label -1 out of range"):
        load_dataset(cfg.data)


# -- .npz files --------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4, 4, 1)).astype("float32")
Y = np.arange(60) % 3


def _npz(tmp_path, name="d.npz", **arrays):
    base = {"x_train": X, "y_train": Y, "x_test": X[:12], "y_test": Y[:12]}
    base.update(arrays)
    path = tmp_path / name
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


_NPZ_CFG = []


def _load(path):
    # One composition for the module (Hydra takes ~0.2 s); only data.path changes per case.
    if not _NPZ_CFG:
        _NPZ_CFG.append(load_config(["data=npz", f"data.path={__file__}"]).data)
    data_cfg = _NPZ_CFG[0].copy()
    data_cfg.path = str(path)
    return load_dataset(data_cfg)


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"x_train": np.zeros(60, "float32")}, "one row per example"),
        ({"x_test": np.zeros((12, 5, 5, 1), "float32")}, "per example but test inputs"),
        ({"x_train": X.astype(np.complex64)}, "non-numeric dtype complex64"),
        ({"x_train": X > 0}, "non-numeric dtype bool"),
        ({"x_train": np.full((60, 4), "a")}, "non-numeric dtype"),
        ({"x_train": np.where(X > 1, np.inf, X)}, "NaN/Inf"),
        ({"x_train": X.astype(np.float64) * 1e300}, "overflow float32"),
        ({"y_train": Y.astype(float)}, "1-D integer"),
        ({"y_train": np.stack([Y, Y], axis=1)}, "1-D integer"),
        ({"y_train": Y[:50]}, "60 inputs but 50 labels"),
        ({"y_test": -Y[:12] - 1}, "out of range"),
        ({"class_names": np.array(["a", "b"])}, "label 2 out of range"),
        ({"class_names": np.array("abc")}, "class_names must be a 1-D array"),
        ({"y_train": np.zeros(60, int), "y_test": np.zeros(12, int)}, "at least 2 classes"),
        ({"x_test": None}, "lacks arrays: x_test"),
    ],
)
def test_malformed_npz_is_one_line_data_error(tmp_path, arrays, needle):
    with pytest.raises(DataError) as err:
        _load(_npz(tmp_path, **arrays))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_npz_label_column_is_accepted_as_a_vector(tmp_path):
    data = _load(_npz(tmp_path, y_train=Y[:, None], y_test=Y[:12, None]))
    assert data.num_classes == 3 and data.y_train.ndim == 1


def test_npz_with_pickled_objects_is_refused_and_never_unpickled(tmp_path):
    target = tmp_path / "pwned"
    objects = np.array([_Reduce(open, str(target), "w")], dtype=object)
    path = _npz(tmp_path, class_names=objects)
    with pytest.raises(DataError, match="allow_pickle"):
        _load(path)
    assert not target.exists()


def test_truncated_or_foreign_npz_files(tmp_path):
    good = _npz(tmp_path).read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="cannot read"):
        _load(path)
    path.write_bytes(b"this is not numpy data at all")
    with pytest.raises(DataError, match="cannot read"):
        _load(path)
    np.save(tmp_path / "one.npy", X)
    (tmp_path / "one.npy").rename(path)
    with pytest.raises(DataError, match="single array"):
        _load(path)


def test_npz_too_few_examples_for_a_validation_split(tmp_path):
    x, y = X[:3], np.array([0, 1, 2])
    with pytest.raises(DataError, match="too few to carve a validation split"):
        _load(_npz(tmp_path, x_train=x, y_train=y))


def test_zip_bomb_is_refused_before_it_is_expanded(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x_train=np.zeros((1000, 1000), np.uint8))  # 1 MB in ~1 kB
    assert path.stat().st_size < 10_000
    _check_expanded_size(path, memory=10**7)  # fits
    with pytest.raises(DataError, match="expands to"):
        _check_expanded_size(path, memory=10**5)


def test_missing_data_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.path.*no such file"):
        load_config(["data=npz", f"data.path={tmp_path / 'nope.npz'}"])
    with pytest.raises(ConfigError, match="data.path.*no such directory"):
        load_config(["data=cifar10", f"data.path={tmp_path / 'nope'}"])
    with pytest.raises(ConfigError, match="data.path"):
        load_config(["data=npz"])


# -- model files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras():
    import keras

    return keras


def _small_model(keras, *layers):
    inputs = keras.Input((4,))
    x = inputs
    for layer in layers:
        x = layer(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def test_load_model_safely_round_trips_a_checkpoint(tmp_path, keras):
    model = _small_model(keras, keras.layers.Dense(8, activation="relu"))
    path = tmp_path / "best.keras"
    model.save(path)
    loaded = load_model_safely(path)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_lambda_layer_with_code_is_refused_and_never_runs(tmp_path, keras):
    target = tmp_path / "pwned"
    # The path is a constant in the lambda's bytecode (Keras cannot serialise defaults).
    code = keras.layers.Lambda(eval(f"lambda x: x + 0 * len(open({str(target)!r}, 'w').name)"))
    path = tmp_path / "evil.keras"
    _small_model(keras, code).save(path)
    target.unlink()  # building the model ran the lambda once
    # The payload is live: Keras' unsafe mode runs it while rebuilding the model.
    keras.models.load_model(path, safe_mode=False)
    assert target.exists()
    target.unlink()
    with pytest.raises(DataError, match="cannot load model.*[Ll]ambda") as err:
        load_model_safely(path)
    assert "\n" not in str(err.value)
    assert not target.exists()


def test_config_naming_a_non_keras_function_is_refused(tmp_path, keras):
    path = tmp_path / "m.keras"
    _small_model(keras, keras.layers.Dense(8)).save(path)
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    layer = config["config"]["layers"][1]
    layer.update(module="os", class_name="system", registered_name=None)
    files["config.json"] = json.dumps(config).encode()
    evil = tmp_path / "evil.keras"
    with zipfile.ZipFile(evil, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(DataError, match="cannot load model"):
        load_model_safely(evil)


def test_only_complete_keras_archives_are_loaded(tmp_path, keras):
    model = _small_model(keras)
    good = tmp_path / "m.keras"
    model.save(good)
    cut = tmp_path / "cut.keras"
    cut.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(DataError, match="not a .keras archive"):
        load_model_safely(cut)
    h5 = tmp_path / "m.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(DataError, match="only .keras files"):
        load_model_safely(h5)
    with pytest.raises(DataError, match="no such file"):
        load_model_safely(tmp_path / "nope.keras")
    assert issubclass(DataError, KerasdiagError)
