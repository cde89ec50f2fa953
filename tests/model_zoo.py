"""The model zoo: tiny versions of the models people train, on real data, healthy or faulty.

Every entry builds a compiled model and its data: sklearn's 8x8 digits (as images, as rows of
a sequence, as a token sequence of pixel intensities for the Embedding models) or the real
CIFAR-10 sample. Architectures: keras.applications' MobileNetV2 (weights=None, alpha=0.35,
32x32), a keras.io-style BatchNorm ResNet, an Embedding text CNN, a Bidirectional LSTM, a GRU,
a Transformer block, a two-input two-output functional model with dict and list I/O and
``loss_weights``, a subclassed model and one with a custom ``train_step``; variants train with
``jit_compile`` + ``steps_per_execution``, mixed float16, and ``tf.data`` with sample weights.

Faults: ``grad_bug`` (a custom layer whose gradient is scaled by 1.1, early in a ReLU/BN
network), ``lr_high`` (learning rate far too high), ``vanishing`` (a deep sigmoid stack).

The fault grid (``GRID``) crosses task kinds (multi-class, binary, multi-label, regression,
two outputs, label smoothing) with model families and plants one fault per case; ``RESPONSIBLE``
names the pieces each fault is for. Shared by ``tests/test_model_zoo.py``,
``tests/test_fault_grid.py``, ``benchmarks/bench_zoo.py`` and ``benchmarks/bench_fault_grid.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasdiag.data.cifar import read_batch

from conftest import CIFAR_SAMPLE

SEED = 0
# A light L2 penalty on some layers, so the regularization check has something to check.
L2 = keras.regularizers.L2(1e-4)
LOGITS_CE = "logits_ce"


def logits_ce() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@functools.lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(standardised 8x8 images (N, 8, 8, 1), raw 0..16 intensities as int tokens (N, 64),
    labels)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data - d.data.mean(0)) / (d.data.std(0) + 1e-8)
    return (
        x.reshape(-1, 8, 8, 1).astype("float32"),
        d.data.astype("int32"),
        d.target.astype("int64"),
    )


@functools.lru_cache(maxsize=1)
def cifar(n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` real CIFAR-10 sample images (32x32x3, standardised) and labels."""
    images, labels = read_batch(CIFAR_SAMPLE / "data_batch_1")
    x = images[:n].astype("float32") / 255.0
    return ((x - x.mean()) / x.std()).astype("float32"), np.asarray(labels[:n], "int64")


class ScaledGradConv2D(keras.layers.Layer):
    """A 3x3 'same' convolution whose hand-written gradient is ``scale`` times the true one
    (kernel, bias and input): ``scale=1.0`` is a healthy custom layer, 1.1 a planted bug."""

    def __init__(self, filters: int, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.scale = filters, scale

    def build(self, input_shape):
        shape = (3, 3, input_shape[-1], self.filters)
        self.kernel = self.add_weight(shape=shape, initializer="he_normal", name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def call(self, x):
        scale = self.scale

        @tf.custom_gradient
        def conv(x, kernel, bias):
            y = tf.nn.conv2d(x, kernel, 1, "SAME") + bias

            def grad(dy):
                with tf.GradientTape() as tape:
                    tape.watch([x, kernel, bias])
                    out = tf.nn.conv2d(x, kernel, 1, "SAME") + bias
                dx, dk, db = tape.gradient(out, [x, kernel, bias], output_gradients=dy)
                s = tf.cast(scale, dy.dtype)
                return dx * s, dk * s, db * s

            return y, grad

        k = tf.cast(tf.convert_to_tensor(self.kernel), x.dtype)
        b = tf.cast(tf.convert_to_tensor(self.bias), x.dtype)
        return conv(x, k, b)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "scale": self.scale}


@dataclass
class Entry:
    """One zoo model: ``build()`` gives (compiled model, x, y); ``fault`` is None if healthy."""

    name: str
    build: Callable[[], tuple[keras.Model, Any, Any]]
    fault: str | None = None
    # what a fit of this entry passes on (sample_weight, tf.data, ...)
    fit: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 32
    # TrainingDoctor thresholds: a one-epoch CIFAR run is honestly underfit, so its
    # bias/variance judgement is switched off (said in the table's line).
    doctor: dict[str, Any] = field(default_factory=dict)
    # a layer of the model for check_layer_gradients (its name)
    layer: str | None = None
    # the fault grid's row labels: the task kind and the model family
    task: str = "sparse"
    family: str = ""


def _compile(model: keras.Model, loss: Any = None, lr: float = 1e-3, **kwargs) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=loss if loss is not None else logits_ce(),
        metrics=kwargs.pop("metrics", ["accuracy"]),
        **kwargs,
    )
    return model


