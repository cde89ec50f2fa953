"""Data streamed from disk by tf.data: image folders too large to hold in memory.

A :class:`StreamedDataset` holds what is small, for every example of the data set: its file
and its label (the splits are file lists, decided once from ``data.seed``). The pixels stay
on disk and are decoded in parallel by tf.data each time a split is read:

- :meth:`StreamedDataset.training_batches`: the epochs' batches, each epoch a permutation of
  the training files that is a function of ``(data.seed, epoch)`` alone, as for the
  in-memory sets (:func:`kerasdiag.data.pipeline.make_epoch_dataset`), so a resumed run
  reads exactly what the uninterrupted one would have;
- :meth:`StreamedDataset.split_batches`: the validation or test split in file order;
- :meth:`StreamedDataset.sample`: a bounded in-memory :class:`DataSample` (``data.sample_size``
  examples at most per split) for everything that needs examples at hand: the sanity
  stages, the probe batch, the doctor, the learning-rate range test, the gradient check.

One streaming pass (:meth:`StreamedDataset.scan`) reads every file once before training: it
finds the files that do not decode (``data.on_bad_file``: skip and count them, or stop with one
line naming the file), the training split's per-channel mean and standard deviation (running
sums, for the normalisation), and what the leakage and split-shift checks compare (a hash per
example, per-feature running sums of the validation and test splits). Its result and the
splits are recorded in the run directory (``RunLayout.DATA_SPLITS``) and read back on resume.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasdiag.core.errors import DataError, shorten
from kerasdiag.core.io import atomic_path
from kerasdiag.data.dataset import Dataset, split_summary
from kerasdiag.data.splits import row_hashes

SPLITS = ("train", "val", "test")
# Keys of the split record a run directory keeps (RunLayout.DATA_SPLITS).
RECORD_VERSION = 1


@dataclass
class SplitStatistics:
    """What the streaming pass measured of one split, in memory independent of pixel count
    times examples: two 64-bit hashes per example, and per-feature running sums."""

    count: int
    hashes: np.ndarray  # (N, 2) uint64, kerasdiag.checks.data.row_hashes of the uint8 pixels
    labels: np.ndarray  # (N,) the labels, in the order of the hashes
    feature_sum: np.ndarray  # (features,) float64
    feature_sumsq: np.ndarray  # (features,) float64

    def feature_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature mean and sample standard deviation (ddof=1)."""
        n = max(self.count, 2)
        mean = self.feature_sum / max(self.count, 1)
        var = np.maximum(self.feature_sumsq - self.count * mean**2, 0.0) / (n - 1)
        return mean, np.sqrt(var)


@dataclass
class DataSample(Dataset):
    """A bounded in-memory sample of a :class:`StreamedDataset`'s splits, normalised as the
    stream is: ``x_train`` here holds at most ``data.sample_size`` training examples, not the
    training split. What checks and probes that need examples at hand are given.

    ``source`` is the streamed set it was drawn from: the checks that can read the whole set
    in one streaming pass (leakage, split shift) use its :meth:`StreamedDataset.scan`.
    """

    source: Any = None


def _channels(color_mode: str) -> int:
    from kerasdiag.data.files import CHANNELS

    return CHANNELS[color_mode]


