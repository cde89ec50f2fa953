"""The CIFAR-10 reader on the real sample and on hand-made batches, without TensorFlow.

Fast on purpose: ``scripts/mutation_test.py`` runs these (with test_security.py's hostile
pickles) against every mutant of ``kerasdiag/data/cifar.py``.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from kerasdiag.core.errors import DataError
from kerasdiag.data import cifar
from kerasdiag.data.cifar import (
    SafeUnpickler,
    cached_cifar10,
    download_cifar10,
    load_cifar10_folder,
    read_batch,
    safe_load_pickle,
)


def _write(path, obj):
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


def test_the_real_sample_reads_as_the_official_layout(cifar_dir):
    x_train, y_train, x_test, y_test = load_cifar10_folder(cifar_dir)
    assert x_train.shape == (5000, 32, 32, 3) and x_test.shape == (1000, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int64
    assert set(np.unique(y_train)) == set(range(10)) and set(np.unique(y_test)) == set(range(10))
    # The first training image, read by hand from the official row layout: 1024 red values,
    # then 1024 green, then 1024 blue, each row-major over 32x32.
    with open(cifar_dir / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")  # the real file, trusted here only
    row = raw[b"data"][0]
    np.testing.assert_array_equal(x_train[0, :, :, 0], row[:1024].reshape(32, 32))
    np.testing.assert_array_equal(x_train[0, :, :, 2], row[2048:].reshape(32, 32))
    assert y_train[0] == raw[b"labels"][0]
    # batches are concatenated in order 1..5
    with open(cifar_dir / "data_batch_5", "rb") as f:
        last = pickle.load(f, encoding="bytes")
    np.testing.assert_array_equal(
        x_train[-1, :, :, 1], last[b"data"][-1][1024:2048].reshape(32, 32)
    )
    assert y_train[-1] == last[b"labels"][-1]


def test_a_batch_with_str_keys_and_an_array_of_labels(tmp_path):
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    path = _write(tmp_path / "b", {"data": data, "labels": np.array([3, 7], np.uint8)})
    images, labels = read_batch(path)
    assert images.shape == (2, 32, 32, 3)
    assert labels.tolist() == [3, 7] and labels.dtype == np.int64
    assert images[1, 0, 1, 2] == data[1, 2048 + 1]  # channel 2, row 0, column 1


def test_only_the_globals_the_format_needs_are_allowed(tmp_path):
    array = np.zeros((1, 3072), np.uint8)
    assert np.array_equal(safe_load_pickle(_write(tmp_path / "ok", array)), array)
    # Protocol 2 (what the official files use) writes byte strings as _codecs.encode calls.
    blob = pickle.dumps({b"k": b"\xff\x00"}, protocol=2)
    assert b"_codecs\nencode" in blob
    assert safe_load_pickle(_raw(tmp_path, blob)) == {b"k": b"\xff\x00"}
    with open(tmp_path / "ok", "rb") as f:
        unpickler = SafeUnpickler(f)
        for module, name in (("numpy", "load"), ("numpy.core.multiarray", "scalar"),
                             ("builtins", "getattr"), ("_codecs", "decode")):  # fmt: skip
            with pytest.raises(pickle.UnpicklingError, match=rf"global {module}\.{name}$"):
                unpickler.find_class(module, name)
        assert unpickler.find_class("numpy", "ndarray") is np.ndarray
        assert unpickler.find_class("_codecs", "encode")("\xff", "latin1") == b"\xff"


def test_a_refused_module_is_never_imported(tmp_path):
    import sys

    name = "kerasdiag_never_imported_module"
    # A GLOBAL opcode naming a module that does not exist: refused before any import
    # attempt (an import would raise ModuleNotFoundError, a different message).
    blob = b"\x80\x02c" + name.encode() + b"\nthing\n)R."
    with pytest.raises(
        DataError, match=f"unsafe or corrupt pickle .*refused to load global {name}.thing"
    ):
        safe_load_pickle(_raw(tmp_path, blob))
    assert name not in sys.modules


def _raw(tmp_path, blob):
    path = tmp_path / "raw"
    path.write_bytes(blob)
    return path


def test_unreadable_and_garbage_files_are_one_line_errors(tmp_path):
    with pytest.raises(DataError) as info:
        safe_load_pickle(tmp_path / "absent")
    assert str(info.value) == f"cannot read {tmp_path / 'absent'}: No such file or directory"
    empty = _raw(tmp_path, b"")
    with pytest.raises(DataError) as info:
        safe_load_pickle(empty)
    assert str(info.value) == f"corrupt pickle {empty}: EOFError: Ran out of input"
    with pytest.raises(DataError, match="corrupt pickle .*garbage: UnpicklingError|corrupt pickle"):
        safe_load_pickle(_raw(tmp_path, b"not a pickle at all"))


def test_folder_errors_name_the_folder_and_the_missing_files(tmp_path, cifar_dir):
    with pytest.raises(DataError, match=r"data.path '.*nowhere' is not a directory"):
        load_cifar10_folder(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4"):
        (partial / name).write_bytes((cifar_dir / name).read_bytes())
    with pytest.raises(DataError) as info:
        load_cifar10_folder(partial)
    assert str(info.value) == (
        f"data.path {str(partial)!r} lacks CIFAR-10 batch files: data_batch_5, test_batch"
    )


@pytest.mark.parametrize("layout", cifar.KERAS_CACHE_DIRS)
def test_keras_cache_is_found_without_tensorflow(tmp_path, monkeypatch, cifar_dir, layout):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(cifar, "keras_cache_roots", lambda: [tmp_path / "keras"])
    assert cached_cifar10() is None
    folder = tmp_path / "keras" / layout
    folder.mkdir(parents=True)
    for name in [*cifar.TRAIN_FILES, cifar.TEST_FILE]:
        (folder / name).symlink_to(cifar_dir / name)
    assert cached_cifar10() == folder
    assert download_cifar10() == folder  # cached: no download, no TensorFlow
    (folder / cifar.TEST_FILE).unlink()
    assert cached_cifar10() is None  # an incomplete copy is not a cache hit


def test_cache_roots_follow_keras_home(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert cifar.keras_cache_roots()[0] == tmp_path
    assert cifar.keras_cache_roots()[-1].as_posix() == "/tmp/.keras"


def test_python2_strings_come_back_as_bytes(tmp_path):
    """The official batches were written by Python 2: its ``str`` (any byte values) must load
    as bytes, not be decoded as ASCII."""
    # protocol 2, {"data": "\xff\xfe"} as Python 2's cPickle writes it (SHORT_BINSTRING)
    blob = b"\x80\x02}q\x00U\x04dataq\x01U\x02\xff\xfeq\x02s."
    assert safe_load_pickle(_raw(tmp_path, blob)) == {b"data": b"\xff\xfe"}


def test_a_batch_that_is_not_a_dict_names_its_type(tmp_path):
    path = _write(tmp_path / "b", [1, 2])
    with pytest.raises(DataError) as info:
        read_batch(path)
    assert str(info.value) == f"malformed CIFAR batch {path}: expected a dict, got list"


def test_keras_home_defaults_to_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cifar.keras_cache_roots()[0] == tmp_path / ".keras"


def _sample_archive(tmp_path, cifar_dir):
    """The sample as the official archive is laid out (cifar-10-batches-py/ inside)."""
    import hashlib
    import tarfile

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in [*cifar.TRAIN_FILES, cifar.TEST_FILE]:
            tar.add(cifar_dir / name, arcname=f"cifar-10-batches-py/{name}")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest()


def test_the_download_goes_through_keras_into_its_cache(monkeypatch, tmp_path, cifar_dir):
    """Keras' downloader, offline: the official archive's layout served from a file:// URL
    with its checksum; the folder lands in Keras' cache and is found there next time."""
    archive, digest = _sample_archive(tmp_path, cifar_dir)
    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(cifar, "keras_cache_roots", lambda: [home])
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_SHA256", digest)
    folder = download_cifar10()
    assert (folder / cifar.TEST_FILE).is_file() and folder.name == "cifar-10-batches-py"
    assert folder.is_relative_to(home / "datasets" / "cifar-10-batches-py-target")
    assert cached_cifar10() == folder  # the layout cached_cifar10 knows
    np.testing.assert_array_equal(read_batch(folder / "test_batch")[1],
                                  read_batch(cifar_dir / "test_batch")[1])  # fmt: skip
    monkeypatch.setattr(cifar, "CIFAR10_URL", (tmp_path / "gone.tar.gz").as_uri())
    assert download_cifar10() == folder  # cached: not fetched again