def mobilenet() -> tuple[keras.Model, Any, Any]:
    keras.utils.set_random_seed(SEED)
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None
    )
    x, y = cifar()
    return _compile(model), x, y


def application(name: str) -> tuple[keras.Model, Any, Any]:
    """A keras.applications model at its smallest input (32x32, ``weights=None``) on CIFAR;
    the models with their own preprocessing layers (MobileNetV3, EfficientNet) get the raw
    0-255 pixels those expect."""
    keras.utils.set_random_seed(SEED)
    build = getattr(keras.applications, name)
    kwargs = {"include_preprocessing": True} if name.startswith("MobileNetV3") else {}
    model = build(input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None,
                  **kwargs)  # fmt: skip
    x, y = cifar()
    if name.startswith(("MobileNetV3", "EfficientNet")):
        x = cifar_raw()
    return _compile(model), x, y


@functools.lru_cache(maxsize=1)
def cifar_raw(n: int = 512) -> np.ndarray:
    """The first ``n`` CIFAR-10 sample images as 0..255 floats."""
    images, _ = read_batch(CIFAR_SAMPLE / "data_batch_1")
    return images[:n].astype("float32")


def mobilenet_grad_bug() -> tuple[keras.Model, Any, Any]:
    """MobileNetV2 (alpha=0.35, 32x32) behind a first 3x3 conv whose gradient is 1.1x."""
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((32, 32, 3))
    x = ScaledGradConv2D(3, scale=1.1, name="custom_conv")(inputs)
    body = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None
    )
    model = keras.Model(inputs, body(x), name="mobilenet_grad_bug")
    x_data, y = cifar()
    return _compile(model), x_data, y


def _res_block(x, filters: int, stride: int = 1):
    shortcut = x
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.Activation("relu")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = keras.layers.BatchNormalization()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = keras.layers.BatchNormalization()(shortcut)
    return keras.layers.Activation("relu")(keras.layers.Add()([y, shortcut]))


def resnet(scale: float | None = None, lr: float = 1e-3) -> tuple[keras.Model, Any, Any]:
    """A keras.io-style ResNet (conv-BN-ReLU stem, two residual stages, max-pool) on CIFAR.

    ``scale`` puts a ``ScaledGradConv2D`` right after the stem (1.1: the planted bug).
    """
    keras.utils.set_random_seed(SEED)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    if scale is not None:
        x = ScaledGradConv2D(8, scale=scale, name="custom_conv")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = _res_block(x, 8)
    x = _res_block(x, 16, stride=2)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    x_data, y_data = cifar()
    return _compile(keras.Model(inputs, outputs, name="resnet"), lr=lr), x_data, y_data


def text_cnn() -> tuple[keras.Model, Any, Any]:
    keras.utils.set_random_seed(SEED)
    _, tokens, y = digits()
    model = keras.Sequential(
        [
            keras.Input((64,), dtype="int32"),
            keras.layers.Embedding(17, 8, name="embedding"),
            keras.layers.Conv1D(16, 3, activation="relu", name="conv", kernel_regularizer=L2),
            keras.layers.MaxPooling1D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="logits"),
        ],
        name="text_cnn",
    )
    return _compile(model, lr=3e-3), tokens, y


def _rows() -> tuple[np.ndarray, np.ndarray]:
    images, _, y = digits()
    return images.reshape(-1, 8, 8), y


def bilstm() -> tuple[keras.Model, Any, Any]:
    keras.utils.set_random_seed(SEED)
    x, y = _rows()
    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Bidirectional(keras.layers.LSTM(12), name="bilstm"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="bilstm",
    )
    return _compile(model, lr=3e-3), x, y


def gru() -> tuple[keras.Model, Any, Any]:
    keras.utils.set_random_seed(SEED)
    x, y = _rows()
    model = keras.Sequential(
        [keras.Input((8, 8)), keras.layers.GRU(16, name="gru"), keras.layers.Dense(10)],
        name="gru",
    )
    return _compile(model, lr=3e-3), x, y


