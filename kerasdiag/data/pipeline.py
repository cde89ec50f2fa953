"""tf.data input pipelines: shuffle, augment (training only), batch, prefetch.

Training data order is a function of the seed and the epoch only (:func:`make_epoch_dataset`):
a run resumed after epoch k sees epoch k+1 exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

# tf.data's autotuner is off and the pipeline tuned by hand: on a small machine its model
# thread stalls the first step of an epoch by up to ~1 s at random (8 epochs of the CIFAR
# sample: 16.8-18.2 s with it, 13.7-14.8 s without, same steps). One parallel call per core
# for the augmentation, two batches prefetched.
PARALLEL_CALLS = os.cpu_count() or 1
PREFETCH_BATCHES = 2


def augment_fn(augment_cfg: Any):
    """A per-example augmentation ``(seed, (x, y)) -> (x, y)``, or None when all are off.

    Flip and crop act on (H, W, C) images; noise adds Gaussian noise to normalised inputs.
    Stateless ops driven by a seeded random stream keep a deterministic run repeatable.
    """
    flip, crop, noise = bool(augment_cfg.flip), int(augment_cfg.crop), float(augment_cfg.noise)
    if not (flip or crop or noise):
        return None

    def apply(seed, example):
        x, y = example
        seeds = tf.random.experimental.stateless_split(seed, 3)
        if flip:
            x = tf.image.stateless_random_flip_left_right(x, seeds[0])
        if crop:
            padded = tf.pad(x, [[crop, crop], [crop, crop], [0, 0]], mode="REFLECT")
            x = tf.image.stateless_random_crop(padded, tf.shape(x), seeds[1])
        if noise:
            x = x + tf.random.stateless_normal(tf.shape(x), seeds[2], stddev=noise)
        return x, y

    return apply


def make_tf_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    training: bool = False,
    augment_cfg: Any = None,
    shuffle_buffer: int = 10000,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of (x, y): shuffled and augmented only when ``training``."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        ds = ds.shuffle(min(shuffle_buffer, len(x)), seed=seed, reshuffle_each_iteration=True)
        fn = augment_fn(augment_cfg) if augment_cfg is not None else None
        if fn is not None:
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip((seeds, ds)).map(fn, num_parallel_calls=PARALLEL_CALLS)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.batch(batch_size).prefetch(PREFETCH_BATCHES).with_options(options)


def epoch_order(n: int, seed: int, epoch: Any) -> tf.Tensor:
    """The permutation of ``range(n)`` that epoch ``epoch`` trains in: a function of
    ``(seed, epoch)`` alone (a stateless shuffle), never of how many epochs this process ran."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key)


def make_epoch_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    epochs: int,
    first_epoch: int = 0,
    augment_cfg: Any = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """The training batches of epochs ``first_epoch .. epochs-1`` as one stream.

    Each epoch is a full permutation (:func:`epoch_order`), cut into batches of its own (the
    last one may be smaller); augmentation draws from stateless seeds ``(seed, epoch * n +
    position)``. Resuming at epoch k therefore replays exactly what an uninterrupted run
    would have seen. Give ``model.fit`` ``steps_per_epoch = ceil(n / batch_size)`` so that it
    keeps one iterator across epochs.
    """
    n = len(x)
    x_all, y_all = tf.constant(x), tf.constant(y)
    fn = augment_fn(augment_cfg) if augment_cfg is not None else None

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.data.Dataset.from_tensor_slices(epoch_order(n, seed, epoch))
        if fn is None:
            return order.batch(batch_size).map(
                lambda idx: (tf.gather(x_all, idx), tf.gather(y_all, idx))
            )

        def example(position: tf.Tensor, index: tf.Tensor):
            key = tf.stack([tf.cast(seed, tf.int64), epoch * n + position])
            return fn(key, (tf.gather(x_all, index), tf.gather(y_all, index)))

        return order.enumerate().map(example, num_parallel_calls=PARALLEL_CALLS).batch(batch_size)

    first = min(int(first_epoch), max(0, int(epochs) - 1))  # a finished fit reads nothing
    ds = tf.data.Dataset.range(first, max(int(epochs), first + 1)).flat_map(one_epoch)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(PREFETCH_BATCHES).with_options(options)


def training_batches(
    data: Any,
    batch_size: int,
    *,
    epochs: int,
    first_epoch: int = 0,
    augment_cfg: Any = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """The training stream of epochs ``first_epoch .. epochs-1`` of an in-memory or a
    streamed data set, in the same order (a function of seed and epoch) either way."""
    if hasattr(data, "training_batches"):  # a StreamedDataset (kerasdiag.data.stream)
        return data.training_batches(
            batch_size, epochs=epochs, first_epoch=first_epoch, augment_cfg=augment_cfg, seed=seed
        )
    return make_epoch_dataset(
        data.x_train,
        data.y_train,
        batch_size,
        epochs=epochs,
        first_epoch=first_epoch,
        augment_cfg=augment_cfg,
        seed=seed,
    )


def split_batches(data: Any, split: str, batch_size: int) -> tf.data.Dataset:
    """Batches of a whole split (``"val"`` or ``"test"``) in order, unshuffled: read from
    disk for a streamed data set, from its arrays otherwise."""
    if hasattr(data, "split_batches"):  # a StreamedDataset (kerasdiag.data.stream)
        return data.split_batches(split, batch_size)
    return make_tf_dataset(getattr(data, f"x_{split}"), getattr(data, f"y_{split}"), batch_size)
