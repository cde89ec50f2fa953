"""Every way a run's model is built: a recipe's builder (``model.builder``), a builder of
your own (``model._target_``, through Hydra's ``instantiate``), under the ``trainer.strategy``
scope and the precision policy, with float32 outputs, compiled with the configured loss,
optimizer and schedule."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from kerasdiag.config.schema import ModelConfig
from kerasdiag.core import text
from kerasdiag.core.errors import ConfigError
from kerasdiag.data import Dataset
from kerasdiag.modeling.blocks import ACTIVE_SETTINGS, LAYER_SETTINGS, Layers
from kerasdiag.modeling.distribute import get_strategy, scaled_learning_rate
from kerasdiag.modeling.losses import build_loss, output_units, task_metrics
from kerasdiag.modeling.optimizers import build_optimizer, build_schedule


def steps_per_epoch(cfg: DictConfig, data: Dataset) -> int:
    return max(1, math.ceil(len(data.y_train) / int(cfg.data.batch_size)))


def resolve_builder(path: str, key: str = "model.builder"):
    """Import the model builder a recipe names (``recipes.models.convnet``)."""
    module_name, _, func_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # the real cause: a missing package inside the module, ...
        reason = f"module {module_name!r} cannot be imported: {type(exc).__name__}: {exc}"
        raise ConfigError(key, path, reason) from None
    builder = getattr(module, func_name, None)
    if builder is None:
        raise ConfigError(key, path, f"module {module_name!r} defines no {func_name!r}")
    if not callable(builder):
        raise ConfigError(key, path, "is not callable")
    return builder


def build_model(cfg: DictConfig, data: Dataset, **model_overrides: Any) -> keras.Model:
    """Build and compile the run's model, seeded; ``model_overrides`` replace cfg.model fields.

    With the same config and seed, two calls give identical initial weights, which is what
    lets sanity stages build their own variants (no regularization, no dropout) freely.
    The model and its optimizer are created under the ``trainer.strategy`` scope, so
    ``fit`` splits each batch of ``data.batch_size`` over the replicas; ``trainer.scale_lr``
    multiplies the learning rate by their number (see :mod:`kerasdiag.modeling.distribute`).
    """
    model_cfg = cfg.model
    if model_overrides:
        model_cfg = OmegaConf.merge(cfg.model, model_overrides)
    keras.utils.set_random_seed(int(cfg.trainer.seed))
    if model_cfg.get("_target_"):  # a builder of your own, with its own arguments
        builder = build_from_target
    else:
        builder = resolve_builder(model_cfg.builder)
    strategy = get_strategy(cfg.trainer.strategy)
    lr = scaled_learning_rate(float(cfg.optimizer.lr), strategy, bool(cfg.trainer.scale_lr))
    with strategy.scope(), precision(cfg.trainer):  # variables mirrored on every replica
        model = builder(model_cfg, data.input_shape, output_units(cfg.loss, data.num_classes))
        model = float32_outputs(model)
        learning_rate, _ = build_schedule(
            lr, cfg.schedule, steps_per_epoch(cfg, data), int(cfg.trainer.epochs)
        )
        jit = cfg.trainer.get("jit_compile")
        model.compile(
            optimizer=build_optimizer(cfg.optimizer, learning_rate),
            loss=build_loss(cfg.loss),
            metrics=task_metrics(cfg.loss, getattr(data, "target_std", None)),
            jit_compile="auto" if jit is None else bool(jit),
        )
    return model


MIXED_POLICY = "mixed_float16"


@contextlib.contextmanager
def precision(trainer_cfg: Any) -> Iterator[None]:
    """Build under Keras' ``mixed_float16`` policy when ``trainer.mixed_precision`` (float16
    compute, float32 variables; ``compile`` then adds loss scaling), and put the global
    policy back afterwards: other models built in this process are not affected."""
    if not trainer_cfg.get("mixed_precision"):
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(MIXED_POLICY)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float32_outputs(model: keras.Model) -> keras.Model:
    """A functional model whose outputs are float16 gets a float32 linear layer on top, so
    the loss, softmax and metrics are computed in float32 (Keras' mixed-precision advice)."""
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1 or outputs[0].dtype == "float32":
        return model
    cast = keras.layers.Activation("linear", dtype="float32", name="float32_logits")
    return keras.Model(model.inputs, cast(outputs[0]), name=model.name)


def model_summary_text(model: keras.Model) -> str:
    """Layer output shapes and parameter counts, as a plain-text table."""
    rows = [("layer", "type", "output shape", "params")]
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = "?" if shape is None else str(tuple(shape.shape))
        rows.append((layer.name, type(layer).__name__, shape, f"{layer.count_params():,}"))
    lines = text.format_table(rows, right={3}).split("\n")
    lines.insert(1, "-" * len(lines[0]))
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    lines += [
        "-" * len(lines[0]),
        f"model {model.name}: {model.count_params():,} parameters "
        f"({trainable:,} trainable, {model.count_params() - trainable:,} non-trainable)",
    ]
    return "\n".join(lines) + "\n"


def build_from_target(
    model_cfg: Any, input_shape: tuple[int, ...], num_classes: int
) -> keras.Model:
    """Build the model ``model._target_`` names, with Hydra's ``instantiate``.

    The builder is called as ``f(input_shape, num_classes, **kwargs)``. It receives every
    key of the ``model`` section that is not a kerasdiag setting (``model.blocks=3``), the
    kerasdiag settings whose names it declares as parameters, and a :class:`Layers` when it
    declares ``layers``. A config that sets l2, l1, dropout or batch norm for a builder that
    can receive none of them is refused (they would be silently ignored), and so is a key the
    builder does not take. The target was checked like ``model.builder`` when the config was
    validated (a dotted path, not the standard library, its module importable).
    """

    target = str(model_cfg["_target_"])
    builder = _import_target(target)
    params = inspect.signature(builder).parameters
    any_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    values = (
        OmegaConf.to_container(model_cfg, resolve=True)
        if not isinstance(model_cfg, dict)
        else dict(model_cfg)
    )
    own = {k: v for k, v in values.items() if k not in ModelConfig.__dataclass_fields__}
    for key, value in own.items():
        if key.startswith("_") and key.endswith("_"):
            raise ConfigError(f"model.{key}", value, "only _target_ is read from the model section")
        if key not in params and not any_kwargs:
            raise ConfigError(
                f"model.{key}", value, f"{target} takes no argument {key!r} ({_names(params)})"
            )
    kwargs = {**own, **{k: values[k] for k in LAYER_SETTINGS if k in params}}
    if "layers" in params:
        kwargs["layers"] = Layers.from_config(values)
    else:
        # Every refused setting in one line: a recipe's model section sets several at once.
        ignored = [
            k for k, active in ACTIVE_SETTINGS.items() if k not in params and active(values[k])
        ]
        if ignored:
            settings = ", ".join(f"model.{k}={values[k]!r}" for k in ignored)
            raise ConfigError(
                f"model.{ignored[0]}",
                values[ignored[0]],
                f"{target} declares neither a 'layers' parameter (kerasdiag.modeling.blocks."
                f"Layers) nor {' nor '.join(map(repr, ignored))}, so it would ignore {settings}: "
                "add the parameters, or turn the settings off",
            )
    model = instantiate({"_target_": target}, input_shape, num_classes, **kwargs, _recursive_=False)
    if not isinstance(model, keras.Model):
        raise ConfigError(
            "model._target_", target, f"returned {type(model).__name__}, not a keras.Model"
        )
    return model


def builder_takes_regularization(model_cfg: Any) -> bool:
    """Whether the config's l2/l1 can reach the model: always for the recipe builders."""
    if not model_cfg.get("_target_"):
        return True
    params = inspect.signature(_import_target(str(model_cfg["_target_"]))).parameters
    return bool({"layers", "l2", "l1"} & set(params))


def _import_target(target: str):
    return resolve_builder(target, key="model._target_")


def _names(params: Any) -> str:
    names = [n for n in params if n not in ("input_shape", "num_classes")]
    return f"its parameters: {', '.join(names)}" if names else "it takes none"