def transformer() -> tuple[keras.Model, Any, Any]:
    """One Transformer encoder block (attention, LayerNorm, feed-forward) over the 8 rows."""
    keras.utils.set_random_seed(SEED)
    x_data, y = _rows()
    inputs = keras.Input((8, 8))
    h = keras.layers.Dense(16, name="embed")(inputs)
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(h, h)
    h = keras.layers.LayerNormalization(name="ln1")(h + att)
    ff = keras.layers.Dense(32, activation="relu", name="ff1", kernel_regularizer=L2)(h)
    ff = keras.layers.Dense(16, name="ff2")(ff)
    h = keras.layers.LayerNormalization(name="ln2")(h + ff)
    h = keras.layers.Flatten()(h)  # keeps the row order (attention alone is order-blind)
    # 128 unit-variance LayerNorm features: a small output init keeps the initial loss at ln 10
    small = keras.initializers.VarianceScaling(0.1)
    outputs = keras.layers.Dense(10, name="logits", kernel_initializer=small)(h)
    return _compile(keras.Model(inputs, outputs, name="transformer"), lr=3e-3), x_data, y


def two_io(style: str = "list") -> tuple[keras.Model, Any, Any]:
    """Two inputs (left and right half of a digit), two outputs (the class and "digit >= 5"),
    two losses with ``loss_weights``; ``style`` "list" or "dict" for inputs, outputs, losses."""
    keras.utils.set_random_seed(SEED)
    images, _, y = digits()
    left, right = images[:, :, :4, 0].reshape(-1, 32), images[:, :, 4:, 0].reshape(-1, 32)
    big = (y >= 5).astype("float32").reshape(-1, 1)
    a, b = keras.Input((32,), name="left"), keras.Input((32,), name="right")
    h = keras.layers.Concatenate()(
        [keras.layers.Dense(16, activation="relu")(a), keras.layers.Dense(16, activation="relu")(b)]
    )
    h = keras.layers.Dense(32, activation="relu", name="shared", kernel_regularizer=L2)(h)
    digit = keras.layers.Dense(10, name="digit")(h)
    high = keras.layers.Dense(1, activation="sigmoid", name="high")(h)
    if style == "dict":
        model = keras.Model({"left": a, "right": b}, {"digit": digit, "high": high}, name="two_io")
        x = {"left": left, "right": right}
        yy = {"digit": y, "high": big}
        loss = {"digit": logits_ce(), "high": keras.losses.BinaryCrossentropy()}
        weights = {"digit": 1.0, "high": 0.5}
        metrics = {"digit": ["accuracy"], "high": ["accuracy"]}
    else:
        model = keras.Model([a, b], [digit, high], name="two_io")
        x, yy = [left, right], [y, big]
        loss = [logits_ce(), keras.losses.BinaryCrossentropy()]
        weights = [1.0, 0.5]
        metrics = [["accuracy"], ["accuracy"]]
    return _compile(model, loss=loss, loss_weights=weights, metrics=metrics), x, yy


class SubclassedMLP(keras.Model):
    """A subclassed two-layer MLP (no symbolic inputs, no per-layer outputs)."""

    def __init__(self, hidden: int = 32, classes: int = 10, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.classes = hidden, classes
        self.flatten = keras.layers.Flatten()
        self.dense1 = keras.layers.Dense(hidden, activation="relu", kernel_regularizer=L2)
        self.dense2 = keras.layers.Dense(classes)

    def call(self, x, training=False):
        return self.dense2(self.dense1(self.flatten(x)))

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "classes": self.classes}


def subclassed() -> tuple[keras.Model, Any, Any]:
    keras.utils.set_random_seed(SEED)
    x, _, y = digits()
    model = SubclassedMLP(name="subclassed")
    model(x[:1])
    return _compile(model), x, y


class CustomStepModel(keras.Model):
    """A functional MLP whose ``train_step`` is written by hand (as keras.io shows)."""

    def train_step(self, data):
        x, y = data[0], data[1]
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


def custom_step() -> tuple[keras.Model, Any, Any]:
    keras.utils.set_random_seed(SEED)
    x, _, y = digits()
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(32, activation="relu", name="hidden")(h)
    outputs = keras.layers.Dense(10, name="logits")(h)
    return _compile(CustomStepModel(inputs, outputs, name="custom_step")), x, y


def small_cnn(**compile_kwargs: Any) -> tuple[keras.Model, Any, Any]:
    """conv-BN-ReLU-pool-dense on the digits images (for the jit / mixed precision / tf.data
    variants)."""
    keras.utils.set_random_seed(SEED)
    x, _, y = digits()
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv"),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="logits", dtype="float32"),
        ],
        name="small_cnn",
    )
    return _compile(model, **compile_kwargs), x, y


