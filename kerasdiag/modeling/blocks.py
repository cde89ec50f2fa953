"""Building blocks the recipe builders share: init by activation, regularizers, dropout,
and the one small API a builder of your own gets them through (:class:`Layers`)."""

from __future__ import annotations

from typing import Any

import keras

from kerasdiag.core.activations import RELU_LIKE
from kerasdiag.core.errors import ConfigError


def initializer_for(activation: str, override: str | None = None) -> str:
    """He normal for ReLU-like activations, Glorot uniform otherwise, unless ``override``."""
    if override:
        return override
    return "he_normal" if activation in RELU_LIKE else "glorot_uniform"


def kernel_regularizer(model_cfg: Any) -> keras.regularizers.Regularizer | None:
    """L1/L2 on kernels only: biases are never regularized.

    Keras' ``L2(l2)`` adds ``l2 * sum(W**2)`` to the mean batch loss, i.e. the notes'
    ``lambda / 2m * ||W||^2`` with ``l2 = lambda / 2m``.
    """
    l1, l2 = float(model_cfg.l1), float(model_cfg.l2)
    if l1 == 0.0 and l2 == 0.0:
        return None
    return keras.regularizers.L1L2(l1=l1, l2=l2)


def dropout_rates(model_cfg: Any, blocks: int) -> list[float]:
    """One dropout rate per block: [] = none, one value = every block, else one per block."""
    rates = [float(r) for r in model_cfg.dropout]
    if not rates:
        return [0.0] * blocks
    if len(rates) == 1:
        return rates * blocks
    if len(rates) != blocks:
        raise ConfigError(
            "model.dropout", list(rates), f"needs 1 or {blocks} rates (one per block)"
        )
    return rates


def dense_block(x, units: int, model_cfg: Any, rate: float, name: str):
    """Dense -> (BatchNorm) -> activation -> (Dropout): one hidden block."""
    x = keras.layers.Dense(
        units,
        kernel_initializer=initializer_for(model_cfg.activation, model_cfg.kernel_initializer),
        kernel_regularizer=kernel_regularizer(model_cfg),
        name=f"{name}_dense",
    )(x)
    return _finish_block(x, model_cfg, rate, name)


def conv_block(x, filters: int, model_cfg: Any, rate: float, name: str):
    """Conv -> (BatchNorm) -> activation -> max-pool -> (Dropout): one convolution block."""
    x = keras.layers.Conv2D(
        filters,
        int(model_cfg.kernel_size),
        padding="same",
        kernel_initializer=initializer_for(model_cfg.activation, model_cfg.kernel_initializer),
        kernel_regularizer=kernel_regularizer(model_cfg),
        name=f"{name}_conv",
    )(x)
    x = _finish_block(x, model_cfg, 0.0, name)
    x = keras.layers.MaxPooling2D(name=f"{name}_pool")(x)
    if rate > 0:
        x = keras.layers.Dropout(rate, name=f"{name}_dropout")(x)
    return x


# Output weights start small (Glorot with a tenth of the std) so the untrained logits are
# near zero and the initial loss matches its expected value (ln C for softmax, C - 1 for the
# hinge): the initial-loss sanity check relies on it, and a large initial loss wastes early epochs.
OUTPUT_INIT_SCALE = 0.01


def logits_layer(x, num_classes: int, model_cfg: Any):
    """The output layer: raw scores (logits), small init, kernel regularized like the rest."""
    return keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.VarianceScaling(
            OUTPUT_INIT_SCALE, mode="fan_avg", distribution="uniform"
        ),
        kernel_regularizer=kernel_regularizer(model_cfg),
        name="logits",
    )(x)


def _finish_block(x, model_cfg: Any, rate: float, name: str):
    if model_cfg.batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.Activation(model_cfg.activation, name=f"{name}_{model_cfg.activation}")(x)
    if rate > 0:
        x = keras.layers.Dropout(rate, name=f"{name}_dropout")(x)
    return x


# -- your own builder, from the config (``model._target_``) -------------------------------------

# Settings the config applies to every layer: a ``_target_`` builder gets them through a
# ``layers`` parameter (a :class:`Layers`) or parameters of these names.
LAYER_SETTINGS = ("activation", "kernel_initializer", "l2", "l1", "dropout", "batch_norm")
# Those that change the model when set: a builder that can receive none of them is refused
# rather than trained without them.
ACTIVE_SETTINGS = {
    "l2": lambda v: float(v) > 0,
    "l1": lambda v: float(v) > 0,
    "dropout": lambda v: any(float(r) > 0 for r in v),
    "batch_norm": bool,
}


