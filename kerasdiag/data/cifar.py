"""CIFAR-10 in the official "python version" format, read without trusting the pickles.

The official batches are pickles, and unpickling can run arbitrary code. ``SafeUnpickler``
allows only the globals the format needs to rebuild a uint8 numpy array (``ndarray``,
``dtype``, ``_reconstruct`` and ``_codecs.encode`` for Python-2 byte strings) and refuses
everything else before it is imported, so a hostile file never gets to run its payload.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from kerasdiag.core.errors import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"

# (module, name) pairs a CIFAR batch may reference; numpy 1.x and 2.x spell the module apart.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("_codecs", "encode"),
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``_ALLOWED_GLOBALS``."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle's API
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name}")
        return super().find_class(module, name)


def safe_load_pickle(path: str | os.PathLike) -> object:
    """Unpickle ``path`` with :class:`SafeUnpickler`; any failure is a one-line DataError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"unsafe or corrupt pickle {path}: {exc}") from None
    except Exception as exc:  # truncated or garbage files raise many types
        raise DataError(f"corrupt pickle {path}: {type(exc).__name__}: {exc}") from None


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One official batch file -> images (N, 32, 32, 3) uint8 and labels (N,) int64."""
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise DataError(f"malformed CIFAR batch {path}: expected a dict, got {type(obj).__name__}")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"malformed CIFAR batch {path}: 'data' must be a uint8 (N, 3072) array")
    if data.shape[1] != 3072:
        raise DataError(
            f"malformed CIFAR batch {path}: 'data' has {data.shape[1]} columns, not 3072"
        )
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        raise DataError(f"malformed CIFAR batch {path}: 'labels' missing or not one per image")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError, OverflowError):  # ragged or exotic entries
        raise DataError(f"malformed CIFAR batch {path}: labels are not integers") from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"malformed CIFAR batch {path}: labels are not integers")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int64)


def load_cifar10_folder(folder: str | os.PathLike) -> tuple[np.ndarray, ...]:
    """Read a ``cifar-10-batches-py`` folder: (x_train, y_train, x_test, y_test)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data.path {str(folder)!r} is not a directory")
    missing = [f for f in [*TRAIN_FILES, TEST_FILE] if not (folder / f).is_file()]
    if missing:
        raise DataError(
            f"data.path {str(folder)!r} lacks CIFAR-10 batch files: {', '.join(missing)}"
        )
    parts = [read_batch(folder / f) for f in TRAIN_FILES]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = read_batch(folder / TEST_FILE)
    return x_train, y_train, x_test, y_test


# Where Keras keeps CIFAR-10 once downloaded, under $KERAS_HOME or ~/.keras (Keras falls back
# to /tmp/.keras where that is read-only): keras.datasets.cifar10 (Keras 3), this module's
# download, and Keras 2's layout.
KERAS_CACHE_DIRS = (
    "datasets/cifar-10-batches-py-target/cifar-10-batches-py",
    "datasets/cifar-10-batches-py/cifar-10-batches-py",
    "datasets/cifar-10-batches-py",
)
LOCAL_COPY_EXAMPLE = "../shared/data/cifar10-sample/cifar-10-batches-py"


def keras_cache_roots() -> list[Path]:
    roots = [Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()]
    return [*roots, Path("/tmp/.keras")]


def cached_cifar10() -> Path | None:
    """The CIFAR-10 folder in Keras' cache, or None: found without starting TensorFlow."""
    for root in keras_cache_roots():
        for sub in KERAS_CACHE_DIRS:
            folder = root / sub
            if all((folder / f).is_file() for f in [*TRAIN_FILES, TEST_FILE]):
                return folder
    return None


def download_cifar10() -> Path:
    """CIFAR-10 from Keras' cache, else fetched with Keras' downloader into that cache.

    Offline and not cached, the one-line error says how to point ``data.path`` at a local
    copy of the ``cifar-10-batches-py`` folder.
    """
    cached = cached_cifar10()
    if cached is not None:
        return cached
    import keras  # heavy import, only when downloading

    cache_root = keras_cache_roots()[0]
    try:
        # Keras falls back to /tmp/.keras when the folder is missing: make it first.
        cache_root.mkdir(parents=True, exist_ok=True)
        path = keras.utils.get_file(
            fname="cifar-10-batches-py-target",  # keras.datasets.cifar10's own cache folder
            origin=CIFAR10_URL,
            extract=True,
            file_hash=CIFAR10_SHA256,
            # where cached_cifar10 looks first ($KERAS_HOME is read now, not at Keras' import)
            cache_dir=str(cache_root),
        )
    except Exception as exc:
        raise DataError(
            f"CIFAR-10 is not in Keras' cache ({keras_cache_roots()[0] / 'datasets'}) and "
            f"could not be downloaded ({type(exc).__name__}; offline?): point data.path at a "
            f"local cifar-10-batches-py folder, e.g. data.path={LOCAL_COPY_EXAMPLE}"
        ) from None
    path = Path(path)
    # Keras versions differ in whether the returned path is the archive's folder or its parent.
    for candidate in (path, path / "cifar-10-batches-py"):
        if (candidate / TEST_FILE).is_file():
            return candidate
    raise DataError(f"downloaded CIFAR-10 but found no batches under {path}")
