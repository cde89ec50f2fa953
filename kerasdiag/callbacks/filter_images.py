"""FilterImages: the first layer's filters as an image grid, every epoch."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.callbacks.base import (
    FileWrites,
    SummaryLog,
    optional_path,
    warn,
)
from kerasdiag.core.arguments import check_positive_int
from kerasdiag.core.io import write_bytes_atomic
from kerasdiag.core.rundir import RunLayout

# Each filter is drawn at least this many pixels wide (3x3 kernels are scaled up 16x), so a
# grid of 32 small kernels is ~300 px: readable in the report and in TensorBoard.
_MIN_CELL_PIXELS = 48


def first_layer_filters(
    model: keras.Model, image_shape: tuple[int, ...] | None = None
) -> tuple[str, np.ndarray] | None:
    """(layer name, filters of shape (n, h, w, channels)) of the model's first layer.

    The first ``Conv2D`` layer's kernels; for a model without convolutions, the first
    ``Dense`` layer's weight columns reshaped to images: to ``image_shape`` if given, else to
    the model's input shape when that is an image, else to a square (one channel, or three
    when the inputs are flattened RGB). None when there is no such layer.
    """
    for layer in _layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            kernel = layer.kernel.numpy()  # (h, w, in, out)
            return layer.name, np.transpose(kernel, (3, 0, 1, 2))
        if isinstance(layer, keras.layers.Dense):
            kernel = layer.kernel.numpy()  # (in, out)
            shape = image_shape or _image_shape(kernel.shape[0], model)
            if shape is None or math.prod(shape) != kernel.shape[0]:
                return None
            shape = tuple(shape) if len(shape) == 3 else (*shape, 1)
            return layer.name, kernel.T.reshape(kernel.shape[1], *shape)
    return None


def filter_grid(filters: np.ndarray, scale: int | None = None, pad: int = 1) -> np.ndarray:
    """Filters (n, h, w, c) as one uint8 image: a near-square grid, each filter min-max scaled.

    Three channels are drawn as RGB, one as grey, any other number as the grey mean over
    channels. ``scale`` enlarges each filter (nearest neighbour; default: to at least 48
    pixels); ``pad`` black pixels separate the cells.
    """
    filters = np.asarray(filters, dtype=np.float64)
    if filters.ndim != 4:
        raise ValueError(f"`filters` must have shape (n, h, w, c). Received shape {filters.shape}")
    if filters.shape[-1] not in (1, 3):
        filters = filters.mean(axis=-1, keepdims=True)
    n, h, w, c = filters.shape
    lo = filters.min(axis=(1, 2, 3), keepdims=True)
    span = filters.max(axis=(1, 2, 3), keepdims=True) - lo
    # A constant filter (e.g. all zeros) is drawn mid-grey rather than divided by zero.
    filters = np.where(span > 0, (filters - lo) / np.where(span > 0, span, 1.0), 0.5)
    scale = scale or max(1, math.ceil(_MIN_CELL_PIXELS / max(h, w)))
    cells = np.repeat(np.repeat(filters, scale, axis=1), scale, axis=2)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    ch, cw = h * scale, w * scale
    grid = np.zeros((rows * (ch + pad) + pad, cols * (cw + pad) + pad, c))
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = pad + r * (ch + pad), pad + k * (cw + pad)
        grid[y : y + ch, x : x + cw] = cells[i]
    return np.round(grid * 255).astype(np.uint8)


class FilterImages(keras.callbacks.Callback):
    """Saves the first layer's filters as an image grid, at the start and every epoch.

    Smooth, diverse filters are healthy; noisy ones mean an unconverged network, a bad
    learning rate or too little regularisation. The first ``Conv2D`` layer is drawn; a
    model without one has its first ``Dense`` layer's weights drawn as images (see
    :func:`first_layer_filters`); a model with neither gets one warning and no images.

    Example:

    ```python
    model.fit(x, y, epochs=5, callbacks=[FilterImages(out_dir="run", log_dir="logs")])
    # run/filters_init.png, run/filters_epoch001.png, ... and TensorBoard images
    ```

    Args:
        out_dir: directory for ``filters_init.png`` (before training) and
            ``filters_epoch<NNN>.png`` (after epoch NNN, counted from 1 as Keras' console and
            metrics.csv count).
            None: no files.
        log_dir: TensorBoard log directory; the run ``<log_dir>/filters`` gets the image
            ``filters/<layer>`` with the epoch as step (0 before training). None: none.
        freq: draw after every ``freq``-th epoch (the last epoch is always drawn).
        image_shape: shape to draw a first Dense layer's inputs as (e.g. (8, 8, 1)).

    Attributes:
        paths: the PNG files written.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike | None = None,
        log_dir: str | os.PathLike | None = None,
        freq: int = 1,
        image_shape: tuple[int, ...] | None = None,
    ):
        super().__init__()
        if out_dir is None and log_dir is None:
            raise ValueError("FilterImages needs `out_dir` or `log_dir` (or both) to draw into.")
        self.out_dir = optional_path(out_dir)
        self.freq = check_positive_int("freq", freq)
        if image_shape is not None:
            image_shape = tuple(check_positive_int("image_shape", d) for d in image_shape)
            if len(image_shape) not in (2, 3):
                raise ValueError(
                    f"`image_shape` must be (h, w) or (h, w, c). Received: {image_shape}"
                )
        self.image_shape = image_shape
        self._summary = SummaryLog(optional_path(log_dir), "filters")
        self.paths: list = []
        self._writes = FileWrites()
        self._enabled = True
        self._init: np.ndarray | None = None

    def on_train_begin(self, logs=None):
        self._enabled = first_layer_filters(self.model, self.image_shape) is not None
        if not self._enabled:
            warn(
                f"FilterImages: model {self.model.name!r} has no Conv2D layer and no first "
                f"Dense layer whose inputs form an image; no filter images are drawn"
            )
            return
        self._init = first_layer_filters(self.model, self.image_shape)[1]
        self._draw(RunLayout.FILTERS_INIT, 0)

    def on_epoch_end(self, epoch, logs=None):
        last = self.params and epoch + 1 == self.params.get("epochs")
        if self._enabled and ((epoch + 1) % self.freq == 0 or last):
            self._draw(f"filters_epoch{epoch + 1:03d}.png", epoch + 1)  # from 1, as Keras

    def on_train_end(self, logs=None):
        self._writes.wait()
        self._summary.close()

    def _draw(self, filename: str, step: int) -> None:
        # Only the weights are read here; the grid, its PNG and the files are made on the
        # background writer thread (in order), while the next epoch trains.
        name, filters = first_layer_filters(self.model, self.image_shape)
        path = None if self.out_dir is None else self.out_dir / filename
        if path is not None:
            self.paths.append(path)
        self._writes.submit(self._render, name, filters, path, step)

    def _render(self, name: str, filters: np.ndarray, path: Path | None, step: int) -> None:
        grid = filter_grid(filters)
        png = tf.io.encode_png(grid).numpy()
        self._summary.png(f"filters/{name}", png, grid.shape[1], grid.shape[0], step)
        if path is None:
            return
        if step > 0 and self._init is not None:
            raw = {"layer": np.array(name), "init": self._init, "last": filters, "epoch": step}
            _write_npz(path.parent / RunLayout.FILTERS_RAW, raw)
        write_bytes_atomic(path, png)


def _write_npz(path: os.PathLike, arrays: dict) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def _layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    # Depth first through nested models, so a backbone's first convolution is found.
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _layers(layer)
        else:
            yield layer


def _image_shape(features: int, model: keras.Model) -> tuple[int, ...] | None:
    try:
        input_shape = tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, ValueError):
        input_shape = ()
    if len(input_shape) in (2, 3) and math.prod(input_shape) == features:
        return input_shape
    for channels in (1, 3):
        side = math.isqrt(features // channels)
        if side * side * channels == features:
            return (side, side, channels)
    return None
