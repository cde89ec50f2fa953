"""Advice in the reader's terms: config keys for a recipe run, Keras for a user's own ``fit``.

The fix texts (:mod:`kerasdiag.diagnosis.symptoms`, :mod:`kerasdiag.diagnosis.check_fixes`)
are written once, naming what to change as a recipe's config key (``model.batch_norm=true``,
``trainer.epochs``). That is right for ``python scripts/train.py``, but a reader who wrote the
model and called ``fit`` has no such keys: for them the same advice must name the Keras change
(a ``BatchNormalization`` layer, ``epochs`` of ``fit``). And a recipe whose model is built by
its own builder (``model._target_``) has its own capacity keys (``model.widths``), not the
MLP's ``model.hidden_units``.

So the texts stay as they are, and :class:`Vocabulary` rewrites them where they reach a reader:
:func:`keras_terms` for a user's ``fit`` (the doctor and the monitors used on their own, the
diagnosis of a run directory that has no recipe config) and :func:`config_terms` for a run of
a recipe, with the capacity keys its model config really has. Every rewrite is a whole phrase
of the texts, listed here once; a test checks that no config key survives
:func:`keras_terms` in any fix text.

Example:
    >>> keras_terms().phrase("train longer (trainer.epochs), clip (optimizer.global_clipnorm=1.0)")
    'train longer (epochs of fit), clip (global_clipnorm=1.0 in the optimizer)'
    >>> config_terms({"_target_": "recipes.models.resnet", "widths": [16, 32], "blocks_per_stage": 3}).phrase(
    ...     "use a bigger network (more units or layers: model.hidden_units, model.conv_filters)")
    'use a bigger network (more units or layers: model.widths, model.blocks_per_stage)'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The capacity phrase of the fix texts, as written for the default recipes' MLP and convnet.
CAPACITY_PHRASE = "model.hidden_units, model.conv_filters"
# The model config keys that set a network's size, in the order advice names them.
CAPACITY_KEYS = ("hidden_units", "conv_filters", "dense_units", "widths", "blocks_per_stage",
                 "filters", "units", "layers", "blocks", "depth", "width")  # fmt: skip

# The size keys each of the schema's recipe builders reads (config/schema.py ModelConfig).
RECIPE_BUILDER_KEYS = {"mlp": ("hidden_units",), "convnet": ("conv_filters", "dense_units")}
RECIPE_BUILDER_KEYS_ALL = frozenset(k for keys in RECIPE_BUILDER_KEYS.values() for k in keys)

# Config phrase -> the Keras change it stands for. Longer phrases first: a phrase that
# contains another is rewritten whole.
KERAS_PHRASES: dict[str, str] = {
    "more units or layers: " + CAPACITY_PHRASE: "more units or layers",
    "data.augment.flip=true, data.augment.crop=4": (
        "keras.layers.RandomFlip, keras.layers.RandomCrop"
    ),
    "model.l2, model.dropout=[0.5]": (
        "kernel_regularizer=keras.regularizers.L2(...), keras.layers.Dropout(0.5)"
    ),
    "schedule=cosine schedule.warmup_epochs=1": (
        "keras.optimizers.schedules.CosineDecay with warmup_steps of about one epoch"
    ),
    "schedule=step, schedule=cosine or schedule=plateau": (
        "a keras.optimizers.schedules decay or keras.callbacks.ReduceLROnPlateau"
    ),
    "schedule=step": "a keras.optimizers.schedules decay",
    "trainer.early_stopping.enabled=true": (
        "keras.callbacks.EarlyStopping(restore_best_weights=True)"
    ),
    "optimizer.global_clipnorm=1.0": "global_clipnorm=1.0 in the optimizer",
    "optimizer.lr=auto": "kerasdiag.find_learning_rate",
    "data.normalize=true": "standardise the inputs with the training split's mean and std",
    "model.batch_norm=true": "keras.layers.BatchNormalization",
    "model.activation=elu": "activation='elu'",
    "model.kernel_initializer=null picks it": "pick it by the activation",
    "model.kernel_initializer=null picks the right one": "pick it by the activation",
    "set sanity.fail_fast=true to stop before training when one fails": (
        "run the checks before fit and stop when one fails"
    ),
    "sanity.overfit=true": "kerasdiag.overfit_small_subset",
    "(report, sanity.json)": "(the check's result)",
    "loss.from_logits": "from_logits of the loss",
    "data.batch_size": "batch_size of fit",
    "trainer.epochs": "epochs of fit",
    "the searched range of optimizer.lr": "the searched range of the learning rate",
}
# The augmentation phrases of the fix texts, written for images. For token ids (an Embedding)
# or table rows, flips and crops change what an example means: the advice names more data
# only (dropout, L2 and a smaller network follow in the same texts).
AUGMENT_PHRASE = "data.augment.flip=true, data.augment.crop=4"
NO_AUGMENTATION_PHRASES: dict[str, str] = {
    f"get more data or augment it ({AUGMENT_PHRASE})": "get more data",
    f"more data or augmentation ({AUGMENT_PHRASE})": "more data",
    "or use a smaller network": "or use a smaller network (fewer units or layers)",
}
# What a model's inputs are, as :func:`keras_terms` reads it (``input_kind`` of the checks).
INPUT_KINDS = ("images", "tokens", "tables")
# The built-in data sources by what they feed the model (others: not known from the config).
IMAGE_SOURCES = frozenset({"cifar10", "image_folder"})
TABLE_SOURCES = frozenset({"digits", "csv", "diabetes", "digits_attributes"})
# "optimizer.lr=0.001" (a value to try) -> "learning_rate=0.001 in the optimizer"
_LR_VALUE = re.compile(r"optimizer\.lr=([^\s;,)]+)")


@dataclass(frozen=True)
class Vocabulary:
    """Whole-phrase rewrites of the fix texts, applied by :meth:`phrase`."""

    phrases: Mapping[str, str] = field(default_factory=dict)
    keras: bool = False  # also "optimizer.lr=X" -> "learning_rate=X in the optimizer"

    def phrase(self, text: str) -> str:
        """``text`` in this vocabulary's terms."""
        for written in sorted(self.phrases, key=len, reverse=True):
            text = text.replace(written, self.phrases[written])
        if self.keras:
            text = _LR_VALUE.sub(r"learning_rate=\1 in the optimizer", text)
        return text