def mixed_float16() -> tuple[keras.Model, Any, Any]:
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        return small_cnn()
    finally:
        keras.config.set_dtype_policy(policy)


def sample_weights(y: np.ndarray) -> np.ndarray:
    """Odd digits count twice: a real weighting, not a no-op."""
    return np.where(np.asarray(y) % 2 == 1, 2.0, 1.0).astype("float32")


def sigmoid_stack() -> tuple[keras.Model, Any, Any]:
    """The vanishing-gradient fault: ten sigmoid layers, default init, plain SGD."""
    keras.utils.set_random_seed(SEED)
    x, _, y = digits()
    layers = [keras.Input((8, 8, 1)), keras.layers.Flatten()]
    layers += [keras.layers.Dense(32, activation="sigmoid", name=f"sigmoid{i}") for i in range(10)]
    model = keras.Sequential([*layers, keras.layers.Dense(10)], name="sigmoid_stack")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=logits_ce(), metrics=["accuracy"])
    return model, x, y


def lr_high() -> tuple[keras.Model, Any, Any]:
    """The learning-rate fault: the small CNN with SGD at lr=5 (about 500x too high)."""
    keras.utils.set_random_seed(SEED)
    model, x, y = small_cnn()
    model.compile(optimizer=keras.optimizers.SGD(5.0), loss=logits_ce(), metrics=["accuracy"])
    return model, x, y


SHORT = {"bias": 1.0, "variance": 1.0}
HEALTHY: list[Entry] = [
    Entry("mobilenet_v2", mobilenet, layer="Conv1", batch_size=64, epochs=1, doctor=SHORT),
    Entry("bn_resnet", resnet, layer="stem", batch_size=64, epochs=1, doctor=SHORT),
    Entry("text_cnn", text_cnn, layer="conv"),
    Entry("bilstm", bilstm, layer="bilstm"),
    Entry("gru", gru, layer="gru"),
    Entry("transformer", transformer, layer="ff1"),
    Entry("two_io_list", lambda: two_io("list"), layer="shared"),
    Entry("two_io_dict", lambda: two_io("dict"), layer="shared"),
    Entry("subclassed", subclassed),
    Entry("custom_train_step", custom_step, layer="hidden"),
    Entry(
        "jit_steps_per_execution",
        lambda: small_cnn(jit_compile=True, steps_per_execution=4),
        layer="conv",
    ),
    Entry("mixed_float16", mixed_float16, layer="conv"),
    Entry(
        "tf_data_sample_weights",
        small_cnn,
        fit={"sample_weight": True, "tf_data": True},
        layer="conv",
    ),  # fmt: skip
]
FAULTY: list[Entry] = [
    Entry(
        "bn_resnet_grad_bug",
        lambda: resnet(scale=1.1),
        fault="grad_bug",
        layer="custom_conv",
        batch_size=64,
        epochs=1,
        doctor=SHORT,
    ),
    Entry(
        "mobilenet_v2_grad_bug",
        mobilenet_grad_bug,
        fault="grad_bug",
        layer="custom_conv",
        batch_size=64,
        epochs=1,
        doctor=SHORT,
    ),
    Entry("lr_far_too_high", lr_high, fault="lr_high", epochs=3, layer="conv"),
    Entry("vanishing_sigmoid", sigmoid_stack, fault="vanishing", epochs=3, layer="sigmoid0"),
]
ZOO = {e.name: e for e in HEALTHY + FAULTY}


# --- the fault grid: task kinds x model families, healthy and with one planted fault ------
#
# Tasks on real data: sklearn's digits for classification (multi-class as sparse indices, as
# one-hot rows, with label smoothing; binary "even digit"; multi-label "even, >= 5, prime,
# has a loop") and sklearn's diabetes for regression (MSE, MAE, Huber; the target
# standardised). Families: MLP, an MLP with LayerNorm + UnitNorm, a conv net with BatchNorm
# and one with GroupNorm, an MLP-mixer, a Transformer block, GRU, LSTM, and the zoo's two-
# input two-output model and MobileNetV2 above.

CLASSIFICATION = ("sparse", "onehot", "smooth", "binary", "multilabel")
REGRESSION = ("mse", "mae", "huber")
PRIMES = (2, 3, 5, 7)
LOOPS = (0, 6, 8, 9)