# Batch norm's moving statistics follow 10% of each batch (PyTorch's default, as in the CIFAR
# ResNet references): Keras' 0.99 lags ~100 steps behind, more than an epoch of a small data
# set, and validation scores made with stale statistics swing wildly while the lr is high.
BN_MOMENTUM = 0.9


class Layers:
    """What the ``model`` config says about layers, for a builder of your own.

    A builder named by ``model._target_`` that declares a ``layers`` parameter receives one:
    its methods make layers with the config's kernel initialiser (He for ReLU-like
    activations, Glorot otherwise), L1/L2 on kernels (never biases), batch norm and dropout,
    so ``model.l2=1e-3 model.dropout=[0.5] model.batch_norm=true`` reach your network and the
    sanity stages can vary them. The attributes mirror the config keys.

    Example:
        >>> import keras
        >>> def tiny(input_shape, num_classes, *, width=8, layers):
        ...     inputs = keras.Input(input_shape)
        ...     x = layers.dense(width)(keras.layers.Flatten()(inputs))
        ...     x = layers.drop(layers.norm_act(x, "h1"), 0, 1, "h1")
        ...     return keras.Model(inputs, layers.logits(x, num_classes))
        >>> model = tiny((4,), 3, layers=Layers(l2=1e-3, dropout=[0.5]))
        >>> len(model.losses), model.output.shape
        (2, (None, 3))
    """

    def __init__(
        self,
        activation: str = "relu",
        kernel_initializer: str | None = None,
        l2: float = 0.0,
        l1: float = 0.0,
        dropout: Any = (),
        batch_norm: bool = False,
    ) -> None:
        self.activation = str(activation)
        self.kernel_initializer = kernel_initializer
        self.l2, self.l1 = float(l2), float(l1)
        self.dropout = [float(r) for r in dropout]
        self.batch_norm = bool(batch_norm)

    @classmethod
    def from_config(cls, model_cfg: Any) -> Layers:
        return cls(**{k: model_cfg[k] for k in LAYER_SETTINGS if k in model_cfg})

    def initializer(self, activation: str | None = None) -> str:
        """He normal for ReLU-like activations, Glorot uniform otherwise (or the config's)."""
        return initializer_for(activation or self.activation, self.kernel_initializer)

    def regularizer(self) -> keras.regularizers.Regularizer | None:
        """The kernels' L1/L2 regularizer (None when both are 0)."""
        return kernel_regularizer(self)

    def dense(self, units: int, **kwargs: Any) -> keras.layers.Dense:
        """A Dense layer with the config's initialiser and kernel regularizer."""
        kwargs.setdefault("kernel_initializer", self.initializer())
        return keras.layers.Dense(units, kernel_regularizer=self.regularizer(), **kwargs)

    def conv2d(self, filters: int, kernel_size: int = 3, **kwargs: Any) -> keras.layers.Conv2D:
        """A Conv2D layer ("same" padding by default) with initialiser and regularizer."""
        kwargs.setdefault("padding", "same")
        kwargs.setdefault("kernel_initializer", self.initializer())
        kwargs.setdefault("use_bias", not self.batch_norm)  # BN's beta is the bias
        return keras.layers.Conv2D(
            filters, kernel_size, kernel_regularizer=self.regularizer(), **kwargs
        )

    def norm_act(self, x, name: str, *, activation: bool = True, zero_gamma: bool = False):
        """(BatchNorm when ``batch_norm``) then the activation (unless ``activation=False``).

        ``zero_gamma`` starts BN's scale at 0: the last BN of a residual branch, so every
        block starts as the identity (Goyal et al. 2017) and a deep network's initial
        outputs, hence its initial loss, stay those of a shallow one."""
        if self.batch_norm:
            gamma = "zeros" if zero_gamma else "ones"
            x = keras.layers.BatchNormalization(
                momentum=BN_MOMENTUM, gamma_initializer=gamma, name=f"{name}_bn"
            )(x)
        if activation:
            x = keras.layers.Activation(self.activation, name=f"{name}_{self.activation}")(x)
        return x

    def drop(self, x, block: int, blocks: int, name: str):
        """Dropout at block ``block`` of ``blocks`` (``model.dropout``: one rate or one each)."""
        rate = dropout_rates(self, blocks)[block]
        return keras.layers.Dropout(rate, name=f"{name}_dropout")(x) if rate > 0 else x

    def logits(self, x, num_classes: int):
        """The output layer: raw scores, small init (initial loss ln C), regularized kernel."""
        return logits_layer(x, num_classes, self)