def keras_terms(inputs: str | None = None) -> Vocabulary:
    """For a reader who wrote the model and calls ``fit``: Keras changes, no config keys.

    ``inputs``: what the model reads (one of ``INPUT_KINDS``, None: not known). Image
    augmentation (``RandomFlip``, ``RandomCrop``) is advised for images, and when the inputs
    are not known; for token ids and table rows the advice names more data, dropout, L2 and
    fewer units instead (a flipped sentence or a cropped row is another example).
    """
    if inputs is not None and inputs not in INPUT_KINDS:
        raise ValueError(f"inputs: expected one of {INPUT_KINDS} or None, got {inputs!r}")
    if inputs in (None, "images"):
        return Vocabulary(KERAS_PHRASES, keras=True)
    return Vocabulary({**KERAS_PHRASES, **NO_AUGMENTATION_PHRASES}, keras=True)


def config_terms(model_cfg: Mapping[str, Any] | None, inputs: str | None = None) -> Vocabulary:
    """For a recipe run: the config keys as written, the capacity phrase naming the size keys
    its model's builder reads (none known: "the model config's size keys"); ``inputs`` as
    in :func:`keras_terms` (``data.augment`` is advised for images, or inputs not known).

    Every model section holds the recipe builders' keys (the schema's defaults), so which
    ones matter follows from the builder: ``recipes.models.mlp`` reads ``hidden_units``,
    ``recipes.models.convnet`` ``conv_filters`` and ``dense_units``; a ``_target_`` builder
    reads its own keyword arguments (``model.widths``), not those."""
    model_cfg = model_cfg or {}
    if model_cfg.get("_target_"):
        keys = [k for k in CAPACITY_KEYS if k in model_cfg and k not in RECIPE_BUILDER_KEYS_ALL]
    else:
        builder = str(model_cfg.get("builder") or "").rsplit(".", 1)[-1]
        keys = [k for k in RECIPE_BUILDER_KEYS.get(builder, ()) if k in model_cfg]
    if inputs is not None and inputs not in INPUT_KINDS:
        raise ValueError(f"inputs: expected one of {INPUT_KINDS} or None, got {inputs!r}")
    named = ", ".join(f"model.{k}" for k in keys) or "the model config's size keys"
    phrases = {} if named == CAPACITY_PHRASE else {CAPACITY_PHRASE: named}
    if inputs not in (None, "images"):
        phrases.update(NO_AUGMENTATION_PHRASES)
    return Vocabulary(phrases)


def terms_for_run(config: Mapping[str, Any] | None) -> Vocabulary:
    """The vocabulary for a run directory's findings: a recipe's (with its ``model``
    section's capacity keys) when the run has a config, else Keras'."""
    if not config:
        return keras_terms()
    return config_terms(config.get("model"), source_inputs((config.get("data") or {}).get("name")))


def source_inputs(source: str | None) -> str | None:
    """What a built-in data source (``data.name``) feeds the model: ``"images"``,
    ``"tables"``, or None for a source not known here."""
    return "images" if source in IMAGE_SOURCES else "tables" if source in TABLE_SOURCES else None