@functools.lru_cache(maxsize=1)
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's diabetes: 442 rows of 10 standardised features, the target standardised."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    x = (d.data - d.data.mean(0)) / d.data.std(0)
    y = (d.target - d.target.mean()) / d.target.std()
    return x.astype("float32"), y.reshape(-1, 1).astype("float32")


def task_targets(task: str, labels: np.ndarray) -> np.ndarray:
    """The digits' labels as ``task`` reads them."""
    if task == "sparse":
        return labels
    if task in ("onehot", "smooth"):
        return np.eye(10, dtype="float32")[labels]
    if task == "binary":
        return (labels % 2 == 0).astype("float32").reshape(-1, 1)
    if task == "multilabel":
        columns = [labels % 2 == 0, labels >= 5, np.isin(labels, PRIMES), np.isin(labels, LOOPS)]
        return np.stack(columns, axis=1).astype("float32")
    raise ValueError(f"unknown task {task!r}")


def task_head(task: str, h: Any, name: str = "head", init: Any = "glorot_uniform") -> Any:
    """The output layer of ``task`` on ``h``."""
    units = {"binary": 1, "multilabel": 4, **dict.fromkeys(REGRESSION, 1)}.get(task, 10)
    activation = {"onehot": "softmax", "binary": "sigmoid"}.get(task)
    return keras.layers.Dense(units, activation=activation, name=name, kernel_initializer=init)(h)


def task_loss(task: str) -> keras.losses.Loss:
    return {
        "sparse": logits_ce,
        "onehot": keras.losses.CategoricalCrossentropy,
        "smooth": lambda: keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=0.1
        ),
        "binary": keras.losses.BinaryCrossentropy,
        "multilabel": lambda: keras.losses.BinaryCrossentropy(from_logits=True),
        "mse": keras.losses.MeanSquaredError,
        "mae": keras.losses.MeanAbsoluteError,
        "huber": keras.losses.Huber,
    }[task]()


def task_metrics(task: str) -> list:
    if task in REGRESSION:
        return ["mae"]
    if task == "multilabel":
        return [keras.metrics.BinaryAccuracy(threshold=0.0)]
    return ["accuracy"]


