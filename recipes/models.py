"""Model builders that recipes reference from YAML (``model.builder: recipes.models.convnet``).

A builder takes the ``model`` config section, the input shape and the number of classes and
returns an uncompiled Keras model that outputs logits. A new architecture is one function here.
"""

from __future__ import annotations

from typing import Any

import keras

from kerasdiag.modeling.blocks import Layers, conv_block, dense_block, dropout_rates, logits_layer


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


def resnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    blocks_per_stage: int = 3,
    widths: tuple[int, ...] = (16, 32, 64),
    zero_init_residual: bool = True,
    layers: Layers,
) -> keras.Model:
    """CIFAR ResNet (He et al. 2016, section 4.2): a 3x3 stem, stages of basic blocks (two 3x3
    convolutions + identity shortcut, BN before each ReLU), the first block of every later
    stage halving the resolution with a 1x1 projection shortcut; global pooling, logits. With
    ``zero_init_residual`` each block's last BN starts with scale 0, so the block starts as the
    identity (Goyal et al. 2017): the initial loss is ln C also in inference mode, where fresh
    BN statistics otherwise let activations double with every block.
    ``blocks_per_stage=3`` with widths 16/32/64 is ResNet-20 (6n + 2 layers, 0.27M params).
    Named from YAML by ``model._target_`` (``conf/model/resnet.yaml``); ``layers`` carries the
    config's L2, batch norm and He initialisation."""
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = layers.norm_act(layers.conv2d(widths[0], name="stem_conv")(inputs), "stem")
    for s, width in enumerate(widths):
        for b in range(blocks_per_stage):
            name, stride = f"s{s + 1}b{b + 1}", 2 if s > 0 and b == 0 else 1
            y = layers.conv2d(width, strides=stride, name=f"{name}_conv1")(x)
            y = layers.norm_act(y, f"{name}_1")
            y = layers.norm_act(layers.conv2d(width, name=f"{name}_conv2")(y), f"{name}_2",
                                activation=False, zero_gamma=zero_init_residual)  # fmt: skip
            if stride != 1 or x.shape[-1] != width:
                x = layers.conv2d(width, 1, strides=stride, name=f"{name}_proj")(x)
                x = layers.norm_act(x, f"{name}_proj", activation=False)
            x = keras.layers.Add(name=f"{name}_add")([x, y])
            x = keras.layers.Activation(layers.activation, name=f"{name}_out")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.drop(x, 0, 1, "head")
    depth = 6 * blocks_per_stage + 2
    return keras.Model(inputs, layers.logits(x, num_classes), name=f"resnet{depth}")


def fast_convnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    widths: tuple[int, ...] = (16, 32, 64),
    residual: bool = True,
    layers: Layers,
) -> keras.Model:
    """A fast CIFAR network after the DAWNBench / airbench line of work (Page 2018, Jordan 2024).

    Per width a stage: conv, 2x2 max-pool, BN + activation, and (with ``residual``) a second
    conv + BN + activation added back; a global max-pool and the logits scaled down by 8 (the
    small-logit head those nets use: the initial loss stays ln C and a large learning rate
    works from the first step). Pooling right after a stage's first conv, rather than strided
    convs or a full-resolution stem, is what makes it cheap: every later convolution runs at a
    quarter of the resolution before it. Widths (16, 32, 64): 0.07M parameters and about 4.6M
    multiply-adds per 32x32 image, under the cifar_softmax convnet's 6.1M (BN and the
    augmentation take the rest of its time).
    """
    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    for s, width in enumerate(widths):
        name = f"stage{s + 1}"
        x = layers.conv2d(width, name=f"{name}_conv1")(x)
        x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
        x = layers.norm_act(x, f"{name}_1")
        if residual:
            y = layers.norm_act(layers.conv2d(width, name=f"{name}_conv2")(x), f"{name}_2")
            x = keras.layers.Add(name=f"{name}_add")([x, y])
    x = keras.layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.drop(x, 0, 1, "head")
    logits = layers.logits(x, num_classes)
    scaled = keras.layers.Rescaling(1.0 / 8, name="logit_scale")(logits)
    return keras.Model(inputs, scaled, name="fast_convnet")
