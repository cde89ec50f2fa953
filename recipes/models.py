"""Model builders that recipes reference from YAML (``model.builder: recipes.models.convnet``).

A builder takes the ``model`` config section, the input shape and the number of classes and
returns an uncompiled Keras model that outputs logits. A new architecture is one function here.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdiag.modeling import conv_block, dense_block, dropout_rates, logits_layer


def mlp(model_cfg: Any, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Fully connected network: flatten, ``hidden_units`` blocks, logits."""
    units = list(model_cfg.hidden_units)
    rates = dropout_rates(model_cfg, len(units))
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i, (n, rate) in enumerate(zip(units, rates, strict=True)):
        x = dense_block(x, n, model_cfg, rate, name=f"hidden{i + 1}")
    return keras.Model(inputs, logits_layer(x, num_classes, model_cfg), name="mlp")


def convnet(model_cfg: Any, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Small convnet: ``conv_filters`` conv-pool blocks, ``dense_units`` dense blocks, logits.

    With the defaults (conv32-pool-conv64-pool-dense128-dense10) this is the cifar_softmax
    model. ``model.dropout`` gives one rate per block, conv blocks first.
    """
    filters, dense = list(model_cfg.conv_filters), list(model_cfg.dense_units)
    rates = dropout_rates(model_cfg, len(filters) + len(dense))
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    for i, n in enumerate(filters):
        x = conv_block(x, n, model_cfg, rates[i], name=f"block{i + 1}")
    x = keras.layers.Flatten(name="flatten")(x)
    for j, n in enumerate(dense):
        x = dense_block(x, n, model_cfg, rates[len(filters) + j], name=f"dense{j + 1}")
    return keras.Model(inputs, logits_layer(x, num_classes, model_cfg), name="convnet")