def test_a_failed_download_says_where_to_point_data_path(monkeypatch, tmp_path):
    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(cifar, "keras_cache_roots", lambda: [home])
    monkeypatch.setattr(cifar, "CIFAR10_URL", (tmp_path / "missing.tar.gz").as_uri())
    with pytest.raises(DataError) as info:
        download_cifar10()
    message = str(info.value)
    assert message.startswith(
        f"CIFAR-10 is not in Keras' cache ({home / 'datasets'}) and could not be downloaded ("
    )
    assert message.endswith(
        "; offline?): point data.path at a local cifar-10-batches-py folder, "
        f"e.g. data.path={cifar.LOCAL_COPY_EXAMPLE}"
    )
    assert "could not be downloaded (Exception; offline?)" in message  # what Keras raises


def test_an_archive_without_batches_is_refused(monkeypatch, tmp_path):
    import hashlib
    import tarfile

    archive = tmp_path / "other.tar.gz"
    (tmp_path / "readme.txt").write_text("not CIFAR")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "readme.txt", arcname="readme.txt")
    home = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(cifar, "keras_cache_roots", lambda: [home])
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_SHA256", hashlib.sha256(archive.read_bytes()).hexdigest())
    with pytest.raises(DataError, match=r"^downloaded CIFAR-10 but found no batches under /"):
        download_cifar10()