def task_data(task: str, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ``task``: digits as "image" (N, 8, 8, 1), "rows" (N, 8, 8) or "flat"
    (N, 64); diabetes for a regression task (flat only)."""
    if task in REGRESSION:
        if shape != "flat":
            raise ValueError(f"regression data is tabular, not {shape!r}")
        return diabetes()
    images, _, labels = digits()
    x = {"image": images, "rows": images.reshape(-1, 8, 8), "flat": images.reshape(-1, 64)}
    return x[shape], task_targets(task, labels)


def _grid_model(name: str, inputs: Any, h: Any, task: str, lr: float, **compile_kwargs: Any):
    init = compile_kwargs.pop("init", "glorot_uniform")
    model = keras.Model(inputs, task_head(task, h, init=init), name=name)
    return _compile(
        model, loss=task_loss(task), lr=lr, metrics=task_metrics(task), **compile_kwargs
    )


def mlp_body(inputs: Any, dead: bool = False) -> Any:
    """Two ReLU layers; ``dead``: the first with a bias of -20, so no unit ever fires."""
    bias = keras.initializers.Constant(-20.0) if dead else "zeros"
    h = keras.layers.Dense(32, activation="relu", name="hidden1", kernel_regularizer=L2,
                           bias_initializer=bias)(inputs)  # fmt: skip
    return keras.layers.Dense(32, activation="relu", name="hidden2")(h)


def mlp(task: str, lr: float = 3e-3, **kwargs: Any) -> tuple[keras.Model, Any, Any]:
    keras.utils.set_random_seed(SEED)
    x, y = task_data(task, "flat")
    inputs = keras.Input(x.shape[1:])
    return _grid_model("mlp", inputs, mlp_body(inputs, **kwargs), task, lr), x, y


def norm_mlp(task: str) -> tuple[keras.Model, Any, Any]:
    """Dense - LayerNorm - ReLU - Dense - UnitNorm, then the head."""
    keras.utils.set_random_seed(SEED)
    x, y = task_data(task, "flat")
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.Dense(32, name="hidden1", kernel_regularizer=L2)(inputs)
    h = keras.layers.Activation("relu")(keras.layers.LayerNormalization(name="ln")(h))
    h = keras.layers.UnitNormalization(name="unit")(keras.layers.Dense(32, name="hidden2")(h))
    return _grid_model("norm_mlp", inputs, h, task, 3e-3), x, y


def conv_net(task: str, norm: str = "batch") -> tuple[keras.Model, Any, Any]:
    """conv - BatchNorm or GroupNorm - ReLU - pool - dense head on the digit images."""
    keras.utils.set_random_seed(SEED)
    x, y = task_data(task, "image")
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv",
                            kernel_regularizer=L2)(inputs)  # fmt: skip
    if norm == "batch":
        h = keras.layers.BatchNormalization(name="bn")(h)
    else:
        h = keras.layers.GroupNormalization(groups=4, name="gn")(h)
    h = keras.layers.Flatten()(keras.layers.MaxPooling2D()(keras.layers.Activation("relu")(h)))
    # 256 features: a small head init keeps the initial loss at its uniform value
    small = keras.initializers.VarianceScaling(0.1)
    return _grid_model(f"conv_{norm}norm", inputs, h, task, 1e-3, init=small), x, y


def mixer(task: str) -> tuple[keras.Model, Any, Any]:
    """An MLP-mixer block: 2x2 patches as 16 tokens, token mixing across patches and channel
    mixing within each, both behind LayerNorm with residual connections."""
    keras.utils.set_random_seed(SEED)
    x, y = task_data(task, "image")
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.Conv2D(16, 2, strides=2, name="patches")(inputs)  # (4, 4, 16)
    h = keras.layers.Reshape((16, 16))(h)
    t = keras.layers.Permute((2, 1))(keras.layers.LayerNormalization(name="ln1")(h))
    t = keras.layers.Dense(16, name="token_mix")(keras.layers.Dense(32, activation="gelu")(t))
    h = h + keras.layers.Permute((2, 1))(t)
    c = keras.layers.Dense(32, activation="gelu", name="channel_mix1", kernel_regularizer=L2)(
        keras.layers.LayerNormalization(name="ln2")(h)
    )
    h = h + keras.layers.Dense(16, name="channel_mix2")(c)
    h = keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization(name="ln3")(h))
    return _grid_model("mixer", inputs, h, task, 3e-3), x, y


def attention(task: str) -> tuple[keras.Model, Any, Any]:
    """One Transformer encoder block over the digit's 8 rows (as ``transformer`` above)."""
    keras.utils.set_random_seed(SEED)
    x, y = task_data(task, "rows")
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.Dense(16, name="embed")(inputs)
    att = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="attention")(h, h)
    h = keras.layers.LayerNormalization(name="ln1")(h + att)
    ff = keras.layers.Dense(32, activation="relu", name="ff1", kernel_regularizer=L2)(h)
    h = keras.layers.LayerNormalization(name="ln2")(h + keras.layers.Dense(16, name="ff2")(ff))
    # 128 unit-variance features: a small head init keeps the initial loss at its uniform value
    small = keras.initializers.VarianceScaling(0.1)
    return _grid_model("attention", inputs, keras.layers.Flatten()(h), task, 3e-3, init=small), x, y


def recurrent(task: str, cell: str = "gru") -> tuple[keras.Model, Any, Any]:
    keras.utils.set_random_seed(SEED)
    x, y = task_data(task, "rows")
    inputs = keras.Input(x.shape[1:])
    layer = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[cell]
    return _grid_model(cell, inputs, layer(32, name=cell)(inputs), task, 3e-3), x, y


# --- planted faults of the grid ---------------------------------------------------------


class ScaledInputGradDense(keras.layers.Dense):
    """A Dense layer whose hand-written gradient is right for its kernel and bias but
    ``scale`` times the true one for its input: a bug only what lies upstream can see."""

    def __init__(self, units: int, scale: float = 1.1, **kwargs):
        super().__init__(units, **kwargs)
        self.scale = scale

    def call(self, inputs):
        scale = self.scale

        @tf.custom_gradient
        def dense(x, kernel, bias):
            def grad(dy):
                with tf.GradientTape() as tape:
                    tape.watch([x, kernel, bias])
                    out = tf.matmul(x, kernel) + bias
                dx, dk, db = tape.gradient(out, [x, kernel, bias], output_gradients=dy)
                return dx * tf.cast(scale, dy.dtype), dk, db

            return tf.matmul(x, kernel) + bias, grad

        y = dense(inputs, tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias))
        return self.activation(y)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class BatchCentering(keras.layers.Layer):
    """Subtracts the batch's mean in every mode (a hand-written "normalisation" that mixes
    the examples of a batch, in inference too)."""

    def call(self, x):
        return x - keras.ops.mean(x, axis=0, keepdims=True)