@dataclass(kw_only=True)
class StreamedDataset(ABC):
    """A data set read from disk by tf.data; only its labels and split membership in memory.

    ``y_train``/``y_val``/``y_test`` are the labels of the whole splits (small), unlike a
    :class:`DataSample`'s. ``mean``/``std`` (per channel, or per feature for a table) come
    from :meth:`scan`. Subclasses say where the examples are: :class:`ImageFolderStream`
    (one file per example), :class:`CsvStream` (one line per example).
    """

    name: str
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    normalize: bool = True
    on_bad_file: str = "fail"
    sample_size: int = 1000
    cache: str | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    statistics: dict[str, SplitStatistics] | None = None
    scanned: bool = False
    _sample: DataSample | None = field(default=None, repr=False)
    # as Dataset's: the task the labels serve, and a regression's target standardisation
    task: str = "classification"
    target_mean: np.ndarray | None = None
    target_std: np.ndarray | None = None

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example as the model receives it."""

    def labels(self, split: str) -> np.ndarray:
        return {"train": self.y_train, "val": self.y_val, "test": self.y_test}[split]

    def summary(self) -> dict:
        """Sizes and class counts (as :meth:`Dataset.summary`), that the set is streamed,
        and how many undecodable files or malformed rows were skipped."""
        return {
            **split_summary(self),
            "streamed": True,
            "sample_size": int(self.sample_size),
            "skipped_files": len(self.skipped),
        }

    # -- the streaming pass ----------------------------------------------------------------

    def prepare(self) -> None:
        """Run :meth:`scan` once, unless its results were read back from a record."""
        if not self.scanned:
            self.scan()

    def scan(self) -> None:
        """Read every example once: skip or refuse the bad ones, measure the normalisation
        statistics (running sums) and what the data checks compare.

        Memory: the per-example hashes (16 bytes each) and labels, and per-feature sums;
        never more than a few batches of examples.
        """
        statistics = self._scan_splits()
        for split in SPLITS:
            if not len(self.labels(split)):
                raise DataError(f"{self.name}: no readable example left in the {split} split")
        train = statistics["train"]
        c = self.input_shape[-1]  # per channel (images) or per feature (tables): the last axis
        values = train.count * int(np.prod(self.input_shape)) // c
        mean = train.feature_sum.reshape(-1, c).sum(0) / values
        var = train.feature_sumsq.reshape(-1, c).sum(0) / values - mean**2
        std = np.sqrt(np.maximum(var, 0.0))
        std = np.where(std < 1e-8, 1.0, std)  # as kerasdiag.data.splits.normalisation_stats
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        self.statistics = statistics
        self.scanned = True

    @abstractmethod
    def _scan_splits(self) -> dict[str, SplitStatistics]:
        """Read every example once: bad ones refused or skipped, each split's statistics."""

    def _refuse_or_skip(self, where: str, reason: str, split: str = "", what: str = "") -> None:
        """A bad example at ``where`` (a file, or a file's line): one line ending the run
        (``data.on_bad_file=fail``), or recorded, counted and left out (``skip``)."""
        line = f"{what} {where}" if what else where
        if self.on_bad_file == "fail":
            raise DataError(f"{line}: {reason}; fix or remove it (or data.on_bad_file=skip)")
        self.skipped.append({"file": where, "split": split, "reason": reason})
        print(f"data: skipped {line}: {reason}")

    # -- the record in the run directory ---------------------------------------------------

    def record(self) -> dict[str, Any]:
        """The splits, the normalisation and the skipped examples: what a resumed run reads
        back (:meth:`adopt`) so that it trains on the same examples."""
        self.prepare()
        return {
            "version": RECORD_VERSION,
            "name": self.name,
            "class_names": list(self.class_names),
            **self._record_splits(),
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
            "skipped": list(self.skipped),
        }

    @abstractmethod
    def _record_splits(self) -> dict[str, Any]:
        """The split membership, as ``data_splits.json`` records it."""

    @abstractmethod
    def _adopt_splits(self, record: dict[str, Any]) -> None:
        """Take the split membership of a recorded run (:meth:`_record_splits`' form)."""

    def write_record(self, path: Path) -> None:
        from kerasdiag.core.io import write_json_atomic

        write_json_atomic(path, self.record())

    def adopt(self, path: Path) -> None:
        """Take the splits, statistics and skipped examples of a record written by an earlier
        process of this run: the data a resumed run trains on is the data it started with,
        whatever was added to or removed from the source since."""
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the run's data split record {path}: {exc}") from None
        if record.get("class_names") != list(self.class_names):
            raise DataError(
                f"{path}: the run was started with classes {record.get('class_names')}, the "
                f"data now has {self.class_names}"
            )
        self._adopt_splits(record)
        if record.get("mean") is not None:
            self.mean = np.asarray(record["mean"], np.float32)
            self.std = np.asarray(record["std"], np.float32)
        self.skipped = list(record.get("skipped", []))
        self.scanned = True
        self._sample = None

    # -- the tf.data pipelines -------------------------------------------------------------

    def _normaliser(self):
        import tensorflow as tf

        if not self.normalize:
            return lambda x: tf.cast(x, tf.float32)
        self.prepare()
        mean = tf.constant(self.mean, tf.float32)
        std = tf.constant(self.std, tf.float32)
        return lambda x: (tf.cast(x, tf.float32) - mean) / std

    def training_batches(
        self,
        batch_size: int,
        *,
        epochs: int,
        first_epoch: int = 0,
        augment_cfg: Any = None,
        seed: int = 0,
        input_context: Any = None,
    ):
        """The training batches of epochs ``first_epoch .. epochs-1`` as one stream, each
        epoch's order a function of ``(seed, epoch)`` alone.

        ``input_context`` (``tf.distribute.InputContext``): this worker reads only its shard
        of each epoch (every ``num_input_pipelines``-th example from its id), batched at the
        size given (the per-replica batch). Every shard yields the same number of batches
        per epoch, as many as one device would take at the global batch
        (``ceil(examples / global batch)`` steps): workers step in lock step, and one that ran
        out of batches first would leave the others waiting in the all-reduce. A shard short
        of whole batches (when the examples do not divide evenly) starts its epoch again for
        the last few examples, so every example is read at least once per epoch across the
        cluster, and exactly once when they divide evenly.
        """
        import tensorflow as tf

        self.prepare()
        shards = 1 if input_context is None else input_context.num_input_pipelines
        shard = 0 if input_context is None else input_context.input_pipeline_id

        first = min(int(first_epoch), max(0, int(epochs) - 1))  # a finished fit reads nothing
        last = max(int(epochs), first + 1)
        if shards == 1:
            ds = self._epochs(first, last, batch_size, augment_cfg, seed, shards, shard)
            return ds.prefetch(tf.data.AUTOTUNE)
        replicas = input_context.num_replicas_in_sync
        steps = math.ceil(len(self.y_train) / (batch_size * replicas))
        per_pipeline = steps * replicas // shards  # batches this worker feeds per epoch
        ds = None
        for epoch in range(first, last):
            one = self._epochs(epoch, epoch + 1, batch_size, augment_cfg, seed, shards, shard)
            one = one.repeat().take(per_pipeline)
            ds = one if ds is None else ds.concatenate(one)
        return ds.prefetch(tf.data.AUTOTUNE)

    @abstractmethod
    def _epochs(self, first, last, batch_size, augment_cfg, seed, shards, shard):
        """Epochs ``first .. last-1`` of training batches as one dataset."""

    @abstractmethod
    def split_batches(self, split: str, batch_size: int):
        """Batches of ``(x, y)`` of a whole split, in the source's order."""

    # -- the bounded sample ----------------------------------------------------------------

    def sample(self) -> DataSample:
        """At most ``sample_size`` examples of the training split, and half as many of the
        validation and test splits, spread evenly over each (fixed, no randomness), read and
        normalised as the stream is. Built once."""
        if self._sample is not None:
            return self._sample
        self.prepare()
        sizes = {"train": self.sample_size, "val": self.sample_size // 2,
                 "test": self.sample_size // 2}  # fmt: skip
        positions = {s: spread(len(self.labels(s)), n) for s, n in sizes.items()}
        with file_read_errors(self):
            raw = self._read_positions(positions)
        arrays = {}
        for split in SPLITS:
            # One float copy per split, normalised in place and the raw bytes let go: the
            # sample's peak memory is what it holds, not three temporaries of it.
            x = raw.pop(split).astype(np.float32)
            if self.normalize:
                x -= np.asarray(self.mean, dtype=np.float32)
                x /= np.asarray(self.std, dtype=np.float32)
            arrays[split] = (x, self.labels(split)[positions[split]])
        self._sample = DataSample(
            name=f"{self.name} (sample)",
            x_train=arrays["train"][0],
            y_train=arrays["train"][1],
            x_val=arrays["val"][0],
            y_val=arrays["val"][1],
            x_test=arrays["test"][0],
            y_test=arrays["test"][1],
            num_classes=self.num_classes,
            class_names=list(self.class_names),
            mean=self.mean,
            std=self.std,
            task=self.task,
            target_mean=self.target_mean,
            target_std=self.target_std,
            source=self,
        )
        return self._sample

    @abstractmethod
    def _read_positions(self, positions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The raw examples at ``positions`` (indices in split order) of each split."""


@dataclass(kw_only=True)
class ImageFolderStream(StreamedDataset):
    """An image folder: ``files[split]`` are the image paths of each split; the pixels are
    decoded (in parallel) each time a split is read, or once with ``data.cache=memory``."""

    files: dict[str, list[str]]
    image_size: tuple[int, int]
    color_mode: str = "rgb"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (*self.image_size, _channels(self.color_mode))

    def _decoder(self):
        return image_decoder(self.image_size, self.color_mode)

    def _scan_splits(self) -> dict[str, SplitStatistics]:
        import tensorflow as tf

        decode = self._decoder()
        statistics = {}
        features = int(np.prod(self.input_shape))
        for split in SPLITS:
            paths = self.files[split]
            ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
            ds = ds.map(lambda i, p: (i, decode(p)), num_parallel_calls=tf.data.AUTOTUNE)
            sums = _RunningSums(features)
            seen = []
            # an image that does not decode is left out here and named below
            for index, images in (
                ds.ignore_errors().batch(256).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
            ):
                seen.append(index)
                sums.add(images)
            kept = np.isin(np.arange(len(paths)), np.concatenate(seen) if seen else [])
            for i in np.flatnonzero(~kept):
                why = _why(decode, paths[i])
                self._refuse_or_skip(paths[i], why, split, "cannot decode image")
            if not kept.all():
                self.files[split] = [p for p, k in zip(paths, kept, strict=True) if k]
                setattr(self, f"y_{split}", self.labels(split)[kept])
            statistics[split] = sums.result(self.labels(split))
        return statistics

    def _record_splits(self) -> dict[str, Any]:
        return {
            "files": {s: list(self.files[s]) for s in SPLITS},
            "labels": {s: self.labels(s).tolist() for s in SPLITS},
        }

    def _adopt_splits(self, record: dict[str, Any]) -> None:
        self.files = {s: list(record["files"][s]) for s in SPLITS}
        for s in SPLITS:
            setattr(self, f"y_{s}", np.asarray(record["labels"][s], np.int64))

    def _loader(self, split: str):
        """``index -> uint8 image`` of ``split``: decoded from its file, or, with
        ``data.cache=memory``, gathered from the split decoded once."""
        import tensorflow as tf

        if self.cache == "memory":
            images = tf.constant(self._decode_all(self.files[split]))
            return lambda index: tf.gather(images, index)
        if self.cache:  # a folder: the split decoded once into a file, read back by index
            stored = self._file_cache(split)

            def read(index):
                image = tf.numpy_function(lambda i: stored[i], [index], tf.uint8, stateful=False)
                return tf.ensure_shape(image, self.input_shape)

            return read
        paths = tf.constant(self.files[split])
        decode = self._decoder()
        return lambda index: decode(tf.gather(paths, index))

    def _file_cache(self, split: str) -> np.ndarray:
        """The split's decoded images in ``<data.cache>/<split>-<digest>.npy``, memory-mapped:
        written once (in chunks, never whole in memory; atomically), then reused by every
        epoch and by later runs of the same files, size and colour mode (the digest)."""
        spec = json.dumps([self.files[split], list(self.image_size), self.color_mode])
        digest = hashlib.sha256(spec.encode()).hexdigest()[:16]
        path = Path(self.cache) / f"{split}-{digest}.npy"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                out = np.lib.format.open_memmap(
                    tmp,
                    mode="w+",
                    dtype=np.uint8,
                    shape=(len(self.files[split]), *self.input_shape),
                )
                self._decode_all(self.files[split], out)
                out.flush()
                del out
        return np.load(path, mmap_mode="r")

    def _decode_all(self, paths: list[str], out: np.ndarray | None = None) -> np.ndarray:
        """The images of ``paths``, decoded in parallel, in order, as one uint8 array."""
        import tensorflow as tf

        if out is None:
            out = np.empty((len(paths), *self.input_shape), np.uint8)
        ds = tf.data.Dataset.from_tensor_slices(paths).map(self._decoder(), tf.data.AUTOTUNE)
        start = 0
        for images in ds.batch(256).prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            out[start : start + len(images)] = images
            start += len(images)
        return out

    def _epochs(self, first, last, batch_size, augment_cfg, seed, shards, shard):
        """Each epoch: the permutation :func:`kerasdiag.data.pipeline.epoch_order` gives (as
        for the in-memory sets), augmentation seeded by ``(seed, epoch * n + position)``."""
        import tensorflow as tf

        from kerasdiag.data.pipeline import augment_fn, epoch_order

        n = len(self.y_train)
        load, normalise = self._loader("train"), self._normaliser()
        labels = tf.constant(self.y_train)
        fn = augment_fn(augment_cfg) if augment_cfg is not None else None

        def one_epoch(epoch):
            order = tf.data.Dataset.from_tensor_slices(epoch_order(n, seed, epoch)).enumerate()
            if shards > 1:
                order = order.shard(shards, shard)

            def example(position, index):
                x, y = normalise(load(index)), tf.gather(labels, index)
                if fn is None:
                    return x, y
                key = tf.stack([tf.cast(seed, tf.int64), epoch * n + position])
                return fn(key, (x, y))

            return order.map(example, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)

        return tf.data.Dataset.range(first, last).flat_map(one_epoch)

    def split_batches(self, split: str, batch_size: int):
        """Batches of ``(x, y)`` of a whole split, in file order, decoded in parallel."""
        import tensorflow as tf

        self.prepare()
        load, normalise = self._loader(split), self._normaliser()
        labels = tf.constant(self.labels(split))
        ds = tf.data.Dataset.range(len(labels)).map(
            lambda i: (normalise(load(i)), tf.gather(labels, i)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def _read_positions(self, positions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {s: self._decode_all([self.files[s][i] for i in p]) for s, p in positions.items()}


def image_decoder(image_size: tuple[int, int], color_mode: str):
    """``path -> uint8 (H, W, C)`` (or encoded bytes with ``encoded=True``): Keras'
    image_dataset_from_directory decoding (decode, bilinear resize to ``image_size``),
    rounded back to bytes as the in-memory loader did."""
    import tensorflow as tf

    height, width = image_size
    channels = _channels(color_mode)

    def decode(path, encoded=False):
        data = path if encoded else tf.io.read_file(path)
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        image = tf.image.resize(image, (height, width))
        image = tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8)
        image.set_shape((height, width, channels))
        return image

    return decode


def _why(decode, path: str) -> str:
    """TensorFlow's reason an image does not decode (its batch error names no file)."""
    import tensorflow as tf

    from kerasdiag.data.files import tf_reason

    try:
        decode(tf.constant(path))
    except tf.errors.OpError as exc:
        return tf_reason(exc)
    return "unreadable"


class _RunningSums:
    """Per-feature sums, sums of squares and 128-bit row hashes over batches of a split."""

    def __init__(self, features: int):
        self.sum = np.zeros(features, np.float64)
        self.sumsq = np.zeros(features, np.float64)
        self.hashes: list[np.ndarray] = []
        self.count = 0

    def add(self, batch: np.ndarray) -> None:
        if not len(batch):
            return
        self.hashes.append(row_hashes(batch))
        flat = batch.reshape(len(batch), -1).astype(np.float64)
        self.sum += flat.sum(0)
        self.sumsq += (flat**2).sum(0)
        self.count += len(batch)

    def result(self, labels: np.ndarray) -> SplitStatistics:
        hashes = np.concatenate(self.hashes) if self.hashes else np.zeros((0, 2), np.uint64)
        return SplitStatistics(self.count, hashes, labels, self.sum, self.sumsq)


@dataclass(kw_only=True)
class RecordStream(StreamedDataset):
    """Examples stored one after another (a table's lines, TFRecord shards' records), read
    in order by tf.data: ``line_split`` says for each record which split it is in (0 train,
    1 val, 2 test; -1 blank or skipped) and ``line_labels`` its class. The source is never
    held in memory; these two tables are a few bytes per record.

    The training order of an epoch is a seeded shuffle of the training records through a
    buffer of ``data.shuffle_buffer`` records, its seed a function of ``(data.seed, epoch)``:
    the same epoch gives the same order, in a resumed run too (a full permutation only for
    sources up to the buffer's size).
    """

    path: str
    line_split: np.ndarray
    line_labels: np.ndarray
    shuffle_buffer: int = 10000

    @abstractmethod
    def _lines(self):
        """``(record index, record)`` of every record, in order."""

    @abstractmethod
    def _raw(self, records, batch_size: int):
        """Batches ``(indices, examples)`` of a dataset of ``(index, record)``."""

    def _records(self, codes):
        """``(index, record)`` of the records whose split code is in ``codes``, one by one."""
        return self._lines().filter(self._in(codes))

    def _raw_selected(self, codes, batch_size: int):
        """Batches ``(indices, examples)`` of the records whose split code is in ``codes``."""
        return self._raw(self._records(codes), batch_size)

    def _set_labels(self) -> None:
        dtype = np.int64 if self.line_labels.dtype.kind in "iu" else np.float32
        for code, split in enumerate(SPLITS):
            setattr(self, f"y_{split}", self.line_labels[self.line_split == code].astype(dtype))

    def _in(self, codes):
        """A filter keeping the records whose split code is in ``codes``."""
        import tensorflow as tf

        table = self._variable("line_split", self.line_split)
        wanted = tf.constant(list(codes), tf.int8)
        return lambda i, _: tf.reduce_any(tf.equal(tf.gather(table, i), wanted))

    def _variable(self, name: str, values: np.ndarray):
        """A per-record table as one ``tf.Variable``, shared by every pipeline: a constant
        would be copied into each pipeline's graph, several bytes per record each time."""
        import tensorflow as tf

        held = self.__dict__.setdefault("_variables", {})
        if name not in held or held[name][0] is not values:
            held[name] = (values, tf.Variable(values, trainable=False))
        return held[name][1]

    def _scan_splits(self) -> dict[str, SplitStatistics]:
        import tensorflow as tf

        sums = {s: _RunningSums(int(np.prod(self.input_shape))) for s in SPLITS}
        ds = self._raw_selected((0, 1, 2), 4096)
        for index, rows in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            codes = self.line_split[index]
            for code, split in enumerate(SPLITS):
                sums[split].add(rows[codes == code])
        return {s: sums[s].result(self.labels(s)) for s in SPLITS}

    def _record_splits(self) -> dict[str, Any]:
        # class indices (int32), or rows of numbers to predict / 0/1 labels (float32)
        return {"path": self.path, "line_split": _pack(self.line_split),
                "line_labels": _pack(self.line_labels),
                "label_dtype": self.line_labels.dtype.name,
                "label_shape": list(self.line_labels.shape[1:])}  # fmt: skip

    def _adopt_splits(self, record: dict[str, Any]) -> None:
        self.line_split = _unpack(record["line_split"], np.int8)
        labels = _unpack(record["line_labels"], np.dtype(record.get("label_dtype", "int32")))
        self.line_labels = labels.reshape(-1, *record.get("label_shape", []))
        self._set_labels()

    def _batches(self, raw, normalise):
        """Normalised ``(x, y)`` batches of the ``(indices, examples)`` batches ``raw``."""
        import tensorflow as tf

        labels = self._variable("line_labels", self.line_labels)
        dtype = tf.int64 if self.line_labels.dtype.kind in "iu" else tf.float32
        return raw.map(
            lambda i, x: (normalise(x), tf.cast(tf.gather(labels, i), dtype)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def _epochs(self, first, last, batch_size, augment_cfg, seed, shards, shard):
        """Each epoch: the training records through a shuffle buffer seeded by ``(seed,
        epoch)`` (tf.data's shuffle takes its seed as a number: one dataset per epoch,
        concatenated). ``data.augment`` is not applied to these sources."""
        normalise = self._normaliser()
        ds = None
        for epoch in range(first, last):
            records = self._records((0,))
            if shards > 1:
                records = records.shard(shards, shard)
            records = records.shuffle(int(self.shuffle_buffer), seed=int(seed) * 1_000_003 + epoch)
            one = self._batches(self._raw(records, batch_size), normalise)
            ds = one if ds is None else ds.concatenate(one)
        return ds

    def split_batches(self, split: str, batch_size: int):
        import tensorflow as tf

        self.prepare()
        raw = self._raw_selected((SPLITS.index(split),), batch_size)
        # a filtered stream's length is unknown to Keras, which would warn at its end
        batches = -(-len(self.labels(split)) // batch_size)
        ds = self._batches(raw, self._normaliser())
        return ds.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(tf.data.AUTOTUNE)

    def _read_positions(self, positions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # the records of the sample, marked 10 + split code, read in one pass
        marks = self.line_split.copy()
        for code, split in enumerate(SPLITS):
            lines = np.flatnonzero(self.line_split == code)[positions[split]]
            marks[lines] = 10 + code
        saved, self.line_split = self.line_split, marks
        try:
            ds = self._raw_selected((10, 11, 12), 4096)
            found = {s: [] for s in SPLITS}
            for index, rows in ds.as_numpy_iterator():
                for code, split in enumerate(SPLITS):
                    found[split].append(rows[marks[index] == 10 + code])
        finally:
            self.line_split = saved
        empty = np.zeros((0, *self.input_shape), np.float32)
        return {s: np.concatenate(f) if f else empty for s, f in found.items()}


@dataclass(kw_only=True)
class CsvStream(RecordStream):
    """A CSV table of any length, one example per line after the header, parsed by
    ``tf.io.decode_csv`` a batch of lines at a time."""

    columns: list[str]
    feature_columns: list[int]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (len(self.feature_columns),)

    def _lines(self):
        import tensorflow as tf

        return tf.data.TextLineDataset(self.path).skip(1).enumerate()

    def _selected_lines(self, codes, batch_size: int = 8192):
        """Batches of the lines whose split code is in ``codes``, chosen a batch at a time
        (a filter per line costs more than parsing it)."""
        import tensorflow as tf

        table = self._variable("line_split", self.line_split)
        wanted = tf.constant(list(codes), tf.int8)

        def keep(index, lines):
            chosen = tf.reduce_any(tf.equal(tf.gather(table, index)[:, None], wanted), axis=1)
            return tf.boolean_mask(index, chosen), tf.boolean_mask(lines, chosen)

        return self._lines().batch(batch_size).map(keep, num_parallel_calls=tf.data.AUTOTUNE)

    def _records(self, codes):
        return self._selected_lines(codes).unbatch()

    def _raw_selected(self, codes, batch_size: int):
        import tensorflow as tf

        lines = self._selected_lines(codes).rebatch(batch_size)
        return lines.map(self._parse, num_parallel_calls=tf.data.AUTOTUNE)

    def _raw(self, records, batch_size: int):
        import tensorflow as tf

        return records.batch(batch_size).map(self._parse, num_parallel_calls=tf.data.AUTOTUNE)

    def _parse(self, index, lines):
        import tensorflow as tf

        cells = tf.io.decode_csv(
            lines, record_defaults=[[0.0]] * len(self.feature_columns),
            select_cols=list(self.feature_columns),
        )  # fmt: skip
        return index, tf.stack(cells, axis=-1)


# TFRecord shards: what each tf.train.Example holds (docs/data.md).
TFRECORD_IMAGE = "image"  # bytes: one encoded image (PNG, JPEG, BMP or GIF)
TFRECORD_LABEL = "label"  # int64: the class index, 0 .. classes - 1


@dataclass(kw_only=True)
class TFRecordStream(RecordStream):
    """TFRecord shards of ``tf.train.Example``: an encoded image under ``image`` and its
    class index under ``label``; decoded and resized as an image folder's files are."""

    files: list[str]
    image_size: tuple[int, int]
    color_mode: str = "rgb"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (*self.image_size, _channels(self.color_mode))

    def _lines(self):
        import tensorflow as tf

        return tf.data.TFRecordDataset(self.files).enumerate()

    def _raw(self, records, batch_size: int):
        import tensorflow as tf

        decode = image_decoder(self.image_size, self.color_mode)  # as an image folder's
        spec = {TFRECORD_IMAGE: tf.io.FixedLenFeature([], tf.string)}

        def parse(index, record):
            image = tf.io.parse_single_example(record, spec)[TFRECORD_IMAGE]
            return index, decode(image, encoded=True)

        return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)


def _pack(array: np.ndarray) -> str:
    """A compact text form of a per-line array for the JSON record (zlib, base64)."""
    import base64
    import zlib

    return base64.b64encode(zlib.compress(np.ascontiguousarray(array).tobytes())).decode()


def _unpack(text: str, dtype) -> np.ndarray:
    import base64
    import zlib

    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype).copy()


def spread(n: int, size: int) -> np.ndarray:
    """``min(n, size)`` indices spread evenly over ``range(n)``, in order."""
    return np.unique(np.linspace(0, n - 1, num=min(n, max(1, size))).astype(np.int64))


def examples(data: Any) -> Dataset:
    """What checks and probes read examples from: the data set itself when it is in memory,
    its bounded :meth:`StreamedDataset.sample` when it is streamed."""
    return data.sample() if isinstance(data, StreamedDataset) else data


@contextmanager
def file_read_errors(data: Any) -> Iterator[None]:
    """Turn a file of a streamed set that cannot be read while training or testing (changed,
    truncated or removed after the checking pass, or since the run began: a resume reads the
    recorded file lists without a new pass) into one :class:`DataError` line, not TensorFlow's
    traceback. The run stays resumable: fix or remove the file and run the same command."""
    if not isinstance(data, StreamedDataset):
        yield
        return
    import tensorflow as tf

    try:
        yield
    except (
        tf.errors.InvalidArgumentError,
        tf.errors.NotFoundError,
        tf.errors.DataLossError,
    ) as exc:
        reason = shorten(str(getattr(exc, "message", exc)).strip().splitlines()[0])
        raise DataError(
            f"data.path ({data.name}): a file could not be read during the run ({reason}); "
            "it changed after the run's checking pass: restore or remove it and run the same "
            "command again"
        ) from None
