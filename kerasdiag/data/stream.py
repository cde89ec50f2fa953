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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasdiag.core.errors import DataError
from kerasdiag.data.dataset import Dataset

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


@dataclass
class StreamedDataset:
    """An image folder's splits as file lists and labels; pixels decoded when read.

    ``files[split]`` are the image paths of each split (``"train"``, ``"val"``, ``"test"``),
    ``y_train``/``y_val``/``y_test`` their labels: the labels of the whole splits (small),
    unlike a :class:`DataSample`'s. ``mean``/``std`` come from :meth:`scan`.
    """

    name: str
    files: dict[str, list[str]]
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]
    image_size: tuple[int, int]
    color_mode: str = "rgb"
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

    # -- what the rest of a run reads ------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (*self.image_size, _channels(self.color_mode))

    def labels(self, split: str) -> np.ndarray:
        return {"train": self.y_train, "val": self.y_val, "test": self.y_test}[split]

    def summary(self) -> dict:
        """Sizes and class counts (as :meth:`Dataset.summary`), that the set is streamed,
        and how many undecodable files were skipped."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "train": int(len(self.y_train)),
            "val": int(len(self.y_val)),
            "test": int(len(self.y_test)),
            "train_class_counts": np.bincount(self.y_train, minlength=self.num_classes).tolist(),
            "streamed": True,
            "sample_size": int(self.sample_size),
            "skipped_files": len(self.skipped),
        }

    # -- decoding --------------------------------------------------------------------------

    def _decoder(self):
        """``path -> uint8 (H, W, C)``: Keras' image_dataset_from_directory decoding (decode,
        bilinear resize to ``image_size``), rounded back to bytes as the in-memory loader did."""
        import tensorflow as tf

        height, width = self.image_size
        channels = _channels(self.color_mode)

        def decode(path):
            image = tf.io.decode_image(
                tf.io.read_file(path), channels=channels, expand_animations=False
            )
            image = tf.image.resize(image, (height, width))
            image = tf.cast(tf.round(tf.clip_by_value(image, 0, 255)), tf.uint8)
            image.set_shape((height, width, channels))
            return image

        return decode

    def _normaliser(self):
        import tensorflow as tf

        if not self.normalize:
            return lambda image: tf.cast(image, tf.float32)
        self.prepare()
        mean = tf.constant(self.mean, tf.float32)
        std = tf.constant(self.std, tf.float32)
        return lambda image: (tf.cast(image, tf.float32) - mean) / std

    # -- the streaming pass ----------------------------------------------------------------

    def prepare(self) -> None:
        """Run :meth:`scan` once, unless its results were read back from a record."""
        if not self.scanned:
            self.scan()

    def scan(self) -> None:
        """Read every file once (parallel decode): skip or refuse the undecodable ones, and
        measure the normalisation statistics and what the data checks compare.

        Memory: the per-example hashes (16 bytes each) and labels, and per-feature sums;
        never the pixels of more than a few batches.
        """
        import tensorflow as tf

        from kerasdiag.data.splits import row_hashes

        decode = self._decoder()
        statistics: dict[str, SplitStatistics] = {}
        channel_sum = channel_sumsq = None
        pixels = 0
        for split in SPLITS:
            paths, labels = self.files[split], self.labels(split)
            ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), paths))
            ds = ds.map(
                lambda i, p: (i, decode(p)), num_parallel_calls=tf.data.AUTOTUNE
            ).ignore_errors()
            seen, hashes = [], []
            features = int(np.prod(self.input_shape))
            f_sum = np.zeros(features, np.float64)
            f_sumsq = np.zeros(features, np.float64)
            for index, images in ds.batch(256).prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
                seen.append(index)
                hashes.append(row_hashes(images))
                flat = images.reshape(len(images), -1).astype(np.float64)
                f_sum += flat.sum(0)
                f_sumsq += (flat**2).sum(0)
            seen_idx = np.concatenate(seen) if seen else np.zeros(0, np.int64)
            if len(seen_idx) != len(paths):
                bad = sorted(set(range(len(paths))) - set(seen_idx.tolist()))
                self._bad_files(split, bad, decode)
                keep = np.isin(np.arange(len(paths)), seen_idx)
                self.files[split] = [p for p, k in zip(paths, keep, strict=True) if k]
                setattr(self, f"y_{split}", labels[keep])
            statistics[split] = SplitStatistics(
                count=len(seen_idx),
                hashes=np.concatenate(hashes) if hashes else np.zeros((0, 2), np.uint64),
                labels=self.labels(split),
                feature_sum=f_sum,
                feature_sumsq=f_sumsq,
            )
            if split == "train":  # per-channel from per-feature: the last axis is the channel
                c = self.input_shape[-1]
                channel_sum = f_sum.reshape(-1, c).sum(0)
                channel_sumsq = f_sumsq.reshape(-1, c).sum(0)
                pixels = len(seen_idx) * features // c
        for split in SPLITS:
            if not len(self.labels(split)):
                raise DataError(f"{self.name}: no decodable image left in the {split} split")
        mean = channel_sum / pixels
        std = np.sqrt(np.maximum(channel_sumsq / pixels - mean**2, 0.0))
        std = np.where(std < 1e-8, 1.0, std)  # as kerasdiag.data.splits.normalisation_stats
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)
        self.statistics = statistics
        self.scanned = True

    def _bad_files(self, split: str, bad: list[int], decode) -> None:
        """Name each undecodable file with TensorFlow's reason; refuse or record them."""
        import tensorflow as tf

        from kerasdiag.data.files import tf_reason

        for i in bad:
            path = self.files[split][i]
            try:
                decode(tf.constant(path))
                reason = "unreadable"
            except tf.errors.OpError as exc:
                reason = tf_reason(exc)
            if self.on_bad_file == "fail":
                raise DataError(
                    f"cannot decode image {path}: {reason}; fix or remove it "
                    "(or data.on_bad_file=skip)"
                )
            self.skipped.append({"file": path, "split": split, "reason": reason})
            print(f"data: skipped undecodable image {path}: {reason}")

    # -- the record in the run directory ---------------------------------------------------

    def record(self) -> dict[str, Any]:
        """The splits (files and labels), the normalisation and the skipped files: what a
        resumed run reads back (:meth:`adopt`) so that it trains on the same examples."""
        self.prepare()
        return {
            "version": RECORD_VERSION,
            "name": self.name,
            "class_names": list(self.class_names),
            "files": {s: list(self.files[s]) for s in SPLITS},
            "labels": {s: self.labels(s).tolist() for s in SPLITS},
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
            "skipped": list(self.skipped),
        }

    def write_record(self, path: Path) -> None:
        from kerasdiag.core.io import write_json_atomic

        write_json_atomic(path, self.record())

    def adopt(self, path: Path) -> None:
        """Take the splits, statistics and skipped files of a record written by an earlier
        process of this run: the data a resumed run trains on is the data it started with,
        whatever was added to or removed from the folder since."""
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the run's data split record {path}: {exc}") from None
        if record.get("class_names") != list(self.class_names):
            raise DataError(
                f"{path}: the run was started with classes {record.get('class_names')}, the "
                f"folder now has {self.class_names}"
            )
        self.files = {s: list(record["files"][s]) for s in SPLITS}
        for s in SPLITS:
            setattr(self, f"y_{s}", np.asarray(record["labels"][s], np.int64))
        if record.get("mean") is not None:
            self.mean = np.asarray(record["mean"], np.float32)
            self.std = np.asarray(record["std"], np.float32)
        self.skipped = list(record.get("skipped", []))
        self.scanned = True
        self._sample = None

    # -- the tf.data pipelines -------------------------------------------------------------

    def _loader(self, split: str):
        """``index -> uint8 image`` of ``split``: decoded from its file, or, with
        ``data.cache=memory``, gathered from the split decoded once."""
        import tensorflow as tf

        if self.cache == "memory":
            images = tf.constant(self._decode_all(self.files[split]))
            return lambda index: tf.gather(images, index)
        paths = tf.constant(self.files[split])
        decode = self._decoder()
        return lambda index: decode(tf.gather(paths, index))

    def _decode_all(self, paths: list[str]) -> np.ndarray:
        """The images of ``paths``, decoded in parallel, in order, as one uint8 array."""
        import tensorflow as tf

        decode = self._decoder()
        out = np.empty((len(paths), *self.input_shape), np.uint8)
        ds = tf.data.Dataset.from_tensor_slices(paths).map(decode, tf.data.AUTOTUNE).batch(256)
        start = 0
        for images in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            out[start : start + len(images)] = images
            start += len(images)
        return out

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
        """The training batches of epochs ``first_epoch .. epochs-1`` as one stream, in the
        order :func:`kerasdiag.data.pipeline.epoch_order` gives (a function of seed and
        epoch); augmentation seeded by ``(seed, epoch * n + position)`` as in memory.

        ``input_context`` (``tf.distribute.InputContext``): this worker reads only its shard
        of each epoch's permutation (positions ``i`` with ``i % workers == worker``), batched
        at the per-replica size: every example once per epoch across the workers.
        """
        import tensorflow as tf

        from kerasdiag.data.pipeline import augment_fn, epoch_order

        self.prepare()
        n = len(self.y_train)
        load, normalise = self._loader("train"), self._normaliser()
        labels = tf.constant(self.y_train)
        fn = augment_fn(augment_cfg) if augment_cfg is not None else None

        def one_epoch(epoch):
            order = tf.data.Dataset.from_tensor_slices(epoch_order(n, seed, epoch)).enumerate()
            if input_context is not None and input_context.num_input_pipelines > 1:
                order = order.shard(
                    input_context.num_input_pipelines, input_context.input_pipeline_id
                )

            def example(position, index):
                x, y = normalise(load(index)), tf.gather(labels, index)
                if fn is None:
                    return x, y
                key = tf.stack([tf.cast(seed, tf.int64), epoch * n + position])
                return fn(key, (x, y))

            return order.map(example, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)

        first = min(int(first_epoch), max(0, int(epochs) - 1))  # a finished fit reads nothing
        ds = tf.data.Dataset.range(first, max(int(epochs), first + 1)).flat_map(one_epoch)
        return ds.prefetch(tf.data.AUTOTUNE)

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

    # -- the bounded sample ----------------------------------------------------------------

    def sample(self) -> DataSample:
        """At most ``sample_size`` examples of the training split, and half as many of the
        validation and test splits, spread evenly over each (fixed, no randomness), decoded
        and normalised as the stream is. Built once."""
        if self._sample is not None:
            return self._sample
        self.prepare()
        arrays = {}
        for split, size in (("train", self.sample_size), ("val", self.sample_size // 2),
                            ("test", self.sample_size // 2)):  # fmt: skip
            labels = self.labels(split)
            index = spread(len(labels), size)
            x = self._decode_all([self.files[split][i] for i in index]).astype(np.float32)
            if self.normalize:
                x = (x - self.mean) / self.std
            arrays[split] = (x, labels[index])
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
            source=self,
        )
        return self._sample


def spread(n: int, size: int) -> np.ndarray:
    """``min(n, size)`` indices spread evenly over ``range(n)``, in order."""
    return np.unique(np.linspace(0, n - 1, num=min(n, max(1, size))).astype(np.int64))


def examples(data: Any) -> Dataset:
    """What checks and probes read examples from: the data set itself when it is in memory,
    its bounded :meth:`StreamedDataset.sample` when it is streamed."""
    return data.sample() if isinstance(data, StreamedDataset) else data