def _mlp_with(task: str, layer: keras.layers.Layer, name: str, x=None, y=None):
    """The grid's MLP with ``layer`` between its two hidden layers."""
    keras.utils.set_random_seed(SEED)
    if x is None:
        x, y = task_data(task, "flat")
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.Dense(32, activation="relu", name="hidden1")(inputs)
    h = keras.layers.Dense(32, activation="relu", name="hidden2")(layer(h))
    return _grid_model(name, inputs, h, task, 3e-3), x, y


def grad_bug_input() -> tuple[keras.Model, Any, Any]:
    return _mlp_with("sparse", ScaledInputGradDense(32, name="custom_dense"), "grad_bug_input")


def batch_mixing() -> tuple[keras.Model, Any, Any]:
    return _mlp_with("sparse", BatchCentering(name="batch_centering"), "batch_mixing")


def raw_pixels() -> tuple[keras.Model, Any, Any]:
    """The MLP on the digits as raw 8-bit intensities (0..255), not standardised."""
    _, tokens, labels = digits()
    x = (tokens * (255.0 / 16.0)).astype("float32")
    return _mlp_with("sparse", keras.layers.Identity(), "raw_pixels", x, labels)


def double_softmax() -> tuple[keras.Model, Any, Any]:
    """A softmax output with a loss that applies softmax again: a focal loss with
    from_logits=True. (Keras' plain cross-entropies would take the logits back from the
    softmax and train as intended; the focal losses apply softmax themselves.)"""
    model, x, y = mlp("onehot")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"],
                  loss=keras.losses.CategoricalFocalCrossentropy(from_logits=True))  # fmt: skip
    return model, x, y


def frozen() -> tuple[keras.Model, Any, Any]:
    """Every layer of the LayerNorm MLP frozen but its LayerNorm (what a wrong slice of
    ``model.layers`` in a ``trainable = False`` loop leaves)."""
    model, x, y = norm_mlp("sparse")
    for layer in model.layers:
        layer.trainable = layer.name == "ln"
    return _compile(model, loss=task_loss("sparse"), lr=3e-3), x, y


def ignored_input() -> tuple[keras.Model, Any, Any]:
    """The network reads zeros of the input's shape instead of the input."""
    keras.utils.set_random_seed(SEED)
    x, y = task_data("sparse", "flat")
    inputs = keras.Input(x.shape[1:])
    return _grid_model("ignored", inputs, mlp_body(keras.ops.zeros_like(inputs)), "sparse",
                       3e-3), x, y  # fmt: skip


def random_labels() -> tuple[keras.Model, Any, Any]:
    model, x, y = mlp("sparse")
    return model, x, np.random.default_rng(SEED).permutation(y)


def exploding_rnn() -> tuple[keras.Model, Any, Any]:
    """A linear SimpleRNN over the digit's 8 rows whose recurrent matrix has gain 3."""
    keras.utils.set_random_seed(SEED)
    x, y = task_data("sparse", "rows")
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.SimpleRNN(
        16, activation=None, recurrent_initializer=keras.initializers.Orthogonal(3.0), name="rnn"
    )(inputs)
    return _grid_model("exploding_rnn", inputs, h, "sparse", 3e-3), x, y


# Which pieces are built to catch each planted fault: a fault counts as detected by a piece
# only here. Other pieces may catch it too (shown, not counted).
RESPONSIBLE: dict[str, tuple[str, ...]] = {
    "grad_bug": ("check_gradients", "check_gradients_fast"),
    "grad_bug_input": ("check_gradients", "check_gradients_fast", "check_layer_gradients"),
    "lr_high": ("monitors", "doctor"),
    "lr_low": ("monitors", "doctor"),
    "vanishing": ("monitors", "doctor"),
    "exploding_rnn": ("monitors", "doctor"),
    "dead_units": ("monitors", "doctor"),
    "raw_pixels": ("initial_loss",),
    "double_softmax": ("initial_loss",),
    "frozen": ("overfit",),
    "ignored_input": ("input_dependence",),
    "random_labels": ("input_dependence",),
    "batch_mixing": ("batch_independence",),
    "leaked_rows": ("leakage",),
}


def _grid(name: str, build: Callable, task: str, family: str, **kwargs: Any) -> Entry:
    return Entry(name, build, task=task, family=family, **kwargs)


