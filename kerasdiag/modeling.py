"""Building blocks the recipe builders share: init by activation, regularizers, dropout (P3, P4, P9)."""

from __future__ import annotations

from typing import Any

import keras

# ReLU-like units halve the variance they pass on, so they need He init (variance 2/n_in);
# symmetric saturating units want Glorot/Xavier (variance ~1/n_in).
from kerasdiag.config.schema import ACTIVATIONS, RELU_LIKE  # noqa: F401 - the one registry


def initializer_for(activation: str, override: str | None = None) -> str:
    """He normal for ReLU-like activations, Glorot uniform otherwise, unless ``override``."""
    if override:
        return override
    return "he_normal" if activation in RELU_LIKE else "glorot_uniform"


def kernel_regularizer(model_cfg: Any) -> keras.regularizers.Regularizer | None:
    """L1/L2 on kernels only: biases are never regularized (P3).

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
        from kerasdiag.errors import ConfigError

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
# hinge): the sanity check S1 relies on it, and a large initial loss wastes early epochs.
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