def _over_tasks(prefix: str, builder: Callable, family: str, layer: str, tasks) -> list[Entry]:
    """One healthy case per task kind, ``<prefix>_<task>``, built by ``builder(task)``."""
    return [_grid(f"{prefix}_{t}", functools.partial(builder, t), t, family, layer=layer)
            for t in tasks]  # fmt: skip


GRID_HEALTHY: list[Entry] = [
    *_over_tasks("mlp", mlp, "mlp", "hidden1", (*CLASSIFICATION, "mse", "huber")),
    *_over_tasks("norm_mlp", norm_mlp, "layer+unit norm", "hidden1", ("mae", "multilabel")),
    _grid("conv_bn_sparse", functools.partial(conv_net, "sparse"), "sparse", "batch norm",
          layer="conv"),
    _grid("conv_gn_onehot", functools.partial(conv_net, "onehot", "group"), "onehot",
          "group norm", layer="conv"),
    *_over_tasks("mixer", mixer, "mlp-mixer", "channel_mix1", ("sparse", "smooth")),
    *_over_tasks("attention", attention, "attention", "ff1", ("binary", "multilabel")),
    _grid("gru_sparse", functools.partial(recurrent, "sparse"), "sparse", "recurrent",
          layer="gru"),
    _grid("lstm_smooth", functools.partial(recurrent, "smooth", "lstm"), "smooth", "recurrent",
          layer="lstm"),
    _grid("two_io_list", lambda: two_io("list"), "several outputs (list)", "two inputs",
          layer="shared"),
    _grid("two_io_dict", lambda: two_io("dict"), "several outputs (dict)", "two inputs",
          layer="shared"),
    _grid("mobilenet_v3_small", functools.partial(application, "MobileNetV3Small"),
          "sparse (CIFAR, 0-255)", "keras.applications", layer="conv", batch_size=64,
          epochs=1, doctor=SHORT),
    _grid("efficientnet_b0", functools.partial(application, "EfficientNetB0"),
          "sparse (CIFAR, 0-255)", "keras.applications", layer="stem_conv", batch_size=64,
          epochs=1, doctor=SHORT),
    _grid("mobilenet_v2", mobilenet, "sparse (CIFAR)", "keras.applications", layer="Conv1",
          batch_size=64, epochs=1, doctor=SHORT),
]  # fmt: skip
GRID_FAULTY: list[Entry] = [
    _grid("dead_units", functools.partial(mlp, "sparse", dead=True), "sparse", "mlp",
          fault="dead_units", layer="hidden2"),
    _grid("raw_pixels", raw_pixels, "sparse", "mlp", fault="raw_pixels", layer="hidden1"),
    _grid("double_softmax", double_softmax, "onehot", "mlp", fault="double_softmax",
          layer="hidden1"),
    _grid("frozen", frozen, "sparse", "layer+unit norm", fault="frozen", layer="ln"),
    _grid("ignored_input", ignored_input, "sparse", "mlp", fault="ignored_input",
          layer="hidden1"),
    _grid("batch_mixing", batch_mixing, "sparse", "mlp", fault="batch_mixing",
          layer="hidden2"),
    _grid("leaked_rows", functools.partial(mlp, "sparse"), "sparse", "mlp",
          fault="leaked_rows", fit={"leak": True}, layer="hidden1"),
    _grid("random_labels", random_labels, "sparse", "mlp", fault="random_labels",
          layer="hidden1"),
    _grid("lr_far_too_low", functools.partial(mlp, "sparse", lr=1e-7), "sparse", "mlp",
          fault="lr_low", layer="hidden1"),
    _grid("lr_far_too_high", lr_high, "sparse", "batch norm", fault="lr_high", epochs=3,
          layer="conv"),
    _grid("exploding_rnn", exploding_rnn, "sparse", "recurrent", fault="exploding_rnn",
          layer="rnn"),
    _grid("vanishing_sigmoid", sigmoid_stack, "sparse", "mlp", fault="vanishing", epochs=3,
          layer="sigmoid0"),
    _grid("grad_bug_input", grad_bug_input, "sparse", "mlp", fault="grad_bug_input",
          layer="custom_dense"),
    _grid("bn_resnet_grad_bug", lambda: resnet(scale=1.1), "sparse (CIFAR)", "batch norm",
          fault="grad_bug", layer="custom_conv", batch_size=64, epochs=1, doctor=SHORT),
]  # fmt: skip
GRID = {e.name: e for e in GRID_HEALTHY + GRID_FAULTY}
